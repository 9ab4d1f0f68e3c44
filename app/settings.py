"""What a ``train-selected`` configuration resolves to: the model, the methods, every training value and its source.

Pure functions of the configuration and the files it names (the probe selection, ``--config``): no weights and
no data are read. The precedence of the sources, lowest first, is :mod:`mma.adapters.recipes`' table; a method
contributes its own published values (``paper default``), and only a depth-indexed method (MMA) takes k from the
probe selection or ``--k``.

A ``--config`` file holds flat values (``{"epochs": 5}``: every method that reads ``epochs`` takes it) and, per
method, a table of values for that method alone, the way Dassl namespaces ``TRAINER.COOP``::

    epochs = 5
    [coop]
    n_ctx = 4
    epochs = 10

(JSON: ``{"epochs": 5, "coop": {"n_ctx": 4, "epochs": 10}}``.) A table is named by the method's registered name
(:func:`mma.adapters.methods.registry`; another name is one sentence listing the valid ones) and holds only values
that method reads (another is one sentence naming them). Precedence, last wins: the recipe, the flat values
(source ``config file (FILE)``), the method's table (``config file (FILE) (coop)``), then the user's flags. A table
named ``search`` is a tuning record (``mma tune`` writes ``recipe.json`` as the chosen values in the method's table
beside its ``search`` record) and sets nothing.

``--template`` (:func:`check_template`) is the prompt every method that reads a hand-written prompt reads, over
both the default ``"a photo of a {}."`` and the per-dataset published prompts; each method's settings record it
with its source. A user flag or ``--config`` value that cuts a method's published epochs by
:data:`CUT_FACTORS` or more is one warning line per method (:func:`recipe_cuts`), recorded in its settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from mma.adapters.config import COMMON_FIELDS
from mma.adapters.depth import DEPTH_FIELDS, FOLLOW_K
from mma.adapters.method_base import MethodBase
from mma.adapters.methods import DEFAULT, parse_methods, registry, trained_methods
from mma.adapters.protocols import get_protocol
from mma.adapters.recipes import PAPER_DEFAULT, Recipe, Settings, default_precision, get_recipe, settle
from mma.errors import MmaError, closest, command_line, one_line
from mma.io import read_json
from mma.probe.layers import TOWERS
from mma.probe.specs import ModelSpec, parse_model_spec

__all__ = [
    "TrainSelectedConfig",
    "Resolved",
    "Selection",
    "DEFAULT_PROBE_RUN",
    "USER_FLAG",
    "SEARCH_RECORD",
    "read_selection",
    "read_config_file",
    "selection_layers",
    "settle_method",
    "resolve_settings",
    "k_line",
    "check_template",
    "recipe_cuts",
    "CUT_FACTORS",
    "TEMPLATE_DEFAULT",
]

DEFAULT_PROBE_RUN = Path("runs/probe")
SEARCH_RECORD = "search"  # the table of a --config file that records a tuning search (mma tune's recipe.json)
USER_FLAG = "user flag"
#: the source of the prompt when no --template is given (each method then reads the dataset's, see prompt_template)
TEMPLATE_DEFAULT = "default (the dataset's prompt, 'a photo of a {}.' unless its source gives one)"
_PUBLISHED_PROMPTS = "; on datasets published with their own zero-shot prompt, that prompt"
#: a value a user flag or --config sets this many times below the method's published one is warned about (only
#: downwards: fewer epochs, a smaller lr). Epochs: 4x (CoOp's 200 cut to 50 or fewer; MMA's 5 to 1); lr: 10x.
CUT_FACTORS = {"epochs": 4, "lr": 10}


@dataclass
class TrainSelectedConfig:
    run: Path | None = None
    model: str | None = None
    k: int | None = None
    k_image: int | None = None  # the image tower's start block apart from k (methods that allow it)
    k_text: int | None = None
    data: list[str] | None = None  # None: the protocol's default (mma.adapters.protocols.Protocol.default_data)
    protocol: str = "base2novel"
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    out: Path = Path("runs/train")
    device: str = "auto"
    template: str | None = None
    recipe: str = "auto"  # see mma.adapters.recipes
    train: dict = field(default_factory=dict)  # training values the user gave (CLI flags): they win over all
    config: Path | None = None  # a JSON / TOML file of training values (below the user's flags)
    checkpoints: bool = True
    progress: bool = True
    strict: bool = False  # a class with fewer than --shots training images is an error, not "use all it has"
    methods: list[str] = field(default_factory=lambda: [DEFAULT.name])  # mma.adapters.methods; the baseline too
    cache_dir: Path | None = None  # frozen inputs and finished trainings (None: <out>/cache; reproduce shares one)
    log: list[str] = field(default_factory=list)  # tensorboard and / or wandb (mma.app.training_logs)
    all_classes: bool = False  # also every test image among all classes (Protocol.with_all_classes)


def read_selection(run: Path, model: str | None = None) -> dict:
    """The selection record of *model* (or the first model) in ``run/selection.json``."""
    path = Path(run) / "selection.json"
    if not path.is_file():
        raise MmaError(
            f"The run folder {str(run)!r} has no selection.json; pass --k, or make it first with: "
            + command_line("mma", "probe", "layers", "--out", run)
        )
    selections = read_json(path).get("selections", [])
    if not selections:
        raise MmaError(f"{str(path)!r} lists no model; rerun 'mma probe layers'.")
    if model is None:
        return selections[0]
    for sel in selections:
        if sel["model"] == model:
            return sel
    raise MmaError(f"{str(path)!r} has no selection for model {model!r} (it has {[s['model'] for s in selections]}).")


@dataclass
class Selection:
    """The model, and the k layers a probe selection contributes (see the precedence in mma.adapters.recipes)."""

    model: str | None
    default_run: tuple[str, dict] | None = None  # the default probe run's k: below the recipe
    run: tuple[str, dict] | None = None  # the k of the probe run the user named (--run): above the config file
    why_none: str = ""  # why the default probe run gives no k (for the error when nothing else does)

    @property
    def k(self) -> int | None:
        """The selected k (of ``--run``, else of the default run), if any."""
        chosen = self.run or self.default_run
        return None if chosen is None else chosen[1]["k"]


def selection_layers(cfg: TrainSelectedConfig) -> Selection:
    """Model and probe-selection k layers: ``--run`` if given; else, when no --k, the default probe run."""
    if cfg.run is not None:
        sel = read_selection(cfg.run, cfg.model)
        model = cfg.model or sel["model"]
        path = Path(cfg.run) / "selection.json"
        if sel.get("k") is None:
            if cfg.k is None:
                raise MmaError(
                    f"{str(path)!r} selected no k for {sel['model']!r} ({sel.get('reason', 'no rule applied')}); "
                    "pass --k."
                )
            return Selection(model)
        return Selection(model, run=(f"probe selection ({path}, rule {sel.get('rule')})", _selected_starts(sel)))
    path = DEFAULT_PROBE_RUN / "selection.json"
    if cfg.k is not None or (cfg.k_image is not None and cfg.k_text is not None):
        return Selection(cfg.model)
    if not path.is_file():
        return Selection(cfg.model, why_none=f"there is no {str(path)!r} ('mma probe layers' writes it)")
    try:
        sel = read_selection(DEFAULT_PROBE_RUN, cfg.model)
    except MmaError as exc:
        return Selection(cfg.model, why_none=str(exc).rstrip("."))
    model = cfg.model or sel["model"]
    if sel.get("k") is None:
        why = f"{str(path)!r} selected no k for {sel['model']!r} ({sel.get('reason', 'no rule applied')})"
        return Selection(model, why_none=why)
    source = f"probe selection (default run {path}, rule {sel.get('rule')})"
    return Selection(model, default_run=(source, _selected_starts(sel)))


def _selected_starts(sel: dict) -> dict:
    """The start blocks a selection record gives: ``k``, and each tower's where the towers' own rules differ from it
    (``k_image`` / ``k_text``; both None when they equal k)."""
    starts = {"k": int(sel["k"])}
    towers = {t: sel.get(f"k_{t}") for t in TOWERS}
    if all(v is not None for v in towers.values()) and set(towers.values()) != {starts["k"]}:
        starts.update({f"k_{t}": int(v) for t, v in towers.items()})
    return starts


def _depth_layers(layers: list[tuple[str, dict]], method: type[MethodBase]) -> list[tuple[str, dict]]:
    """A layer that sets k sets both towers' starts with it (to follow k unless it gives them too), so a later --k is
    not undone by an earlier layer's per-tower starts; a method whose towers start together reads k alone."""
    out = []
    for source, values in layers:
        if "k" in values:
            values = {**dict.fromkeys(FOLLOW_K), **values}
        if not method.per_tower:
            values = {name: v for name, v in values.items() if name not in FOLLOW_K}
        out.append((source, values))
    return out


