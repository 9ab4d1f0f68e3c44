"""The registry of the few-shot adaptation methods mma runs beside each other (one line per method).

See :mod:`mma.adapters.method_base` for the interface they share; training loops, protocols, checkpoints and
jobs look a method up here by name and never branch on it.
"""

from __future__ import annotations

from collections.abc import Sequence

from mma.errors import MmaError, closest

from .clip_adapter import ClipAdapter
from .coop import CoCoOp, CoOp
from .linear_probe import LinearProbeMethod
from .method_base import COMMON_FIELDS, ZERO_SHOT, ClassifierObjective, MethodBase
from .mma import MultiModalAdapter

__all__ = [
    "METHODS",
    "METHOD_NAMES",
    "ZERO_SHOT",
    "MethodBase",
    "ClassifierObjective",
    "COMMON_FIELDS",
    "get_method",
    "parse_methods",
]

#: method name -> its class (None for ``zeroshot``: the frozen model, evaluated by the zero-shot code), in the
#: order tables list them
METHODS: dict[str, type | None] = {
    ZERO_SHOT: None,
    "mma": MultiModalAdapter,
    "coop": CoOp,
    "cocoop": CoCoOp,
    "clip-adapter": ClipAdapter,
    "linear-probe": LinearProbeMethod,
}
METHOD_NAMES = tuple(METHODS)


def get_method(name: str) -> type:
    """The class of the trained method *name*; one sentence naming the valid ones otherwise."""
    if name not in METHODS or METHODS[name] is None:
        trained = [m for m in METHOD_NAMES if m != ZERO_SHOT]
        hint = closest(str(name), trained)
        raise MmaError(
            f"--method {name!r} is not a trained method (valid: {', '.join(trained)})" + (f"; {hint}" if hint else ".")
        )
    return METHODS[name]


def parse_methods(values: Sequence[str] | None) -> list[str]:
    """``--method a,b --method c`` as a list without repeats (default ``["mma"]``); unknown names are an error."""
    if not values:
        return ["mma"]
    names = [m.strip().lower() for v in values for m in str(v).split(",") if m.strip()]
    if not names:
        return ["mma"]
    for name in names:
        if name not in METHOD_NAMES:
            hint = closest(name, METHOD_NAMES)
            raise MmaError(
                f"--method {name!r} is not valid (valid: {', '.join(METHOD_NAMES)}; repeat --method or separate "
                "names with commas)" + (f"; {hint}" if hint else ".")
            )
    return list(dict.fromkeys(names))
