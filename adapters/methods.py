"""The registry of methods: the built-in ones, then those other packages register (entry-point group ``mma.methods``).

Jobs, the CLI, the tables and the benchmarks find a method here by name and then ask the class
(:class:`~mma.adapters.method_base.MethodBase`) everything else; none of them compares a method's name.

A package adds a method with no change to mma: a :class:`MethodBase` subclass and one line in its
``pyproject.toml``::

    [project.entry-points."mma.methods"]
    bias = "mma_bias:BiasTuning"

(``examples/plugin_method`` is a complete one). A plugin whose name is taken, or that is not a method class, is
refused with one sentence naming its package.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib.metadata import entry_points

from mma.errors import MmaError, closest

from .clip_adapter import ClipAdapter
from .clip_lora import ClipLoRA
from .coop import CoCoOp, CoOp
from .linear_probe import LinearProbeMethod
from .maple import MaPLe
from .method_base import MethodBase
from .mma import MultiModalAdapter
from .mma_pp import MMAPlusPlus
from .mmrl import MMRL
from .promptsrc import PromptSRC
from .zeroshot import ZeroShot

__all__ = [
    "ENTRY_POINT_GROUP",
    "BUILT_IN",
    "BASELINE",
    "DEFAULT",
    "registry",
    "method_names",
    "get_method",
    "parse_methods",
    "trained_methods",
]

ENTRY_POINT_GROUP = "mma.methods"
#: the built-in methods, in the order tables list them
BUILT_IN: tuple[type[MethodBase], ...] = (
    ZeroShot,
    MultiModalAdapter,
    MMAPlusPlus,
    MaPLe,
    PromptSRC,
    MMRL,
    ClipLoRA,
    CoOp,
    CoCoOp,
    ClipAdapter,
    LinearProbeMethod,
)
#: the method every other one is compared with (it runs beside every other method)
BASELINE: type[MethodBase] = ZeroShot
#: the method ``--method`` means when none is given
DEFAULT: type[MethodBase] = MultiModalAdapter


@cache
def registry() -> dict[str, type[MethodBase]]:
    """Every method by name: the built-in ones, then the plugins of installed packages (read once)."""
    methods = {m.name: m for m in BUILT_IN}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        where = f"the {ENTRY_POINT_GROUP!r} entry point {ep.name!r} ({ep.value})"
        try:
            method = ep.load()
        except Exception as exc:  # a broken plugin names itself, it does not break mma
            raise MmaError(f"{where} cannot be imported: {type(exc).__name__}: {exc}") from None
        if not (isinstance(method, type) and issubclass(method, MethodBase)) or not method.name:
            raise MmaError(f"{where} is not a method: give a subclass of mma.adapters.MethodBase with a name.")
        if method.name in methods and methods[method.name] is not method:
            raise MmaError(f"{where} registers the method name {method.name!r}, which is taken; choose another name.")
        methods[method.name] = method
    return methods


def method_names() -> tuple[str, ...]:
    """The registered method names, in the order tables list them."""
    return tuple(registry())


def get_method(name: str) -> type[MethodBase]:
    """The method class registered as *name*; one sentence naming the valid ones otherwise."""
    methods = registry()
    if name not in methods:
        hint = closest(str(name), list(methods))
        raise MmaError(f"--method {name!r} is not valid (valid: {', '.join(methods)})" + (f"; {hint}" if hint else "."))
    return methods[name]


def parse_methods(values: Sequence[str] | None) -> list[str]:
    """``--method a,b --method c`` as a list without repeats (default: :data:`DEFAULT`); unknown names are an error."""
    names = [m.strip().lower() for v in values or () for m in str(v).split(",") if m.strip()]
    if not names:
        return [DEFAULT.name]
    methods = registry()
    for name in names:
        if name not in methods:
            hint = closest(name, list(methods))
            raise MmaError(
                f"--method {name!r} is not valid (valid: {', '.join(methods)}; repeat --method or separate "
                "names with commas)" + (f"; {hint}" if hint else ".")
            )
    return list(dict.fromkeys(names))


def trained_methods(names: Sequence[str]) -> list[type[MethodBase]]:
    """The methods of *names* that train, depth-indexed ones first (the baseline always runs beside them)."""
    return sorted((m for m in map(get_method, names) if m.trains), key=lambda m: not m.depth_indexed)
