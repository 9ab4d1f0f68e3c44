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

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mma import distributed
from mma.analysis.plots import plot_layers
from mma.analysis.select_k import DEFAULT_THRESHOLDS, RULES, selection_record
from mma.analysis.separability import TEXT_SPLITS, ProbeInput, draw_probe_samples, layer_separability, summarise
from mma.errors import MmaError, closest, command_line
from mma.io import atomic_write, atomic_write_json, read_json
from mma.probe.capture import POOLINGS
from mma.probe.data import load_datasets
from mma.probe.data.base import Sample
from mma.probe.data.reading import unreadable_line
from mma.probe.extract import autocast_for, extract_images, extract_prompts, resolve_device
from mma.probe.layers import XEMBED_POINTS, layer_maps
from mma.probe.specs import load_model, parse_model_spec
from mma.probe.store import store_key
from mma.seeding import check_seeds

from .outdir import check_out_dir, run_folder

__all__ = ["ProbeLayersConfig", "ProbeRun", "probe_layers", "select_from_run", "plot_run", "check_out_dir"]


@dataclass
class ProbeLayersConfig:
    """Options of ``mma probe layers`` (defaults = the embedded model on the built-in suite)."""

    models: list[str | None] = field(default_factory=lambda: [None])
    data: list[str] = field(default_factory=lambda: ["builtin"])
    samples: int = 150
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    pooling: str = "mean"
    xembed: str = "after-ln-pre"  # which side of the image tower's ln_pre XEmbed is read (mma.probe.layers)
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
    notes: list[str]  # what the run found (unreadable images, unconverged probes, pooling fallbacks)
    adjustments: list[str] = field(default_factory=list)  # what the plan changed (a dataset smaller than --samples)


def _validate(cfg: ProbeLayersConfig) -> None:

    check_rule(cfg.rule, cfg.threshold)
    if cfg.samples < 1:
        raise MmaError(f"--samples must be at least 1 (samples per dataset); got {cfg.samples}.")
    check_seeds(cfg.seeds)
    if cfg.pooling not in POOLINGS:
        raise MmaError(f"--pooling {cfg.pooling!r} is not valid (valid: {', '.join(POOLINGS)}).")
    if cfg.xembed not in XEMBED_POINTS:
        raise MmaError(f"--xembed {cfg.xembed!r} is not valid (valid: {', '.join(XEMBED_POINTS)}).")
    if cfg.text_split not in TEXT_SPLITS:
        raise MmaError(f"--text-split {cfg.text_split!r} is not valid (valid: {', '.join(TEXT_SPLITS)}).")
    if cfg.batch_size < 1:
        raise MmaError(f"--batch-size must be at least 1; got {cfg.batch_size}.")
    if not cfg.data:
        raise MmaError("--data is empty; give a data spec such as builtin or coop:/data:eurosat,dtd.")


def check_rule(rule: str, threshold: float | None) -> None:
    """--rule must name a rule ("did you mean" otherwise); --threshold only with a rule that takes one."""

    if rule not in RULES:
        hint = closest(str(rule), RULES)
        raise MmaError(f"--rule {rule!r} is not valid (valid: {', '.join(RULES)})" + (f"; {hint}" if hint else "."))
    if threshold is None:
        return
    if DEFAULT_THRESHOLDS.get(rule) is None:
        takes = [r for r in RULES if DEFAULT_THRESHOLDS.get(r) is not None]
        raise MmaError(
            f"--rule {rule!r} takes no --threshold (got {threshold!r}); the rules with a threshold are "
            f"{', '.join(takes)}."
        )
    if not 0.0 < threshold <= 1.0:
        raise MmaError(f"--threshold must be in (0, 1]; got {threshold!r}.")


def _load_all_datasets(cfg: ProbeLayersConfig):

    datasets = []
    for spec in cfg.data:
        datasets += load_datasets(spec, template=cfg.template)
    names = [d.name for d in datasets]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise MmaError(f"The dataset name(s) {dupes} appear twice across --data; give each dataset once.")
    if len(datasets) < 2:
        raise MmaError(
            f"A 'which dataset?' probe needs at least 2 datasets to tell apart, and --data gives {len(datasets)} "
            f"({names}); add another, e.g. --data builtin beside it."
        )
    empty = [d.name for d in datasets if not d.train]
    if empty:
        raise MmaError(f"Dataset {empty[0]!r} has no training images; a probe draws its samples from them.")
    return datasets


