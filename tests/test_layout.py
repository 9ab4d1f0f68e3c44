"""The package layout as rules: rooms install under ``mma``, code imports ``mma.*`` only, imports flow one way
down the floors, and no module-level imports form a circle.

Floors, lowest first: the ground (``mma.errors``, ``mma.io``, ``mma.seeding``, ``mma.distributed``) <
``mma.probe`` < ``mma.analysis`` and ``mma.adapters`` (neither imports the other) < ``mma.app`` (may import
everything). Imports are read with :mod:`ast`, at module level and inside functions, absolute and relative
(resolved to absolute module names).
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder -> the package it installs as (pyproject.toml, [tool.setuptools] package-dir)
PACKAGES = {
    "mma": "mma",
    "probe": "mma.probe",
    "adapters": "mma.adapters",
    "analysis": "mma.analysis",
    "app": "mma.app",
}
BARE = ("probe", "adapters", "analysis", "app")  # folder names that must never be imported as top-level modules
EXEMPT = ("mma", "mma.__main__")  # the lazy export table (importlib by name) and the entry point
# floor -> the packages no module of that floor may import, at module level or inside a function
FORBIDDEN = {
    "ground": ("mma.probe", "mma.adapters", "mma.analysis", "mma.app"),
    "mma.probe": ("mma.adapters", "mma.analysis", "mma.app"),
    "mma.analysis": ("mma.adapters", "mma.app"),
    "mma.adapters": ("mma.analysis", "mma.app"),
}
# Imports inside functions (mma.* or relative) outside app/cli.py, where the CLI keeps `mma --help` fast on purpose.
# Each one is lazy for a stated reason (a circle no placement breaks, an optional or a heavy dependency); lower
# this bound when one goes, never raise it without that reason in a comment beside the import.
MAX_FUNCTION_LEVEL_IMPORTS = 4  # probe/data/__init__.py <-> probe/embedded/suite.py (see there)
# Modules `mma --help` loads must not pull these in (app/cli.py imports them inside its commands).
HEAVY = ("torch", "open_clip", "sklearn", "matplotlib")


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    targets: tuple[str, ...]  # absolute module names; for `from pkg import name`: pkg, and pkg.name if a module
    bare: str | None  # the top-level name of an absolute import (None for relative ones)
    relative: bool
    in_function: bool
    type_checking: bool  # inside `if TYPE_CHECKING:`: never runs


def _module_name(path: Path) -> str:
    """``probe/data/base.py`` -> ``mma.probe.data.base``; ``tests/x.py`` -> ``tests.x``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    parts[0] = PACKAGES.get(parts[0], parts[0])
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_files() -> list[Path]:
    return [p for folder in PACKAGES for p in sorted((ROOT / folder).rglob("*.py"))]


def _all_files() -> list[Path]:
    return _package_files() + [p for folder in ("tests", "benchmarks") for p in sorted((ROOT / folder).rglob("*.py"))]


@cache
def _modules() -> dict[str, Path]:
    """Every internal module: absolute name -> file."""
    return {_module_name(p): p for p in _package_files()}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


@cache
def _imports(path: Path) -> tuple[Import, ...]:
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(
                        Import(
                            path,
                            child.lineno,
                            (alias.name,),
                            alias.name.split(".")[0],
                            False,
                            in_function,
                            type_checking,
                        )
                    )
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                submodules = [f"{module}.{a.name}" for a in child.names if f"{module}.{a.name}" in _modules()]
                bare = None if child.level else module.split(".")[0]
                found.append(
                    Import(
                        path, child.lineno, (module, *submodules), bare, bool(child.level), in_function, type_checking
                    )
                )
            nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            guarded = isinstance(child, ast.If) and _is_type_checking(child.test)
            visit(child, in_function or nested, type_checking or guarded)

    visit(ast.parse(path.read_text(), filename=str(path)), False, False)
    return tuple(found)


def _floor(module: str) -> str | None:
    if module not in EXEMPT and _modules().get(module, ROOT).parent == ROOT / "mma":
        return "ground"  # every module of mma/ but the package root and the entry point: errors, io, seeding, ...
    for floor in ("mma.probe", "mma.analysis", "mma.adapters"):
        if module == floor or module.startswith(floor + "."):
            return floor
    return None  # mma.app (may import everything) and the exempt package root / entry point


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# -- (i) the mma namespace ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", _all_files(), ids=_rel)
def test_imports_use_the_mma_namespace(path):
    bad = [f"{_rel(path)}:{i.line}: {i.targets[0]}" for i in _imports(path) if i.bare in BARE]
    assert not bad, "import the installed names (mma.probe, mma.adapters, ...), not the folders: " + ", ".join(bad)


