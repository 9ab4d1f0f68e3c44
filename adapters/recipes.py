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

``mma-tiny`` makes the adapter matter on the small model: alpha 0.03, lr 0.1, 15 epochs, and no
random-resized-crop zoom or horizontal flip (the model was pretrained on unzoomed 32 px images with small
shifts, and flipping changes letters, digits and arrows). It was chosen on the downstream suite's
*validation* splits only, by ``figures/recipe_search.py`` (alpha x lr x epochs grid plus points beyond
its edges, base-to-novel validation HM; the table is ``figures/recipe_search.csv``). For
cross-dataset and domain generalisation it takes the paper's k = 9 (the same depth: the model has
ViT-B/16's 12 blocks), alpha 0.1, lr 0.01 in batches of 8 for 3 epochs (the paper: 1): the best target
validation average of ``figures/xd_recipe_search.py`` (k {9, 12} x alpha x lr x batch x epochs {1, 3},
fitted on the source, scored on the validation splits of the source and the eight targets;
``figures/xd_recipe_search.csv``). Base-to-novel and few-shot have no protocol k, so there k comes from
the probe selection.

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
``config file``                   values of ``--config FILE``
``probe selection (--run)``       k of a probe run the user names
``user flag``                     ``--k``, ``--epochs``, ... (or the Python API's ``train`` dict)
================================  =========================================================================

So k is, first to last: ``--k``; the selection of ``--run``; k in ``--config``; the recipe's protocol default;
the default probe run's selection. A user who asks for a probe run gets its k; one who asks for a protocol gets
its published k; the embedded recipe has no base-to-novel k, so ``mma probe layers && mma train-selected``
trains at the selected k, and ``--protocol cross-dataset`` or ``domain-gen`` at the recipe's k (9).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mma.errors import MmaError
from mma.probe.embedded import EMBEDDED_NAME

from .method_base import MethodBase
from .methods import DEFAULT

__all__ = [
    "RECIPES",
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

    def values_for(self, method: type[MethodBase]) -> MethodValues:
        if self.published:
            return MethodValues(protocols=method.paper_protocols, datasets=method.paper_datasets)
        return self.methods.get(method.name, MethodValues())

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
_EMBEDDED_XD = {"k": 9, "epochs": 3, "alpha": 0.1, "lr": 0.01, "batch_size": 8}

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("paper", published=True),
        Recipe(
            "mma-tiny",
            {
                "mma": MethodValues(
                    values={"alpha": 0.03, "lr": 0.1, "epochs": 15, **_EMBEDDED_AUGMENTATION},
                    # k, epochs and the optimisation chosen by figures/xd_recipe_search.py on validation splits
                    protocols={"cross-dataset": _EMBEDDED_XD, "domain-gen": _EMBEDDED_XD},
                ),
                # the other methods keep their papers' optimisation; only the augmentation follows the embedded
                # model's pretraining (unzoomed 32 px images, where flips change letters, digits and arrows): none,
                # as MMA's
                **{m: MethodValues(values=_EMBEDDED_AUGMENTATION) for m in ("coop", "cocoop", "clip-adapter")},
            },
        ),
    )
}


def get_recipe(name: str, model_name: str) -> Recipe:
    """The recipe *name*; ``auto`` = ``mma-tiny`` for the embedded model, else ``paper``."""
    if name == "auto":
        name = "mma-tiny" if model_name.split(":")[0] == EMBEDDED_NAME else "paper"
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
        }

    def line(self) -> str:
        """One line naming every value and its source, grouped by source (per-dataset differences last)."""
        groups: dict[str, list[str]] = {}
        for name, value in self.values.items():
            groups.setdefault(self.sources[name], []).append(f"{name}={_show(value)}")
        order = sorted(groups, key=_source_rank)
        parts = [f"{source}: {', '.join(groups[source])}" for source in order]
        for dataset, diff in self.per_dataset.items():
            by_source: dict[str, list[str]] = {}
            for name, (value, source) in diff.items():
                by_source.setdefault(source, []).append(f"{name}={_show(value)}")
            parts += [f"on {dataset}, {s}: {', '.join(v)}" for s, v in by_source.items()]
        title = self.title or f"Recipe {self.recipe}, {self.protocol}"
        return f"{title}: " + "; ".join(parts) + "."


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
