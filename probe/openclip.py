"""open_clip, imported in one place, so that a broken install is said in one sentence.

open_clip imports torchvision, whose compiled operators register against the torch they were built for. A torch
and torchvision from different builds (different versions, or a CPU torch beside a CUDA torchvision from another
index) fail inside that import with ``RuntimeError: operator torchvision::nms does not exist``, which names
neither package's version nor the fix; :func:`import_open_clip` turns it into an :class:`~mma.errors.MmaError`.
Every module of :mod:`mma.probe` that needs open_clip before a model is built asks here (it stays lazy: open_clip
takes ~2.5 s to import on top of torch).
"""

from __future__ import annotations

from importlib import metadata
from types import ModuleType

from mma.errors import MmaError

__all__ = ["import_open_clip", "build_mismatch"]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def build_mismatch(exc: BaseException) -> MmaError | None:
    """The one sentence for a torch / torchvision build mismatch if *exc* is one (None otherwise)."""
    if not isinstance(exc, RuntimeError) or "torchvision::" not in str(exc):
        return None
    return MmaError(
        f"torch ({_version('torch')}) and torchvision ({_version('torchvision')}) are builds that do not match "
        f"(torchvision's operators are missing: {' '.join(str(exc).split())[:80]!r}); reinstall both at matching "
        "versions from the same index: pip install --force-reinstall torch torchvision (with the same --index-url "
        "for a CPU or CUDA build)."
    )


def import_open_clip() -> ModuleType:
    """The ``open_clip`` module; a torch / torchvision build mismatch as one sentence (:func:`build_mismatch`)."""
    try:
        import open_clip
    except RuntimeError as exc:
        mismatch = build_mismatch(exc)
        if mismatch is None:
            raise
        raise mismatch from exc
    return open_clip
