"""Named training recipes, their per-protocol and per-dataset values, and where every value came from.

A :class:`Recipe` is data: per method, values on top of that method's published ones (its ``paper`` over the
shared :class:`~mma.adapters.config.TrainConfig` defaults, which are MMA's, SPEC.md section 3), plus values for
one protocol (``protocols``) or for one training dataset (``datasets``). Adding a protocol's settings to a
recipe is one dict entry.

``paper`` is every method's published recipe, which each method declares itself
(:mod:`mma.adapters.method_base`): for MMA SGD lr 0.0015, 5 epochs, batch 16, alpha 0.001, r 32, and, as
released, k = 5 for base-to-novel and k = 9, 1 epoch for cross-dataset and domain generalisation; ImageNet
trains in batches of 128 (SPEC.md section 3). Under its gradient scaling the adapter weights learn as if alpha were 1,
so how far the branch ``alpha * a`` moves in 5 epochs depends on the size of the backbone's gradients: the
official lr 0.0015 and alpha 0.001 are calibrated for ViT-B/16 (768/512-wide towers, 197 tokens, hundreds of
steps per dataset). On the embedded ``mma-tiny`` that recipe leaves every prediction unchanged, so a k sweep
would be flat.

``mma-tiny`` is every method's recipe on the embedded model: no random-resized-crop zoom or horizontal flip for
any method (the model was pretrained on unzoomed 32 px images with small shifts, and flipping changes letters,
digits and arrows), and the values ``mma tune`` chose for each method with one shared budget, on validation images
of base classes only (``adapters/tuned/mma-tiny-<method>.json``, written by ``figures/regenerate.sh``; each file
records every candidate's score and the command). MMA was tuned at k = 5, the paper's base-to-novel k, fixed
before any k was swept; for cross-dataset and domain generalisation it takes the paper's k = 9 (the model has
ViT-B/16's 12 blocks) with the same tuned values. Base-to-novel and few-shot have no protocol k, so there k comes
from the probe selection.

``released`` is the official MMA code's values alone: the released code ships only the base-to-novel configs
(k = 5, 5 epochs; ImageNet batch 128), so it runs every protocol at those; ``paper`` takes k = 9 and one epoch for
cross-dataset and domain generalisation from the paper's text instead.

``auto`` (the CLI default) picks ``mma-tiny`` for the embedded model and ``paper`` for every other model.

Where each training value comes from, lowest precedence first (:func:`settle`; the job adds the probe
selection and the user's own values, see :mod:`mma.app.jobs.train_selected`):

================================  =========================================================================
source                            what it sets
================================  =========================================================================
``paper default``                 every value the method reads (its published recipe), except k and precision
``device default``                precision: fp16 AMP on CUDA (the official setting), fp32 on the CPU
``probe selection (default run)`` k, from ``runs/probe/selection.json`` (when no --k and no --run)
``recipe NAME``                   the recipe's own values
``protocol default``              the recipe's values for the protocol (paper: k 5 / k 9, 1 epoch)
``dataset default``               the recipe's values for the training dataset (paper: ImageNet batch 128)
``config file``                   values of ``--config FILE``: the flat ones, then the method's own table
                                  (``config file (FILE) (coop)``), which wins over them
``probe selection (--run)``       k of a probe run the user names
``user flag``                     ``--k``, ``--epochs``, ... (or the Python API's ``train`` dict)
================================  =========================================================================

So k is, first to last: ``--k``; the selection of ``--run``; k in ``--config``; the recipe's protocol default;
the default probe run's selection. A user who asks for a probe run gets its k; one who asks for a protocol gets
its published k; the embedded recipe has no base-to-novel k, so ``mma probe layers && mma train-selected``
trains at the selected k, and ``--protocol cross-dataset`` or ``domain-gen`` at the recipe's k (9).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources

from mma.errors import MmaError
from mma.probe.embedded import EMBEDDED_NAME

from .depth import FOLLOW_K
from .method_base import MethodBase
from .methods import BUILT_IN, DEFAULT

__all__ = [
    "RECIPES",
    "EMBEDDED_RECIPE",
    "TUNED",
    "tuned_records",
    "Recipe",
    "MethodValues",
    "Settings",
    "resolve_recipe",
    "get_recipe",
    "settle",
    "default_precision",
    "PAPER_DEFAULT",
    "DEVICE_DEFAULT",
]

PAPER_DEFAULT = "paper default"
DEVICE_DEFAULT = "device default"


@dataclass(frozen=True)
class MethodValues:
    """One method's values in a recipe: on top of its paper's, then per protocol, then per training dataset.

    ``k`` may be set by ``values`` or ``protocols`` but not per dataset: k names the run's files and is one
    per protocol.
    """

    values: Mapping = field(default_factory=dict)
    protocols: Mapping[str, Mapping] = field(default_factory=dict)
    datasets: Mapping[str, Mapping] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for dataset, values in self.datasets.items():
            if "k" in values:
                raise ValueError(f"k cannot differ per dataset ({dataset!r}); set it per protocol")


@dataclass(frozen=True)
class Recipe:
    """A training recipe: every method's :class:`MethodValues` (``published``: those each method declares)."""

    name: str
    methods: Mapping[str, MethodValues] = field(default_factory=dict)
    published: bool = False
    files: Mapping[str, str] = field(default_factory=dict)  # method (or method/protocol) -> where its values come from

    def publishes(self, method: type[MethodBase]) -> bool:
        """Whether *method* runs at its published per-protocol and per-dataset values here (a recipe that says
        nothing of a method leaves it at them)."""
        return self.published or method.name not in self.methods

    def values_for(self, method: type[MethodBase]) -> MethodValues:
        if self.publishes(method):
            return MethodValues(protocols=method.paper_protocols, datasets=method.paper_datasets)
        return self.methods[method.name]

    def where(self, method: type[MethodBase], where: str = "") -> str:
        """The official file (or tuning record) the values for *where* ("", a protocol, a dataset) come from."""
        key = f"{method.name}/{where}" if where else method.name
        return self.files.get(key) or (method.paper_file(where) if self.publishes(method) or where else "")

    def provenance(
        self, protocol: str, dataset: str | None = None, method: type[MethodBase] = DEFAULT
    ) -> dict[str, str]:
        """``{source: file}``: where each of :meth:`layers`' sources (and the method's paper default) comes from."""
        out = {method.qualify(PAPER_DEFAULT): method.paper_file("")}
        labels = [
            ("", method.qualify(f"recipe {self.name}")),
            (protocol, method.qualify(f"protocol default ({self.name}, {protocol})")),
        ]
        if dataset is not None:
            labels.append((dataset, method.qualify(f"dataset default ({self.name}, {dataset})")))
        for where, label in labels:
            out[label] = self.where(method, where)
        return {label: file for label, file in out.items() if file}

    def layers(
        self, protocol: str, dataset: str | None = None, method: type[MethodBase] = DEFAULT
    ) -> list[tuple[str, dict]]:
        """``(source, values)`` of this recipe for *method*, *protocol* and training *dataset*, lowest precedence
        first (on top of the method's own published values, see :mod:`mma.adapters.method_base`)."""
        mine = self.values_for(method)
        out = []
        if mine.values:
            out.append((method.qualify(f"recipe {self.name}"), dict(mine.values)))
        if protocol in mine.protocols:
            out.append((method.qualify(f"protocol default ({self.name}, {protocol})"), dict(mine.protocols[protocol])))
        if dataset is not None and dataset in mine.datasets:
            out.append((method.qualify(f"dataset default ({self.name}, {dataset})"), dict(mine.datasets[dataset])))
        return out

    def k_for(self, protocol: str, method: type[MethodBase] = DEFAULT) -> tuple[int, str] | None:
        """``(k, source)`` if the recipe sets k for *protocol* (its protocol entry first, then its own values)."""
        found = None
        for source, values in self.layers(protocol, method=method):
            if "k" in values:
                found = (int(values["k"]), source)
        return found