def _sample_counts(cfg: ProbeLayersConfig, datasets) -> tuple[dict[str, int], list[str]]:
    """Samples drawn per dataset: --samples, or all a smaller dataset has (said once per dataset)."""
    counts, notes = {}, []
    for d in datasets:
        counts[d.name] = min(cfg.samples, len(d.train))
        if counts[d.name] < 3:  # the probe splits each dataset's samples into train / val / test
            raise MmaError(
                f"Dataset {d.name!r} gives {counts[d.name]} sample(s) to the probe, which needs at least 3 per "
                "dataset (probe train, val and test); raise --samples or leave this dataset out."
            )
        if cfg.text_split == "by-class" and d.num_classes < 3:
            raise MmaError(
                f"--text-split by-class needs at least 3 classes per dataset; {d.name!r} has {d.num_classes} "
                "(use --text-split by-sample)."
            )
        if counts[d.name] < cfg.samples:
            notes.append(
                f"Dataset {d.name!r} has {len(d.train)} training images, fewer than --samples {cfg.samples}: "
                f"using all {len(d.train)} of them."
            )
    return counts, notes


def _probe_one_seed(cfg, model_name, datasets, draws, entries, seed, store_keys, out: Path, progress):
    """Tidy rows for one (model, seed) and whether they were reused from ``probes/`` (the same probe ran before)."""

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
        return pd.read_csv(path), True
    image_parts, text_parts, dataset_ids, class_ids = [], [], [], []  # one entry per dataset
    class_offset = 0
    for di, d in enumerate(datasets):
        img_entry, txt_entry = entries[d.name]
        refs, labels = img_entry.samples()
        row_of = {r: i for i, r in enumerate(refs)}
        rows = np.array([row_of[s.ref] for s in draws[seed][d.name]], dtype=np.int64)
        rows = rows[img_entry.valid_rows()[rows]]
        image_parts.append([img_entry.layer(i, rows) for i in range(len(img_entry.layer_names))])
        text_parts.append([txt_entry.layer(i, labels[rows]) for i in range(len(txt_entry.layer_names))])
        dataset_ids.append(np.full(len(rows), di))
        class_ids.append(labels[rows] + class_offset)
        class_offset += d.num_classes
    data = ProbeInput(
        img_entry.layer_names,
        [np.concatenate(per_layer) for per_layer in zip(*image_parts)],
        [np.concatenate(per_layer) for per_layer in zip(*text_parts)],
        np.concatenate(dataset_ids),
        np.concatenate(class_ids),
        text_layer_names=txt_entry.layer_names,
    )
    tidy = layer_separability(data, seed=seed, text_split=cfg.text_split, progress=progress)
    tidy.insert(0, "model", model_name)
    atomic_write(path, lambda p: tidy.to_csv(p, index=False))
    return tidy, False


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def probe_layers(cfg: ProbeLayersConfig) -> ProbeRun | None:
    """Extract every layer of every model over the datasets, probe, summarise, select k, plot (None off rank 0).

    A failure removes the run folder again if this call created it and nothing was written yet.
    """

    start = time.perf_counter()
    _validate(cfg)
    datasets = _load_all_datasets(cfg)  # before the models: a wrong --data is said without loading open_clip
    specs = [parse_model_spec(m) for m in cfg.models]
    world, device = distributed.setup(resolve_device(cfg.device))
    autocast_for(device, cfg.precision)  # validates --precision
    with run_folder(cfg.out) as out:
        return _run(cfg, datasets, specs, world, device, out, start)


def _say(show: bool, text: str) -> None:
    """One line above the progress bars (what was reused or resumed, what the plan changed)."""
    if show:
        tqdm.write(text)


def _run(cfg: ProbeLayersConfig, datasets, specs, world, device, out: Path, start: float) -> ProbeRun | None:
    """Draw the samples, extract every layer of every model, probe every seed, write the tables, select k, plot."""
    show = cfg.progress and world.main
    counts, adjustments = _sample_counts(cfg, datasets)
    adjustments = [n for d in datasets for n in d.notes] + adjustments  # the sources' own (an implicit split)
    for note in adjustments:
        _say(show, note)
    draws = {seed: {d.name: draw_probe_samples(d.train, counts[d.name], seed) for d in datasets} for seed in cfg.seeds}
    notes: list[str] = []
    stores = {str(spec): _extract(cfg, spec, datasets, draws, device, out, show, notes) for spec in specs}
    if not world.main:  # probing is scikit-learn on the stored features: rank 0 alone
        return None
    tidy = pd.concat([_probe(cfg, name, store, datasets, draws, out, show) for name, store in stores.items()])
    tidy = tidy.reset_index(drop=True)
    summary = _write_tables(cfg, tidy, list(stores), datasets, counts, adjustments, out, notes)
    selection = _write_selection(summary, list(stores), out, cfg.rule, cfg.threshold, tidy)
    notes += [w for s in selection["selections"] for w in s["warnings"]]
    figure = _draw(summary, selection, out)
    return ProbeRun(out, summary, selection, figure, time.perf_counter() - start, notes, adjustments)


