"""The CoOp few-shot draw and the base/novel class split (SPEC.md section 4).

The rule, as CoOp/Dassl apply it:

* seed, then group a split by label (labels in order of first appearance);
* for each label draw ``K`` items with ``random.sample`` (all of them if fewer than ``K``);
* train gets ``K`` shots, val ``min(K, 4)``, drawn one after the other from the same seeded generator;
* the draw is made over *all* classes; a base/novel restriction comes after it;
* base = the first ``ceil(n/2)`` sorted labels, novel = the rest, each relabelled from 0.

Draws are cached in the user cache folder, keyed by dataset name, split fingerprint, K and seed.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from mma.errors import MmaError
from mma.io import atomic_write_json, cache_dir, read_json

from .base import ImageDataset, Sample

__all__ = ["FewShot", "draw_few_shot", "sample_per_label", "split_base_novel", "subsample_classes"]


@dataclass(frozen=True)
class FewShot:
    train: list[Sample]
    val: list[Sample]
    shots: int
    seed: int


def sample_per_label(items: list[Sample], k: int, rng: random.Random) -> list[Sample]:
    """Group *items* by label (first-appearance order) and draw *k* per label with ``rng.sample``."""
    groups: dict[int, list[Sample]] = defaultdict(list)
    for item in items:
        groups[item.label].append(item)
    out: list[Sample] = []
    for members in groups.values():
        out.extend(rng.sample(members, k) if len(members) >= k else members)
    return out


def draw_few_shot(
    dataset: ImageDataset,
    shots: int,
    seed: int,
    *,
    cache: bool | str | Path = True,
) -> FewShot:
    """Draw *shots* training and ``min(shots, 4)`` validation samples per class, CoOp's way.

    ``shots <= 0`` means "all samples" (no draw). With *cache* true the draw is stored in (and reused
    from) the user cache folder; pass a folder to use that one instead, or ``False`` to skip caching.
    """
    if shots <= 0:
        return FewShot(list(dataset.train), list(dataset.val), shots, seed)
    path = None
    if cache:
        folder = Path(cache) if not isinstance(cache, bool) else cache_dir("fewshot")
        path = folder / f"{dataset.name}-{dataset.fingerprint}-shot{shots}-seed{seed}.json"
        if path.exists():
            data = read_json(path)
            return FewShot(
                [Sample(r, int(y)) for r, y in data["train"]],
                [Sample(r, int(y)) for r, y in data["val"]],
                shots,
                seed,
            )
    rng = random.Random(seed)
    train = sample_per_label(dataset.train, shots, rng)
    val = sample_per_label(dataset.val, min(shots, 4), rng)
    if path is not None:
        atomic_write_json(
            path,
            {
                "dataset": dataset.name,
                "fingerprint": dataset.fingerprint,
                "shots": shots,
                "seed": seed,
                "train": [[s.ref, s.label] for s in train],
                "val": [[s.ref, s.label] for s in val],
            },
        )
    return FewShot(train, val, shots, seed)


def split_base_novel(num_classes: int) -> tuple[list[int], list[int]]:
    """Base = the first ``ceil(n/2)`` labels (sorted), novel = the rest."""
    if num_classes < 2:
        raise MmaError(f"A base-to-novel split needs at least 2 classes; this dataset has {num_classes}.")
    labels = list(range(num_classes))
    m = math.ceil(num_classes / 2)
    return labels[:m], labels[m:]


def subsample_classes(samples: list[Sample], keep: list[int]) -> list[Sample]:
    """Keep samples whose label is in *keep*, relabelled to their position in ``sorted(keep)``."""
    relabel = {y: i for i, y in enumerate(sorted(keep))}
    return [Sample(s.ref, relabel[s.label]) for s in samples if s.label in relabel]