# no augmentation: the embedded suite's images are 32 px, the model's input size, so the eval preprocessing is the
# whole image unchanged (as a random-resized crop of scale 1 without flips gave it, tensor for tensor), and the
# frozen part of the image tower is computed once per image (mma.adapters.frozen)
_EMBEDDED_AUGMENTATION = {"augment": False}
#: the folder of the tuning records behind the embedded recipe (package data), one per method
TUNED = "tuned"
#: MMA's k for cross-dataset and domain generalisation on the embedded model: the paper's (its text)
_EMBEDDED_XD = {"k": 9}


def tuned_records(model: str = EMBEDDED_NAME) -> dict[str, tuple[str, dict]]:
    """``{method: (file, record)}``: what ``mma tune`` chose for each method on *model* (``adapters/tuned/``)."""
    out = {}
    folder = resources.files("mma.adapters").joinpath(TUNED)
    for entry in sorted(folder.iterdir() if folder.is_dir() else (), key=lambda e: e.name):
        if entry.name.startswith(f"{model}-") and entry.name.endswith(".json"):
            record = json.loads(entry.read_text(encoding="utf-8"))
            out[record["search"]["method"]] = (f"adapters/{TUNED}/{entry.name}", record)
    return out


def _embedded() -> Recipe:
    """``mma-tiny``: no augmentation for any method, and each method's tuned values (the module docstring)."""
    tuned = tuned_records()
    methods = {
        name: MethodValues(values={**_EMBEDDED_AUGMENTATION, **record[name]}) for name, (_, record) in tuned.items()
    }
    for method in BUILT_IN:  # every method the training loop runs: no augmentation, tuned or not
        if method.trains and method.fit is None and method.name not in methods:
            published = MethodValues(_EMBEDDED_AUGMENTATION, method.paper_protocols, method.paper_datasets)
            methods[method.name] = published
    depth = methods[DEFAULT.name]
    methods[DEFAULT.name] = MethodValues(depth.values, {"cross-dataset": _EMBEDDED_XD, "domain-gen": _EMBEDDED_XD})
    return Recipe(EMBEDDED_RECIPE, methods, files={name: file for name, (file, _) in tuned.items()})


