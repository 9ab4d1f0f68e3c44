"""The package layout: rooms install under ``mma``, code imports ``mma.*`` only, imports flow one way."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOMS = {"probe": "mma.probe", "adapters": "mma.adapters", "analysis": "mma.analysis", "mma": "mma"}
# room -> packages it must never import (DESIGN.md: probe is the base; analysis never imports adapters)
FORBIDDEN = {
    "probe": ("mma.analysis", "mma.adapters", "mma.app.jobs", "mma.app.cli"),
    "analysis": ("mma.adapters", "mma.app.jobs", "mma.app.cli"),
    "adapters": ("mma.analysis", "mma.app.jobs", "mma.app.cli"),
}


def _python_files():
    for room in ROOMS:
        yield from ((room, p) for p in sorted((ROOT / room).rglob("*.py")))
    yield from (("tests", p) for p in sorted((ROOT / "tests").rglob("*.py")))
    yield from (("benchmarks", p) for p in sorted((ROOT / "benchmarks").rglob("*.py")))


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("room,path", list(_python_files()), ids=lambda v: str(v).replace(str(ROOT) + "/", ""))
def test_imports_use_the_mma_namespace_and_flow_one_way(room, path):
    for name in _imports(path):
        top = name.split(".")[0]
        assert top not in ("probe", "adapters", "analysis"), f"{path}: 'import {name}' must be 'mma.{name}'"
        for banned in FORBIDDEN.get(room, ()):
            assert not name.startswith(banned), f"{path}: room {room!r} must not import {name}"


def test_rooms_import_under_mma_and_not_at_top_level(tmp_path):
    for module in ("mma.probe", "mma.adapters", "mma.analysis", "mma.probe.data", "mma.probe.embedded"):
        importlib.import_module(module)
    # Outside the repository (so its folders are not on sys.path), only the mma namespace is installed.
    code = (
        "import importlib.util as u, mma.probe, mma.adapters, mma.analysis;"
        "print([n for n in ('probe', 'adapters', 'analysis') if u.find_spec(n) is not None])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_mma_import_is_lazy_and_exports_are_reachable():
    import mma

    for name in mma.__all__:
        assert getattr(mma, name) is not None, name
    with pytest.raises(AttributeError):
        mma.not_a_thing  # noqa: B018


@pytest.mark.parametrize("room", ["mma.probe", "mma.probe.data", "mma.analysis", "mma.adapters"])
def test_each_room_has_a_working_all(room):
    module = importlib.import_module(room)
    assert module.__all__ and len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{room}.{name}"