# -- (ii) the floors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", _package_files(), ids=_rel)
def test_each_floor_imports_only_the_floors_below(path):
    module = _module_name(path)
    floor = _floor(module)
    if floor is None:
        return
    bad = [
        f"{_rel(path)}:{i.line}: {target}" + (" (inside a function)" if i.in_function else "")
        for i in _imports(path)
        for target in i.targets
        if any(_under(target, banned) for banned in FORBIDDEN[floor])
    ]
    assert not bad, f"{module} ({floor} floor) must not import {', '.join(FORBIDDEN[floor])}: " + "; ".join(bad)


def test_the_ground_is_mma_without_its_root_and_entry_point():
    ground = {m for m in _modules() if _floor(m) == "ground"}
    assert {"mma.errors", "mma.io", "mma.seeding", "mma.distributed"} <= ground
    assert not ground & {"mma", "mma.__main__"} and all(m.count(".") == 1 for m in ground)


# -- (iii) no import circles ----------------------------------------------------------------------------


def _graph() -> dict[str, set[str]]:
    """module -> the internal modules its module-level imports load (imports inside functions run later, when
    every module is loaded, so they cannot form a load-time circle; `if TYPE_CHECKING:` imports never run).

    ``import a.b.c`` first runs the packages ``a`` and ``a.b``; those implicit edges count too (a package
    whose ``__init__`` imports a module that imports one of that package's submodules is a real circle: the
    submodule's import reruns nothing and finds the package half-initialised). The one exception: a module's
    own ancestor packages, which Python always loads (or is loading) before the module itself, so naming one
    implicitly can never start a load. Explicit imports of an ancestor (``from . import X``) do count.
    """
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        ancestors = {module.rsplit(".", n)[0] for n in range(1, module.count(".") + 1)}
        for imp in _imports(path):
            if imp.in_function or imp.type_checking:
                continue
            for target in imp.targets:
                if target in modules:
                    graph[module].add(target)
                parts = target.split(".")
                for n in range(1, len(parts)):
                    parent = ".".join(parts[:n])
                    if parent in modules and parent not in ancestors:
                        graph[module].add(parent)
            graph[module].discard(module)
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle (``a -> b -> ... -> a``) per strongly connected group of modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    circles = []
    for group in groups:  # a shortest way back to the group's first module, by breadth-first search
        start = min(group)
        paths = {start: [start]}
        queue = [start]
        while queue:
            v = queue.pop(0)
            for w in sorted(graph[v] & group):
                if w == start:
                    circles.append(paths[v] + [start])
                    queue = []
                    break
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    queue.append(w)
    return sorted(circles)


def _named(circles: list[list[str]]) -> str:
    return "; ".join(" -> ".join(c) for c in circles)


def test_the_circle_finder_finds_circles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e2"}, "e2": {"e"}}
    assert _circles(graph) == [["a", "b", "c", "a"], ["e", "e2", "e"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_relative_and_implicit_package_imports():
    graph = _graph()
    assert "mma.probe.layermap" in graph["mma.probe.towers"]  # from .layermap import ...
    assert "mma.probe.data.base" in graph["mma.probe.embedded.suite"]  # from ..data.base import ...
    assert "mma.probe.data" in graph["mma.probe.embedded.suite"]  # ... which runs mma.probe.data first
    assert "mma.probe" not in graph["mma.probe.specs"]  # its own ancestor: loaded before it


def test_no_import_circles():
    circles = _circles(_graph())
    assert not circles, f"module-level import circles: {_named(circles)}"


def test_function_level_imports_stay_few():
    lazy = [
        f"{_rel(i.path)}:{i.line}"
        for path in _package_files()
        if path != ROOT / "app" / "cli.py"
        for i in _imports(path)
        if i.in_function and (i.relative or _under(i.targets[0], "mma"))
    ]
    assert len(lazy) <= MAX_FUNCTION_LEVEL_IMPORTS, (
        f"{len(lazy)} imports of mma modules inside functions (at most {MAX_FUNCTION_LEVEL_IMPORTS}); import at the "
        "top of the module unless a circle, an optional or a heavy dependency needs it lazily: " + ", ".join(lazy)
    )


# -- installed names and the public API -----------------------------------------------------------------


def test_rooms_import_under_mma_and_not_at_top_level(tmp_path):
    for module in ("mma.probe", "mma.adapters", "mma.analysis", "mma.app", "mma.probe.data", "mma.probe.embedded"):
        importlib.import_module(module)
    # Outside the repository (so its folders are not on sys.path), only the mma namespace is installed.
    code = (
        "import importlib.util as u, mma.probe, mma.adapters, mma.analysis, mma.app;"
        f"print([n for n in {BARE!r} if u.find_spec(n) is not None])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_cli_module_loads_nothing_heavy(tmp_path):
    """``mma --help`` stays fast: the CLI's module imports none of torch, open_clip, scikit-learn, matplotlib."""
    code = f"import sys, mma.app.cli; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
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
