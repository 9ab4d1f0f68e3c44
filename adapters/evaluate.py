"""Evaluation: classify a split's images among a set of classes with the model as it is.

The zero-shot baseline and the adapted model go through this same code; only whether an adapter is
attached differs. Text features are computed once per class set and reused for every image. Under
torchrun every rank classifies its share of the images (see :func:`mma.probe.zeroshot.zero_shot_accuracy`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mma import distributed
from mma.metrics import harmonic_mean
from mma.probe.data.base import ImageDataset, Sample
from mma.probe.data.reading import ImageReader, ReadReport, collate_readable
from mma.probe.specs import LoadedModel
from mma.probe.zeroshot import zero_shot_accuracy

__all__ = ["accuracy", "classifier_accuracy", "harmonic_mean"]


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


def classifier_accuracy(
    loaded: LoadedModel,
    predict,
    dataset: ImageDataset,
    samples: Sequence[Sample],
    *,
    device: torch.device = torch.device("cpu"),
    batch_size: int = 256,
    workers: int = 0,
) -> float:
    """Top-1 accuracy (%) of ``predict(images) -> logits`` on *samples* under the model's test preprocessing.

    The batches are sharded over torchrun ranks and the counts summed, as for the zero-shot model; NaN if no
    image is readable.
    """

    loaded.model.eval()
    samples = list(samples)
    mine = [samples[i] for batch in distributed.shard_batches(np.arange(len(samples)), batch_size) for i in batch]
    loader = torch.utils.data.DataLoader(
        ImageReader(dataset, mine, loaded.preprocess),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_readable,
        pin_memory=torch.device(device).type == "cuda",
    )
    correct = total = 0
    for _, images, labels, _ in loader:
        if images is None:
            continue
        pred = predict(images.to(device, non_blocking=True)).argmax(dim=-1).cpu()
        correct += int((pred == labels).sum())
        total += len(labels)
    correct, total = distributed.all_sum(torch.tensor([correct, total], dtype=torch.float64)).tolist()
    return 100.0 * correct / total if total else float("nan")