def _released() -> Recipe:
    """``released``: MMA at the official code's base-to-novel config for every protocol; the others' published."""
    protocols = {p: {"k": _RELEASED_K} for p in DEFAULT.paper_protocols}  # every protocol it publishes a k for
    released = MethodValues(protocols=protocols, datasets=DEFAULT.paper_datasets)
    config = DEFAULT.paper_file("base2novel")
    files = {DEFAULT.name: config, **{f"{DEFAULT.name}/{p}": config for p in protocols}}
    return Recipe("released", {DEFAULT.name: released}, files=files)


EMBEDDED_RECIPE = "mma-tiny"
_RELEASED_K = 5  # the only k the released MMA configs set (vit_b16_ep5.yaml, vit_b16_ep5_imnet.yaml)
RECIPES: dict[str, Recipe] = {r.name: r for r in (Recipe("paper", published=True), _released(), _embedded())}


def get_recipe(name: str, model_name: str) -> Recipe:
    """The recipe *name*; ``auto`` = ``mma-tiny`` for the embedded model, else ``paper``."""
    if name == "auto":
        name = EMBEDDED_RECIPE if model_name.split(":")[0] == EMBEDDED_NAME else "paper"
    if name not in RECIPES:
        raise MmaError(f"--recipe {name!r} is not valid (valid: auto, {', '.join(RECIPES)}).")
    return RECIPES[name]


def resolve_recipe(
    name: str, model_name: str, protocol: str | None = None, method: type[MethodBase] = DEFAULT
) -> tuple[str, dict]:
    """``(recipe name, training values)`` of the recipe for *method* (and its *protocol* values, if given)."""
    recipe = get_recipe(name, model_name)
    values: dict = {}
    for _, layer in recipe.layers(protocol or "", method=method):
        values.update(layer)
    return recipe.name, values


