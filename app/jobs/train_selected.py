"""Job 3: train the Multi-Modal Adapter from the probe-selected block k (and the other methods of ``--method``)
and evaluate a protocol.

Run folder (``--out``)::

    results/<protocol>/<dataset>/seed<S>-k<K>-mma.json   one JSON per (protocol, dataset, seed, k, method)
    results/<protocol>/<dataset>/seed<S>-<method>.json   the methods without a depth (coop, cocoop, clip-adapter, ...)
    results/<protocol>/<dataset>/zeroshot.json           the frozen model, same evaluation code
    checkpoints/<protocol>-<dataset>-seed<S>-k<K>.safetensors   adapter weights + configs (other methods:
                                                                 ...-seed<S>-<method>.safetensors)
    state/<protocol>-<dataset>-seed<S>-k<K>.pt   the training state after the last finished epoch (while training)
    cache/<dataset>-<key>/                               frozen image inputs, computed once per image and shared by
                                                         every method, seed and k (mma.adapters.frozen; safe to delete)
    cache/trained/<key>.safetensors                      every finished training, reused by an identical one (another
                                                         protocol of a reproduce run; safe to delete)
    results.csv                                          tidy roll-up of every JSON
    results_summary.csv                                  per dataset and averaged (HM of averages, mean of HMs)
    train-k<K>.json                                      the configuration that ran at k (train-<method>.json: others)
    results/<protocol>/<dataset>/<run>.history.csv       per epoch: loss, lr, seconds (the result JSON's train.history;
                                                         <run> as the JSON's name; none for the linear probe)
    logs/<protocol>/<dataset>/<run>/                     --log tensorboard / wandb: one run per trained run
                                                         (mma.app.training_logs; tensorboard --logdir <out>/logs)
    methods.png / .pdf / .csv                            the methods side by side (when more than one ran)

Each method names its own files (:meth:`~mma.adapters.method_base.MethodBase.run_key` and friends). A result
whose JSON exists is not recomputed, and an interrupted training run resumes from its last finished epoch, so an
interrupted job resumes where it stopped and ends with the same numbers. Under torchrun every rank trains (DDP)
and evaluates its shard; rank 0 alone writes, and the function returns None on the other ranks.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from mma import distributed
from mma.adapters.checkpoint import load_adapter, save_adapter
from mma.adapters.config import TrainConfig
from mma.adapters.depth import depth_key
from mma.adapters.method_base import MethodBase, TrainResult
from mma.adapters.methods import BASELINE, get_method
from mma.adapters.protocols import Protocol, Task, evaluate_task, get_protocol, make_tasks, task_metrics
from mma.adapters.recipes import Settings
from mma.adapters.train import effective_batch_size, fit_method, training_key
from mma.analysis.plots import depth_text
from mma.app.results import beside_the_default, method_figure, methods_table, summarise_results, summary_table
from mma.app.settings import (
    Resolved,
    TrainSelectedConfig,
    read_config_file,
    read_selection,
    resolve_settings,
)
from mma.app.training_logs import check_loggers, history_path, log_run, write_history
from mma.errors import MmaError
from mma.io import atomic_write_json, read_json
from mma.probe.data import dataset_spec, load_datasets
from mma.probe.data.reading import ReadReport, unreadable_line
from mma.probe.extract import resolve_device
from mma.probe.layers import TOWERS, layer_maps
from mma.probe.specs import LoadedModel, load_model
from mma.seeding import check_seeds

from .outdir import run_folder

__all__ = [
    "TrainSelectedConfig",
    "TrainRun",
    "RunContext",
    "Resolved",
    "resolve_settings",
    "read_config_file",
    "read_selection",
    "train_selected",
    "depth_of",
    "summarise_results",
    "summary_table",
    "methods_table",
    "beside_the_default",
]


@dataclass
class TrainRun:
    out: Path
    model: str
    k: int | None  # the depth-indexed method's k (None when none trained)
    recipe: str
    results: pd.DataFrame
    summary: pd.DataFrame
    seconds: float
    adjustments: list[str] = field(default_factory=list)  # what the plan changed (fewer shots, smaller batches)
    settings: Settings | None = None  # the first trained method's values and where each came from
    k_line: str = ""  # which source gave k, and which it overrode
    methods: list[str] = field(default_factory=lambda: ["mma"])
    method_settings: dict = field(default_factory=dict)  # method -> its Settings (the trained methods)
    datasets: list[str] = field(default_factory=list)  # the datasets this run trained and evaluated
    depth: str = ""  # the depth-indexed method's depth as tables print it ("4", "image 3, text 7"; "" without one)


@dataclass
class RunContext:
    """What every step of one run reads: its settings, data and model, and where and how it runs."""

    cfg: TrainSelectedConfig
    resolved: Resolved  # settled on the training datasets
    protocol: Protocol
    world: distributed.World
    device: torch.device
    out: Path
    datasets: list
    data_specs: dict[str, str]  # dataset -> the data spec that loads it again
    loaded: LoadedModel | None = None
    said: set[str] = field(default_factory=set)  # the lines said once (unreadable images of a dataset)

    @property
    def show(self) -> bool:
        return self.cfg.progress and self.world.main

    def settings(self, method: type[MethodBase]) -> Settings | None:
        return self.resolved.method_settings.get(method.name)

    def train_config(self, method: type[MethodBase], dataset: str) -> tuple[TrainConfig, dict]:
        """*method*'s configuration for training on *dataset*, and each value's source."""
        values, sources = self.settings(method).for_dataset(dataset)
        return method.make_config(values), sources

    def k(self, method: type[MethodBase]) -> int | None:
        """*method*'s shared k (None for a method without a depth)."""
        return int(self.settings(method).values["k"]) if method.depth_indexed else None

    def depth(self, method: type[MethodBase]) -> str | None:
        """*method*'s depth as its files name it (``k5``, ``ki3-kt7``; None for a method without a depth)."""
        return depth_key(self.settings(method).values) if method.depth_indexed else None

    @property
    def cache_dir(self) -> Path:
        """Frozen inputs and finished trainings, shared by every method, seed and k (and protocol, when given)."""
        return Path(self.cfg.cache_dir) if self.cfg.cache_dir is not None else self.out / "cache"

    def result_path(self, method: type[MethodBase], dataset: str, seed: int | None) -> Path:
        return self.out / "results" / self.cfg.protocol / dataset / f"{method.run_key(seed, self.depth(method))}.json"


