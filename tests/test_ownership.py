"""One place owns each concept: outside the method and protocol modules, no code interprets a method's or a
protocol's name; it asks the registered object (``get_method(name).depth_indexed``, ``PROTOCOLS[name].metrics``).

Counted, by reading every module with :mod:`ast`: a comparison with a name (``== "mma"``, ``in ("base2novel",
"few-shot")``), a name passed to ``isin`` / ``startswith`` / ``endswith``, a subscript by a name
(``results["zeroshot"]``) and a lookup table keyed by names (``{"base2novel": ...}``). Messages and default values
that mention a name are not interpretations and are not counted. A line that uses the same word for another
concept (``coop``, the CoOp data source; ``mma``, the toolkit) says so: ``# not a method: ...``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mma.adapters.methods import BUILT_IN
from mma.adapters.protocols import PROTOCOLS

ROOT = Path(__file__).resolve().parents[1]
NAMES = frozenset({m.name for m in BUILT_IN} | set(PROTOCOLS))
# the modules that own the concepts: each method's own module, the registries and the protocols; and the recipes,
# which are data naming the methods they set values for (like a --config file's [coop] table)
OWNERS = {
    "adapters/method_base.py",
    "adapters/methods.py",
    "adapters/zeroshot.py",
    "adapters/mma.py",
    "adapters/mma_pp.py",
    "adapters/mmrl.py",
    "adapters/maple.py",
    "adapters/promptsrc.py",
    "adapters/clip_lora.py",
    "adapters/coop.py",
    "adapters/clip_adapter.py",
    "adapters/linear_probe.py",
    "adapters/protocols.py",
    "adapters/recipes.py",
}
FOLDERS = ("mma", "probe", "adapters", "analysis", "app", "benchmarks", "figures", "examples")


def _named(node: ast.AST) -> bool:
    """Whether *node* is a name constant, or a tuple / list / set holding one."""
    if isinstance(node, ast.Constant):
        return node.value in NAMES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_named(e) for e in node.elts)
    return False


PRAGMA = "# not a method:"


def interpretations(source: str) -> list[int]:
    """The lines of *source* that interpret a method or protocol name (module docstring)."""
    text = source.splitlines()
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            hit = any(_named(x) for x in (node.left, *node.comparators))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            hit = node.func.attr in ("isin", "startswith", "endswith") and any(_named(a) for a in node.args)
        elif isinstance(node, ast.Subscript):
            hit = _named(node.slice)
        elif isinstance(node, ast.Dict):
            hit = any(k is not None and _named(k) for k in node.keys)
        else:
            hit = False
        if hit and not any(PRAGMA in text[i - 1] for i in range(node.lineno, node.end_lineno + 1)):
            lines.append(node.lineno)
    return sorted(set(lines))


def _files() -> list[Path]:
    """Every Python file of the repository's code folders but the owners'."""
    found = [p for folder in FOLDERS if (ROOT / folder).is_dir() for p in sorted((ROOT / folder).rglob("*.py"))]
    assert {str(p.relative_to(ROOT)) for p in found} >= OWNERS  # an owner that moves is named again here
    return [p for p in found if str(p.relative_to(ROOT)) not in OWNERS]


def test_the_counter_sees_each_kind_of_interpretation():
    code = (
        'if method == "mma": pass\n'
        'ok = protocol in ("base2novel", "few-shot")\n'
        'rows = results[results["method"].isin(["zeroshot"])]\n'
        'label.startswith("mma")\n'
        'x = table["coop"]\n'
        'SIDE = {"cross-dataset": 1}\n'
        'print(f"--method {name!r} is not coop")\n'  # a message: not counted
        'def f(protocol="base2novel"): pass\n'  # a default: not counted
        'if spec.kind == "coop": pass  # not a method: the data source\n'  # said so: not counted
    )
    assert interpretations(code) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_code_outside_the_owners_interprets_a_method_or_protocol_name(path):
    rel = str(path.relative_to(ROOT))
    found = interpretations(path.read_text())
    assert not found, f"{rel} interprets a method or protocol name on line(s) {found}; ask the registered object"
