"""The evaluation protocols every CoOp-family paper uses (SPEC.md section 4): one registered object each.

==================  ===========================================================================
protocol            what is trained, what is evaluated
==================  ===========================================================================
``base2novel``      per dataset: train on the base half of the classes (K shots); test base images
                    among base classes and novel images among novel classes; HM = 2BN/(B+N).
                    A dataset with fewer than 4 classes is left out: with 1 base and 1 novel
                    class every accuracy is 100% by construction
``few-shot``        per dataset: train on all classes (K shots); test among all classes
``cross-dataset``   train on the source (first dataset, all classes); test on every other dataset
``domain-gen``      train on the source; test on its shifted variants (same class names, or a
                    subset of them: ImageNet -> ImageNetV2 / -Sketch / -A / -R)
==================  ===========================================================================

A :class:`Protocol` answers what the jobs and the tables would otherwise decide by its name: the tasks it
makes, which datasets train (``per_dataset``), its metrics and headline metric, the datasets it leaves out,
how it scores a task, its default data and, for the paper's benchmark, which datasets it runs on. The facts
about datasets (which are the shifted variants of which) belong to the data sources (:mod:`mma.probe.data`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from mma.errors import MmaError
from mma.probe.data import (
    ImageDataset,
    Sample,
    default_data,
    default_shift_data,
    draw_few_shot,
    shifted_variants,
    split_base_novel,
    subsample_classes,
)
from mma.probe.data.reading import ReadReport
from mma.probe.specs import LoadedModel

from .evaluate import harmonic_mean, method_accuracy

__all__ = [
    "PROTOCOLS",
    "Protocol",
    "MIN_BASE2NOVEL_CLASSES",
    "EvalSplit",
    "Task",
    "get_protocol",
    "make_tasks",
    "skipped_datasets",
    "check_shots",
    "check_two_classes",
    "evaluate_task",
    "task_metrics",
    "tuning_tasks",
]

MIN_BASE2NOVEL_CLASSES = 4  # 2 base + 2 novel: fewer makes a one-class "classification" that is always right


@dataclass
class EvalSplit:
    """Images of *dataset* (labels 0..n-1 over *classnames*) to classify among *classnames*."""

    name: str
    dataset: ImageDataset
    samples: list[Sample]
    classnames: list[str]


@dataclass
class Task:
    """One training run: what to train on and what to evaluate afterwards."""

    protocol: str
    name: str  # the result's dataset key (the trained dataset, or the source)
    dataset: ImageDataset
    train: list[Sample]
    classnames: list[str]
    evals: list[EvalSplit] = field(default_factory=list)
    val: list[Sample] = field(default_factory=list)  # the few-shot val draw of the trained classes (linear probe)


def check_shots(
    dataset: ImageDataset, shots: int, labels: list[int] | None = None, *, strict: bool = False
) -> str | None:
    """Classes (of *labels*, default all) with fewer than *shots* training images.

    The CoOp / Dassl draw then uses all the images such a class has; this returns one sentence saying so
    (None when every class has enough). With *strict* the shortfall is an :class:`MmaError` instead.
    """
    counts = Counter(s.label for s in dataset.train)
    labels = range(dataset.num_classes) if labels is None else labels
    short = [(dataset.classnames[y], counts.get(y, 0)) for y in labels if counts.get(y, 0) < shots]
    if not short:
        return None
    empty = [y for y in labels if not counts.get(y, 0)]
    if empty:  # not a shortfall but a class the training split lacks (e.g. only in test/): said as that
        return _no_training_images(dataset, empty, strict)
    name, n = short[0]
    if strict:
        raise MmaError(
            f"Dataset {dataset.name!r} has {len(short)} class(es) with fewer than --shots {shots} training images "
            f"(e.g. {name!r}: {n}); lower --shots to at most {min(n for _, n in short)}, or drop --strict to use "
            "all the images such classes have."
        )
    return (
        f"Dataset {dataset.name!r}: {len(short)} class(es) have fewer than --shots {shots} training images "
        f"(e.g. {name!r}: {n}); using all of their images (the CoOp / Dassl rule)."
    )


def _no_training_images(dataset: ImageDataset, labels: list[int], strict: bool) -> str:
    """One sentence on classes of *dataset* without a training image (an :class:`MmaError` with *strict*)."""
    y = labels[0]
    splits = (("validation", dataset.val), ("test", dataset.test))
    where = [w for w, split in splits if any(s.label == y for s in split)]
    only = f" (only {' and '.join(where)} images)" if where else ""
    more = f" and {len(labels) - 1} other class(es) have" if len(labels) > 1 else " has"
    what = f"Dataset {dataset.name!r}: class {dataset.classnames[y]!r}{more} no training images{only}"
    if strict:
        raise MmaError(f"{what}; add training images for it (a train/ subfolder of that class), or drop --strict.")
    return f"{what}; it trains on none and is still evaluated."


def check_two_classes(tasks: list[Task]) -> list[Task]:
    """*tasks*, refusing one whose training or evaluation has fewer than 2 classes (always right by construction)."""
    for t in tasks:
        for what, classes in [(t.name, t.classnames), *((e.dataset.name, e.classnames) for e in t.evals)]:
            if len(classes) < 2:
                raise MmaError(
                    f"Dataset {what!r} has {len(classes)} class(es) {classes}; a classifier needs at least 2 classes "
                    "to choose between (with 1 every accuracy is 100%), so give it more class folders or leave it "
                    "out of --data."
                )
    return tasks


def _all_classes(d: ImageDataset) -> EvalSplit:
    return EvalSplit(d.name, d, list(d.test), list(d.classnames))


def _val_of(d: ImageDataset, labels: list[int], name: str | None = None) -> EvalSplit:
    """The validation images of *labels* (relabelled 0..) among those classes, named *name* (default: the dataset)."""
    if not d.val:
        raise MmaError(f"Dataset {d.name!r} has no validation split; mma tune scores validation images only.")
    return EvalSplit(name or d.name, d, subsample_classes(d.val, labels), [d.classnames[i] for i in labels])


def _subset_eval(source: ImageDataset, target: ImageDataset) -> EvalSplit:
    missing = [c for c in target.classnames if c not in set(source.classnames)]
    if missing:
        raise MmaError(
            f"domain-gen target {target.name!r} has classes the source {source.name!r} lacks (e.g. {missing[0]!r}); "
            "a shifted variant must share the source's class names."
        )
    return _all_classes(target)


class Protocol:
    """One evaluation protocol; the subclasses below are the four the papers use."""

    name: ClassVar[str] = ""
    per_dataset: ClassVar[bool] = True  # every dataset trains (else only the source, the first one)
    metrics: ClassVar[tuple[str, ...]] = ()  # the averaged metrics tables show, the headline last
    in_paper: ClassVar[bool] = True  # reported in the MMA paper's tables (what 'mma reproduce' runs)
    # the metric over the union of the classes it splits (--all-classes: every test image among all the dataset's
    # classes, the open-world reading recent papers add to base / novel); None: it evaluates every class together
    union_metric: ClassVar[str | None] = None

    def check_all_classes(self) -> None:
        """One sentence if ``--all-classes`` does not apply: the protocol evaluates every class together already."""
        if self.union_metric is None:
            takes = [name for name, p in PROTOCOLS.items() if p.union_metric]
            raise MmaError(
                f"--all-classes applies to the protocols that split a dataset's classes ({', '.join(takes)}); "
                f"{self.name} already evaluates every class together."
            )

    def with_all_classes(self, task: Task) -> Task:
        """*task* with one more evaluation split: every test image of its dataset among all its classes
        (:attr:`union_metric`). Only a protocol that splits the classes has one."""
        self.check_all_classes()
        raise NotImplementedError

    @property
    def headline(self) -> str:
        """The metric a comparison leads with."""
        return self.metrics[-1]

    def default_data(self) -> list[str]:
        """The data specs it runs on when ``--data`` is not given: the embedded downstream suite."""
        return [default_data()]

    def skipped(self, datasets: Sequence[ImageDataset]) -> dict[str, str]:
        """``{dataset: reason}`` for the datasets it leaves out."""
        return {}

    def training_groups(self, datasets: Sequence[ImageDataset]) -> list[list[ImageDataset]]:
        """The datasets of each training run: each one alone, or all of them with the source first."""
        kept = [d for d in datasets if d.name not in self.skipped(datasets)]
        return [[d] for d in kept] if self.per_dataset else [list(datasets)]

    def benchmark_datasets(self, datasets: Sequence[str], source: str) -> list[str]:
        """Which of a benchmark's *datasets* it runs on (the source first where it trains on one)."""
        return list(datasets)

    def make_tasks(self, datasets: list[ImageDataset], shots: int, seed: int, shortfall) -> list[Task]:
        raise NotImplementedError

    def score(self, task: Task, accs: dict[str, float]) -> dict[str, float]:
        """The reported numbers of one task from the accuracy of each of its evaluation splits."""
        raise NotImplementedError

    @property
    def tuning_metric(self) -> str:
        """The averaged metric ``mma tune`` maximises on its tuning tasks."""
        return self.headline

    def tuning_tasks(self, datasets: list[ImageDataset], shots: int, seed: int, shortfall) -> list[Task]:
        """Tasks that read only the training and *validation* images of the classes the protocol trains on (no test
        image, no novel class, no target dataset), scored like :meth:`make_tasks`' (``mma tune``)."""
        tasks = []
        for d, *_ in self.training_groups(datasets):  # each dataset, or the source alone
            shortfall(d)
            fs = draw_few_shot(d, shots, seed)
            evals = [_val_of(d, list(range(d.num_classes)))]
            tasks.append(Task(self.name, d.name, d, list(fs.train), list(d.classnames), evals, list(fs.val)))
        return tasks