def train_selected(cfg: TrainSelectedConfig, *, loaded: LoadedModel | None = None) -> TrainRun | None:
    """Train and evaluate MMA at the selected k for every task and seed of the protocol (None off rank 0).

    Everything that can be checked before the first training is: the model's towers (from its config,
    before any weights load), the options, the data, k, and each task's shots and batch size (a small
    dataset trains on what it has, said once). A failure removes the run folder again if this call
    created it and nothing was written yet. Every training value is resolved with its source
    (:func:`resolve_settings`, :mod:`mma.adapters.recipes`); the k line and the recipe line say which won.
    *loaded*: the model of ``cfg.model``, already loaded on the run's device (sweep-k loads it once).
    """
    start = time.perf_counter()
    requested = resolve_device(cfg.device)
    resolved = resolve_settings(cfg, device_type=requested.type)
    check_seeds(cfg.seeds)
    cfg.log = check_loggers(cfg.log)  # a missing package is said before any model loads
    world, device = distributed.setup(requested)
    with run_folder(cfg.out) as out:
        ctx = _context(cfg, resolved, world, device, out)
        plans, notes, skipped = _plan(ctx)
        notes += [w for s in ctx.resolved.method_settings.values() for w in s.warnings]  # published values cut
        _say(ctx, notes)
        ctx.loaded = loaded or load_model(resolved.spec, device=str(device))
        for method in resolved.methods:
            method.check_model(ctx.loaded, ctx.train_config(method, "")[0])
        _say(ctx, [resolved.k_line, *(s.line() for s in ctx.resolved.method_settings.values())])
        _write_records(ctx, skipped, notes)
        _run_all(ctx, plans)
        distributed.barrier()
        return _summarise(ctx, notes, start) if world.main else None


