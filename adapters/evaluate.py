"""Evaluation: classify a split's images among a set of classes with the model as it is.

The zero-shot baseline and the adapted model go through this same code; only whether an adapter is
attached differs. Text features are computed once per class set and reused for every image. Under
torchrun every rank classifies its share of the images (see :func:`mma.probe.zeroshot.zero_shot_accuracy`).
:func:`method_accuracy` evaluates any method, reading the frozen part of the image tower from the run's cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mma import distributed
from mma.metrics import harmonic_mean
from mma.probe.data.base import ImageDataset, Sample
from mma.probe.data.reading import ReadReport, collate_readable
from mma.probe.specs import LoadedModel
from mma.probe.zeroshot import zero_shot_accuracy, zero_shot_classifier

from .frozen import image_part, method_inputs

__all__ = ["accuracy", "method_accuracy", "harmonic_mean"]


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


def method_accuracy(
    loaded: LoadedModel,
    method,
    dataset: ImageDataset,
    samples: Sequence[Sample],
    classnames: Sequence[str],
    template: str,
    *,
    device: torch.device = torch.device("cpu"),
    batch_size: int = 256,
    workers: int = 0,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    report: ReadReport | None = None,
) -> float:
    """Top-1 accuracy (%) of *method* on *samples* (labelled 0..len(classnames)-1) under the test preprocessing.

    Its own classifier, or, when it has none (the zero-shot model, MMA's hooked model), the model as it is
    against the prompts of *classnames*: the zero-shot code's classifier. The images' frozen part
    (:meth:`~mma.adapters.method_base.MethodBase.image_start`) is computed once per image and kept in
    *cache_dir* when *cache* (:mod:`mma.adapters.frozen`): every method that reads the final feature shares the
    zero-shot model's, and MMA's seeds share the inputs of their first adapted block. The batches are sharded
    over torchrun ranks and the counts summed; NaN if no image is readable.
    """
    loaded.model.eval()
    part = image_part(loaded, method.image_start(loaded))
    predict = method.classifier(loaded, classnames, template, device)
    if predict is None:  # the model as it is, against the prompts: the zero-shot code's classifier
        weights = zero_shot_classifier(loaded, classnames, template, device=device)
        encode = part.rest if part is not None else loaded.model.encode_image

        def predict(inputs: torch.Tensor) -> torch.Tensor:
            return F.normalize(encode(inputs).float(), dim=-1) @ weights.T

    samples = list(samples)
    mine = [samples[i] for batch in distributed.shard_batches(np.arange(len(samples)), batch_size) for i in batch]
    reader, prefix = method_inputs(
        part, loaded, dataset, mine, loaded.preprocess, cached=cache, device=device, folder=cache_dir, workers=workers
    )
    loader = torch.utils.data.DataLoader(
        reader,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_readable,
        pin_memory=torch.device(device).type == "cuda",
    )
    correct = total = 0
    with torch.no_grad():
        for _, inputs, labels, bad in loader:
            if report is not None:
                for i in bad:
                    report.add(mine[i].ref)
            if inputs is None:
                continue
            inputs = inputs.to(device, non_blocking=True)
            pred = predict(prefix(inputs) if prefix is not None else inputs).argmax(dim=-1).cpu()
            correct += int((pred == labels).sum())
            total += len(labels)
    correct, total = distributed.all_sum(torch.tensor([correct, total], dtype=torch.float64)).tolist()
    return 100.0 * correct / total if total else float("nan")