class Base2Novel(Protocol):
    name = "base2novel"
    metrics = ("base", "novel", "hm")
    union_metric = "all"

    def skipped(self, datasets):
        return {
            d.name: f"{d.num_classes} classes; base-to-novel needs at least {MIN_BASE2NOVEL_CLASSES}"
            for d in datasets
            if d.num_classes < MIN_BASE2NOVEL_CLASSES
        }

    def benchmark_datasets(self, datasets, source):
        return [d for d in datasets if d not in shifted_variants(source)]

    def make_tasks(self, datasets, shots, seed, shortfall):
        tasks = []
        for [d] in self.training_groups(datasets):
            fs = draw_few_shot(d, shots, seed)
            base, novel = split_base_novel(d.num_classes)
            shortfall(d, base)
            base_names = [d.classnames[i] for i in base]
            novel_names = [d.classnames[i] for i in novel]
            evals = [
                EvalSplit("base", d, subsample_classes(d.test, base), base_names),
                EvalSplit("novel", d, subsample_classes(d.test, novel), novel_names),
            ]
            train, val = subsample_classes(fs.train, base), subsample_classes(fs.val, base)
            tasks.append(Task(self.name, d.name, d, train, base_names, evals, val))
        return tasks

    def tuning_tasks(self, datasets, shots, seed, shortfall):
        """The base classes split again, as base and novel are: train on the first half (pseudo-base), score the
        validation images of both halves, each among its own classes (the HM of the two is the score). A dataset
        with fewer than 4 base classes is left out."""
        tasks = []
        for [d] in self.training_groups(datasets):
            base, _ = split_base_novel(d.num_classes)
            if len(base) < MIN_BASE2NOVEL_CLASSES:
                continue
            halves = split_base_novel(len(base))
            pseudo_base, pseudo_novel = ([base[i] for i in half] for half in halves)
            shortfall(d, pseudo_base)
            fs = draw_few_shot(d, shots, seed)
            evals = [_val_of(d, pseudo_base, "base"), _val_of(d, pseudo_novel, "novel")]
            train, val = subsample_classes(fs.train, pseudo_base), subsample_classes(fs.val, pseudo_base)
            tasks.append(Task(self.name, d.name, d, train, evals[0].classnames, evals, val))
        return tasks

    def with_all_classes(self, task):
        d = task.dataset
        every = list(range(d.num_classes))
        union = EvalSplit(self.union_metric, d, subsample_classes(d.test, every), list(d.classnames))
        return Task(task.protocol, task.name, d, task.train, task.classnames, [*task.evals, union], task.val)

    def score(self, task, accs):
        union = {self.union_metric: accs[self.union_metric]} if self.union_metric in accs else {}
        if "novel" not in accs:  # a method that cannot name novel classes: novel and HM are not applicable
            return {"base": accs["base"], **union}
        return {"base": accs["base"], "novel": accs["novel"], "hm": harmonic_mean(accs["base"], accs["novel"]), **union}


