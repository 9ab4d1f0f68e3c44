"""Apply an adapted model to new images (``mma predict``): one CSV row per readable image with its top classes.

The checkpoint's own classes, or any others named with ``classes`` (the methods that read class names through
prompts take new ones; the linear probe names only its own and says so before any image is read). Probabilities
are the softmax of the method's logits: ``exp(logit_scale) * cosine`` for the methods that match images with
prompts (as in training), the logistic-regression scores for the linear probe. Unreadable images are
counted and named once, left out of the CSV, and stop the run under ``strict``.

CSV columns: ``path``, then ``class_1``, ``prob_1`` ... ``class_K``, ``prob_K`` (K = ``top_k``, at most the number
of classes), best first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from mma import distributed
from mma.adapters.checkpoint import load_adapter, read_adapter
from mma.adapters.evaluate import method_scores
from mma.data_spec import user_path
from mma.errors import MmaError
from mma.io import atomic_write_text
from mma.probe.data.base import clean_classname
from mma.probe.data.reading import ReadReport
from mma.probe.data.unlabelled import load_unlabelled
from mma.probe.extract import resolve_device
from mma.probe.specs import load_model

__all__ = ["PredictRun", "predict_images", "parse_classes"]


@dataclass
class PredictRun:
    out: Path
    images: int  # rows written
    classes: list[str]
    read: dict = field(default_factory=dict)  # ReadReport.record of the images


def parse_classes(text: str | None) -> list[str] | None:
    """``"a,b,c"`` -> ``["a", "b", "c"]`` (underscores read as spaces, like every dataset's class names)."""
    if text is None:
        return None
    names = [clean_classname(c) for c in text.split(",")]
    if any(not n for n in names):
        raise MmaError(f"--classes {text!r} has an empty name; give names separated by commas, e.g. 'cat,dog'.")
    if len(set(names)) < len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise MmaError(f"--classes names {twice[0]!r} more than once; give each class once.")
    if len(names) < 2:
        raise MmaError(f"--classes {text!r} names one class; a classifier needs at least 2.")
    return names


def predict_images(
    checkpoint: Path,
    images: Path,
    out: Path,
    *,
    classes: str | None = None,
    top_k: int = 5,
    device: str = "auto",
    strict: bool = False,
    overwrite: bool = False,
    batch_size: int = 64,
) -> PredictRun:
    """Classify every image of *images* (:func:`~mma.probe.data.unlabelled.load_unlabelled`) with the adapter of
    *checkpoint* and write the CSV *out* atomically (an existing file only with *overwrite*)."""
    if top_k < 1:
        raise MmaError(f"--top-k {top_k} must be at least 1.")
    out = user_path(out, "--out")
    if out.is_dir():
        raise MmaError(f"--out {str(out)!r} is a folder; give the CSV file to write.")
    if out.exists() and not overwrite:
        raise MmaError(f"--out {str(out)!r} exists; pass --overwrite to replace it, or give another file.")
    if not out.parent.is_dir():
        raise MmaError(f"--out {str(out)!r}: its folder {str(out.parent)!r} does not exist.")
    names = parse_classes(classes)
    _, meta = read_adapter(checkpoint)
    dataset = load_unlabelled(images)
    if distributed.world().many:
        raise MmaError("mma predict runs in one process; start it without torchrun.")
    dev = resolve_device(device)
    loaded = load_model(meta["model"], device=str(dev))
    adapter, meta = load_adapter(checkpoint, loaded)
    method = type(adapter)
    try:
        if names is None:
            names, template = list(meta["classnames"]), meta.get("template")
        else:
            template = method.prompt_template(dataset, meta.get("user_template"))
            if not adapter.can_classify(names):
                own = meta["classnames"]
                shown = ", ".join(own[:5]) + (", ..." if len(own) > 5 else "")
                raise MmaError(
                    f"A {method.title or method.name} checkpoint names only the classes it was trained on "
                    f"({shown}); drop --classes."
                )
        report = ReadReport(dataset.name, "--images", strict=strict)
        k = min(top_k, len(names))
        rows = []
        for idx, logits, _ in method_scores(
            loaded, adapter, dataset, dataset.test, names, template, device=dev, batch_size=batch_size, cache=False,
            report=report,
        ):  # fmt: skip
            probs, best = torch.softmax(logits.float(), dim=-1).topk(k, dim=-1)
            for i, p, b in zip(idx.tolist(), probs.tolist(), best.tolist()):
                row = {"path": dataset.test[i].ref}
                for rank, (pi, bi) in enumerate(zip(p, b), start=1):
                    row[f"class_{rank}"], row[f"prob_{rank}"] = names[bi], round(pi, 6)
                rows.append(row)
    finally:
        adapter.detach()
    columns = ["path", *(f"{c}_{r}" for r in range(1, k + 1) for c in ("class", "prob"))]
    atomic_write_text(out, pd.DataFrame(rows, columns=columns).to_csv(index=False))
    return PredictRun(out, len(rows), names, report.record())
