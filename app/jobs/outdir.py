"""The run folder (``--out``): checked before any work, and removed again if the command that created it fails.

A command that fails (bad input found after the folder was made, a missing file, Ctrl-C) removes the
folders it created itself, ``--out`` and any missing parents, as long as nothing was written into them yet.
A folder that existed before the command is never removed, and neither is one holding any file: partial
work (a half-filled feature store, a finished probe, a training state) stays so that the same command resumes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mma.data_spec import user_path
from mma.errors import MmaError

__all__ = ["check_out_dir", "run_folder"]


def check_out_dir(out: str | Path) -> Path:
    """Create *out* if needed and make sure it is a writable folder (one clear sentence if not)."""

    out = user_path(out, "--out")
    if out.exists() and not out.is_dir():
        raise MmaError(f"--out {str(out)!r} is a file, not a folder; give a folder for the run.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise MmaError(f"--out {str(out)!r} is not writable ({exc.strerror or exc}); choose another folder.") from None
    return out


def _missing(path: Path) -> list[Path]:
    """*path* and its ancestors that do not exist yet, deepest first."""
    missing = []
    for p in [path, *path.parents]:
        try:
            if p.exists():
                break
        except OSError:  # a component the file system refuses: nothing of it will be created either
            return []
        missing.append(p)
    return missing


def _holds_files(folder: Path) -> bool:
    return any(files for _, _, files in os.walk(folder))


@contextlib.contextmanager
def run_folder(out: str | Path) -> Iterator[Path]:
    """``with run_folder(cfg.out) as out:`` checks (and creates) the run folder; on failure, undoes the creation."""

    try:
        created = _missing(user_path(out, "--out").absolute())
    except MmaError:
        created = []
    try:
        yield check_out_dir(out)
    except BaseException:
        for folder in created:  # deepest first; stop at the first one that holds something
            try:
                if not folder.is_dir() or _holds_files(folder):
                    break
                shutil.rmtree(folder)
            except OSError:
                break
        raise