class FewShot(Protocol):
    name = "few-shot"
    metrics = ("accuracy",)
    in_paper = False

    def make_tasks(self, datasets, shots, seed, shortfall):
        tasks = []
        for [d] in self.training_groups(datasets):
            fs = draw_few_shot(d, shots, seed)
            shortfall(d)
            tasks.append(Task(self.name, d.name, d, fs.train, list(d.classnames), [_all_classes(d)], list(fs.val)))
        return tasks

    def score(self, task, accs):
        return {"accuracy": accs[task.name]}


class CrossDataset(Protocol):
    name = "cross-dataset"
    per_dataset = False
    metrics = ("source", "target_average")
    tuning_metric = "source"  # the targets are unseen datasets: tuning reads the source's validation images only

    def benchmark_datasets(self, datasets, source):
        return [source, *(d for d in Base2Novel().benchmark_datasets(datasets, source) if d != source)]

    def targets(self, source: ImageDataset, targets: list[ImageDataset]) -> list[EvalSplit]:
        if not targets:
            raise MmaError(f"cross-dataset needs target datasets after the source {source.name!r} in --data.")
        return [_all_classes(t) for t in targets]

    def make_tasks(self, datasets, shots, seed, shortfall):
        source, targets = datasets[0], datasets[1:]
        evals = self.targets(source, targets)
        shortfall(source)
        fs = draw_few_shot(source, shots, seed)
        classes = list(source.classnames)
        return [Task(self.name, source.name, source, fs.train, classes, [_all_classes(source), *evals], list(fs.val))]

    def score(self, task, accs):
        targets = {n: v for n, v in accs.items() if n != task.name}
        return {
            "source": accs[task.name],
            **{f"target:{n}": v for n, v in targets.items()},
            **({"target_average": float(np.mean(list(targets.values())))} if targets else {}),
        }


