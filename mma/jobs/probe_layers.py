"""Job 1 and 2: per-layer embeddings -> dataset-separability probes -> Figure 1 -> the adapter depth k.

Run folder (``--out``)::

    store/                    feature store entries (reused / resumed by later runs)
    probes/                   one CSV per (model, seed), reused when the same probe is asked again
    layers.csv                tidy: model, tower, layer_index, layer_name, seed, metric, value
    layers_summary.csv        mean / std over seeds (and the text-minus-image gap)
    selection.json            every rule's k, the default rule's k, thresholds and curves, per model
    figure1.png / .pdf / .csv the paper's Figure 1 for these models
    run.json                  the configuration that made the run

Under torchrun every rank extracts its share of each store entry; rank 0 alone probes, plots and writes
the tables, and the function returns None on the other ranks. An interrupted run resumes: the store
from its recorded rows, the probes from their per-seed CSVs.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mma import distributed
from mma.errors import MmaError
from mma.io import atomic_write, atomic_write_json, read_json

__all__ = ["ProbeLayersConfig", "ProbeRun", "probe_layers", "select_from_run", "plot_run", "check_out_dir"]


@dataclass
class ProbeLayersConfig:
    """Options of ``mma probe layers`` (defaults = the embedded model on the built-in suite)."""

    models: list[str | None] = field(default_factory=lambda: [None])
    data: list[str] = field(default_factory=lambda: ["builtin"])
    samples: int = 150
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    pooling: str = "mean"
    template: str | None = None
    text_split: str = "by-class"
    out: Path = Path("runs/probe")
    device: str = "auto"
    batch_size: int = 128
    precision: str = "fp32"
    workers: int = 0
    strict: bool = False
    rule: str = "saturation"
    threshold: float | None = None
    progress: bool = True


@dataclass
class ProbeRun:
    out: Path
    summary: pd.DataFrame
    selection: dict
    figure: Path
    seconds: float
    notes: list[str]


def check_out_dir(out: Path) -> Path:
    """Create *out* if needed and make sure it is a writable folder (one clear sentence if not)."""
    from mma.probe.data.base import user_path

    out = user_path(out, "--out")
    if out.exists() and not out.is_dir():
        raise MmaError(f"--out {str(out)!r} is a file, not a folder; give a folder for the run.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise MmaError(f"--out {str(out)!r} is not writable ({exc.strerror or exc}); choose another folder.") from None
    return out


def _validate(cfg: ProbeLayersConfig) -> None:
    from mma.analysis.select_k import RULES
    from mma.analysis.separability import TEXT_SPLITS
    from mma.probe.capture import POOLINGS

    if cfg.rule not in RULES:
        raise MmaError(f"--rule {cfg.rule!r} is not valid (valid: {', '.join(RULES)}).")
    if cfg.threshold is not None and not 0.0 < cfg.threshold <= 1.0:
        raise MmaError(f"--threshold must be in (0, 1]; got {cfg.threshold}.")
    if cfg.samples < 1:
        raise MmaError(f"--samples must be at least 1 (samples per dataset); got {cfg.samples}.")
    if not cfg.seeds:
        raise MmaError("--seeds is empty; give at least one seed, e.g. --seeds 1,2,3.")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise MmaError(f"--seeds {cfg.seeds} repeats a seed; give distinct seeds.")
    if cfg.pooling not in POOLINGS:
        raise MmaError(f"--pooling {cfg.pooling!r} is not valid (valid: {', '.join(POOLINGS)}).")
    if cfg.text_split not in TEXT_SPLITS:
        raise MmaError(f"--text-split {cfg.text_split!r} is not valid (valid: {', '.join(TEXT_SPLITS)}).")
    if cfg.batch_size < 1:
        raise MmaError(f"--batch-size must be at least 1; got {cfg.batch_size}.")
    if not cfg.data:
        raise MmaError("--data is empty; give a data spec such as builtin or coop:/data:eurosat,dtd.")


def _load_all_datasets(cfg: ProbeLayersConfig):
    from mma.probe.data import load_datasets

    datasets = []
    for spec in cfg.data:
        datasets += load_datasets(spec, template=cfg.template)
    names = [d.name for d in datasets]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise MmaError(f"The dataset name(s) {dupes} appear twice across --data; give each dataset once.")
    if len(datasets) < 2:
        raise MmaError(f"A 'which dataset?' probe needs at least 2 datasets; --data gives {len(datasets)} ({names}).")
    few = [d for d in datasets if d.num_classes < 3]
    if cfg.text_split == "by-class" and few:
        raise MmaError(
            f"Dataset {few[0].name!r} has {few[0].num_classes} class(es); --text-split by-class needs at least 3 per "
            "dataset (its text probe is tested on class names it never saw). Use --text-split by-sample."
        )
    for d in datasets:
        if len(d.train) < cfg.samples:
            raise MmaError(
                f"Dataset {d.name!r} has {len(d.train)} training samples, fewer than --samples {cfg.samples}; "
                f"lower --samples to at most {len(d.train)} or leave this dataset out."
            )
    return datasets


def _probe_one_seed(cfg, model_name, datasets, draws, entries, seed, store_keys, out: Path, progress):
    """Tidy rows for one (model, seed): reused from ``probes/`` when the same probe ran before."""
    from mma.analysis.separability import ProbeInput, layer_separability
    from mma.probe.store import store_key

    key = store_key(
        {
            "stores": store_keys,
            "seed": seed,
            "text_split": cfg.text_split,
            "image_split": "by-sample",
            "samples": cfg.samples,
        }
    )
    path = out / "probes" / f"{_slug(model_name)}-seed{seed}-{key}.csv"
    if path.exists():
        return pd.read_csv(path)
    image_parts, text_parts, dataset_ids, class_ids = [], [], [], []  # one entry per dataset
    class_offset = 0
    for di, d in enumerate(datasets):
        img_entry, txt_entry = entries[d.name]
        refs, labels = img_entry.samples()
        row_of = {r: i for i, r in enumerate(refs)}
        rows = np.array([row_of[s.ref] for s in draws[seed][d.name]], dtype=np.int64)
        rows = rows[img_entry.valid_rows()[rows]]
        n_layers = len(img_entry.layer_names)
        image_parts.append([img_entry.layer(i, rows) for i in range(n_layers)])
        text_parts.append([txt_entry.layer(i, labels[rows]) for i in range(n_layers)])
        dataset_ids.append(np.full(len(rows), di))
        class_ids.append(labels[rows] + class_offset)
        class_offset += d.num_classes
    data = ProbeInput(
        img_entry.layer_names,
        [np.concatenate(per_layer) for per_layer in zip(*image_parts)],
        [np.concatenate(per_layer) for per_layer in zip(*text_parts)],
        np.concatenate(dataset_ids),
        np.concatenate(class_ids),
    )
    tidy = layer_separability(data, seed=seed, text_split=cfg.text_split, progress=progress)
    tidy.insert(0, "model", model_name)
    atomic_write(path, lambda p: tidy.to_csv(p, index=False))
    return tidy


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def probe_layers(cfg: ProbeLayersConfig) -> ProbeRun | None:
    """Extract every layer of every model over the datasets, probe, summarise, select k, plot (None off rank 0)."""
    from tqdm.auto import tqdm

    from mma.analysis.separability import draw_probe_samples, summarise
    from mma.probe.data.base import Sample
    from mma.probe.extract import autocast_for, extract_images, extract_prompts, resolve_device
    from mma.probe.specs import load_model, parse_model_spec

    start = time.perf_counter()
    _validate(cfg)
    specs = [parse_model_spec(m) for m in cfg.models]
    world, device = distributed.setup(resolve_device(cfg.device))
    autocast_for(device, cfg.precision)  # validates --precision
    out = check_out_dir(cfg.out)
    show = cfg.progress and world.main
    datasets = _load_all_datasets(cfg)

    draws = {seed: {d.name: draw_probe_samples(d.train, cfg.samples, seed) for d in datasets} for seed in cfg.seeds}
    union: dict[str, list[Sample]] = {}
    for d in datasets:
        seen = {s.ref: s for seed in cfg.seeds for s in draws[seed][d.name]}
        union[d.name] = sorted(seen.values(), key=lambda s: s.ref)

    notes: list[str] = []
    stores = {}  # model name -> ({dataset: (image entry, text entry)}, store keys)
    for spec in specs:
        loaded = load_model(spec, device=str(device))
        notes += loaded.notes
        model_name = str(spec)
        entries, store_keys = {}, []
        total = sum(len(v) for v in union.values())
        with tqdm(total=total, desc=f"extract {model_name}", unit="img", disable=not show) as bar:
            for d in datasets:
                img = extract_images(
                    loaded,
                    d,
                    union[d.name],
                    out / "store",
                    pooling=cfg.pooling,
                    batch_size=cfg.batch_size,
                    device=device,
                    precision=cfg.precision,
                    workers=cfg.workers,
                    strict=cfg.strict,
                    progress=bar.update,
                )
                txt = extract_prompts(
                    loaded,
                    d,
                    out / "store",
                    pooling=cfg.pooling,
                    template=cfg.template,
                    device=device,
                    precision=cfg.precision,
                )
                entries[d.name] = (img, txt)
                store_keys += [img.manifest["key"], txt.manifest["key"]]
                bad = len(img.manifest["unreadable_rows"])
                if bad:
                    notes.append(
                        f"{d.name}: skipped {bad} unreadable image(s), e.g. "
                        f"{[img.samples()[0][i] for i in img.manifest['unreadable_rows'][:3]]}."
                    )
        stores[model_name] = (entries, store_keys)
        del loaded
    if not world.main:  # probing is scikit-learn on the stored features: rank 0 alone
        return None

    tidy_parts = []
    for model_name, (entries, store_keys) in stores.items():
        n_fits = len(cfg.seeds) * 2 * len(entries[datasets[0].name][0].layer_names)
        with tqdm(total=n_fits, desc=f"probe {model_name}", unit="fit", disable=not show) as bar:
            for seed in cfg.seeds:
                tidy_parts.append(
                    _probe_one_seed(cfg, model_name, datasets, draws, entries, seed, store_keys, out, bar.update)
                )
    model_names = list(stores)

    tidy = pd.concat(tidy_parts, ignore_index=True)
    converged = tidy.loc[tidy["metric"] == "probe_converged", "value"]
    if (converged < 1).any():
        notes.append(
            f"{int((converged < 1).sum())} of {len(converged)} final probe fits stopped at max_iter "
            "(their accuracy is still reported; see probe_converged in layers.csv)."
        )
    summary = summarise(tidy)
    atomic_write(out / "layers.csv", lambda p: tidy.to_csv(p, index=False))
    atomic_write(out / "layers_summary.csv", lambda p: summary.to_csv(p, index=False))
    run_record = {
        **asdict(cfg),
        "out": str(out),
        "models": model_names,
        "datasets": [
            {"name": d.name, "source": d.source, "fingerprint": d.fingerprint, "classes": d.num_classes}
            for d in datasets
        ],
    }
    atomic_write_json(out / "run.json", run_record)
    selection = _write_selection(summary, model_names, out, cfg.rule, cfg.threshold, tidy)
    notes += [w for s in selection["selections"] for w in s["warnings"]]
    figure = _draw(summary, selection, out)
    return ProbeRun(out, summary, selection, figure, time.perf_counter() - start, notes)


def _write_selection(summary, model_names, out: Path, rule: str, threshold: float | None, tidy=None) -> dict:
    from mma.analysis.select_k import selection_record

    thresholds = {rule: threshold} if threshold is not None else None
    selection = {
        "rule": rule,
        "selections": [selection_record(summary, m, rule=rule, thresholds=thresholds, tidy=tidy) for m in model_names],
        "source": str(out),
    }
    atomic_write_json(out / "selection.json", selection)
    return selection


def _draw(summary, selection, out: Path) -> Path:
    from mma.analysis.plots import plot_layers

    run = read_json(out / "run.json") if (out / "run.json").is_file() else {}
    n_datasets = len(run.get("datasets", []))
    caption = (
        "Lines: mean over {} seed(s); bands: one std over seeds. Text probe split {}; image probe by sample.".format(
            len(run.get("seeds", [])) or "the", run.get("text_split", "by-class")
        )
    )
    ks = {s["model"]: s["k"] for s in selection["selections"]}
    plot_layers(summary, out / "figure1", selected_k=ks, chance=1 / n_datasets if n_datasets else None, caption=caption)
    return out / "figure1.png"


SUMMARY_COLUMNS = {"model", "tower", "layer_index", "layer_name", "metric", "mean", "std"}


def _read_summary(run: Path) -> pd.DataFrame:
    path = Path(run) / "layers_summary.csv"
    if not path.is_file():
        raise MmaError(
            f"The run folder {str(run)!r} has no layers_summary.csv; run 'mma probe layers --out {run}' first."
        )
    try:
        summary = pd.read_csv(path)
    except (ValueError, pd.errors.ParserError) as exc:  # EmptyDataError and UnicodeDecodeError are ValueErrors
        raise MmaError(f"{str(path)!r} is not a readable CSV ({exc}); rerun 'mma probe layers --out {run}'.") from None
    missing = sorted(SUMMARY_COLUMNS - set(summary.columns))
    if missing or summary.empty:
        raise MmaError(
            f"{str(path)!r} is not a layers summary (missing columns {missing} or no rows); "
            f"rerun 'mma probe layers --out {run}'."
        )
    return summary


def select_from_run(run: Path, *, rule: str = "saturation", threshold: float | None = None) -> dict:
    """Re-select k from a finished probe run's summary (rewrites selection.json and the figure)."""
    from mma.analysis.select_k import RULES

    if rule not in RULES:
        raise MmaError(f"--rule {rule!r} is not valid (valid: {', '.join(RULES)}).")
    summary = _read_summary(run)
    models = list(dict.fromkeys(summary["model"]))
    tidy_path = Path(run) / "layers.csv"
    tidy = pd.read_csv(tidy_path) if tidy_path.is_file() else None
    selection = _write_selection(summary, models, Path(run), rule, threshold, tidy)
    _draw(summary, selection, Path(run))
    return selection


