"""A method's training configuration: the optimisation every method shares, and the method's own options.

Like Dassl's config, where ``OPTIM`` and ``DATALOADER`` are shared and each trainer reads its own namespace
(``TRAINER.COOP.N_CTX``), a :class:`TrainConfig` holds the shared fields (the optimiser, schedule, batch,
shots, augmentation, precision) and ``options``: a small dataclass of the method's own (MMA's ``k``, ``dim``,
``alpha``; CoOp's ``n_ctx``, ``ctx_init``; CLIP-Adapter's ``reduction``, ``ratio``), declared by the method
(:attr:`mma.adapters.method_base.MethodBase.Options`). The shared defaults are MMA's published recipe
(SPEC.md section 3); each method's published values are laid over them (its ``paper``). ``optimizer`` is SGD (with
``momentum``) unless a method's recipe names AdamW (CLIP-LoRA's; :func:`mma.adapters.train.optimiser_for`).

Values arrive as flat ``{name: value}`` layers (recipes, ``--config`` files, flags) and are split into the two
parts by :meth:`mma.adapters.method_base.MethodBase.make_config`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from mma.errors import MmaError

__all__ = ["Options", "TrainConfig", "COMMON_FIELDS", "OPTIMIZERS", "check_types"]


_TYPES = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    "float": (lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v), "a finite number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
}

#: the optimisers the training loop builds (:func:`mma.adapters.train.optimiser_for`)
OPTIMIZERS = ("sgd", "adamw")


def check_types(values) -> None:
    """One sentence for the first field of the dataclass instance *values* whose value has the wrong type."""
    for f in fields(values):
        value, kind = getattr(values, f.name), str(f.type)
        if (value is None and "None" in kind) or kind.split("|")[0].strip() not in _TYPES:
            continue
        ok, rule = _TYPES[kind.split("|")[0].strip()]
        if not ok(value):
            raise MmaError(f"The training option {f.name}={value!r} is not valid; it must be {rule}.")


def _check_ranges(values, checks: list[tuple[str, bool, str]]) -> None:
    for name, ok, rule in checks:
        if not ok:
            raise MmaError(f"The training option {name}={getattr(values, name)!r} is not valid; it must be {rule}.")


@dataclass
class Options:
    """A method's own options (none here): subclass it as a dataclass and list range checks in :meth:`checks`."""

    def checks(self) -> list[tuple[str, bool, str]]:
        """``(field, ok, rule)`` for every range a value must lie in (types are checked from the annotations)."""
        return []

    def validate(self) -> None:
        check_types(self)
        _check_ranges(self, self.checks())


@dataclass
class TrainConfig:
    """The shared training values (defaults: MMA's published recipe) and the method's own ``options``."""

    optimizer: str = "sgd"  # "adamw": AdamW, its weight decay decoupled (CLIP-LoRA); momentum is SGD's alone
    lr: float = 0.0015
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 5
    batch_size: int = 16
    shots: int = 16
    crop_scale_min: float = 0.08
    flip: bool = True
    augment: bool = True  # False: the eval preprocessing (resize + centre crop), no random crop or flip
    precision: str = "fp32"
    workers: int = 0
    warmup_epochs: int = 0  # epochs at a constant warmup_lr before the cosine schedule (CoOp, CoCoOp: 1)
    warmup_lr: float = 1e-5
    cache: bool = True  # compute the frozen part of the image tower once per image when augment is off
    options: Options = field(default_factory=Options)

    def values(self) -> dict:
        """Every value, flat (the shared ones, then the method's options): what results and checkpoints record."""
        shared = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "options"}
        return {**shared, **asdict(self.options)}

    def validate(self) -> None:
        """One clear sentence for the first value of the wrong type or out of range."""
        check_types(self)
        _check_ranges(
            self,
            [
                ("optimizer", self.optimizer in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
                ("lr", self.lr > 0, "a float > 0"),
                ("momentum", 0 <= self.momentum < 1, "a float in [0, 1)"),
                ("weight_decay", self.weight_decay >= 0, "a float >= 0"),
                ("epochs", self.epochs >= 1, "an integer >= 1"),
                ("batch_size", self.batch_size >= 1, "an integer >= 1"),
                ("shots", self.shots >= 1, "an integer >= 1"),
                ("crop_scale_min", 0 < self.crop_scale_min <= 1, "a float in (0, 1]"),
                ("precision", self.precision in ("fp32", "fp16", "bf16"), "one of fp32, fp16, bf16"),
                ("warmup_epochs", self.warmup_epochs >= 0, "an integer >= 0"),
                ("warmup_lr", self.warmup_lr > 0, "a float > 0"),
            ],
        )
        self.options.validate()


#: the shared fields, in their order
COMMON_FIELDS = tuple(f.name for f in fields(TrainConfig) if f.name != "options")