def _context(cfg: TrainSelectedConfig, resolved: Resolved, world, device, out: Path) -> RunContext:
    """The datasets of ``--data`` (or the protocol's default), and the settings settled on those that train."""
    protocol = get_protocol(cfg.protocol)
    if cfg.all_classes:
        protocol.check_all_classes()
    datasets, specs = [], {}
    for text in cfg.data or protocol.default_data():
        for d in load_datasets(text, template=cfg.template):
            datasets.append(d)
            specs[d.name] = dataset_spec(d, text)
    training = [d.name for d in datasets] if protocol.per_dataset else [datasets[0].name]
    settled = resolved.settle(cfg, device.type, training)
    return RunContext(cfg, settled, protocol, world, device, out, datasets, specs)


def _say(ctx: RunContext, lines) -> None:
    for line in lines:
        if ctx.show and line:
            tqdm.write(line)


def _say_read(ctx: RunContext, records) -> None:
    """Say each dataset's unreadable images once per run and stage (:meth:`~mma.probe.data.reading.ReadReport.record`;
    a training's record holds its validation record, the linear probe's)."""
    for record in filter(None, records):  # None: a training reused from before its images were counted
        if "validation" in record:
            _say_read(ctx, [record["validation"]])
        line = unreadable_line(record)
        if line and line not in ctx.said:
            ctx.said.add(line)
            _say(ctx, [line])


_DEFAULT_SHOTS = 16  # the baseline alone still draws its (unused) shots: evaluation is the same


def _plan(ctx: RunContext) -> tuple[dict[str, dict[int, list[Task]]], list[str], dict[str, str]]:
    """Every method's tasks per seed (the baseline's are the first method's), what the plan changed (said once
    each), and the datasets the protocol leaves out (with the reason)."""
    skipped = ctx.protocol.skipped(ctx.datasets)
    notes = [n for d in ctx.datasets for n in d.notes]  # the sources' own (an implicit split)
    notes += [f"Leaving {name!r} out of {ctx.cfg.protocol}: {why}." for name, why in skipped.items()]
    if skipped and len(skipped) == len(ctx.datasets):
        raise MmaError(f"Every dataset was left out of {ctx.cfg.protocol} ({' '.join(notes)}); give larger datasets.")
    plans = {m.name: _tasks(ctx, m, notes) for m in ctx.resolved.methods or [BASELINE]}
    return plans, notes, skipped


def _tasks(ctx: RunContext, method: type[MethodBase], notes: list[str]) -> dict[int, list[Task]]:
    """*method*'s tasks for every seed: each training dataset with its own shots (a recipe may set them per
    dataset), and its batch checked against the torchrun processes."""
    cfg, settings = ctx.cfg, ctx.settings(method)
    tasks_by_seed: dict[int, list[Task]] = {}
    for seed in cfg.seeds:
        tasks_by_seed[seed] = []
        for group in ctx.protocol.training_groups(ctx.datasets):
            shots = settings.for_dataset(group[0].name)[0]["shots"] if settings is not None else _DEFAULT_SHOTS
            tasks = make_tasks(cfg.protocol, group, shots=shots, seed=seed, strict=cfg.strict, notes=notes)
            tasks_by_seed[seed] += [ctx.protocol.with_all_classes(t) for t in tasks] if cfg.all_classes else tasks
    if settings is None or "batch_size" not in settings.values:
        return tasks_by_seed
    for task in (t for tasks in tasks_by_seed.values() for t in tasks):
        batch_size = settings.for_dataset(task.name)[0]["batch_size"]
        if batch_size % ctx.world.size:
            raise MmaError(
                f"--batch-size {batch_size} (for {task.name!r}) is the global batch; it must divide by the "
                f"{ctx.world.size} torchrun processes."
            )
        batch = effective_batch_size(batch_size, len(task.train), ctx.world.size)
        note = (
            f"Dataset {task.name!r} has {len(task.train)} training images for this task, fewer than "
            f"--batch-size {batch_size}: its batches hold {batch}."
        )
        if batch < batch_size and note not in notes:
            notes.append(note)
    return tasks_by_seed