def plot_run(run: Path) -> Path:
    """Redraw Figure 1 of a run from its CSVs and selection.json, without recomputing anything."""
    summary = _read_summary(run)
    sel_path = Path(run) / "selection.json"
    selection = read_json(sel_path) if sel_path.is_file() else {"selections": []}
    return _draw(summary, selection, Path(run))


def per_layer_table(summary: pd.DataFrame, model: str) -> pd.DataFrame:
    """A compact per-layer table (probe accuracy mean ± std per tower, gap, CKA) for printing."""
    s = summary[summary["model"] == model]
    rows = []
    for name in s.sort_values("layer_index").drop_duplicates("layer_index")["layer_name"]:

        def get(tower, metric, name=name):
            r = s[(s["tower"] == tower) & (s["metric"] == metric) & (s["layer_name"] == name)]
            return (float(r["mean"].iloc[0]), float(r["std"].iloc[0])) if len(r) else (float("nan"), 0.0)

        ti, ii = get("text", "probe_accuracy"), get("image", "probe_accuracy")
        rows.append(
            {
                "layer": name,
                "text": f"{100 * ti[0]:.1f} ± {100 * ti[1]:.1f}",
                "image": f"{100 * ii[0]:.1f} ± {100 * ii[1]:.1f}",
                "gap": f"{100 * (ti[0] - ii[0]):+.1f}",
                "image kNN": f"{100 * get('image', 'knn_accuracy')[0]:.1f}",
                "CKA": f"{get('both', 'cka')[0]:.2f}",
            }
        )
    return pd.DataFrame(rows)