class DomainGen(CrossDataset):
    name = "domain-gen"

    def default_data(self):
        return [default_shift_data()]

    def benchmark_datasets(self, datasets, source):
        return [source, *shifted_variants(source)]

    def targets(self, source, targets):
        if not targets:
            shifts = shifted_variants(source.name)
            where = "builtin" if source.source.startswith("builtin") else "coop:ROOT"
            raise MmaError(
                f"domain-gen needs the source {source.name!r} and its shifted variants in --data"
                + (f" (e.g. {where}:{source.name},{','.join(shifts)})." if shifts else ".")
            )
        return [_subset_eval(source, t) for t in targets]


#: every protocol by name
PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (Base2Novel(), FewShot(), CrossDataset(), DomainGen())}


def get_protocol(name: str) -> Protocol:
    """The protocol *name*; one sentence naming the valid ones otherwise."""
    if name not in PROTOCOLS:
        raise MmaError(f"--protocol {name!r} is not valid (valid: {', '.join(PROTOCOLS)}).")
    return PROTOCOLS[name]


def skipped_datasets(protocol: str, datasets: list[ImageDataset]) -> dict[str, str]:
    """``{dataset: reason}`` for the datasets *protocol* leaves out (base2novel: fewer than 4 classes)."""
    return get_protocol(protocol).skipped(datasets)


