"""Every output writer is atomic: a crash halfway leaves the previous file byte-identical and no temporary.

A crash is simulated by monkeypatching the library call that does the actual writing (safetensors'
``save_file``, pandas' ``to_csv``, matplotlib's ``savefig``, numpy's ``savez_compressed``) with one that
writes some bytes and then raises: a bug (RuntimeError), a full disk (OSError ENOSPC) or Ctrl-C
(KeyboardInterrupt). A static check then finds every file-writing call in the code and requires it to run
inside ``atomic_write`` (or be on a short, explained list).
"""

from __future__ import annotations

import ast
import errno
import os
import stat
from pathlib import Path

import matplotlib.figure
import numpy as np
import pandas as pd
import pytest
import safetensors.torch

from mma.adapters.checkpoint import read_adapter, save_adapter
from mma.adapters.mma import MultiModalAdapter
from mma.analysis.plots import plot_k_sweep, save_figure
from mma.io import atomic_write, atomic_write_json, atomic_write_text, read_json
from mma.probe.data import SPLITS
from mma.probe.embedded import cache as C
from mma.probe.embedded import load_embedded_state, save_embedded
from mma.probe.layers import layer_maps

ROOT = Path(__file__).resolve().parents[1]
CRASHES = [
    pytest.param(RuntimeError("writer bug"), id="error"),
    pytest.param(OSError(errno.ENOSPC, "No space left on device"), id="disk-full"),
    pytest.param(KeyboardInterrupt(), id="ctrl-c"),
]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under *folder* (temporaries included) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def half_write(target, exc: BaseException):
    """Write a few bytes to *target* (a path or a binary file object), then raise *exc*."""
    if hasattr(target, "write"):
        target.write(b"PK\x03\x04 half a zip")
    else:
        Path(target).write_bytes(b"half-written")
    raise exc


def crash_at(monkeypatch, owner, name: str, exc: BaseException, *, target_arg: int = 0, when=lambda *a, **k: True):
    """Replace ``owner.name`` by a writer that half-writes its *target_arg*-th argument and raises."""
    original = getattr(owner, name)

    def writer(*args, **kwargs):
        if not when(*args, **kwargs):
            return original(*args, **kwargs)
        half_write(args[target_arg], exc)

    monkeypatch.setattr(owner, name, writer)


# -- mma.io -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("exc", CRASHES)
def test_atomic_write_keeps_the_old_file(tmp_path, exc):
    path = tmp_path / "out.bin"
    path.write_bytes(b"the previous, complete output")
    before = snapshot(tmp_path)
    with pytest.raises(type(exc)):
        atomic_write(path, lambda p: half_write(p, exc))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("exc", CRASHES)
def test_atomic_write_creates_nothing_on_a_crash(tmp_path, exc):
    with pytest.raises(type(exc)):
        atomic_write(tmp_path / "sub" / "out.bin", lambda p: half_write(p, exc))
    assert snapshot(tmp_path) == {}


@pytest.mark.parametrize("exc", CRASHES)
def test_atomic_write_json_keeps_the_old_file(tmp_path, monkeypatch, exc):
    path = tmp_path / "run.json"
    atomic_write_json(path, {"old": 1})
    before = snapshot(tmp_path)
    crash_at(monkeypatch, Path, "write_text", exc)  # atomic_write_text writes with Path.write_text
    with pytest.raises(type(exc)):
        atomic_write_json(path, {"new": 2})
    assert snapshot(tmp_path) == before
    assert read_json(path) == {"old": 1}


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "notes.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert snapshot(tmp_path) == {"notes.txt": b"two"}