def default_precision(device_type: str) -> tuple[str, str]:
    """``(precision, source)`` when none is given: fp16 AMP on CUDA as the official config, fp32 on the CPU."""
    if device_type == "cuda":
        return "fp16", f"{DEVICE_DEFAULT} (cuda: fp16 AMP, as the official config)"
    return "fp32", f"{DEVICE_DEFAULT} ({device_type})"


@dataclass
class Settings:
    """Training values and where each came from: one set shared by every dataset, plus what differs per dataset.

    ``values`` / ``sources``: TrainConfig field -> value / source label. ``per_dataset``: dataset -> the
    fields whose value (or source) differs there, as ``{field: (value, source)}``.
    """

    recipe: str
    protocol: str
    values: dict
    sources: dict
    per_dataset: dict = field(default_factory=dict)
    method: str = DEFAULT.name
    title: str = ""  # how the line starts (default: "Recipe NAME, PROTOCOL"; a method may name itself in it)
    provenance: dict = field(default_factory=dict)  # source -> the official file (or tuning record) behind it
    template: str | None = None  # the prompt template the user gave (--template); None: the datasets' own
    template_source: str = ""  # where the prompt comes from ("user flag", or what the default means for the method)
    warnings: list = field(default_factory=list)  # e.g. a flag that cuts a published value (app.settings.recipe_cuts)

    def for_dataset(self, dataset: str) -> tuple[dict, dict]:
        """``(values, sources)`` for training on *dataset*."""
        values, sources = dict(self.values), dict(self.sources)
        for name, (value, source) in self.per_dataset.get(dataset, {}).items():
            values[name], sources[name] = value, source
        return values, sources

    def record(self) -> dict:
        """JSON-ready: values, their sources, and the per-dataset differences."""
        return {
            "method": self.method,
            "recipe": self.recipe,
            "protocol": self.protocol,
            "values": self.values,
            "sources": self.sources,
            "per_dataset": {
                d: {n: {"value": v, "source": s} for n, (v, s) in diff.items()} for d, diff in self.per_dataset.items()
            },
            "provenance": self.provenance,
            "template": {"value": self.template, "source": self.template_source},
            "warnings": list(self.warnings),
        }

    def line(self) -> str:
        """One line naming every value and its source, grouped by source (per-dataset differences last)."""
        groups: dict[str, list[str]] = {}
        for name, value in self.values.items():
            if name in FOLLOW_K and value is None:  # a tower that follows k is not named
                continue
            groups.setdefault(self.sources[name], []).append(f"{name}={_show(value)}")
        if self.template is not None:  # the datasets' own prompts are the default, not named on the line
            groups.setdefault(self.template_source, []).append(f"template={self.template!r}")
        order = sorted(groups, key=_source_rank)
        parts = [f"{source}: {', '.join(groups[source])}" for source in order]
        for dataset, diff in self.per_dataset.items():
            by_source: dict[str, list[str]] = {}
            for name, (value, source) in diff.items():
                by_source.setdefault(source, []).append(f"{name}={_show(value)}")
            parts += [f"on {dataset}, {s}: {', '.join(v)}" for s, v in by_source.items()]
        title = self.title or f"Recipe {self.recipe}, {self.protocol}"
        where = [f"{source} = {file}" for source, file in self.provenance.items()]
        return f"{title}: " + "; ".join(parts) + "." + (f" From: {'; '.join(where)}." if where else "")


def _show(value) -> str:
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


_RANKS = (
    "user flag",
    "probe selection",
    "config file",
    "dataset default",
    "protocol default",
    "recipe ",
    "device default",
)


def _source_rank(source: str) -> int:
    """Print the sources that matter most first: user flags, selection, config, ..., paper defaults last."""
    for i, prefix in enumerate(_RANKS):
        if source.startswith(prefix):
            return i
    return len(_RANKS) + source.startswith(PAPER_DEFAULT)


def settle(layers: list[tuple[str, Mapping]]) -> tuple[dict, dict]:
    """``(values, sources)`` from ``(source, values)`` layers, lowest precedence first (later ones win)."""
    values, sources = {}, {}
    for source, layer in layers:
        for name, value in layer.items():
            values[name], sources[name] = value, source
    return values, sources
