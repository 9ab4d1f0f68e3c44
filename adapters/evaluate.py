"""Evaluation: classify a split's images among a set of classes with the model as it is.

The zero-shot baseline and the adapted model go through this same code; only whether an adapter is
attached differs. Text features are computed once per class set and reused for every image. Under
torchrun every rank classifies its share of the images (see :func:`mma.probe.zeroshot.zero_shot_accuracy`).
:func:`method_accuracy` evaluates any method, reading the frozen part of the image tower from the run's cache.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mma import distributed
from mma.metrics import harmonic_mean
from mma.probe.data.base import ImageDataset, Sample
from mma.probe.data.reading import ReadReport, collate_readable, readable_batches
from mma.probe.specs import LoadedModel
from mma.probe.zeroshot import zero_shot_accuracy, zero_shot_classifier

from .frozen import image_part, method_inputs

__all__ = ["accuracy", "method_accuracy", "method_scores", "harmonic_mean"]


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


def method_scores(
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
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(indices, logits, labels)`` per batch of the readable *samples* under *method* (indices into *samples*;
    logits on the CPU, as in training: ``exp(logit_scale) * cosine`` for the methods that match images with prompts,
    the logistic-regression scores for the linear probe; their softmax is the model's probability).

    Its own classifier, or, when it has none (the zero-shot model, MMA's hooked model), the model as it is
    against the prompts of *classnames*: the zero-shot code's classifier. The images' frozen part
    (:meth:`~mma.adapters.method_base.MethodBase.image_start`) is computed once per image and kept in
    *cache_dir* when *cache* (:mod:`mma.adapters.frozen`). Unreadable images go to *report*
    (:func:`~mma.probe.data.reading.readable_batches`; strict: the first one stops).
    """
    loaded.model.eval()
    part = image_part(loaded, method.image_start(loaded))
    predict = method.classifier(loaded, classnames, template, device)
    if predict is None:  # the model as it is, against the prompts: the zero-shot code's classifier
        weights = zero_shot_classifier(loaded, classnames, template, device=device)
        weights = weights * float(loaded.model.logit_scale.exp())
        encode = part.rest if part is not None else loaded.model.encode_image

        def predict(inputs: torch.Tensor) -> torch.Tensor:
            return F.normalize(encode(inputs).float(), dim=-1) @ weights.T

    samples = list(samples)
    strict = report is not None and report.strict
    reader, prefix = method_inputs(
        part, loaded, dataset, samples, loaded.preprocess, cached=cache, device=device, folder=cache_dir,
        workers=workers, strict=strict,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(
        reader,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_readable,
        pin_memory=torch.device(device).type == "cuda",
    )
    with torch.no_grad():
        for idx, inputs, labels in readable_batches(loader, samples, report):
            if inputs is None:
                continue
            inputs = inputs.to(device, non_blocking=True)
            yield idx, predict(prefix(inputs) if prefix is not None else inputs).float().cpu(), labels


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

    The logits of :func:`method_scores`: every method that reads the final feature shares the zero-shot model's
    frozen-input cache, and MMA's seeds share the inputs of their first adapted block. The batches are sharded
    over torchrun ranks and the counts summed; the denominator is the readable images (*report* counts the
    others); NaN if no image is readable.
    """
    samples = list(samples)
    mine = [samples[i] for batch in distributed.shard_batches(np.arange(len(samples)), batch_size) for i in batch]
    correct = total = 0
    for _, logits, labels in method_scores(
        loaded, method, dataset, mine, classnames, template, device=device, batch_size=batch_size, workers=workers,
        cache=cache, cache_dir=cache_dir, report=report,
    ):  # fmt: skip
        correct += int((logits.argmax(dim=-1) == labels).sum())
        total += len(labels)
    correct, total = distributed.all_sum(torch.tensor([correct, total], dtype=torch.float64)).tolist()
    if report is not None:
        report.merge_ranks()
    return 100.0 * correct / total if total else float("nan")