def _extract(cfg: ProbeLayersConfig, spec, datasets, draws, device, out: Path, show: bool, notes: list[str]):
    """Every layer of one model over the union of every seed's samples, streamed into the store.

    Returns ``({dataset: (image entry, text entry)}, store keys)``; what it has to say goes to *notes*.
    """
    union: dict[str, list[Sample]] = {}
    for d in datasets:
        seen = {s.ref: s for seed in cfg.seeds for s in draws[seed][d.name]}
        union[d.name] = sorted(seen.values(), key=lambda s: s.ref)
    loaded = load_model(spec, device=str(device))
    notes += loaded.notes
    model_name = str(spec)
    if cfg.pooling == "cls":
        for tower, lmap in layer_maps(loaded.model).items():
            if not lmap.has_readout_token:
                notes.append(
                    f"{model_name}: the {tower} tower ({lmap.family}) reads out no single token, so --pooling "
                    "cls pools its tokens like mean."
                )
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
                xembed=cfg.xembed,
                batch_size=cfg.batch_size,
                device=device,
                precision=cfg.precision,
                workers=cfg.workers,
                strict=cfg.strict,
                progress=bar.update,
                say=lambda text, bar=bar: bar.write(text) if show else None,
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
            bad = img.manifest["unreadable_rows"]
            examples = [img.samples()[0][i] for i in bad[:5]]
            line = unreadable_line({"dataset": d.name, "unreadable": len(bad), "examples": examples})
            if line:
                notes.append(line)
    return entries, store_keys


def _probe(cfg: ProbeLayersConfig, model_name: str, store, datasets, draws, out: Path, show: bool) -> pd.DataFrame:
    """Every seed's per-layer probes of one model (a seed probed before with the same store is reused)."""
    entries, store_keys = store
    image_entry, text_entry = entries[datasets[0].name]
    per_seed = len(image_entry.layer_names) + len(text_entry.layer_names)
    parts = []
    with tqdm(total=len(cfg.seeds) * per_seed, desc=f"probe {model_name}", unit="fit", disable=not show) as bar:
        reused = 0
        for seed in cfg.seeds:
            tidy, was_reused = _probe_one_seed(
                cfg, model_name, datasets, draws, entries, seed, store_keys, out, bar.update
            )
            parts.append(tidy)
            if was_reused:
                reused += 1
                bar.update(per_seed)
        if reused:
            bar.write(
                f"{model_name}: reusing {reused * per_seed} probes ({reused} of {len(cfg.seeds)} seeds) from "
                f"{str(out / 'probes')!r}."
            )
    return pd.concat(parts, ignore_index=True)


def _write_tables(
    cfg, tidy: pd.DataFrame, model_names, datasets, counts, adjustments, out: Path, notes
) -> pd.DataFrame:
    """``layers.csv`` (every probe), ``layers_summary.csv`` (mean and std over seeds) and ``run.json``."""
    converged = tidy.loc[tidy["metric"] == "probe_converged", "value"]
    if (converged < 1).any():
        notes.append(
            f"{int((converged < 1).sum())} of {len(converged)} final probe fits stopped at max_iter "
            "(their accuracy is still reported; see probe_converged in layers.csv)."
        )
    summary = summarise(tidy)
    atomic_write(out / "layers.csv", lambda p: tidy.to_csv(p, index=False))
    atomic_write(out / "layers_summary.csv", lambda p: summary.to_csv(p, index=False))
    datasets_record = [
        {
            "name": d.name,
            "source": d.source,
            "fingerprint": d.fingerprint,
            "classes": d.num_classes,
            "samples": counts[d.name],
        }
        for d in datasets
    ]
    run_record = {**asdict(cfg), "out": str(out), "models": model_names, "datasets": datasets_record}
    atomic_write_json(out / "run.json", {**run_record, "adjustments": adjustments})
    return summary


#: what the k rules read, recorded with every selection: no test split and no class's test image
SELECTION_READ = "probe curves from the datasets' training images only (the probe splits them 60/20/20 itself)"


def _selection_of(summary, model: str, rule: str, thresholds: dict | None, tidy=None) -> dict:
    """The selection record of one model; towers of different depth get none (k is left to --k)."""

    s = summary[(summary["model"] == model) & ~summary["layer_name"].isin(["XEmbed", "XProj"])]
    depths = {t: s.loc[s["tower"] == t, "layer_index"].nunique() for t in ("image", "text")}
    if depths["image"] != depths["text"]:
        return {
            "model": model,
            "depth": None,
            "rule": rule,
            "k": None,
            "rules": {},
            "per_seed_k": {},
            "warnings": [],
            "reason": (
                f"its towers have {depths['image']} image and {depths['text']} text layers, and the rules read one "
                "depth; pass --k to train-selected"
            ),
        }
    return selection_record(summary, model, rule=rule, thresholds=thresholds, tidy=tidy)


