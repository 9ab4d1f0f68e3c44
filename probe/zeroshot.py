"""Zero-shot classification with class prompts: the baseline every adapter result is compared to."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mma import distributed

from .data.base import ImageDataset, Sample
from .data.reading import ImageReader, ReadReport, collate_readable, readable_batches
from .layers import layer_maps
from .specs import LoadedModel
from .textcut import encode_text

__all__ = ["encode_texts", "encode_images", "zero_shot_classifier", "zero_shot_counts", "zero_shot_accuracy"]


@torch.no_grad()
def encode_texts(
    loaded: LoadedModel, texts: Sequence[str], *, device: str | torch.device = "cpu", batch_size: int = 256
) -> torch.Tensor:
    """L2-normalised text embeddings, ``[len(texts), embed_dim]`` (float32), on the live positions only
    (:mod:`mma.probe.textcut`)."""
    text_map = layer_maps(loaded.model)["text"]
    out = []
    for i in range(0, len(texts), batch_size):
        tokens = loaded.tokenizer(list(texts[i : i + batch_size])).to(device)
        out.append(F.normalize(encode_text(loaded.model, text_map, tokens).float(), dim=-1))
    return torch.cat(out)


@torch.no_grad()
def encode_images(
    loaded: LoadedModel,
    dataset: ImageDataset,
    samples: Sequence[Sample],
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    workers: int = 0,
    strict: bool = False,
    report: ReadReport | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised image embeddings of the readable samples and their labels."""
    reader = ImageReader(dataset, samples, loaded.preprocess, strict=strict)
    pin = torch.device(device).type == "cuda"
    loader = torch.utils.data.DataLoader(
        reader, batch_size=batch_size, num_workers=workers, collate_fn=collate_readable, pin_memory=pin
    )
    feats, labels = [], []
    for _, images, y in readable_batches(loader, samples, report):
        if images is None:
            continue
        feats.append(F.normalize(loaded.model.encode_image(images.to(device, non_blocking=True)).float(), dim=-1).cpu())
        labels.append(y)
    if not feats:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(feats), torch.cat(labels)


def zero_shot_classifier(loaded: LoadedModel, classnames: Sequence[str], template: str, **kw) -> torch.Tensor:
    """``[num_classes, embed_dim]`` normalised prompt embeddings, one per class."""
    return encode_texts(loaded, [template.format(c) for c in classnames], **kw)


def zero_shot_counts(
    loaded: LoadedModel,
    dataset: ImageDataset,
    samples: Sequence[Sample],
    classnames: Sequence[str],
    template: str,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    workers: int = 0,
    report: ReadReport | None = None,
) -> tuple[int, int]:
    """``(correct, readable)`` top-1 counts of *samples* (labelled 0..n-1) among *classnames*' prompts.

    Counts, not a fraction, so shards of a split (one per process) add up to the exact whole.
    """
    weights = zero_shot_classifier(loaded, classnames, template, device=device)
    feats, labels = encode_images(
        loaded, dataset, samples, device=device, batch_size=batch_size, workers=workers, report=report
    )
    if len(labels) == 0:
        return 0, 0
    pred = (feats.to(weights.device) @ weights.T).argmax(dim=-1).cpu()
    return int((pred == labels).sum()), len(labels)


def zero_shot_accuracy(
    loaded: LoadedModel,
    dataset: ImageDataset,
    *,
    split: str = "test",
    samples: Sequence[Sample] | None = None,
    classnames: Sequence[str] | None = None,
    template: str | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    workers: int = 0,
    report: ReadReport | None = None,
) -> float:
    """Top-1 accuracy (fraction) of classifying a split (or *samples*) among class prompts.

    *classnames* defaults to the dataset's; pass a subset (e.g. the base classes) with samples labelled
    0..len(classnames)-1. The model is used as it is, so an attached adapter takes part. NaN when no
    image could be read. Under torchrun every rank classifies its share of the very batches one process
    would run and the correct counts are summed, so the accuracy is the one-process accuracy.
    """
    samples = list(dataset.splits[split] if samples is None else samples)
    classnames = dataset.classnames if classnames is None else classnames
    mine = [samples[i] for batch in distributed.shard_batches(np.arange(len(samples)), batch_size) for i in batch]
    correct, total = zero_shot_counts(
        loaded,
        dataset,
        mine,
        classnames,
        template or dataset.template,
        device=device,
        batch_size=batch_size,
        workers=workers,
        report=report,
    )
    correct, total = distributed.all_sum(torch.tensor([correct, total], dtype=torch.float64)).tolist()
    return correct / total if total else float("nan")
