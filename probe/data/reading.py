"""Reading images for a model: a torch ``Dataset`` over samples that skips (and counts) unreadable files."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from mma.errors import MmaError, one_line

from .base import ImageDataset, Sample

__all__ = ["ImageReader", "ReadReport", "collate_readable"]


@dataclass
class ReadReport:
    """How many images could not be read, and the first few of them."""

    unreadable: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, ref: str) -> None:
        self.unreadable += 1
        if len(self.examples) < 5:
            self.examples.append(ref)


class ImageReader(torch.utils.data.Dataset):
    """``reader[i] -> (index, image_tensor, label)``, or ``(index, None, label)`` for an unreadable image.

    With ``strict=True`` an unreadable image raises :class:`MmaError` naming the file instead.
    Use :func:`collate_readable` as the DataLoader's ``collate_fn``; it drops the unreadable rows.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        samples: Sequence[Sample],
        transform: Callable,
        *,
        strict: bool = False,
    ) -> None:
        self.dataset = dataset
        self.samples = list(samples)
        self.transform = transform
        self.strict = strict

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        s = self.samples[i]
        try:
            img = self.dataset.load_image(s)
            img.load()
        except (OSError, ValueError, SyntaxError) as exc:
            if self.strict:
                raise MmaError(
                    f"Cannot read image {s.ref!r} of dataset {self.dataset.name!r} ({one_line(exc)}); "
                    "drop --strict to skip unreadable images."
                ) from exc
            return i, None, s.label
        return i, self.transform(img), s.label


def collate_readable(batch):
    """Stack the readable rows; returns ``(indices, images, labels, unreadable_indices)``."""
    ok = [b for b in batch if b[1] is not None]
    bad = [b[0] for b in batch if b[1] is None]
    if not ok:
        return torch.empty(0, dtype=torch.long), None, torch.empty(0, dtype=torch.long), bad
    idx = torch.tensor([b[0] for b in ok], dtype=torch.long)
    images = torch.stack([b[1] for b in ok])
    labels = torch.tensor([b[2] for b in ok], dtype=torch.long)
    return idx, images, labels, bad
