"""Job 3: train the Multi-Modal Adapter from the probe-selected block k (and the other methods of ``--method``)
and evaluate a protocol.

Run folder (``--out``)::

    results/<protocol>/<dataset>/seed<S>-k<K>-mma.json   one JSON per (protocol, dataset, seed, k, method)
    results/<protocol>/<dataset>/seed<S>-<method>.json   the other methods (coop, cocoop, clip-adapter, linear-probe)
    results/<protocol>/<dataset>/zeroshot.json           the frozen model, same evaluation code
    checkpoints/<protocol>-<dataset>-seed<S>-k<K>.safetensors   adapter weights + configs (other methods:
                                                                 ...-seed<S>-<method>.safetensors)
    state/<protocol>-<dataset>-seed<S>-k<K>.pt   the training state after the last finished epoch (while training)
    results.csv                                          tidy roll-up of every JSON
    results_summary.csv                                  per dataset and averaged (HM of averages, mean of HMs)
    train-k<K>.json                                      the configuration that ran at k (train-<method>.json: others)
    methods.png / .pdf / .csv                            the methods side by side (when more than one ran)

A result whose JSON exists is not recomputed, and an interrupted training run resumes from its last
finished epoch, so an interrupted job resumes where it stopped and ends with the same numbers. Under
torchrun every rank trains (DDP) and evaluates its shard; rank 0 alone writes, and the function returns
None on the other ranks.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from mma import distributed
from mma.errors import MmaError, one_line
from mma.io import atomic_write, atomic_write_json, read_json

from .outdir import run_folder

__all__ = [
    "TrainSelectedConfig",
    "TrainRun",
    "Resolved",
    "resolve_settings",
    "read_config_file",
    "read_selection",
    "train_selected",
    "summarise_results",
    "summary_table",
    "sweep_k",
]


@dataclass
class TrainSelectedConfig:
    run: Path | None = None
    model: str | None = None
    k: int | None = None
    data: list[str] | None = None  # None: the protocol's default (mma.adapters.protocols.default_data)
    protocol: str = "base2novel"
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    out: Path = Path("runs/train")
    device: str = "auto"
    template: str | None = None
    recipe: str = "auto"  # see mma.adapters.recipes
    train: dict = field(default_factory=dict)  # TrainConfig values the user gave (CLI flags): they win over all
    config: Path | None = None  # a JSON / TOML file of TrainConfig values (below the user's flags)
    checkpoints: bool = True
    progress: bool = True
    strict: bool = False  # a class with fewer than --shots training images is an error, not "use all it has"
    methods: list[str] = field(default_factory=lambda: ["mma"])  # mma.adapters.methods.METHODS; zeroshot always runs


@dataclass
class TrainRun:
    out: Path
    model: str
    k: int
    recipe: str
    results: pd.DataFrame
    summary: pd.DataFrame
    seconds: float
    adjustments: list[str] = field(default_factory=list)  # what the plan changed (fewer shots, smaller batches)
    settings: object = None  # mma.adapters.recipes.Settings: every training value and where it came from
    k_line: str = ""  # which source gave k, and which it overrode
    methods: list[str] = field(default_factory=lambda: ["mma"])
    method_settings: dict = field(default_factory=dict)  # method -> its Settings (the trained methods)


DEFAULT_PROBE_RUN = Path("runs/probe")


def read_selection(run: Path, model: str | None = None) -> dict:
    """The selection record of *model* (or the first model) in ``run/selection.json``."""
    path = Path(run) / "selection.json"
    if not path.is_file():
        raise MmaError(
            f"The run folder {str(run)!r} has no selection.json; run 'mma probe layers --out {str(run)!r}' first, "
            "or pass --k."
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
class _Selection:
    """The model, and the k layers a probe selection contributes (see the precedence in mma.adapters.recipes)."""

    model: str | None
    default_run: tuple[str, dict] | None = None  # the default probe run's k: below the recipe
    run: tuple[str, dict] | None = None  # the k of the probe run the user named (--run): above the config file
    why_none: str = ""  # why the default probe run gives no k (for the error when nothing else does)


def _selection_layers(cfg: TrainSelectedConfig) -> _Selection:
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
            return _Selection(model)
        return _Selection(model, run=(f"probe selection ({path}, rule {sel.get('rule')})", {"k": int(sel["k"])}))
    path = DEFAULT_PROBE_RUN / "selection.json"
    if cfg.k is not None:
        return _Selection(cfg.model)
    if not path.is_file():
        return _Selection(cfg.model, why_none=f"there is no {str(path)!r} ('mma probe layers' writes it)")
    try:
        sel = read_selection(DEFAULT_PROBE_RUN, cfg.model)
    except MmaError as exc:
        return _Selection(cfg.model, why_none=str(exc).rstrip("."))
    model = cfg.model or sel["model"]
    if sel.get("k") is None:
        why = f"{str(path)!r} selected no k for {sel['model']!r} ({sel.get('reason', 'no rule applied')})"
        return _Selection(model, why_none=why)
    source = f"probe selection (default run {path}, rule {sel.get('rule')})"
    return _Selection(model, default_run=(source, {"k": int(sel["k"])}))


def read_config_file(config: Path | None) -> dict:
    """TrainConfig values from a JSON or TOML file (``{}`` without one); one sentence if it cannot be used."""
    if config is None:
        return {}
    config = Path(config)
    if not config.is_file():
        raise MmaError(f"--config {str(config)!r} does not exist.")
    try:
        text = config.read_text(encoding="utf-8")  # a UnicodeDecodeError is a ValueError too
        if config.suffix == ".toml":
            import tomllib

            values = tomllib.loads(text)
        else:
            import json

            values = json.loads(text)
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


USER_FLAG = "user flag"


def _without_auto(values: dict) -> dict:
    """``precision: auto`` means "the default": drop it, so the device default applies."""
    return {k: v for k, v in values.items() if not (k == "precision" and v == "auto")}


def _layers(
    cfg: TrainSelectedConfig, recipe, selection: _Selection, device_type: str, dataset: str | None, method: str = "mma"
) -> list:
    """Every ``(source, values)`` layer of *method*'s training values, lowest precedence first (recipes.py docstring).

    A method other than MMA starts from its own paper's values (``paper default (coop)``) and reads only the
    fields it uses; k (and the probe selection) is MMA's alone.
    """
    from mma.adapters.methods import get_method
    from mma.adapters.recipes import PAPER_DEFAULT, default_precision
    from mma.adapters.train import TrainConfig

    kind = get_method(method)
    paper = {k: v for k, v in asdict(TrainConfig()).items() if k not in ("k", "precision")}
    precision, precision_source = default_precision(device_type)
    if method == "mma":
        layers = [(PAPER_DEFAULT, paper)]
    else:
        layers = [(f"{PAPER_DEFAULT} ({method})", {**paper, **kind.paper})]
    layers.append((precision_source, {"precision": precision}))
    if selection.default_run and method == "mma":
        layers.append(selection.default_run)
    layers += recipe.layers(cfg.protocol, dataset, method)
    config = _without_auto(read_config_file(cfg.config))
    if config:
        layers.append((f"config file ({cfg.config})", config))
    if selection.run and method == "mma":
        layers.append(selection.run)
    user = _without_auto({**cfg.train, **({"k": cfg.k} if cfg.k is not None and method == "mma" else {})})
    if user:
        layers.append((USER_FLAG, user))
    return layers


def _only_used(layers: list, method: str) -> list:
    """The layers cut to the TrainConfig fields *method* reads (an unknown field is still an error)."""
    from mma.adapters.methods import get_method
    from mma.adapters.train import TrainConfig

    known = set(asdict(TrainConfig()))
    for _, values in layers:
        TrainConfig.from_dict({k: v for k, v in values.items() if k not in known} or {})
    uses = set(get_method(method).uses)
    return [(source, {k: v for k, v in values.items() if k in uses}) for source, values in layers]


def _settle(cfg: TrainSelectedConfig, recipe, selection: _Selection, device_type: str, datasets=(), method="mma"):
    """The :class:`~mma.adapters.recipes.Settings` of *method*: shared values, then what differs per training
    dataset."""
    from mma.adapters.recipes import Settings, settle
    from mma.adapters.train import TrainConfig

    values, sources = settle(_only_used(_layers(cfg, recipe, selection, device_type, None, method), method))
    order = list(asdict(TrainConfig()))  # name the values in TrainConfig's field order
    values = dict(sorted(values.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    if "k" not in values and method == "mma":
        why = selection.why_none or "no probe run was named"
        raise MmaError(
            f"No k was given: recipe {recipe.name!r} has no k for --protocol {cfg.protocol} and {why}; pass --k, or "
            "--run PROBE_RUN (a folder with selection.json)."
        )
    _validate_values(values, method)
    per_dataset = {}
    for name in datasets:
        v, s = settle(_only_used(_layers(cfg, recipe, selection, device_type, name, method), method))
        diff = {f: (v[f], s[f]) for f in v if f not in values or v[f] != values[f] or s[f] != sources[f]}
        if diff:
            _validate_values(v, method)
            per_dataset[name] = diff
    return Settings(recipe.name, cfg.protocol, values, sources, per_dataset, method)


def _validate_values(values: dict, method: str) -> None:
    """One sentence for an unknown option or a value out of range (a method's own options checked too)."""
    from mma.adapters.train import TrainConfig

    TrainConfig.from_dict(values).validate()


def k_line(cfg: TrainSelectedConfig, recipe, selection: _Selection, device_type: str) -> str:
    """One line: which source gave k, and the candidates it won over."""
    candidates = [(s, v["k"]) for s, v in _layers(cfg, recipe, selection, device_type, None) if "k" in v]
    (source, k), losers = candidates[-1], candidates[:-1]
    line = f"k = {k} from the {source}"
    if losers:
        line += "; it wins over " + ", ".join(f"k = {v} ({s})" for s, v in reversed(losers))
    if selection.default_run and selection.default_run[0] != source:
        line += f" (pass --run {DEFAULT_PROBE_RUN} to train at the selected k)"
    return line + "."


def _json_path(out: Path, protocol: str, dataset: str, seed: int, k: int | None, method: str = "mma") -> Path:
    """``seed<S>-k<K>-mma.json`` for MMA (one per k), ``seed<S>-<method>.json`` for the methods without a k."""
    name = f"seed{seed}-k{k}-mma.json" if method == "mma" else f"seed{seed}-{method}.json"
    return out / "results" / protocol / dataset / name


def _stem(protocol: str, dataset: str, seed: int, k: int | None, method: str) -> str:
    """Checkpoint and state file stem (MMA's names kept as they were: one per k)."""
    return f"{protocol}-{dataset}-seed{seed}-k{k}" if method == "mma" else f"{protocol}-{dataset}-seed{seed}-{method}"


def _reusable(path: Path, weights: str, train_config: dict) -> bool:
    """A finished result is reused only if the same weights and training config made it.

    Options added to TrainConfig later count with their defaults (the behaviour before they existed).
    """
    from mma.adapters.train import TrainConfig

    if not path.exists():
        return False
    done = read_json(path)
    stored = {**asdict(TrainConfig()), **done.get("train_config", {})}
    return done.get("weights") == weights and stored == train_config


@dataclass
class Resolved:
    """What a train-selected configuration resolves to before any data is read: the model, the recipe, every
    training value with its source, and the one line saying where k came from."""

    model: str
    recipe: object  # mma.adapters.recipes.Recipe
    settings: object  # mma.adapters.recipes.Settings of MMA (else of the first trained method; None: zero-shot only)
    k_line: str  # "" when MMA is not among the methods
    selection: _Selection
    method_settings: dict = field(default_factory=dict)  # every trained method -> its Settings


def resolve_settings(cfg: TrainSelectedConfig, *, device_type: str, datasets=()) -> Resolved:
    """Model, recipe and training values of *cfg* on a *device_type* ("cpu" / "cuda") device, with their sources.

    *datasets*: the training datasets whose per-dataset values (a recipe's ``datasets`` entries) to resolve too.
    Reads the probe selection (``--run``, else ``runs/probe`` when no --k) and the ``--config`` file; checks the
    model's towers from its config (no weights are loaded). k precedence, first to last: ``--k``, the selection
    of ``--run``, k in ``--config``, the recipe's protocol default, the default probe run's selection.
    """
    from mma.adapters.protocols import PROTOCOLS
    from mma.adapters.recipes import get_recipe
    from mma.probe.specs import parse_model_spec
    from mma.probe.towers import check_mma_support

    if cfg.protocol not in PROTOCOLS:
        raise MmaError(f"--protocol {cfg.protocol!r} is not valid (valid: {', '.join(PROTOCOLS)}).")
    methods = trained_methods(cfg)
    selection = _selection_layers(cfg)
    spec = parse_model_spec(selection.model)
    if "mma" in methods:
        check_mma_support(spec.name)  # "MMA needs transformer blocks", before any weights are loaded
    recipe = get_recipe(cfg.recipe, str(spec))
    by_method = {m: _settle(cfg, recipe, selection, device_type, datasets, m) for m in methods}
    line = k_line(cfg, recipe, selection, device_type) if "mma" in methods else ""
    settings = next(iter(by_method.values()), None)
    return Resolved(str(spec), recipe, settings, line, selection, by_method)


def trained_methods(cfg: TrainSelectedConfig) -> list[str]:
    """The trained methods of ``cfg.methods`` (checked; MMA first), without ``zeroshot``, which always runs."""
    from mma.adapters.methods import ZERO_SHOT, parse_methods

    methods = parse_methods(cfg.methods)
    return sorted((m for m in methods if m != ZERO_SHOT), key=lambda m: m != "mma")


def train_selected(cfg: TrainSelectedConfig) -> TrainRun | None:
    """Train and evaluate MMA at the selected k for every task and seed of the protocol (None off rank 0).

    Everything that can be checked before the first training is: the model's towers (from its config,
    before any weights load), the options, the data, k, and each task's shots and batch size (a small
    dataset trains on what it has, said once). A failure removes the run folder again if this call
    created it and nothing was written yet. Every training value is resolved with its source
    (:func:`resolve_settings`, :mod:`mma.adapters.recipes`); the k line and the recipe line say which won.
    """
    from mma.probe.extract import resolve_device
    from mma.probe.specs import parse_model_spec

    start = time.perf_counter()
    requested = resolve_device(cfg.device)
    resolved = resolve_settings(cfg, device_type=requested.type)
    if not cfg.seeds:
        raise MmaError("--seeds is empty; give at least one seed, e.g. --seeds 1,2,3.")
    world, device = distributed.setup(requested)
    with run_folder(cfg.out) as out:
        return _run(cfg, parse_model_spec(resolved.model), resolved, world, device, out, start)


def _training_datasets(protocol: str, datasets: list) -> list[str]:
    """The datasets *protocol* trains on: each one (base2novel, few-shot), or the source (the first)."""
    return [d.name for d in datasets] if protocol in ("base2novel", "few-shot") else [datasets[0].name]


def _load(cfg: TrainSelectedConfig) -> tuple[list, dict]:
    """The datasets of ``--data`` (or the protocol's default) and the data spec that loads each one again."""
    from mma.adapters.protocols import default_data
    from mma.probe.data import dataset_spec, load_datasets

    datasets, specs = [], {}
    for text in cfg.data or default_data(cfg.protocol):
        for d in load_datasets(text, template=cfg.template):
            datasets.append(d)
            specs[d.name] = dataset_spec(d, text)
    return datasets, specs


def _plan(cfg: TrainSelectedConfig, datasets: list, settings, world) -> tuple[dict, list[str], dict[str, str]]:
    """The tasks of every seed, what the plan changed (said once each) and the datasets the protocol leaves out
    (with the reason)."""
    from mma.adapters.protocols import make_tasks, skipped_datasets
    from mma.adapters.train import effective_batch_size

    skipped = skipped_datasets(cfg.protocol, datasets)
    notes = [f"Leaving {name!r} out of {cfg.protocol}: {why}." for name, why in skipped.items()]
    if skipped and len(skipped) == len(datasets):
        raise MmaError(f"Every dataset was left out of {cfg.protocol} ({' '.join(notes)}); give larger datasets.")
    kept = [d for d in datasets if d.name not in skipped]
    groups = [[d] for d in kept] if cfg.protocol in ("base2novel", "few-shot") else [datasets]
    tasks_by_seed: dict[int, list] = {}
    for seed in cfg.seeds:
        tasks_by_seed[seed] = []
        for group in groups:  # each training dataset with its own shots (a recipe may set them per dataset)
            shots = settings.for_dataset(group[0].name)[0]["shots"] if settings is not None else _DEFAULT_SHOTS
            tasks_by_seed[seed] += make_tasks(
                cfg.protocol, group, shots=shots, seed=seed, strict=cfg.strict, notes=notes
            )
    for tasks in tasks_by_seed.values() if settings is not None and "batch_size" in settings.values else ():
        for task in tasks:
            batch_size = settings.for_dataset(task.name)[0]["batch_size"]
            if batch_size % world.size:
                raise MmaError(
                    f"--batch-size {batch_size} (for {task.name!r}) is the global batch; it must divide by the "
                    f"{world.size} torchrun processes."
                )
            batch = effective_batch_size(batch_size, len(task.train), world.size)
            note = (
                f"Dataset {task.name!r} has {len(task.train)} training images for this task, fewer than "
                f"--batch-size {batch_size}: its batches hold {batch}."
            )
            if batch < batch_size and note not in notes:
                notes.append(note)
    return tasks_by_seed, notes, skipped


_DEFAULT_SHOTS = 16  # the zero-shot model alone still draws its (unused) shots: evaluation is the same


def _train_config(settings, dataset: str):
    """The TrainConfig and the value sources for training on *dataset*."""
    from mma.adapters.train import TrainConfig

    values, sources = settings.for_dataset(dataset)
    return TrainConfig.from_dict(values), sources


def _run(cfg, spec, resolved: Resolved, world, device, out: Path, start) -> TrainRun | None:
    """Load, plan what is left, evaluate the zero-shot model, train and evaluate every method, summarise."""
    from tqdm.auto import tqdm

    from mma.probe.specs import load_model

    show = cfg.progress and world.main
    datasets, data_specs = _load(cfg)
    recipe, k_text = resolved.recipe, resolved.k_line
    methods = trained_methods(cfg)
    training = _training_datasets(cfg.protocol, datasets)
    by_method = {m: _settle(cfg, recipe, resolved.selection, device.type, training, m) for m in methods}
    adjustments: list[str] = []
    plans = {}
    for m in methods or [None]:
        tasks, notes, skipped = _plan(cfg, datasets, by_method.get(m), world)
        plans[m] = tasks
        adjustments += [n for n in notes if n not in adjustments]
    tasks_by_seed = next(iter(plans.values()))  # the zero-shot model's tasks (its evaluation splits)
    k = int(by_method["mma"].values["k"]) if "mma" in by_method else None
    if show:
        for note in adjustments:
            tqdm.write(note)
    loaded = load_model(spec, device=str(device))
    if k is not None:
        _check_k(loaded, spec, k)
    if show:  # where k and every other training value came from
        if k_text:
            tqdm.write(k_text)
        for settings in by_method.values():
            tqdm.write(settings.line())
    for m, settings in by_method.items():
        if world.main:
            record = _record(cfg, data_specs, skipped, spec, recipe, settings, k_text, out, world, adjustments, m)
            atomic_write_json(out / (f"train-k{k}.json" if m == "mma" else f"train-{m}.json"), record)
    # rank 0 decides what is left to do, so every rank runs the same trainings and evaluations
    zero_shot_todo, runs_todo = distributed.broadcast(_todo(out, cfg.protocol, plans, k, loaded, by_method))
    if world.main:
        for name, why in skipped.items():
            atomic_write_json(
                out / "results" / cfg.protocol / name / "skipped.json",
                {"protocol": cfg.protocol, "dataset": name, "reason": why},
            )
    total = sum(len(t) for tasks in plans.values() for t in tasks.values()) if methods else 0
    desc = f"train MMA k={k}" if methods == ["mma"] else f"train {', '.join(methods) or 'nothing'}"
    with tqdm(total=total, desc=desc, unit="run", disable=not show) as bar:
        if total > len(runs_todo):
            bar.update(total - len(runs_todo))
            bar.write(f"resuming: {total - len(runs_todo)} of {total} runs already done.")
        _zero_shot(cfg, loaded, tasks_by_seed, zero_shot_todo, by_method, spec, device, out, world, bar)
        for method, seed, ti in runs_todo:
            task = plans[method][seed][ti]
            bar.set_postfix_str(f"{method} {task.name} seed {seed}")
            _train_one(cfg, loaded, method, task, seed, k, by_method[method], spec, recipe, data_specs, device, out)
            bar.update(1)
    distributed.barrier()
    if not world.main:
        return None
    if (out / "state").is_dir() and not any((out / "state").iterdir()):
        (out / "state").rmdir()
    results, summary = summarise_results(out)
    if len(set(results["method"])) > 1 and methods:
        _method_figure(out, results, cfg.protocol)
    return TrainRun(
        out,
        str(spec),
        k,
        recipe.name,
        results,
        summary,
        time.perf_counter() - start,
        adjustments,
        by_method.get("mma", next(iter(by_method.values()), None)),
        k_text,
        ["zeroshot", *methods],
        by_method,
    )


def _check_k(loaded, spec, k: int) -> None:
    """MMA's towers must be transformers and k within the shallower tower's blocks."""
    from mma.probe.layers import layer_maps

    maps = layer_maps(loaded.model)
    convolutional = [t for t, m in maps.items() if not m.transformer]
    if convolutional:  # an hf-hub: / local-dir: model whose config could not be read before loading
        raise MmaError(
            f"MMA needs transformer blocks, but the {convolutional[0]} tower of {str(spec)!r} is a convolutional "
            f"network ({maps[convolutional[0]].family}); choose a ViT-family model."
        )
    depth = min(m.depth for m in maps.values())
    if not 1 <= k <= depth:
        raise MmaError(f"k={k} is out of range for {str(spec)!r} (valid: 1..{depth}).")


def _record(cfg, data_specs, skipped, spec, recipe, settings, k_text, out, world, adjustments, method) -> dict:
    """``train-k<K>.json`` (MMA) or ``train-<method>.json``: the configuration that ran, every value's source."""
    record = {
        **asdict(cfg),
        "method": method,
        "data": cfg.data or list(dict.fromkeys(data_specs.values())),
        "skipped": skipped,
        "model": str(spec),
        "recipe": recipe.name,
        "recipe_line": settings.line(),
        "train_config": asdict(_train_config(settings, "")[0]),  # the values shared by every training dataset
        "train_sources": settings.sources,
        "settings": settings.record(),  # with the values that differ per training dataset, and their sources
        "out": str(out),
        "processes": world.size,
        "adjustments": adjustments,
    }
    if method == "mma":
        record.update(k=int(settings.values["k"]), k_source=settings.sources["k"], k_line=k_text)
    return record


def _zero_shot(cfg, loaded, tasks_by_seed, todo, by_method, spec, device, out, world, bar) -> None:
    """The frozen model, once per task: it has no seed."""
    from mma.adapters.protocols import evaluate_task, task_metrics

    for ti in todo:
        task = tasks_by_seed[cfg.seeds[0]][ti]
        bar.set_postfix_str(f"zero-shot {task.name}")
        settings = by_method.get("mma", next(iter(by_method.values()), None))
        workers = _train_config(settings, task.name)[0].workers if settings is not None else 0
        metrics = task_metrics(task, evaluate_task(loaded, task, device, cfg.template, workers=workers))
        if world.main:
            atomic_write_json(
                out / "results" / cfg.protocol / task.name / "zeroshot.json",
                {
                    "protocol": cfg.protocol,
                    "dataset": task.name,
                    "seed": None,
                    "k": None,
                    "method": "zeroshot",
                    "model": str(spec),
                    "weights": loaded.weights_id,
                    "metrics": metrics,
                },
            )


def _train_one(cfg, loaded, method, task, seed, k, settings, spec, recipe, data_specs, device, out) -> None:
    """Train *method* on one task and seed, evaluate it, write its checkpoint and result JSON (rank 0)."""
    from mma.adapters.checkpoint import save_adapter
    from mma.adapters.protocols import evaluate_task, task_metrics
    from mma.adapters.train import fit_method

    world = distributed.world()
    stem = _stem(cfg.protocol, task.name, seed, k, method)
    state = out / "state" / f"{stem}.pt"
    train_cfg, train_sources = _train_config(settings, task.name)
    result = fit_method(
        loaded,
        method,
        task.dataset,
        task.train,
        task.classnames,
        train_cfg,
        seed=seed,
        device=device,
        template=cfg.template,
        state_path=state,
        val=task.val,
    )
    try:
        accs = evaluate_task(loaded, task, device, cfg.template, workers=train_cfg.workers, method=result.adapter)
        metrics = task_metrics(task, accs)
    finally:
        result.adapter.detach()
    if not world.main:
        return
    meta = {
        "protocol": cfg.protocol,
        "dataset": task.name,
        "seed": seed,
        "k": k if method == "mma" else None,
        "method": method,
        "model": str(spec),
        "weights": loaded.weights_id,
        "classnames": task.classnames,
        "recipe": recipe.name,
        "train_config": asdict(train_cfg),
        "train_sources": train_sources,
        "template": cfg.template or task.dataset.template,
        # the data specs that load this task's datasets again (mma evaluate --checkpoint)
        "data": list(dict.fromkeys(data_specs[e.dataset.name] for e in task.evals))
        if cfg.protocol in ("cross-dataset", "domain-gen")
        else [data_specs[task.name]],
    }
    ckpt = out / "checkpoints" / f"{stem}.safetensors" if cfg.checkpoints else None
    if ckpt is not None:
        save_adapter(result.adapter, ckpt, meta)
    train = {
        "steps": result.steps,
        "seconds": round(result.seconds, 2),
        "final_loss": result.final_loss,
        "trainable_parameters": result.adapter.num_parameters(),
        "processes": world.size,
        "batch_size": result.batch_size,
    }
    for name in ("C", "val_accuracy"):  # what the linear probe chose
        if isinstance(getattr(result.adapter, name, None), float):
            train[name] = getattr(result.adapter, name)
    atomic_write_json(
        _json_path(out, cfg.protocol, task.name, seed, k, method),
        {**meta, "metrics": metrics, "train": train, "checkpoint": str(ckpt) if ckpt else None},
    )
    state.unlink(missing_ok=True)  # the result is safe; the epoch state is no longer needed


def _zero_shot_done(folder: Path, weights: str) -> bool:
    """The zero-shot result in *folder* exists and was computed with these weights (another model's is redone)."""
    path = folder / "zeroshot.json"
    return path.is_file() and read_json(path).get("weights") == weights


def _todo(out: Path, protocol: str, plans: dict, k, loaded, by_method: dict) -> tuple[list, list]:
    """Task indices still lacking a zero-shot result, and (method, seed, task index) still lacking a result."""
    first = next(iter(next(iter(plans.values())).values()))
    zero_shot = [
        i for i, t in enumerate(first) if not _zero_shot_done(out / "results" / protocol / t.name, loaded.weights_id)
    ]
    runs = [
        (method, seed, i)
        for method, tasks_by_seed in plans.items()
        if method is not None
        for seed, tasks in tasks_by_seed.items()
        for i, t in enumerate(tasks)
        if not _reusable(
            _json_path(out, protocol, t.name, seed, k, method),
            loaded.weights_id,
            asdict(_train_config(by_method[method], t.name)[0]),
        )
    ]
    return zero_shot, runs


def _load_results(out: Path) -> pd.DataFrame:
    rows = []
    for path in sorted((Path(out) / "results").rglob("*.json")):
        if path.name == "skipped.json":
            continue
        r = read_json(path)
        for metric, value in r["metrics"].items():
            rows.append(
                {
                    "protocol": r["protocol"],
                    "dataset": r["dataset"],
                    "seed": r["seed"],
                    "k": r["k"],
                    "method": r["method"],
                    "metric": metric,
                    "value": value,
                }
            )
    if not rows:
        raise MmaError(f"No result JSON under {str(Path(out) / 'results')!r}; run 'mma train-selected' first.")
    results = pd.DataFrame(rows)
    # whole numbers, blank for the zero-shot rows (which have neither)
    return results.astype({"seed": "Int64", "k": "Int64"})


METRIC_ORDER = ("base", "novel", "hm", "mean_of_seed_hms", "accuracy", "source", "target_average", "mean_of_hms")


def _hm_of_seed_means(per_dataset: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, ``hm`` becomes the HM of the seed-averaged base and novel (the papers' convention); the mean
    of the per-seed HMs stays as ``mean_of_seed_hms``. Both keep the spread (std) of the per-seed HMs."""
    keys = ["protocol", "method", "k", "dataset"]
    out = per_dataset.copy()
    extra = []
    for _, g in out.groupby(keys, dropna=False, sort=False):
        means = dict(zip(g["metric"], g["mean"]))
        if not {"base", "novel", "hm"} <= set(means):
            continue
        row = g.index[g["metric"] == "hm"][0]
        seed_hms = out.loc[row].copy()
        seed_hms["metric"] = "mean_of_seed_hms"
        extra.append(seed_hms)
        b, n = means["base"], means["novel"]
        out.loc[row, "mean"] = 0.0 if b + n == 0 else 2 * b * n / (b + n)
    if not extra:
        return out
    return pd.concat([out, pd.DataFrame(extra)], ignore_index=True)


def summarise_results(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Roll every result JSON into results.csv and results_summary.csv (written atomically).

    Summary rows: per (protocol, method, k, dataset, metric) the mean, std and count over seeds, then per
    (protocol, method, k) the averages over datasets (``dataset == "average"``). Base-to-novel follows the papers:
    a dataset's ``hm`` is the HM of its seed-averaged base and novel (its std: the spread of the per-seed HMs;
    ``mean_of_seed_hms`` is the mean of the per-seed HMs, for comparison), the average's ``hm`` is the HM of the
    averaged base and novel, and ``mean_of_hms`` the mean of the per-dataset HMs. For every row
    of a trained method ``vs_zeroshot``: its mean minus the zero-shot model's on the same dataset and metric
    (blank where the zero-shot model has no such number).
    """
    results = _load_results(out)
    group = ["protocol", "method", "k", "dataset", "metric"]
    per_dataset = results.groupby(group, dropna=False)["value"].agg(mean="mean", std="std", n="count").reset_index()
    per_dataset["std"] = per_dataset["std"].fillna(0.0)
    per_dataset = _hm_of_seed_means(per_dataset)
    summary = [per_dataset]
    for (protocol, method, k), d in per_dataset.groupby(["protocol", "method", "k"], dropna=False):
        avg = d.groupby("metric")["mean"].mean()
        rows = [{"metric": m, "mean": v} for m, v in avg.items() if m != "hm"]
        if {"base", "novel"} <= set(avg.index):
            b, n = avg["base"], avg["novel"]
            rows.append({"metric": "hm", "mean": 0.0 if b + n == 0 else 2 * b * n / (b + n)})
            rows.append({"metric": "mean_of_hms", "mean": avg.get("hm", float("nan"))})
        extra = pd.DataFrame(rows)
        extra[["protocol", "method", "k", "dataset", "std", "n"]] = [
            protocol,
            method,
            k,
            "average",
            float("nan"),
            d["dataset"].nunique(),
        ]
        summary.append(extra[per_dataset.columns])
    skipped = [read_json(p) for p in sorted((Path(out) / "results").rglob("skipped.json"))]
    if skipped:  # marked in the summary: a dataset the protocol left out, and why
        summary.append(
            pd.DataFrame(
                [
                    {"protocol": r["protocol"], "method": "-", "k": None, "dataset": r["dataset"], "metric": "skipped"}
                    | {"mean": float("nan"), "std": float("nan"), "n": 0, "note": r["reason"]}
                    for r in skipped
                ]
            )
        )
    summary = pd.concat(summary, ignore_index=True)
    summary["k"] = summary["k"].astype("Int64")
    zero = summary[summary["method"] == "zeroshot"].set_index(["protocol", "dataset", "metric"])["mean"]
    keys = pd.MultiIndex.from_frame(summary[["protocol", "dataset", "metric"]])
    baseline = zero.reindex(keys).to_numpy() if len(zero) else float("nan")
    summary["vs_zeroshot"] = (summary["mean"] - baseline).where(summary["method"] != "zeroshot")
    atomic_write(Path(out) / "results.csv", lambda p: results.to_csv(p, index=False))
    atomic_write(Path(out) / "results_summary.csv", lambda p: summary.to_csv(p, index=False))
    return results, summary


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as one printable table: a row per (protocol, method, k, dataset), metric columns in the
    order base, novel, hm (then the other metrics), each "mean ± std" over seeds ("mean" alone for one seed),
    a blank where a metric does not apply, and the headline metric's difference to the zero-shot model.
    """
    metrics = list(dict.fromkeys(summary["metric"]))
    ordered = [m for m in METRIC_ORDER if m in metrics]
    ordered += sorted(m for m in metrics if m not in METRIC_ORDER)
    headline = next((m for m in ("hm", "accuracy", "target_average") if m in metrics), None)
    from mma.adapters.methods import METHOD_NAMES

    rows = []
    keys = ["protocol", "method", "k", "dataset"]
    order = {m: i for i, m in enumerate(METHOD_NAMES)}
    groups = summary.groupby(keys, dropna=False, sort=False)
    for (protocol, method, k, dataset), g in sorted(
        groups,
        key=lambda kv: (kv[0][0], order.get(kv[0][1], len(order)), kv[0][1], str(kv[0][2]), kv[0][3] == "average"),
    ):
        by_metric = g.set_index("metric")
        row = {"protocol": protocol, "method": method, "k": "-" if pd.isna(k) else str(int(k)), "dataset": dataset}
        for m in ordered:
            if m not in by_metric.index:
                row[m] = ""
                continue
            r = by_metric.loc[m]
            one = pd.isna(r["std"]) or int(r["n"]) <= 1 or dataset == "average"
            row[m] = f"{r['mean']:.1f}" if one else f"{r['mean']:.1f} ± {r['std']:.1f}"
        if headline is not None:
            delta = by_metric["vs_zeroshot"].get(headline) if headline in by_metric.index else None
            row[f"{headline} vs zero-shot"] = "" if delta is None or pd.isna(delta) else f"{delta:+.1f}"
        rows.append(row)
    table = pd.DataFrame(rows)
    if table["protocol"].nunique() == 1:
        table = table.drop(columns="protocol")
    return table


#: the averaged metrics each protocol's side-by-side table shows
_SIDE_BY_SIDE = {
    "base2novel": ("base", "novel", "hm"),
    "few-shot": ("accuracy",),
    "cross-dataset": ("source", "target_average"),
    "domain-gen": ("source", "target_average"),
}


def method_averages(results: pd.DataFrame) -> pd.DataFrame:
    """Per (protocol, method, k, seed): each metric averaged over the datasets, and base-to-novel's HM of those.

    Tidy: columns protocol, method, k, seed, metric, value (the zero-shot model: seed blank). A method that
    cannot name novel classes (the linear probe) has base only.
    """
    keep = results[~results["metric"].str.startswith("target:") & (results["metric"] != "hm")]
    keys = ["protocol", "method", "k", "seed"]
    rows = []
    for key, g in keep.groupby(keys, dropna=False, sort=False):
        means = g.groupby("metric")["value"].mean()
        if {"base", "novel"} <= set(means.index):
            b, n = means["base"], means["novel"]
            means["hm"] = 0.0 if b + n == 0 else 2 * b * n / (b + n)
        rows += [dict(zip(keys, key), metric=m, value=float(v)) for m, v in means.items()]
    tidy = pd.DataFrame(rows, columns=[*keys, "metric", "value"])
    return tidy.astype({"seed": "Int64", "k": "Int64"})


def methods_table(results: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per protocol, one row per method: the dataset-averaged metrics, "mean ± std" over seeds ("n/a" where a
    method cannot name the classes), and the headline metric's difference to the zero-shot model.

    Base-to-novel's HM is the HM of the seed-averaged base and novel (the papers' convention); its std is the
    spread of the per-seed HMs.
    """
    from mma.adapters.methods import METHOD_NAMES

    order = {m: i for i, m in enumerate(METHOD_NAMES)}
    avg = method_averages(results)
    tables = {}
    for protocol, p in avg.groupby("protocol", sort=True):
        metrics = [m for m in _SIDE_BY_SIDE.get(protocol, sorted(set(p["metric"]))) if m in set(p["metric"])]
        headline = metrics[-1] if metrics else None
        means: dict = {}
        rows = []
        groups = sorted(p.groupby(["method", "k"], dropna=False), key=lambda kv: order.get(kv[0][0], len(order)))
        for (method, k), g in groups:
            label = method if pd.isna(k) else f"{method} (k={int(k)})"
            stats = g.groupby("metric")["value"].agg(["mean", "std", "count"])
            if {"base", "novel"} <= set(stats.index):
                b, n = stats.loc["base", "mean"], stats.loc["novel", "mean"]
                stats.loc["hm", "mean"] = 0.0 if b + n == 0 else 2 * b * n / (b + n)
            row = {"method": label, "seeds": int(stats["count"].max()) if g["seed"].notna().any() else "-"}
            for m in metrics:
                if m not in stats.index:
                    row[m] = "n/a"
                    continue
                mean, std, count = stats.loc[m, "mean"], stats.loc[m, "std"], stats.loc[m, "count"]
                row[m] = f"{mean:.1f}" if count <= 1 or pd.isna(std) else f"{mean:.1f} ± {std:.1f}"
                means[(method, m)] = mean
            rows.append(row)
        if headline is not None and (ZERO_SHOT_NAME, headline) in means:
            base = means[(ZERO_SHOT_NAME, headline)]
            for row, ((method, _k), _g) in zip(rows, groups):
                value = means.get((method, headline))
                row[f"{headline} vs zero-shot"] = (
                    "" if value is None or method == ZERO_SHOT_NAME else f"{value - base:+.1f}"
                )
        tables[protocol] = pd.DataFrame(rows)
    return tables


ZERO_SHOT_NAME = "zeroshot"


def _method_figure(out: Path, results: pd.DataFrame, protocol: str) -> None:
    """``methods.png`` / ``.pdf`` / ``.csv``: every method's dataset-averaged metrics side by side (mean, std)."""
    from mma.adapters.methods import METHOD_NAMES
    from mma.analysis.plots import plot_methods

    avg = method_averages(results[results["protocol"] == protocol])
    metrics = [m for m in _SIDE_BY_SIDE.get(protocol, ()) if m in set(avg["metric"])]
    if metrics:
        data = avg[avg["metric"].isin(metrics)]
        plot_methods(data, Path(out) / "methods", metrics=metrics, title=protocol, order=list(METHOD_NAMES))


def sweep_k(cfg: TrainSelectedConfig, ks: list[int] | None = None) -> dict | None:
    """Train and evaluate at every k (or *ks*), plot base / novel / HM against k, compare with the selected k.

    None off rank 0 under torchrun.
    """
    from mma.analysis.plots import plot_k_sweep
    from mma.probe.layers import layer_maps
    from mma.probe.specs import load_model, parse_model_spec

    if cfg.protocol != "base2novel":
        raise MmaError("sweep-k plots base / novel / HM, so it runs --protocol base2novel only.")
    from mma.probe.towers import check_mma_support

    # the selected k and every rule's k, to say which rule would have chosen best; a given probe run must have a
    # selection, the default one may be missing
    selection = _selection_layers(TrainSelectedConfig(run=cfg.run, model=cfg.model))
    model_spec, selected, rules = selection.model, None, {}
    chosen = selection.run or selection.default_run
    if chosen is not None:
        selected = chosen[1]["k"]
        rules = read_selection(cfg.run or DEFAULT_PROBE_RUN, model_spec).get("rules", {})
    check_mma_support(parse_model_spec(model_spec).name)  # before any weights are loaded
    if ks is None:
        depth = min(m.depth for m in layer_maps(load_model(parse_model_spec(model_spec)).model).values())
        ks = list(range(1, depth + 1))
    runs = []
    methods = ["mma", *(m for m in trained_methods(cfg) if m != "mma")]  # the others train once, at the first k
    for k in ks:
        one = {**asdict(cfg), "k": k, "model": model_spec, "run": None, "methods": methods}
        runs.append(train_selected(TrainSelectedConfig(**one)))
    if not distributed.world().main:
        return None
    results = runs[-1].results
    mma_rows = results[(results["method"] == "mma") & results["k"].isin(ks)]
    per_seed = (
        mma_rows[mma_rows["metric"].isin(["base", "novel"])]
        .groupby(["k", "seed", "metric"])["value"]
        .mean()
        .unstack("metric")
        .reset_index()
    )
    per_seed["hm"] = 2 * per_seed["base"] * per_seed["novel"] / (per_seed["base"] + per_seed["novel"])
    tidy = per_seed.melt(id_vars=["k", "seed"], value_vars=["base", "novel", "hm"], var_name="metric")
    zs = results[(results["method"] == "zeroshot") & results["metric"].isin(["base", "novel"])]
    zs_avg = zs.groupby("metric")["value"].mean()
    baseline = None
    if {"base", "novel"} <= set(zs_avg.index):
        b, n = zs_avg["base"], zs_avg["novel"]
        baseline = {"base": b, "novel": n, "hm": 2 * b * n / (b + n)}
    others = {}
    for method, g in method_averages(results[~results["method"].isin(["mma", "zeroshot"])]).groupby("method"):
        others[method] = g.groupby("metric")["value"].mean().to_dict()
        if {"base", "novel"} <= set(others[method]):  # the HM of the seed-averaged base and novel
            b, n = others[method]["base"], others[method]["novel"]
            others[method]["hm"] = 2 * b * n / (b + n) if b + n else 0.0
    plot_k_sweep(
        tidy,
        Path(cfg.out) / "k_sweep",
        selected_k=selected,
        baseline=baseline,
        title=f"{model_spec or 'mma-tiny'}: MMA base-to-novel vs first adapted block k",
        others=others or None,
    )
    hm = tidy[tidy["metric"] == "hm"].groupby("k")["value"].mean()
    best_k = int(hm.idxmax())
    record = {
        "ks": ks,
        "hm": {int(k): float(v) for k, v in hm.items()},
        "best_k": best_k,
        "selected_k": selected,
        "selected_over_best": (float(hm[selected] / hm[best_k]) if selected in hm.index else None),
        "selected_below_best": (float(hm[best_k] - hm[selected]) if selected in hm.index else None),
        "rules": {
            r: {"k": v["k"], "hm": float(hm[v["k"]]), "below_best": float(hm[best_k] - hm[v["k"]])}
            for r, v in rules.items()
            if v["k"] in hm.index
        },
        "zero_shot": {m: float(v) for m, v in baseline.items()} if baseline else None,
        "methods": {m: {k: float(v) for k, v in vals.items()} for m, vals in others.items()},
    }
    atomic_write_json(Path(cfg.out) / "k_sweep.json", record)
    return record