def _write_records(ctx: RunContext, skipped: dict[str, str], notes: list[str]) -> None:
    """Every trained method's configuration record, and the datasets the protocol leaves out (rank 0)."""
    if not ctx.world.main:
        return
    for method in ctx.resolved.methods:
        atomic_write_json(ctx.out / method.record_name(ctx.depth(method)), _record(ctx, method, skipped, notes))
    for name, why in skipped.items():
        atomic_write_json(
            ctx.out / "results" / ctx.cfg.protocol / name / "skipped.json",
            {"protocol": ctx.cfg.protocol, "dataset": name, "reason": why},
        )


def _record(ctx: RunContext, method: type[MethodBase], skipped: dict, notes: list[str]) -> dict:
    """``train-k<K>.json`` (MMA) or ``train-<method>.json``: the configuration that ran, every value's source."""
    cfg, settings = ctx.cfg, ctx.settings(method)
    record = {
        **asdict(cfg),
        "method": method.name,
        "data": cfg.data or list(dict.fromkeys(ctx.data_specs.values())),
        "skipped": skipped,
        "model": ctx.resolved.model,
        "recipe": ctx.resolved.recipe.name,
        "recipe_line": settings.line(),
        "train_config": ctx.train_config(method, "")[0].values(),  # the values every training dataset shares
        "train_sources": settings.sources,
        "settings": settings.record(),  # with the values that differ per training dataset, and their sources
        "out": str(ctx.out),
        "processes": ctx.world.size,
        "adjustments": notes,
    }
    if method.depth_indexed:
        record.update(k=ctx.k(method), k_source=settings.sources["k"], k_line=ctx.resolved.k_line)
        record.update({f"k_{t}": settings.values.get(f"k_{t}") for t in TOWERS})
    return record


def _run_all(ctx: RunContext, plans: dict) -> None:
    """Evaluate the baseline once per task and train every method on every task and seed, skipping what is done.

    Rank 0 decides what is left, so every rank runs the same trainings and evaluations.
    """
    baseline_tasks = next(iter(plans.values()))[ctx.cfg.seeds[0]]
    baseline_todo, runs_todo = distributed.broadcast(_todo(ctx, plans, baseline_tasks))
    trained = [get_method(name) for name in plans if get_method(name).trains]
    total = sum(len(t) for m in trained for t in plans[m.name].values())
    ks = {ctx.depth(m) for m in trained} - {None}
    names = ", ".join(m.title or m.name for m in trained) or "nothing"
    depth = ks.pop() if len(ks) == 1 else ""
    desc = f"train {names}" + (f" k={depth[1:]}" if depth[1:].isdigit() else f" {depth}" if depth else "")
    with tqdm(total=total, desc=desc, unit="run", disable=not ctx.show) as bar:
        if total > len(runs_todo):
            bar.update(total - len(runs_todo))
            bar.write(f"resuming: {total - len(runs_todo)} of {total} runs already done.")
        _evaluate_baseline(ctx, baseline_tasks, baseline_todo, bar)
        for name, seed, ti in runs_todo:
            task = plans[name][seed][ti]
            bar.set_postfix_str(f"{name} {task.name} seed {seed}")
            _train_one(ctx, get_method(name), task, seed)
            bar.update(1)