def read_config_file(config: Path | None) -> dict:
    """Training values from a JSON or TOML file (``{}`` without one); one sentence if it cannot be used."""
    if config is None:
        return {}
    config = Path(config)
    if not config.is_file():
        raise MmaError(f"--config {str(config)!r} does not exist.")
    try:
        text = config.read_text(encoding="utf-8")  # a UnicodeDecodeError is a ValueError too
        values = tomllib.loads(text) if config.suffix == ".toml" else json.loads(text)
    except ValueError as exc:
        raise MmaError(
            f"--config {str(config)!r} is not valid {config.suffix.lstrip('.') or 'JSON'}: {one_line(exc)}"
        ) from None
    if not isinstance(values, dict):
        raise MmaError(
            f'--config {str(config)!r} must hold a table of training options such as {{"epochs": 5}}, '
            f"not a {type(values).__name__}."
        )
    return values


def _config_layers(cfg: TrainSelectedConfig, method: type[MethodBase]) -> list[tuple[str, dict]]:
    """The ``--config`` layers for *method*, lowest precedence first: the flat values, then its own table (other
    methods' tables are theirs). Every table is checked, whether its method runs or not: a name that is no
    registered method, or a value its method does not read, is one sentence."""
    values = read_config_file(cfg.config)
    values = {name: v for name, v in values.items() if name != SEARCH_RECORD}
    tables = {name: v for name, v in values.items() if isinstance(v, dict)}
    methods = registry()
    for name, table in tables.items():
        if name not in methods:
            hint = closest(name, list(methods))
            raise MmaError(
                f"--config {str(cfg.config)!r} has a table [{name}], which is no method (valid tables: "
                f"{', '.join(methods)}; a method's own values go in a table named after it, e.g. "
                f'{{"epochs": 5, "coop": {{"epochs": 10}}}})' + (f"; {hint}" if hint else ".")
            )
        reads = methods[name].field_names()
        unknown = sorted(set(table) - set(reads))
        if unknown:
            raise MmaError(
                f"--config {str(cfg.config)!r} sets {', '.join(unknown)} in the [{name}] table, which method "
                f"{name!r} does not read (its options: {', '.join(sorted(reads))})."
            )
    flat = {name: v for name, v in values.items() if name not in tables}
    label = f"config file ({cfg.config})"
    layers = [(label, _without_auto(flat)), (method.qualify(label), _without_auto(tables.get(method.name, {})))]
    return [(source, layer) for source, layer in layers if layer]