def make_tasks(
    protocol: str,
    datasets: list[ImageDataset],
    *,
    shots: int,
    seed: int,
    strict: bool = False,
    notes: list[str] | None = None,
) -> list[Task]:
    """The training tasks of *protocol* over *datasets* (the first one is the source where one is needed).

    A class with fewer than *shots* training images trains on all it has; the sentence saying so is added
    to *notes* (once), or, with *strict*, raised as an :class:`MmaError`.
    """
    chosen = get_protocol(protocol)
    if not datasets:
        raise MmaError("No datasets were given; pass --data.")
    return check_two_classes(chosen.make_tasks(datasets, shots, seed, _shortfall(shots, strict, notes)))


def _shortfall(shots: int, strict: bool, notes: list[str] | None):
    """``shortfall(dataset, labels=None)``: :func:`check_shots`, its sentence added to *notes* once."""

    def shortfall(d: ImageDataset, labels=None) -> None:
        note = check_shots(d, shots, labels, strict=strict)
        if note and notes is not None and note not in notes:
            notes.append(note)

    return shortfall


def tuning_tasks(
    protocol: str, datasets: list[ImageDataset], *, shots: int, seed: int, notes: list[str] | None = None
) -> list[Task]:
    """*protocol*'s tuning tasks (:meth:`Protocol.tuning_tasks`): training and validation images of trained classes."""
    if not datasets:
        raise MmaError("No datasets were given; pass --data.")
    tasks = check_two_classes(
        get_protocol(protocol).tuning_tasks(datasets, shots, seed, _shortfall(shots, False, notes))
    )
    if not tasks:
        raise MmaError(
            f"No dataset can be tuned on under {protocol} (base-to-novel tuning splits the base classes again, so it "
            f"needs at least {2 * MIN_BASE2NOVEL_CLASSES} classes); give larger datasets."
        )
    return tasks


def evaluate_task(
    loaded: LoadedModel,
    task: Task,
    device: torch.device,
    template: str | None = None,
    *,
    method,
    workers: int = 0,
    cache: bool = True,
    cache_dir=None,
    strict: bool = False,
    read: dict | None = None,
) -> dict[str, float]:
    """Accuracy (%) of *method* (:mod:`mma.adapters.methods`) on every evaluation split of *task*
    (:func:`~mma.adapters.evaluate.method_accuracy`; *cache* / *cache_dir*: its frozen-input cache). A split whose
    classes the method cannot name (the linear probe on novel classes) is left out: not applicable.

    *read*: filled with each split's :meth:`~mma.probe.data.reading.ReadReport.record` (the images its accuracy
    counted, the unreadable ones); *strict*: an unreadable image stops the evaluation, naming it."""
    accs = {}
    for e in task.evals:
        if not method.can_classify(e.classnames):
            continue
        stage = "test" if e.name == e.dataset.name else f"test, {e.name} classes"
        report = ReadReport(e.dataset.name, stage, strict=strict)
        accs[e.name] = method_accuracy(
            loaded, method, e.dataset, e.samples, e.classnames, type(method).prompt_template(e.dataset, template),
            device=device,
            workers=workers, cache=cache, cache_dir=cache_dir, report=report,
        )  # fmt: skip
        if read is not None:
            read[e.name] = report.record()
    return accs


def task_metrics(task: Task, accs: dict[str, float]) -> dict[str, float]:
    """The protocol's reported numbers: base / novel / hm, accuracy, or source / targets / target_average."""
    return get_protocol(task.protocol).score(task, accs)