def _todo(ctx: RunContext, plans: dict, baseline_tasks: list[Task]) -> tuple[list[int], list[tuple]]:
    """Task indices still lacking a baseline result, and (method, seed, task index) still lacking a result."""
    weights = ctx.loaded.weights_id
    baseline = [
        i
        for i, t in enumerate(baseline_tasks)
        if not _evaluated(
            ctx.result_path(BASELINE, t.name, None),
            weights,
            _prompts(BASELINE, t, ctx.cfg.template),
            ctx.cfg.all_classes,
        )
    ]
    runs = []
    for name, tasks_by_seed in plans.items():
        method = get_method(name)
        for seed, tasks in tasks_by_seed.items() if method.trains else ():
            for i, t in enumerate(tasks):
                if not _reusable(ctx, method, t, seed):
                    runs.append((name, seed, i))
    return baseline, runs


def _evaluated(path: Path, weights: str, prompts: dict[str, str], all_classes: bool) -> bool:
    """The result at *path* exists and was computed with these weights and prompts, on the same evaluation splits
    (another model's, another --template's, or one with or without --all-classes, is redone)."""
    if not path.is_file():
        return False
    stored = read_json(path)
    same = stored.get("weights") == weights and stored.get("prompts", prompts) == prompts
    return same and stored.get("all_classes", False) == all_classes


def _reusable(ctx: RunContext, method: type[MethodBase], task: Task, seed: int) -> bool:
    """A finished result is reused only if the same weights, prompts and training values made it.

    Values a method gained later count with their defaults (the behaviour before they existed); values it no
    longer reads do not count.
    """
    dataset = task.name
    path = ctx.result_path(method, dataset, seed)
    if not _evaluated(path, ctx.loaded.weights_id, _prompts(method, task, ctx.cfg.template), ctx.cfg.all_classes):
        return False
    stored = {**method.make_config().values(), **read_json(path).get("train_config", {})}
    return all(stored[name] == value for name, value in ctx.train_config(method, dataset)[0].values().items())


def _evaluate_baseline(ctx: RunContext, tasks: list[Task], todo: list[int], bar) -> None:
    """The baseline (the frozen model), once per task: it has no seed."""
    model = BASELINE.build(ctx.loaded)
    first = ctx.resolved.methods[0] if ctx.resolved.methods else None
    for ti in todo:
        task = tasks[ti]
        bar.set_postfix_str(f"{BASELINE.title or BASELINE.name} {task.name}")
        shared = ctx.train_config(first, task.name)[0] if first is not None else BASELINE.make_config()
        read: dict = {}
        accs = evaluate_task(
            ctx.loaded, task, ctx.device, ctx.cfg.template, method=model, workers=shared.workers,
            cache=shared.cache, cache_dir=ctx.cache_dir, strict=ctx.cfg.strict, read=read,
        )  # fmt: skip
        _say_read(ctx, read.values())
        if ctx.world.main:
            atomic_write_json(
                ctx.result_path(BASELINE, task.name, None),
                {
                    "protocol": ctx.cfg.protocol,
                    "dataset": task.name,
                    "seed": None,
                    "k": None,
                    "method": BASELINE.name,
                    "model": ctx.resolved.model,
                    "weights": ctx.loaded.weights_id,
                    "cache": shared.cache,
                    "template": BASELINE.prompt_template(task.dataset, ctx.cfg.template),
                    "prompts": _prompts(BASELINE, task, ctx.cfg.template),
                    "metrics": task_metrics(task, accs),
                    "all_classes": ctx.cfg.all_classes,
                    "evaluated": read,
                },
            )


def _prompts(method: type[MethodBase], task: Task, template: str | None) -> dict[str, str]:
    """The prompt *method* read on each dataset *task* evaluates (the published one where it was published so)."""
    return {e.dataset.name: method.prompt_template(e.dataset, template) for e in task.evals}