def _without_auto(values: dict) -> dict:
    """``precision: auto`` means "the default": drop it, so the device default applies."""
    return {k: v for k, v in values.items() if not (k == "precision" and v == "auto")}


def _layers(
    cfg: TrainSelectedConfig,
    recipe: Recipe,
    selection: Selection,
    device_type: str,
    dataset: str | None,
    method: type[MethodBase],
) -> list[tuple[str, dict]]:
    """Every ``(source, values)`` layer of *method*'s training values, lowest precedence first (recipes.py docstring).

    The method starts from its own published values; k (and the probe selection) belongs to depth-indexed
    methods alone.
    """
    paper = {k: v for k, v in method.make_config().values().items() if k not in (*DEPTH_FIELDS, "precision")}
    precision, precision_source = default_precision(device_type)
    depth = method.depth_indexed
    layers = [(method.qualify(PAPER_DEFAULT), {**paper, **method.paper}), (precision_source, {"precision": precision})]
    if selection.default_run and depth:
        layers.append(selection.default_run)
    layers += recipe.layers(cfg.protocol, dataset, method)
    layers += _config_layers(cfg, method)  # the flat values, then the method's own table
    if selection.run and depth:
        layers.append(selection.run)
    starts = {"k": cfg.k, "k_image": cfg.k_image, "k_text": cfg.k_text} if depth else {}
    user = _without_auto({**cfg.train, **{name: v for name, v in starts.items() if v is not None}})
    if cfg.k is not None and depth:  # --k alone: both towers follow it
        user = {"k_image": cfg.k_image, "k_text": cfg.k_text, **user}
    if user:
        layers.append((USER_FLAG, user))
    return _depth_layers(layers, method) if depth else layers


