"""Reading images for a model: one path, so every stage counts and reports unreadable files the same way.

:class:`ImageReader` is the torch ``Dataset`` over samples (an unreadable image yields ``None``);
:func:`collate_readable` stacks the readable rows; :func:`readable_batches` walks a DataLoader of such rows in
the main process and tells a :class:`ReadReport` which images it read and which it could not. With ``strict`` the
report (and the reader, where it runs in this process) stops at the first unreadable one with one sentence naming
the file. Training, evaluation and ``mma predict`` read through :func:`readable_batches` and record
:meth:`ReadReport.record` in their JSON; extraction (:mod:`mma.probe.extract`) reads through the same reader and
collate function and keeps the unreadable rows in its store manifest; all of them say it with
:func:`unreadable_line`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from mma import distributed
from mma.errors import MmaError, one_line

from .base import ImageDataset, Sample

__all__ = ["ImageReader", "ReadReport", "collate_readable", "readable_batches", "unreadable_error", "unreadable_line"]

_EXAMPLES = 5


def unreadable_line(record: dict) -> str:
    """The one terminal line of a :meth:`ReadReport.record` ("" when every image was read)."""
    if not record["unreadable"]:
        return ""
    stage = f" ({record['stage']})" if record.get("stage") else ""
    count, examples = record["unreadable"], record["examples"][:3]
    return f"{record['dataset']}{stage}: skipped {count} unreadable image(s), e.g. {examples}."


def unreadable_error(ref: str, dataset: str, why: str = "") -> MmaError:
    """The one sentence ``--strict`` stops with."""
    reason = f" ({why})" if why else ""
    return MmaError(
        f"Cannot read image {ref!r} of dataset {dataset!r}{reason}; drop --strict to skip unreadable images."
    )


@dataclass
class ReadReport:
    """Which images of one dataset a stage read and which it could not (each counted once, however often it was
    tried: every epoch reads the training images again).

    ``stage``: what read them, said with the count ("training", "validation", "test", "test, base classes", ...).
    ``strict``: :meth:`add` raises :class:`MmaError` naming the image instead of counting it.
    """

    dataset: str = ""
    stage: str = ""
    strict: bool = False
    seen: set[str] = field(default_factory=set)  # the images read
    refs: dict[str, None] = field(default_factory=dict)  # the unreadable ones, in the order they were met

    @property
    def unreadable(self) -> int:
        return len(self.refs)

    @property
    def examples(self) -> list[str]:
        return list(self.refs)[:_EXAMPLES]

    def add(self, ref: str) -> None:
        if self.strict:
            raise unreadable_error(ref, self.dataset)
        self.refs.setdefault(ref, None)

    def merge_ranks(self) -> ReadReport:
        """Every torchrun rank's images, read and unreadable, in each rank's report (a collective: call it on every
        rank; nothing to do in one process)."""
        if distributed.world().many:
            parts = distributed.all_gather((list(self.refs), sorted(self.seen)))
            self.refs = {ref: None for refs, _ in parts for ref in refs}
            self.seen = {ref for _, seen in parts for ref in seen}
        return self

    def record(self, samples: Sequence[Sample] | None = None, stage: str | None = None) -> dict:
        """What a run's JSON keeps: the dataset, the stage, the images read (an accuracy's denominator, or the
        images trained on), the unreadable count and a few examples; over *samples* alone when given (the training
        images of a report that also read validation images)."""
        bad, images = list(self.refs), len(self.seen)
        if samples is not None:
            wanted = {s.ref for s in samples}
            bad, images = [r for r in bad if r in wanted], len(self.seen & wanted)
        stage = self.stage if stage is None else stage
        return {"dataset": self.dataset, "stage": stage, "images": images, "unreadable": len(bad), "examples": bad[:5]}


class ImageReader(torch.utils.data.Dataset):
    """``reader[i] -> (index, image_tensor, label)``, or ``(index, None, label)`` for an unreadable image.

    With ``strict=True`` an unreadable image raises :class:`MmaError` naming the file (and why) instead; in a
    DataLoader worker (where torch would wrap the sentence in a traceback) it yields None, and the strict
    :class:`ReadReport` of :func:`readable_batches` stops in the main process.
    Use :func:`collate_readable` as the DataLoader's ``collate_fn`` and walk it with :func:`readable_batches`.
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
            if self.strict and torch.utils.data.get_worker_info() is None:  # in a worker: the main process says it
                raise unreadable_error(s.ref, self.dataset.name, one_line(exc)) from exc
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


def readable_batches(
    loader: Iterable, samples: Sequence[Sample], report: ReadReport | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]:
    """``(indices, inputs or None, labels)`` of each batch of *loader* (rows of :func:`collate_readable`, indices
    into *samples*); the unreadable rows go to *report* (which raises under ``strict``), the read ones are counted."""
    for idx, inputs, labels, bad in loader:
        if report is not None:
            for i in bad:
                report.add(samples[i].ref)
            report.seen.update(samples[i].ref for i in idx.tolist())
        yield idx, inputs, labels