def _train_one(ctx: RunContext, method: type[MethodBase], task: Task, seed: int) -> None:
    """Train *method* on one task and seed, evaluate it, write its checkpoint and result JSON (rank 0)."""
    cfg, loaded = ctx.cfg, ctx.loaded
    stem = f"{cfg.protocol}-{task.name}-{method.file_key(seed, ctx.depth(method))}"
    state = ctx.out / "state" / f"{stem}.pt"
    train_cfg, train_sources = ctx.train_config(method, task.name)
    result, fitted, trained_on = _trained(ctx, method, task, seed, train_cfg, state)
    read: dict = {}
    try:
        accs = evaluate_task(
            loaded, task, ctx.device, cfg.template, method=result.adapter, workers=train_cfg.workers,
            cache=train_cfg.cache, cache_dir=ctx.cache_dir, strict=cfg.strict, read=read,
        )  # fmt: skip
        metrics = task_metrics(task, accs)
    finally:
        result.adapter.detach()
    _say_read(ctx, [trained_on, *read.values()])
    if not ctx.world.main:
        return
    # the data specs that load this task's datasets again (mma evaluate --checkpoint)
    evaluated = [task.name] if ctx.protocol.per_dataset else [e.dataset.name for e in task.evals]
    meta = {
        "protocol": cfg.protocol,
        "dataset": task.name,
        "seed": seed,
        **_depth_fields(ctx, method, train_cfg),
        "method": method.name,
        "model": ctx.resolved.model,
        "weights": loaded.weights_id,
        "classnames": task.classnames,
        "recipe": ctx.resolved.recipe.name,
        "train_config": train_cfg.values(),
        "train_sources": train_sources,
        "template": method.prompt_template(task.dataset, cfg.template),
        "user_template": cfg.template,  # what mma evaluate / predict read on other classes (None: the method's own)
        "prompts": _prompts(method, task, cfg.template),
        "data": list(dict.fromkeys(ctx.data_specs[name] for name in evaluated)),
    }
    ckpt = ctx.out / "checkpoints" / f"{stem}.safetensors" if cfg.checkpoints else None
    if ckpt is not None:
        save_adapter(result.adapter, ckpt, meta)
    train = {
        "steps": result.steps,
        "seconds": round(result.seconds, 2),
        "final_loss": result.final_loss,
        "trainable_parameters": result.adapter.num_parameters(),
        "processes": ctx.world.size,
        "batch_size": result.batch_size,
        "read": trained_on,
        **fitted,
        "history": result.history,  # per epoch (also <run>.history.csv beside this JSON)
    }
    path = ctx.result_path(method, task.name, seed)
    write_history(history_path(path), result.history)  # before the JSON, which marks the run done
    log_run(
        cfg.log, ctx.out / "logs" / cfg.protocol / task.name / path.stem, f"{cfg.protocol}/{task.name}/{path.stem}",
        history=result.history, losses=result.losses, metrics=metrics, config={**meta, "train": train},
    )  # fmt: skip
    atomic_write_json(
        path,
        {
            **meta,
            "metrics": metrics,
            "all_classes": cfg.all_classes,
            "evaluated": read,
            "train": train,
            "checkpoint": str(ckpt) if ckpt else None,
        },
    )
    state.unlink(missing_ok=True)  # the result is safe; the epoch state is no longer needed


def _depth_fields(ctx: RunContext, method: type[MethodBase], train_cfg: TrainConfig) -> dict:
    """What a result records of its depth: the shared ``k`` (None when a tower starts apart from it), each tower's
    start block and the method's own depth in its words (``prompt depth 9``); nothing for a method without one."""
    if not method.depth_indexed:
        return {"k": None}
    values = train_cfg.values()
    starts = method.starts(ctx.loaded, train_cfg)
    depths = {t: m.depth for t, m in layer_maps(ctx.loaded.model).items()}
    apart = any(values.get(f"k_{t}") is not None for t in TOWERS)
    return {
        "k": None if apart else values["k"],
        **{f"k_{t}": starts[t] for t in TOWERS},
        "depth": method.depth_label(starts, depths),
        "depth_key": depth_key(values),
    }


