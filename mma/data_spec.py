"""Data spec strings (``builtin[:A,B]``, ``coop:ROOT[:A,B]``, ``folder:PATH``, ``csv:PATH``) parsed without the
data sources themselves, and the user's paths read with ``~`` expanded.

The sources (:mod:`mma.probe.data`) own what each kind reads; the syntax lives here, on the ground floor, so that a
command can refuse a malformed spec or a missing root before it imports torch (every module of :mod:`mma.probe`
does). :mod:`mma.probe.data` re-exports all of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mma.errors import MmaError, closest

__all__ = ["KINDS", "DatasetSpec", "parse_data_spec", "user_path"]


def user_path(path: str | Path, what: str) -> Path:
    """*path* with ``~`` expanded; a ``~name`` this machine has no home folder for is an MmaError."""
    try:
        return Path(path).expanduser()
    except RuntimeError:  # pathlib: "Could not determine home directory."
        raise MmaError(f"{what} {str(path)!r} names an unknown home folder; give the full path.") from None


KINDS = ("builtin", "coop", "folder", "csv")


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed data spec: the source kind, its root (if any) and the dataset names (None = all)."""

    kind: str
    root: str | None = None
    names: tuple[str, ...] | None = None

    def __str__(self) -> str:
        parts = [self.kind]
        if self.root is not None:
            parts.append(self.root)
        if self.names:
            parts.append(",".join(self.names))
        return ":".join(parts)


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
    if not names:
        raise MmaError(f"The dataset list {text!r} is empty; give names separated by commas.")
    return names


def parse_data_spec(text: str) -> DatasetSpec:
    """Parse ``builtin[:A,B]``, ``coop:ROOT[:A,B]``, ``folder:PATH`` or ``csv:PATH``."""
    if not isinstance(text, str) or not text.strip():
        raise MmaError(
            f"The data spec {text!r} is empty; valid forms: builtin[:A,B], coop:ROOT[:A,B], folder:PATH, csv:PATH."
        )
    text = text.strip()
    kind, colon, rest = text.partition(":")
    kind = kind.lower()
    if kind not in KINDS:
        hint = closest(kind, KINDS)
        raise MmaError(
            f"The data spec {text!r} has an unknown source {kind!r}"
            + (f" ({hint})" if hint else "")
            + "; valid forms: builtin[:A,B], coop:ROOT[:A,B], folder:PATH, csv:PATH."
        )
    if kind == "builtin":
        if colon and not rest.strip():  # as folder: and coop: are: an empty name list is a mistake, not "all"
            raise MmaError(
                f"The data spec {text!r} has nothing after ':'; write builtin for the whole suite, or "
                "builtin:NAME,... for some of its datasets ('mma datasets' lists them)."
            )
        return DatasetSpec("builtin", None, _names(rest) if rest else None)
    if not rest:
        raise MmaError(f"The data spec {text!r} needs a path: {kind}:PATH.")
    if kind == "coop":  # not a method: the CoOp data source
        root, sep, names = rest.rpartition(":")
        # 'coop:/data:a,b' -> names; 'coop:/data' -> no names (a path never ends in a bare name list)
        if sep and root and "/" not in names and "\\" not in names:
            return DatasetSpec("coop", root, _names(names))
        return DatasetSpec("coop", rest, None)
    return DatasetSpec(kind, rest, None)
