"""Job: ``mma tune``: the same tuning budget for every method, scored without a novel class or a test image.

``mma tune --method M --data SPEC --budget N --seeds S --out DIR`` tries N candidates of method M's own search
space (:mod:`mma.adapters.search`: its published values first, then draws from the grid) on the protocol's
tuning tasks (:meth:`mma.adapters.protocols.Protocol.tuning_tasks`): for base-to-novel the base classes are split
again into pseudo-base and pseudo-novel halves, the method trains on the pseudo-base shots, and the score is the
HM of the averaged validation accuracies of the two halves (each among its own classes); few-shot scores the
validation images of the trained classes, cross-dataset and domain generalisation the source's. No test image, no
novel class and no target dataset is read. A depth-indexed method is tuned at one k given in advance (``--k``;
default the recipe's protocol k, else the method's published base-to-novel k).

Run folder (``--out``)::

    candidates/<i>.json   one per candidate: its values, per-dataset metrics per seed, score, seconds
    recipe.json           the chosen values in the method's table, and the search record (every candidate's
                          values and score, the budget, the seeds, the data, what was read): give it to
                          ``mma train-selected --config DIR/recipe.json``
    cache/                frozen inputs shared by the candidates (safe to delete)

A candidate whose file exists with the same values, base values and seeds is not rerun, so an interrupted search
resumes (and a search rerun with other settings in the same folder starts those candidates afresh).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mma.adapters.methods import DEFAULT, get_method
from mma.adapters.protocols import evaluate_task, get_protocol, task_metrics, tuning_tasks
from mma.adapters.recipes import get_recipe
from mma.adapters.search import candidates, space_size
from mma.adapters.train import fit_method
from mma.app.settings import SEARCH_RECORD, Selection, TrainSelectedConfig, settle_method
from mma.errors import MmaError
from mma.io import atomic_write_json, read_json
from mma.metrics import harmonic_mean
from mma.probe.data import load_datasets
from mma.probe.embedded import EMBEDDED_NAME
from mma.probe.extract import resolve_device
from mma.probe.specs import load_model, parse_model_spec
from mma.seeding import check_seeds

from .outdir import run_folder

__all__ = ["TuneConfig", "tune", "READ"]

#: what a tuning search reads, recorded with it
READ = "train shots and validation images of the trained (base) classes; no test image, no novel class"


@dataclass
class TuneConfig:
    method: str = DEFAULT.name
    data: list[str] | None = None  # None: the protocol's default
    protocol: str = "base2novel"
    budget: int = 8
    seeds: list[int] = field(default_factory=lambda: [1])
    out: Path = Path("runs/tune")
    model: str = EMBEDDED_NAME
    k: int | None = None  # the depth a depth-indexed method is tuned at (fixed in advance)
    recipe: str = "paper"  # the values a candidate is laid over (its search-space fields replaced)
    config: Path | None = None  # a JSON / TOML file of training values, over the recipe
    train: dict = field(default_factory=dict)  # training values given as flags (over everything but the candidate)
    device: str = "auto"
    search_seed: int = 0  # the draw of the candidates
    progress: bool = True


def _base(cfg: TuneConfig, method, device_type: str, datasets: list[str]):
    """The settled values a candidate is laid over (the recipe, --config, flags; k fixed in advance)."""
    k = cfg.k
    recipe = get_recipe(cfg.recipe, cfg.model)
    if method.depth_indexed and k is None:
        found = recipe.k_for(cfg.protocol, method) or recipe.k_for("base2novel", method)
        k = found[0] if found else (method.published_k(cfg.protocol) or method.published_k("base2novel"))
    ts = TrainSelectedConfig(
        model=cfg.model, k=k, protocol=cfg.protocol, recipe=cfg.recipe, config=cfg.config, train=dict(cfg.train),
        methods=[method.name],
    )  # fmt: skip
    return settle_method(ts, recipe, Selection(cfg.model), device_type, method, datasets)


def _score(metric: str, rows: list[dict]) -> dict:
    """The averaged metrics of one candidate (seed-means per dataset, then averages; HM of the averaged base and
    novel, as the papers report) and its score."""
    by_dataset: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        for name, value in row["metrics"].items():
            by_dataset.setdefault(row["dataset"], {}).setdefault(name, []).append(value)
    means = {m: float(np.mean([np.mean(v[m]) for v in by_dataset.values()])) for m in next(iter(by_dataset.values()))}
    if {"base", "novel"} <= set(means):
        means["hm"] = harmonic_mean(means["base"], means["novel"])
    return {"averages": means, "score": means[metric]}


def tune(cfg: TuneConfig) -> dict:
    """Run the search (resuming), write ``recipe.json`` and return it."""
    start = time.perf_counter()
    method = get_method(cfg.method)
    protocol = get_protocol(cfg.protocol)
    if not method.trains:
        raise MmaError(f"--method {method.name} trains nothing, so there is nothing to tune.")
    check_seeds(cfg.seeds)
    spec = parse_model_spec(cfg.model)
    method.check_spec(spec)
    device = resolve_device(cfg.device)
    with run_folder(cfg.out) as out:
        datasets = [d for text in cfg.data or protocol.default_data() for d in load_datasets(text)]
        trained = [d.name for d in datasets] if protocol.per_dataset else [datasets[0].name]
        settings = _base(cfg, method, device.type, trained)
        base = settings.values
        shots = int(base["shots"])
        notes = [n for d in datasets for n in d.notes]  # the sources' own (an implicit split)
        tasks = {seed: tuning_tasks(cfg.protocol, datasets, shots=shots, seed=seed, notes=notes) for seed in cfg.seeds}
        tried = candidates(method, cfg.budget, base, seed=cfg.search_seed)
        show = cfg.progress
        for note in notes:
            if show:
                tqdm.write(note)
        loaded = load_model(spec, device=str(device))
        method.check_model(loaded, method.make_config(base))
        records = []
        bar = tqdm(total=len(tried), desc=f"tune {method.title or method.name}", unit="candidate", disable=not show)
        for i, values in enumerate(tried):
            path = out / "candidates" / f"{i}.json"
            done = read_json(path) if path.is_file() else {}
            if [done.get(k) for k in ("values", "base", "seeds")] == [values, base, list(cfg.seeds)]:
                records.append(done)
                bar.update(1)
                continue
            t0 = time.perf_counter()
            train_cfg = method.make_config({**base, **values})
            train_cfg.validate()
            rows = []
            for seed, seed_tasks in tasks.items():
                for task in seed_tasks:
                    bar.set_postfix_str(f"{task.name} seed {seed}")
                    result = fit_method(
                        loaded, method, task.dataset, task.train, task.classnames, train_cfg, seed=seed,
                        device=device, val=task.val, cache_dir=out / "cache",
                    )  # fmt: skip
                    try:
                        accs = evaluate_task(
                            loaded, task, device, method=result.adapter, cache=train_cfg.cache, cache_dir=out / "cache"
                        )
                    finally:
                        result.adapter.detach()
                    rows.append({"dataset": task.name, "seed": seed, "metrics": task_metrics(task, accs)})
            record = {
                "index": i,
                "values": values,
                "base": base,  # what the candidate was laid over, and its seeds: a changed one is not reused
                "seeds": list(cfg.seeds),
                "published": i == 0,
                "rows": rows,
                **_score(protocol.tuning_metric, rows),
                "seconds": round(time.perf_counter() - t0, 1),
            }
            atomic_write_json(path, record)
            records.append(record)
            bar.update(1)
        bar.close()
        best = max(records, key=lambda r: (r["score"], -r["index"]))  # ties: the earlier (the published first)
        recipe = {
            method.name: best["values"],
            SEARCH_RECORD: {
                "method": method.name,
                "protocol": cfg.protocol,
                "metric": protocol.tuning_metric,
                "read": READ,
                "model": str(spec),
                "data": cfg.data or protocol.default_data(),
                "datasets": sorted({r["dataset"] for c in records for r in c["rows"]}),
                "seeds": list(cfg.seeds),
                "budget": cfg.budget,
                "space": {name: list(v) for name, v in method.search_space.items()},
                "space_size": space_size(method),
                "search_seed": cfg.search_seed,
                "recipe": settings.recipe,
                "base": base,
                "base_line": settings.line(),
                "chosen": best["index"],
                "candidates": [
                    {k: c[k] for k in ("index", "values", "published", "averages", "score", "seconds")} for c in records
                ],
                "seconds": round(sum(c["seconds"] for c in records), 1),
                "notes": notes,
            },
        }
        atomic_write_json(out / "recipe.json", recipe)
        recipe[SEARCH_RECORD]["wall_seconds"] = round(time.perf_counter() - start, 1)
        return recipe
