"""The evaluation protocols every CoOp-family paper uses (SPEC.md section 4), as lists of tasks.

==================  ===========================================================================
protocol            what is trained, what is evaluated
==================  ===========================================================================
``base2novel``      per dataset: train on the base half of the classes (K shots); test base images
                    among base classes and novel images among novel classes; HM = 2BN/(B+N).
                    A dataset with fewer than 4 classes is left out (:func:`skipped_datasets`):
                    with 1 base and 1 novel class every accuracy is 100% by construction
``few-shot``        per dataset: train on all classes (K shots); test among all classes
``cross-dataset``   train on the source (first dataset, all classes); test on every other dataset
``domain-gen``      train on the source; test on its shifted variants (same class names, or a
                    subset of them: ImageNet -> ImageNetV2 / -Sketch / -A / -R)
==================  ===========================================================================
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from mma.errors import MmaError
from mma.probe.data import ImageDataset, Sample, draw_few_shot, split_base_novel, subsample_classes
from mma.probe.specs import LoadedModel

from .evaluate import accuracy, classifier_accuracy, harmonic_mean

__all__ = [
    "PROTOCOLS",
    "MIN_BASE2NOVEL_CLASSES",
    "EvalSplit",
    "Task",
    "default_data",
    "make_tasks",
    "skipped_datasets",
    "check_shots",
    "evaluate_task",
    "task_metrics",
]

PROTOCOLS = ("base2novel", "few-shot", "cross-dataset", "domain-gen")
MIN_BASE2NOVEL_CLASSES = 4  # 2 base + 2 novel: fewer makes a one-class "classification" that is always right
COOP_SHIFTS = {"imagenet": ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")}


def _known_shifts() -> dict[str, tuple[str, ...]]:
    from mma.probe.embedded.suite import DOMAIN_SHIFTS

    return {**COOP_SHIFTS, **DOMAIN_SHIFTS}


def default_data(protocol: str) -> list[str]:
    """The data spec a protocol runs on when ``--data`` is not given: the embedded downstream suite.

    ``domain-gen``: its ImageNet stand-in ``objects`` and the four shifted variants; every other protocol:
    the main suite (``objects`` first, the source of ``cross-dataset``).
    """
    from mma.probe.embedded.suite import DOMAIN_SHIFTS, SOURCE

    if protocol == "domain-gen":
        return [f"builtin:{','.join((SOURCE, *DOMAIN_SHIFTS[SOURCE]))}"]
    return ["builtin"]


def skipped_datasets(protocol: str, datasets: list[ImageDataset]) -> dict[str, str]:
    """``{dataset: reason}`` for the datasets *protocol* leaves out (base2novel: fewer than 4 classes)."""
    if protocol != "base2novel":
        return {}
    return {
        d.name: f"{d.num_classes} classes; base-to-novel needs at least {MIN_BASE2NOVEL_CLASSES}"
        for d in datasets
        if d.num_classes < MIN_BASE2NOVEL_CLASSES
    }


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


def _all_classes(d: ImageDataset) -> EvalSplit:
    return EvalSplit(d.name, d, list(d.test), list(d.classnames))


def _subset_eval(source: ImageDataset, target: ImageDataset) -> EvalSplit:
    missing = [c for c in target.classnames if c not in set(source.classnames)]
    if missing:
        raise MmaError(
            f"domain-gen target {target.name!r} has classes the source {source.name!r} lacks (e.g. {missing[0]!r}); "
            "a shifted variant must share the source's class names."
        )
    return _all_classes(target)


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

    def shortfall(d: ImageDataset, labels=None) -> None:
        note = check_shots(d, shots, labels, strict=strict)
        if note and notes is not None and note not in notes:
            notes.append(note)

    if protocol not in PROTOCOLS:
        raise MmaError(f"--protocol {protocol!r} is not valid (valid: {', '.join(PROTOCOLS)}).")
    if not datasets:
        raise MmaError("No datasets were given; pass --data.")
    tasks = []
    if protocol in ("base2novel", "few-shot"):
        skipped = skipped_datasets(protocol, datasets)
        for d in datasets:
            if d.name in skipped:
                continue
            fs = draw_few_shot(d, shots, seed)
            if protocol == "few-shot":
                shortfall(d)
                tasks.append(Task(protocol, d.name, d, fs.train, list(d.classnames), [_all_classes(d)], list(fs.val)))
                continue
            base, novel = split_base_novel(d.num_classes)
            shortfall(d, base)
            base_names = [d.classnames[i] for i in base]
            novel_names = [d.classnames[i] for i in novel]
            tasks.append(
                Task(
                    protocol,
                    d.name,
                    d,
                    subsample_classes(fs.train, base),
                    base_names,
                    [
                        EvalSplit("base", d, subsample_classes(d.test, base), base_names),
                        EvalSplit("novel", d, subsample_classes(d.test, novel), novel_names),
                    ],
                    subsample_classes(fs.val, base),
                )
            )
        return tasks
    source, targets = datasets[0], datasets[1:]
    if protocol == "domain-gen" and not targets:
        shifts = _known_shifts().get(source.name)
        where = "builtin" if source.source.startswith("builtin") else "coop:ROOT"
        raise MmaError(
            f"domain-gen needs the source {source.name!r} and its shifted variants in --data"
            + (f" (e.g. {where}:{source.name},{','.join(shifts)})." if shifts else ".")
        )
    if protocol == "cross-dataset" and not targets:
        raise MmaError(f"cross-dataset needs target datasets after the source {source.name!r} in --data.")
    shortfall(source)
    fs = draw_few_shot(source, shots, seed)
    evals = [_all_classes(source)] + [
        _subset_eval(source, t) if protocol == "domain-gen" else _all_classes(t) for t in targets
    ]
    return [Task(protocol, source.name, source, fs.train, list(source.classnames), evals, list(fs.val))]


def evaluate_task(
    loaded: LoadedModel,
    task: Task,
    device: torch.device,
    template: str | None = None,
    *,
    workers: int = 0,
    method=None,
) -> dict[str, float]:
    """Accuracy (%) of every evaluation split of *task*: with the model as it is (an MMA adapter attached or not),
    or with *method*'s own classifier (:mod:`mma.adapters.methods`). A split whose classes the method cannot
    name (the linear probe on novel classes) is left out: not applicable."""
    accs = {}
    for e in task.evals:
        if method is not None and not method.can_classify(e.classnames):
            continue
        predict = None
        if method is not None:
            predict = method.classifier(loaded, e.classnames, template or e.dataset.template, device)
        if predict is None:
            accs[e.name] = accuracy(
                loaded, e.dataset, e.samples, e.classnames, template=template, device=device, workers=workers
            )
        else:
            accs[e.name] = classifier_accuracy(loaded, predict, e.dataset, e.samples, device=device, workers=workers)
    return accs


def task_metrics(task: Task, accs: dict[str, float]) -> dict[str, float]:
    """The protocol's reported numbers: base / novel / hm, accuracy, or source / targets / target_average."""
    if task.protocol == "base2novel":
        if "novel" not in accs:  # a method that cannot name novel classes: novel and HM are not applicable
            return {"base": accs["base"]}
        return {"base": accs["base"], "novel": accs["novel"], "hm": harmonic_mean(accs["base"], accs["novel"])}
    if task.protocol == "few-shot":
        return {"accuracy": accs[task.name]}
    targets = {n: v for n, v in accs.items() if n != task.name}
    return {
        "source": accs[task.name],
        **{f"target:{n}": v for n, v in targets.items()},
        **({"target_average": float(np.mean(list(targets.values())))} if targets else {}),
    }
