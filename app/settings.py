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

A table named ``search`` is a tuning record (``mma tune`` writes ``recipe.json`` as the chosen values in the
method's table beside its ``search`` record) and sets nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from mma.adapters.config import COMMON_FIELDS
from mma.adapters.method_base import MethodBase
from mma.adapters.methods import DEFAULT, parse_methods, registry, trained_methods
from mma.adapters.protocols import get_protocol
from mma.adapters.recipes import PAPER_DEFAULT, Recipe, Settings, default_precision, get_recipe, settle
from mma.errors import MmaError, one_line
from mma.io import read_json
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
]

DEFAULT_PROBE_RUN = Path("runs/probe")
SEARCH_RECORD = "search"  # the table of a --config file that records a tuning search (mma tune's recipe.json)
USER_FLAG = "user flag"


@dataclass
class TrainSelectedConfig:
    run: Path | None = None
    model: str | None = None
    k: int | None = None
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
        return Selection(model, run=(f"probe selection ({path}, rule {sel.get('rule')})", {"k": int(sel["k"])}))
    path = DEFAULT_PROBE_RUN / "selection.json"
    if cfg.k is not None:
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
    return Selection(model, default_run=(source, {"k": int(sel["k"])}))


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


def _config_values(cfg: TrainSelectedConfig, method: type[MethodBase]) -> dict:
    """The ``--config`` values for *method*: the flat ones, then its own table (other methods' tables are theirs)."""
    values = read_config_file(cfg.config)
    values = {name: v for name, v in values.items() if name != SEARCH_RECORD}
    tables = {name: v for name, v in values.items() if isinstance(v, dict)}
    unknown = sorted(set(tables) - set(registry()))
    if unknown:
        raise MmaError(
            f"--config {str(cfg.config)!r} has a table [{unknown[0]}], which is no method (valid tables: "
            f"{', '.join(registry())})."
        )
    flat = {name: v for name, v in values.items() if name not in tables}
    return {**flat, **tables.get(method.name, {})}


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
    paper = {k: v for k, v in method.make_config().values().items() if k not in ("k", "precision")}
    precision, precision_source = default_precision(device_type)
    depth = method.depth_indexed
    layers = [(method.qualify(PAPER_DEFAULT), {**paper, **method.paper}), (precision_source, {"precision": precision})]
    if selection.default_run and depth:
        layers.append(selection.default_run)
    layers += recipe.layers(cfg.protocol, dataset, method)
    config = _without_auto(_config_values(cfg, method))
    if config:
        layers.append((f"config file ({cfg.config})", config))
    if selection.run and depth:
        layers.append(selection.run)
    user = _without_auto({**cfg.train, **({"k": cfg.k} if cfg.k is not None and depth else {})})
    if user:
        layers.append((USER_FLAG, user))
    return layers


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
    return Settings(recipe.name, cfg.protocol, values, sources, per_dataset, method.name, title, provenance)


def k_line(
    cfg: TrainSelectedConfig, recipe: Recipe, selection: Selection, device_type: str, method: type[MethodBase]
) -> str:
    """One line: which source gave the depth-indexed *method*'s k, and the candidates it won over."""
    candidates = [(s, v["k"]) for s, v in _layers(cfg, recipe, selection, device_type, None, method) if "k" in v]
    (source, k), losers = candidates[-1], candidates[:-1]
    line = f"k = {k} from the {source}"
    if losers:
        line += "; it wins over " + ", ".join(f"k = {v} ({s})" for s, v in reversed(losers))
    if selection.default_run and selection.default_run[0] != source:
        line += f" (pass --run {DEFAULT_PROBE_RUN} to train at the selected k)"
    return line + "."


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