def test_atomic_write_gives_the_permissions_of_a_plain_write(tmp_path):
    """Not the 0o600 of the temporary file: the umask for a new file, the old mode for an existing one."""
    old = os.umask(0o027)
    try:
        fresh = atomic_write_text(tmp_path / "fresh.txt", "x")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        assert stat.S_IMODE(fresh.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o640
        existing = tmp_path / "existing.txt"
        existing.write_text("x")
        existing.chmod(0o604)
        atomic_write_text(existing, "y")
        assert stat.S_IMODE(existing.stat().st_mode) == 0o604
    finally:
        os.umask(old)


# -- figures and their CSV --------------------------------------------------------------------------


def k_sweep_results() -> pd.DataFrame:
    rows = [(k, m, 0.5 + 0.01 * k + 0.001 * s) for k in (3, 5) for m in ("base", "novel", "hm") for s in range(2)]
    return pd.DataFrame(rows, columns=["k", "metric", "value"])


@pytest.mark.parametrize("exc", CRASHES)
@pytest.mark.parametrize("crash_in", ["png", "pdf", "csv"])
def test_figure_writing_is_atomic(tmp_path, monkeypatch, exc, crash_in):
    stem = tmp_path / "k_sweep"
    plot_k_sweep(k_sweep_results(), stem, selected_k=5)
    before = snapshot(tmp_path)
    assert sorted(before) == ["k_sweep.csv", "k_sweep.pdf", "k_sweep.png"]
    if crash_in == "csv":
        crash_at(monkeypatch, pd.DataFrame, "to_csv", exc, target_arg=1)
    else:
        crash_at(
            monkeypatch,
            matplotlib.figure.Figure,
            "savefig",
            exc,
            target_arg=1,
            when=lambda *a, **k: k["format"] == crash_in,
        )
    results = k_sweep_results().assign(value=lambda d: d["value"] + 0.1)
    with pytest.raises(type(exc)):
        plot_k_sweep(results, stem, selected_k=3)
    after = snapshot(tmp_path)
    assert sorted(after) == sorted(before)  # no temporary left
    assert after[f"k_sweep.{crash_in}"] == before[f"k_sweep.{crash_in}"]
    if crash_in != "csv":
        assert after["k_sweep.csv"] == before["k_sweep.csv"]  # the CSV comes last: still the old one


def test_save_figure_writes_every_file_completely(tmp_path):
    fig = matplotlib.figure.Figure()
    fig.subplots().plot([0, 1], [1, 0])
    paths = save_figure(fig, tmp_path / "f", pd.DataFrame({"a": [1, 2]}))
    assert sorted(p.name for p in paths) == sorted(snapshot(tmp_path)) == ["f.csv", "f.pdf", "f.png"]
    assert (tmp_path / "f.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "f.pdf").read_bytes().rstrip().endswith(b"%%EOF")
    assert pd.read_csv(tmp_path / "f.csv")["a"].tolist() == [1, 2]


# -- safetensors checkpoints --------------------------------------------------------------------------


@pytest.mark.parametrize("exc", CRASHES)
def test_save_adapter_is_atomic(tmp_path, monkeypatch, tiny_random, exc):
    adapter = MultiModalAdapter(layer_maps(tiny_random.model), k=2)  # not attached: the shared model is untouched
    path = save_adapter(adapter, tmp_path / "adapter.safetensors", {"model": "old"})
    before = snapshot(tmp_path)
    crash_at(monkeypatch, safetensors.torch, "save_file", exc, target_arg=1)
    with pytest.raises(type(exc)):
        save_adapter(adapter, path, {"model": "new"})
    assert snapshot(tmp_path) == before
    assert read_adapter(path)[1]["model"] == "old"


@pytest.mark.parametrize("exc", CRASHES)
def test_save_embedded_is_atomic(tmp_path, monkeypatch, tiny_random, exc):
    path = save_embedded(tiny_random.model, tmp_path / "tiny.safetensors", meta={"seed": 0})
    before = snapshot(tmp_path)
    crash_at(monkeypatch, safetensors.torch, "save_file", exc, target_arg=1)
    with pytest.raises(type(exc)):
        save_embedded(tiny_random.model, path, meta={"seed": 1})
    assert snapshot(tmp_path) == before
    state = load_embedded_state(path)
    assert state.keys() == tiny_random.model.state_dict().keys()


# -- the embedded world's image cache ------------------------------------------------------------------


@pytest.fixture
def small_build(tmp_path, monkeypatch):
    """A private cache folder and a tiny stand-in for the (slow) image generator."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    rng = np.random.default_rng(0)
    arrays = {f"{s}_{k}": rng.integers(0, 255, (4, 8, 8, 3), dtype=np.uint8) for s in SPLITS for k in "xy"}
    return tmp_path / "mma" / "embedded", (lambda: arrays)


def _cache_file(folder) -> str:
    return f"suite-digits-8px-{C.source_digest()}.npz"


@pytest.mark.parametrize("exc", CRASHES)
def test_builtin_cache_write_is_atomic(small_build, monkeypatch, exc):
    folder, build = small_build
    crash_at(monkeypatch, np, "savez_compressed", exc)  # the cache writes through a file object
    with pytest.raises(type(exc)):
        C.cached_arrays("suite-digits-8px", build)
    assert snapshot(folder) == {}  # nothing half-written that a later run would try to read


@pytest.mark.parametrize("exc", CRASHES)
def test_builtin_cache_rebuild_keeps_the_old_file_on_a_crash(small_build, monkeypatch, exc):
    folder, build = small_build
    path = folder / _cache_file(folder)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"an unreadable cache file from an older layout")
    before = snapshot(folder)
    crash_at(monkeypatch, np, "savez_compressed", exc)
    with pytest.raises(type(exc)):
        C.cached_arrays("suite-digits-8px", build)
    assert snapshot(folder) == before


def test_builtin_cache_write_leaves_one_readable_file(small_build):
    folder, build = small_build
    arrays, digest = C.cached_arrays("suite-digits-8px", build)
    assert list(snapshot(folder)) == [_cache_file(folder)]
    assert C._load(folder / _cache_file(folder))[1] == digest


# -- no file-writing call outside atomic_write -----------------------------------------------------------

WRITERS = {"write_text", "write_bytes", "to_csv", "to_json", "to_parquet", "to_pickle", "savefig", "save_file"}
WRITERS |= {"save", "savez", "savez_compressed", "savetxt", "tofile", "save_arrays"}
WRITE_MODES = set("wax+")
IN_MEMORY = {"BytesIO", "StringIO"}
# (file, enclosing function) -> why a direct write is fine there
ALLOWED = {
    ("mma/io.py", "atomic_write"): "fsyncs its own temporary file",
    ("probe/embedded/cache.py", "_save"): "writes atomic_write's temporary (its callers are checked too)",
    ("probe/store.py", "*"): "feature-store memmaps, trusted only through the atomically written manifest",
    (
        "adapters/frozen.py",
        "_fill_on_disk",
    ): "frozen-input memmap, trusted only through the atomic manifest's rows_done",
}


def _name(func: ast.AST) -> str:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _write_kind(call: ast.Call, buffers: set[str]) -> str | None:
    """The kind of file write *call* is, or None (not a writer, or it writes to an in-memory buffer)."""
    name = _name(call.func)
    if any(isinstance(a, ast.Name) and a.id in buffers for a in call.args):
        return None
    if name in WRITERS and call.args:  # e.g. ``df.to_csv(index=False)`` returns text: no file
        return name
    if name in ("open", "open_memmap"):
        modes = [a.value for a in call.args[:2] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        modes += [k.value.value for k in call.keywords if k.arg == "mode" and isinstance(k.value, ast.Constant)]
        if any(len(m) <= 3 and set(m) <= set("rwxabt+") and set(m) & WRITE_MODES for m in modes):
            return f"{name}({modes[0]!r})"
    return None


class _Writes(ast.NodeVisitor):
    """Collect (line, enclosing function, call) of writes not inside a lambda passed to atomic_write*."""

    def __init__(self) -> None:
        self.functions: list[str] = ["<module>"]
        self.buffers: list[set[str]] = [set()]  # names bound to io.BytesIO() / io.StringIO(), per function
        self.inside_atomic = 0
        self.found: list[tuple[int, str, str]] = []

    def visit_FunctionDef(self, node) -> None:
        self.functions.append(node.name)
        self.buffers.append(set())
        self.generic_visit(node)
        self.buffers.pop()
        self.functions.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def _bind(self, target: ast.AST | None, value: ast.AST) -> None:
        if isinstance(target, ast.Name) and isinstance(value, ast.Call) and _name(value.func) in IN_MEMORY:
            self.buffers[-1].add(target.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._bind(target, node.value)
        self.generic_visit(node)

    def visit_withitem(self, node: ast.withitem) -> None:
        self._bind(node.optional_vars, node.context_expr)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if _name(node.func).startswith("atomic_write"):
            self.visit(node.func)
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                lam = isinstance(arg, ast.Lambda)
                self.inside_atomic += lam
                self.visit(arg)
                self.inside_atomic -= lam
            return
        kind = _write_kind(node, self.buffers[-1])
        if kind and not self.inside_atomic:
            self.found.append((node.lineno, self.functions[-1], kind))
        self.generic_visit(node)


def _code_files() -> list[Path]:
    rooms = ("mma", "probe", "adapters", "analysis", "app", "benchmarks")
    return [p for room in rooms for p in sorted((ROOT / room).rglob("*.py"))]


def test_every_file_write_goes_through_atomic_write():
    offenders = []
    for path in _code_files():
        rel = path.relative_to(ROOT).as_posix()
        visitor = _Writes()
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=rel))
        for line, function, kind in visitor.found:
            if (rel, function) not in ALLOWED and (rel, "*") not in ALLOWED:
                offenders.append(f"{rel}:{line} in {function}(): {kind}")
    assert not offenders, (
        "outputs written in place (a crash leaves a truncated file); wrap them as "
        "mma.io.atomic_write(path, lambda p: ...(p)) or explain them in ALLOWED:\n  " + "\n  ".join(offenders)
    )


def test_the_static_check_sees_writes():
    code = """
def f(df, fig, p, state):
    df.to_csv(p)
    atomic_write(p, lambda t: fig.savefig(t, format="png"))
    open(p, "w")
    text = df.to_csv(index=False)
    buf = io.BytesIO()
    torch.save(state, buf)
    with open(p, "rb") as fh, Path(p).open(mode="a") as out:
        np.save(p, state)
"""
    visitor = _Writes()
    visitor.visit(ast.parse(code))
    assert visitor.found == [(3, "f", "to_csv"), (5, "f", "open('w')"), (9, "f", "open('a')"), (10, "f", "save")]