def _write_selection(summary, model_names, out: Path, rule: str, threshold: float | None, tidy=None) -> dict:
    thresholds = {rule: threshold} if threshold is not None else None
    selection = {
        "rule": rule,
        "selections": [_selection_of(summary, m, rule, thresholds, tidy) for m in model_names],
        "source": str(out),
        "read": SELECTION_READ,
    }
    atomic_write_json(out / "selection.json", selection)
    return selection


def _draw(summary, selection, out: Path) -> Path:

    run = read_json(out / "run.json") if (out / "run.json").is_file() else {}
    datasets = run.get("datasets", [])
    n_datasets = len(datasets)
    # the figure says how many seeds its lines are over (from the summary); the run says what they were drawn from
    caption = f"Text probe split {run.get('text_split', 'by-class')}; image probe by sample."
    if datasets:
        samples = sorted({d.get("samples") for d in datasets if d.get("samples") is not None})
        each = (
            "" if not samples else f", {samples[0]} samples each" if len(samples) == 1 else
            f", {samples[0]}-{samples[-1]} samples per dataset"
        )  # fmt: skip
        names = ", ".join(d["name"] for d in datasets)
        plural = "s" if n_datasets > 1 else ""
        caption = f"{n_datasets} dataset{plural} ({names}){each}; chance = 1 / {n_datasets}. {caption}"
    selections = {s["model"]: s for s in selection["selections"] if s.get("k") is not None}
    plot_layers(
        summary, out / "figure1", selections=selections, chance=1 / n_datasets if n_datasets else None, caption=caption
    )
    return out / "figure1.png"


SUMMARY_COLUMNS = {"model", "tower", "layer_index", "layer_name", "metric", "mean", "std"}


def _read_summary(run: Path) -> pd.DataFrame:
    path = Path(run) / "layers_summary.csv"
    if not path.is_file():
        raise MmaError(
            f"The run folder {str(run)!r} has no layers_summary.csv; make it first with: "
            + command_line("mma", "probe", "layers", "--out", run)
        )
    try:
        summary = pd.read_csv(path)
    except (ValueError, pd.errors.ParserError) as exc:  # EmptyDataError and UnicodeDecodeError are ValueErrors
        raise MmaError(
            f"{str(path)!r} is not a readable CSV ({' '.join(str(exc).split())!r}); rerun: "
            + command_line("mma", "probe", "layers", "--out", run)
        ) from None
    missing = sorted(SUMMARY_COLUMNS - set(summary.columns))
    if missing or summary.empty:
        raise MmaError(
            f"{str(path)!r} is not a layers summary (missing columns {missing} or no rows); rerun: "
            + command_line("mma", "probe", "layers", "--out", run)
        )
    return summary


def select_from_run(run: Path, *, rule: str = "saturation", threshold: float | None = None) -> dict:
    """Re-select k from a finished probe run's summary (rewrites selection.json and the figure)."""
    check_rule(rule, threshold)
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
    """A compact per-layer table (probe accuracy mean ± std per tower, gap, CKA) for printing.

    With one seed there is no spread, so no "± 0.0"; a layer one tower lacks (towers of different depth)
    shows "-".
    """
    s = summary[summary["model"] == model]
    one_seed = "n_seeds" in s.columns and bool((s["n_seeds"] <= 1).all())
    blocks = sorted({int(n) for n in s["layer_name"] if str(n).isdigit()})
    names = ["XEmbed", *map(str, blocks), "XProj"]

    def get(tower, metric, name):
        r = s[(s["tower"] == tower) & (s["metric"] == metric) & (s["layer_name"].astype(str) == name)]
        return (float(r["mean"].iloc[0]), float(r["std"].iloc[0])) if len(r) else (float("nan"), float("nan"))

    def pct(value: tuple[float, float]) -> str:
        if value[0] != value[0]:
            return "-"
        return f"{100 * value[0]:.1f}" if one_seed else f"{100 * value[0]:.1f} ± {100 * value[1]:.1f}"

    def num(value: float, fmt: str) -> str:
        return "-" if value != value else format(value, fmt)

    rows = []
    for name in names:
        ti, ii = get("text", "probe_accuracy", name), get("image", "probe_accuracy", name)
        rows.append(
            {
                "layer": name,
                "text": pct(ti),
                "image": pct(ii),
                "gap": num(100 * (ti[0] - ii[0]), "+.1f"),
                "image kNN": num(100 * get("image", "knn_accuracy", name)[0], ".1f"),
                "CKA": num(get("both", "cka", name)[0], ".2f"),
            }
        )
    return pd.DataFrame(rows)
