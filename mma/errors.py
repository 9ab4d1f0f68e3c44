"""The one error type a user can cause, and a helper to suggest valid values.

Every problem a user can fix (a bad model name, a missing data folder, k out of range...) raises
:class:`MmaError` with one sentence: the parameter, the bad value, what would be valid, the next step.
The CLI catches only this type, prints the sentence and exits non-zero.
"""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Iterable

__all__ = ["MmaError", "closest", "command_line", "one_line"]


class MmaError(ValueError):
    """A user-fixable problem, described in one sentence."""


def closest(value: str, valid: Iterable[str], n: int = 3) -> str:
    """Return ``"did you mean 'a', 'b'?"`` for the valid names closest to *value* ('' if none is close)."""
    valid = list(valid)
    matches = difflib.get_close_matches(value, valid, n=n, cutoff=0.5)
    if not matches:
        lowered = {v.lower(): v for v in valid}
        matches = [lowered[m] for m in difflib.get_close_matches(value.lower(), list(lowered), n=n, cutoff=0.5)]
    if not matches:
        return ""
    return "did you mean " + ", ".join(repr(m) for m in matches) + "?"


def one_line(exc: object) -> str:
    """An exception's message (or any text) on one line: newlines and runs of spaces become one space."""
    return " ".join(str(exc).split())


def command_line(*words: object) -> str:
    """A command a message suggests, as the user would type it into a shell: each word quoted only where it needs
    to be (``mma probe layers --out '/my runs/x'``). Put it at the end of the message, after a colon, never inside
    quotes: a path's own quotes would nest (``'mma probe layers --out '/x''``)."""
    return " ".join(shlex.quote(str(w)) for w in words)