def _trained(ctx: RunContext, method: type[MethodBase], task: Task, seed: int, train_cfg, state: Path):
    """*method* trained on *task* at *seed*, what it chose while fitting, and the images it read
    (:meth:`~mma.probe.data.reading.ReadReport.record`): trained here, or the very training another protocol of this
    cache folder already ran (same weights, method, values, seed, samples, classes, prompt: ``reproduce`` trains the
    ImageNet adapter of cross-dataset and domain generalisation once when they agree)."""
    template = method.prompt_template(task.dataset, ctx.cfg.template)
    key = training_key(
        ctx.loaded, method, task.train, task.classnames, train_cfg, seed=seed, template=template, device=ctx.device,
        val=task.val,
    )  # fmt: skip
    shared = ctx.cache_dir / "trained" / f"{key}.safetensors"
    if distributed.broadcast(shared.is_file() if ctx.world.main else None):
        adapter, meta = load_adapter(shared, ctx.loaded)
        done = meta["trained"]
        result = TrainResult(
            adapter, done["steps"], done["seconds"], done["final_loss"], done["losses"], done["batch"],
            done.get("history", []),
        )  # fmt: skip
        return result, {**done["fitted"], "reused": str(shared)}, done.get("read")
    report = ReadReport(task.dataset.name, "training", strict=ctx.cfg.strict)
    result = fit_method(
        ctx.loaded, method, task.dataset, task.train, task.classnames, train_cfg, seed=seed, device=ctx.device,
        template=ctx.cfg.template, state_path=state, val=task.val, cache_dir=ctx.cache_dir, report=report,
    )  # fmt: skip
    fitted = result.adapter.fitted_values()
    read = report.record(task.train)
    if task.val and (report.seen | set(report.refs)) - {s.ref for s in task.train}:  # it read validation images
        read = {**read, "validation": report.record(task.val, "validation")}
    if ctx.world.main:
        done = {
            "steps": result.steps,
            "seconds": result.seconds,
            "final_loss": result.final_loss,
            "losses": result.losses,
            "batch": result.batch_size,
            "history": result.history,
            "fitted": fitted,
            "read": read,
        }
        save_adapter(result.adapter, shared, {"weights": ctx.loaded.weights_id, "key": key, "trained": done})
    return result, fitted, read


def _summarise(ctx: RunContext, notes: list[str], start: float) -> TrainRun:
    """Roll the results up (results.csv, results_summary.csv, methods.png) and say what ran."""
    state = ctx.out / "state"
    if state.is_dir() and not any(state.iterdir()):
        state.rmdir()
    results, summary = summarise_results(ctx.out)
    methods = ctx.resolved.methods
    if len(set(results["method"])) > 1 and methods:
        method_figure(ctx.out, results, ctx.cfg.protocol)
    depth = next((m for m in methods if m.depth_indexed), None)
    return TrainRun(
        ctx.out,
        ctx.resolved.model,
        ctx.k(depth) if depth else None,
        ctx.resolved.recipe.name,
        results,
        summary,
        time.perf_counter() - start,
        notes,
        ctx.resolved.settings,
        ctx.resolved.k_line,
        [BASELINE.name, *(m.name for m in methods)],
        ctx.resolved.method_settings,
        [d.name for d in ctx.datasets],
        depth_of(ctx.settings(depth).values) if depth else "",
    )


def depth_of(values: dict) -> str:
    """A method's depth values as tables print them: ``4``, or each tower's start when one is given apart (the
    other following k, on towers of equal depth)."""
    if values.get("k_image") is None and values.get("k_text") is None:
        return depth_text(values["k"])
    return depth_text(None, values.get("k_image") or values["k"], values.get("k_text") or values["k"])
