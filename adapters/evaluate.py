"""Evaluation: classify a split's images among a set of classes with the model as it is.

The zero-shot baseline and the adapted model go through this same code; only whether an adapter is
attached differs. Text features are computed once per class set and reused for every image. Under
torchrun every rank classifies its share of the images (see :func:`mma.probe.zeroshot.zero_shot_accuracy`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mma.probe.data.base import ImageDataset, Sample
from mma.probe.data.reading import ReadReport
from mma.probe.specs import LoadedModel
from mma.probe.zeroshot import zero_shot_accuracy

__all__ = ["accuracy", "harmonic_mean"]


def accuracy(
    loaded: LoadedModel,
    dataset: ImageDataset,
    samples: Sequence[Sample],
    classnames: Sequence[str],
    *,
    template: str | None = None,
    device: torch.device = torch.device("cpu"),
    batch_size: int = 256,
    workers: int = 0,
    report: ReadReport | None = None,
) -> float:
    """Top-1 accuracy (%) of *samples* (labelled 0..len(classnames)-1) among *classnames*; NaN if none is readable."""
    loaded.model.eval()
    return 100.0 * zero_shot_accuracy(
        loaded,
        dataset,
        samples=samples,
        classnames=classnames,
        template=template,
        device=device,
        batch_size=batch_size,
        workers=workers,
        report=report,
    )


def harmonic_mean(base: float, novel: float) -> float:
    """HM = 2BN / (B + N); 0 when both are 0."""
    return 0.0 if base + novel == 0 else 2 * base * novel / (base + novel)
