"""Job: the paper's tables in one command, each protocol with its published settings, beside the published numbers.

``mma reproduce --model SPEC --data coop:ROOT[:A,B]`` runs, for seeds 1-3:

==================  ========================================================  =================================
protocol            datasets (those found under ROOT, or the subset given)    published settings (recipe paper)
==================  ========================================================  =================================
``base2novel``      the 11 CoOp datasets, each its own base / novel split     k = 5, 5 epochs, batch 16 (128 on
                                                                              ImageNet)
``cross-dataset``   trained on ImageNet (all classes), tested on the 10       k = 9, 1 epoch, batch 128
                    others
``domain-gen``      trained on ImageNet, tested on V2 / Sketch / A / R        k = 9, 1 epoch, batch 128
==================  ========================================================  =================================

Each protocol is one :func:`~mma.app.jobs.train_selected.train_selected` run in its own folder (its training,
evaluation, zero-shot baseline, resumption and torchrun support are train-selected's), with k and the other
values from the recipe's protocol defaults (:mod:`mma.adapters.recipes`; ``--config`` and the flags may still
override them, and the recorded settings say so). Cross-dataset and domain generalisation each train their
ImageNet adapter (the same seed and settings give the same adapter; sharing one training is a saving not
taken yet).

A dataset whose folder is missing under ROOT is skipped with one line and listed at the end; a protocol
left without its datasets (no ImageNet, no target) is skipped the same way. A dataset whose folder exists
but is incomplete is an error naming the missing file. Run folder (``--out``)::

    <protocol>/                  a train-selected run folder (results/, checkpoints/, results.csv, train-k<K>.json)
    comparison.csv               tidy: protocol, method, published_method, dataset, metric, published,
                                 published_source, published_check, measured, measured_std, seeds, difference,
                                 datasets
    comparison.md                the side-by-side tables, the verdicts and the published context
    reproduce.json               the configuration, what was skipped and why, the verdicts

Rerunning the same command resumes: finished results are reused, an interrupted training resumes from its
last epoch. Under torchrun every rank runs the protocols; rank 0 alone writes and reports (None elsewhere).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from mma import distributed
from mma.adapters.depth import depth_key
from mma.adapters.methods import DEFAULT, get_method, parse_methods
from mma.adapters.protocols import PROTOCOLS
from mma.analysis.compare import Setup, compare, render_markdown, verdicts
from mma.app.results import comparison_setup
from mma.app.training_logs import check_loggers
from mma.coop_layout import coop_spec
from mma.errors import MmaError
from mma.io import atomic_write, atomic_write_json, read_json
from mma.probe.data.coop import COOP_DATASETS, COOP_SOURCE, canonical_coop_name, find_coop
from mma.probe.extract import resolve_device
from mma.probe.specs import load_model, parse_model_spec
from mma.seeding import check_seeds

from .outdir import run_folder
from .train_selected import TrainSelectedConfig, train_selected

__all__ = [
    "REPRODUCED",
    "PAPER_MODEL",
    "ReproduceConfig",
    "ReproduceRun",
    "protocol_datasets",
    "protocol_plans",
    "reproduce",
]

#: the protocols of the paper's tables
REPRODUCED = tuple(name for name, protocol in PROTOCOLS.items() if protocol.in_paper)
PAPER_MODEL = "ViT-B-16-quickgelu:openai"  # the paper's main model (ViT-B/16, OpenAI's weights)


@dataclass
class ReproduceConfig:
    """Options of ``mma reproduce`` (defaults: the paper's model, protocols and seeds)."""

    data: str = ""  # coop:ROOT[:A,B]
    model: str = PAPER_MODEL
    protocols: list[str] = field(default_factory=lambda: list(REPRODUCED))
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    out: Path = Path("runs/reproduce")
    device: str = "auto"
    recipe: str = "paper"  # the published settings; see mma.adapters.recipes
    train: dict = field(default_factory=dict)  # TrainConfig values given as flags (e.g. precision, workers)
    config: Path | None = None  # a JSON / TOML file of TrainConfig values
    template: str | None = None
    strict: bool = False
    progress: bool = True
    methods: list[str] = field(default_factory=lambda: [DEFAULT.name])  # the methods of mma.adapters.methods
    log: list[str] = field(default_factory=list)  # tensorboard / wandb (mma.app.training_logs)


@dataclass
class ReproduceRun:
    out: Path
    runs: dict  # protocol -> TrainRun
    skipped: dict[str, str]  # dataset -> why (not under ROOT)
    skipped_protocols: dict[str, str]  # protocol -> why
    comparison: pd.DataFrame
    verdicts: list  # mma.analysis.compare.Verdict
    setup: Setup  # what the comparison knew of the protocols and methods (for printing its tables)
    notes: list[str]
    seconds: float


def _validate(cfg: ReproduceConfig) -> None:
    if not cfg.protocols:
        raise MmaError(f"--protocol is empty; give one or more of {', '.join(REPRODUCED)}.")
    bad = [p for p in cfg.protocols if p not in REPRODUCED]
    if bad:
        raise MmaError(f"--protocol {bad[0]!r} is not one mma reproduce runs (valid: {', '.join(REPRODUCED)}).")
    check_seeds(cfg.seeds)
    cfg.log = check_loggers(cfg.log)  # before the model loads
    cfg.methods = list(dict.fromkeys([DEFAULT.name, *parse_methods(cfg.methods)]))  # MMA is what is reproduced


def protocol_datasets() -> dict[str, list[str]]:
    """The CoOp datasets of each protocol, the source first: base-to-novel the 11, cross-dataset ImageNet and the
    10 others, domain generalisation ImageNet and its 4 shifted variants."""
    return {name: PROTOCOLS[name].benchmark_datasets(COOP_DATASETS, COOP_SOURCE) for name in REPRODUCED}


def protocol_plans(
    protocols: list[str], present: list[str], asked: tuple[str, ...] | None
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """``({protocol: datasets, source first}, {protocol: why it is skipped})`` from the datasets *present*.

    *asked*: the dataset subset of the data spec (None: every dataset). Base-to-novel needs any of the 11;
    cross-dataset ImageNet and a target; domain generalisation ImageNet and a shifted variant.
    """
    wanted = protocol_datasets()
    plans, skipped = {}, {}
    for protocol in protocols:
        names = [d for d in wanted[protocol] if d in present and (asked is None or d in asked)]
        on_source = not PROTOCOLS[protocol].per_dataset
        if on_source and COOP_SOURCE not in names:
            where = "not in the data spec" if asked is not None and COOP_SOURCE not in asked else "not found"
            skipped[protocol] = f"it trains on {COOP_SOURCE}, which is {where}"
        elif on_source and len(names) < 2:
            skipped[protocol] = f"none of its targets ({', '.join(wanted[protocol][1:])}) is there"
        elif not names:
            skipped[protocol] = f"none of its datasets ({', '.join(wanted[protocol])}) is there"
        else:
            plans[protocol] = names
    return plans, skipped


def _check_out(out: Path, model: str) -> None:
    """A run folder holds one model's reproduction (its zero-shot results and tables would mix otherwise)."""
    record = out / "reproduce.json"
    if record.is_file():
        before = read_json(record).get("model")
        if before not in (None, model):
            raise MmaError(
                f"--out {str(out)!r} holds a reproduction of model {before!r}, not {model!r}; choose another --out."
            )


def reproduce(cfg: ReproduceConfig) -> ReproduceRun | None:
    """Run the paper's protocols on the CoOp datasets under ROOT and compare with the published numbers.

    Resolve the data and the plan, run each protocol (train-selected), then write the side-by-side tables.
    Returns None off rank 0 under torchrun.
    """
    start = time.perf_counter()
    _validate(cfg)
    root, names = coop_spec(cfg.data)
    asked = tuple(canonical_coop_name(n) for n in names) if names else None
    wanted = protocol_datasets()
    needed = [d for d in dict.fromkeys(d for p in cfg.protocols for d in wanted[p]) if asked is None or d in asked]
    present, missing = find_coop(root, needed)  # ROOT before the model: open_clip takes seconds to import
    model = str(parse_model_spec(cfg.model))
    plans, skipped_protocols = protocol_plans(cfg.protocols, present, asked)
    if not plans:
        why = "; ".join(f"{p}: {w}" for p, w in skipped_protocols.items())
        raise MmaError(f"Nothing to reproduce under {root!r} ({why}); see 'mma datasets' for the expected folders.")
    world = distributed.launched()
    show = cfg.progress and world.main
    with run_folder(cfg.out) as out:
        _check_out(out, model)
        notes = [f"Skipping {name}: {why}." for name, why in missing.items()]
        notes += [f"Skipping {protocol}: {why}." for protocol, why in skipped_protocols.items()]
        if show:
            for note in notes:
                print(note, flush=True)
        if world.main:
            atomic_write_json(out / "reproduce.json", _record(cfg, model, root, plans, missing, skipped_protocols))
        _, device = distributed.setup(resolve_device(cfg.device))
        loaded = load_model(parse_model_spec(cfg.model), device=str(device))  # once, for every protocol
        runs = {p: _run_protocol(cfg, model, root, p, datasets, out, loaded) for p, datasets in plans.items()}
        if not world.main:
            return None
        return _report(cfg, model, root, plans, runs, missing, skipped_protocols, notes, out, start)


def _record(cfg, model, root, plans, missing, skipped_protocols, verdicts=None) -> dict:
    return {
        **asdict(cfg),
        "model": model,
        "root": root,
        "plans": plans,
        "skipped_datasets": missing,
        "skipped_protocols": skipped_protocols,
        "verdicts": verdicts,
    }


def _run_protocol(cfg: ReproduceConfig, model: str, root: str, protocol: str, datasets: list[str], out: Path, loaded):
    """One protocol as a train-selected run in ``out/<protocol>`` (k and the rest from the recipe's defaults), with
    the model loaded once and one cache for every protocol (frozen inputs, and trainings two protocols share)."""
    if cfg.progress and distributed.launched().main:
        print(f"\n== {protocol}: {', '.join(datasets)}", flush=True)
    return train_selected(
        TrainSelectedConfig(
            model=model,
            data=[f"coop:{root}:{','.join(datasets)}"],
            protocol=protocol,
            seeds=list(cfg.seeds),
            out=out / protocol,
            device=cfg.device,
            template=cfg.template,
            recipe=cfg.recipe,
            train=dict(cfg.train),
            config=cfg.config,
            progress=cfg.progress,
            strict=cfg.strict,
            methods=list(cfg.methods),
            cache_dir=out / "cache",
            log=list(cfg.log),
        ),
        loaded=loaded,
    )


def _this_run(run, protocol: str, datasets: list[str], seeds: list[int]) -> pd.DataFrame:
    """The result rows this invocation asked for (a run folder may hold other methods, depths, seeds or datasets from
    before): the baseline (no seed) and every method that ran, at this run's seeds and each method's depth."""
    r = run.results
    keep = (r["protocol"] == protocol) & r["dataset"].isin(datasets) & r["method"].isin(run.methods)
    depths = {name: depth_key(s.values) for name, s in run.method_settings.items() if get_method(name).depth_indexed}
    at_depth = [key is None or pd.isna(key) or depths.get(m) == key for m, key in zip(r["method"], r["depth_key"])]
    keep &= r["seed"].isna() | (r["seed"].isin(seeds) & pd.Series(at_depth, index=r.index, dtype=bool))
    return r[keep]


def _report(cfg, model, root, plans, runs, missing, skipped_protocols, notes, out: Path, start) -> ReproduceRun:
    results = pd.concat([_this_run(runs[p], p, plans[p], cfg.seeds) for p in plans], ignore_index=True)
    setup = comparison_setup()
    comparison = compare(results, setup)
    found = verdicts(comparison, setup)
    tail = [f"Skipped (missing under ROOT): {', '.join(missing)}."] if missing else []
    tail += [f"Skipped protocol {p}: {why}." for p, why in skipped_protocols.items()]
    settings = [f"{p}: {runs[p].k_line} {runs[p].settings.line()}" for p in plans]
    title = f"{model} on coop:{root}: measured beside published (seeds {', '.join(map(str, cfg.seeds))})"
    text = render_markdown(comparison, setup, title=title, notes=[*settings, *tail])
    atomic_write(out / "comparison.csv", lambda p: comparison.to_csv(p, index=False))
    atomic_write(out / "comparison.md", lambda p: p.write_text(text, encoding="utf-8"))
    record = _record(cfg, model, root, plans, missing, skipped_protocols, [v.text for v in found])
    atomic_write_json(out / "reproduce.json", record)
    seconds = time.perf_counter() - start
    return ReproduceRun(out, runs, missing, skipped_protocols, comparison, found, setup, tail, seconds)