def _only_used(layers: list, method: type[MethodBase]) -> list:
    """The layers cut to the values *method* reads (a value no registered method reads is still an error)."""
    known = set(COMMON_FIELDS).union(*(m.option_names() for m in registry().values()))
    for _, values in layers:
        unknown = sorted(set(values) - known)
        if unknown:
            raise MmaError(f"Unknown training option(s) {unknown}; valid: {sorted(known)}.")
    uses = set(method.field_names())
    return [(source, {k: v for k, v in values.items() if k in uses}) for source, values in layers]


def settle_method(
    cfg: TrainSelectedConfig,
    recipe: Recipe,
    selection: Selection,
    device_type: str,
    method: type[MethodBase],
    datasets=(),
) -> Settings:
    """The :class:`~mma.adapters.recipes.Settings` of *method*: shared values, then what differs per training
    dataset."""
    values, sources = settle(_only_used(_layers(cfg, recipe, selection, device_type, None, method), method))
    order = method.field_names()  # name the values in the method's own order
    values = dict(sorted(values.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    sources = {name: sources[name] for name in values}
    if "k" not in values and method.depth_indexed and None not in (values.get("k_image"), values.get("k_text")):
        values["k"] = min(values["k_image"], values["k_text"])  # not read: both towers have their own start
        sources["k"] = "unused (both towers' starts are given)"
    if "k" not in values and method.depth_indexed:
        why = selection.why_none or "no probe run was named"
        raise MmaError(
            f"No k was given: recipe {recipe.name!r} has no k for --protocol {cfg.protocol} and {why}; pass --k, or "
            "--run PROBE_RUN (a folder with selection.json)."
        )
    method.make_config(values).validate()
    per_dataset = {}
    for name in datasets:
        v, s = settle(_only_used(_layers(cfg, recipe, selection, device_type, name, method), method))
        diff = {f: (v[f], s[f]) for f in v if f not in values or v[f] != values[f] or s[f] != sources[f]}
        if diff:
            method.make_config(v).validate()
            per_dataset[name] = diff
    title = method.qualify(f"Recipe {recipe.name}, {cfg.protocol}")
    used = set(sources.values()) | {s for diff in per_dataset.values() for _, s in diff.values()}
    where = {}
    for dataset in (None, *per_dataset):
        where.update(recipe.provenance(cfg.protocol, dataset, method))
    provenance = {source: file for source, file in where.items() if source in used}
    check_template(cfg.template)
    template = cfg.template if method.reads_template else None
    if not method.reads_template:
        template_source = "not read (the method learns its prompt or reads none)"
    elif cfg.template is not None:
        template_source = USER_FLAG
    else:
        template_source = TEMPLATE_DEFAULT + (_PUBLISHED_PROMPTS if method.published_prompts else "")
    user = {source for source, _ in _config_layers(cfg, method)} | {USER_FLAG}
    warnings = recipe_cuts(method, cfg.protocol, values, sources, user)
    return Settings(
        recipe.name, cfg.protocol, values, sources, per_dataset, method.name, title, provenance, template,
        template_source, warnings,
    )  # fmt: skip


def check_template(template: str | None) -> None:
    """Refuse a ``--template`` without exactly one ``{}`` for the class name (or with other braces), in one sentence.

    None is no template (each dataset's own prompt)."""
    if template is None:
        return
    mark = "\x00"
    try:
        ok = "{}" in template and template.format(mark).count(mark) == 1
    except (IndexError, KeyError, ValueError):  # "{} {}", "{name}", "{": not one plain {}
        ok = False
    if not ok:
        raise MmaError(
            f"--template {template!r} must contain '{{}}' once, where the class name goes, and no other braces "
            "(e.g. 'a photo of a {}.')."
        )


def _published(method: type[MethodBase], protocol: str) -> dict[str, tuple[object, str]]:
    """``{field: (value, file)}``: *method*'s published value of every field it reads for *protocol*, and the official
    file of the published run (its protocol's file where it has one); fields without a file are left out."""
    values = {**method.make_config().values(), **method.paper, **method.paper_protocols.get(protocol, {})}
    file = method.paper_file(protocol) or method.paper_file("")
    return {name: (value, file) for name, value in values.items() if file and name in method.field_names()}


def _fraction(value, published) -> str:
    return f"1/{round(published / value)}"


def recipe_cuts(method: type[MethodBase], protocol: str, values: dict, sources: dict, user: set[str]) -> list[str]:
    """One warning line (or none) for *method*: each value of :data:`CUT_FACTORS` that a source in *user* (a flag,
    the ``--config`` file) set at least that factor below the method's published value for *protocol*.

    A value a recipe (``--recipe``) sets is the user's choice of recipe, not a cut; a method without a published
    file for the value (a plugin without ``paper_files``) has nothing to cut."""
    published = _published(method, protocol)
    parts, files = [], []
    for name, factor in CUT_FACTORS.items():
        if name not in values or name not in published or sources.get(name) not in user:
            continue
        value, (paper, file) = values[name], published[name]
        if not (isinstance(value, int | float) and value > 0 and paper / value >= factor):
            continue
        flag = sources[name] == USER_FLAG
        given = f"--{name.replace('_', '-')} {value}" if flag else f"{name} = {value} in the {sources[name]}"
        what = f"{paper} epochs" if name == "epochs" else f"{name} {paper}"
        parts.append(f"{given} is {_fraction(value, paper)} of {method.title or method.name}'s published {what}")
        files += [file] if file not in files else []
    if not parts:
        return []
    return [f"Warning: {' and '.join(parts)} ({'; '.join(files)}); its numbers will not be comparable to the paper's."]


def k_line(
    cfg: TrainSelectedConfig, recipe: Recipe, selection: Selection, device_type: str, method: type[MethodBase]
) -> str:
    """One line: which source gave the depth-indexed *method*'s k, and the candidates it won over."""
    candidates = [(s, v["k"]) for s, v in _layers(cfg, recipe, selection, device_type, None, method) if "k" in v]
    if not candidates:  # both towers' starts given, no k anywhere
        return "k: none" + _towers_part(cfg, recipe, selection, device_type) + "."
    (source, k), losers = candidates[-1], candidates[:-1]
    line = f"k = {k} from the {source}"
    if losers:
        line += "; it wins over " + ", ".join(f"k = {v} ({s})" for s, v in reversed(losers))
    if selection.default_run and selection.default_run[0] != source:
        line += f" (pass --run {DEFAULT_PROBE_RUN} to train at the selected k)"
    return line + _towers_part(cfg, recipe, selection, device_type) + "."


def _towers_part(cfg: TrainSelectedConfig, recipe: Recipe, selection: Selection, device_type: str) -> str:
    """``; per tower: image 3, text 7 (source); MaPLe starts both at k`` when a layer gives the towers their own
    starts (read by the trained methods whose towers may start apart)."""
    methods = [m for m in trained_methods(parse_methods(cfg.methods)) if m.depth_indexed]
    apart = [m for m in methods if m.per_tower]
    if not apart:
        return ""
    layers = _layers(cfg, recipe, selection, device_type, None, apart[0])
    values, sources = settle(_only_used(layers, apart[0]))
    given = {t: values.get(f"k_{t}") for t in TOWERS}
    if all(v is None for v in given.values()):
        return ""
    by_source: dict[str, list[str]] = {}
    for t, v in given.items():
        by_source.setdefault(sources[f"k_{t}"], []).append(f"{t} {v}" if v is not None else f"{t} as k")
    shown = "; ".join(f"{', '.join(towers)} (from the {source})" for source, towers in by_source.items())
    together = [m.title or m.name for m in methods if not m.per_tower]
    rest = f"; {', '.join(together)} start{'s' if len(together) == 1 else ''} both towers at k" if together else ""
    return f"; per tower: {shown}{rest}"


@dataclass
class Resolved:
    """What a train-selected configuration resolves to before any data is read: the model, the recipe, the
    methods, every training value with its source, and the one line saying where k came from."""

    spec: ModelSpec
    recipe: Recipe
    methods: list[type[MethodBase]]  # the trained methods, depth-indexed first (the baseline runs beside them)
    method_settings: dict[str, Settings]  # every trained method's name -> its Settings
    k_line: str  # "" when no depth-indexed method trains
    selection: Selection

    @property
    def model(self) -> str:
        return str(self.spec)

    @property
    def settings(self) -> Settings | None:
        """The first trained method's settings (MMA's when it trains; None: the baseline alone)."""
        return next(iter(self.method_settings.values()), None)

    def settle(self, cfg: TrainSelectedConfig, device_type: str, datasets) -> Resolved:
        """The same, with the values that differ on each of the training *datasets* resolved too."""
        by_method = {
            m.name: settle_method(cfg, self.recipe, self.selection, device_type, m, datasets) for m in self.methods
        }
        return Resolved(self.spec, self.recipe, self.methods, by_method, self.k_line, self.selection)


def resolve_settings(cfg: TrainSelectedConfig, *, device_type: str, datasets=()) -> Resolved:
    """Model, recipe and training values of *cfg* on a *device_type* ("cpu" / "cuda") device, with their sources.

    *datasets*: the training datasets whose per-dataset values (a recipe's ``datasets`` entries) to resolve too.
    Reads the probe selection (``--run``, else ``runs/probe`` when no --k) and the ``--config`` file; each method
    checks the model from its config (no weights are loaded). k precedence, first to last: ``--k``, the selection
    of ``--run``, k in ``--config``, the recipe's protocol default, the default probe run's selection.
    """
    get_protocol(cfg.protocol)
    check_template(cfg.template)
    methods = trained_methods(parse_methods(cfg.methods))
    selection = selection_layers(cfg)
    spec = parse_model_spec(selection.model)
    for method in methods:
        method.check_spec(spec)  # e.g. "MMA needs transformer blocks", before any weights are loaded
    recipe = get_recipe(cfg.recipe, str(spec))
    resolved = Resolved(spec, recipe, methods, {}, "", selection).settle(cfg, device_type, datasets)  # k checked
    depth = next((m for m in methods if m.depth_indexed), None)
    resolved.k_line = k_line(cfg, recipe, selection, device_type, depth) if depth else ""
    return resolved
