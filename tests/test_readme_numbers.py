"""The README's numbers about the embedded default are the CSVs' (figures/readme_numbers.py writes them)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def numbers():
    spec = importlib.util.spec_from_file_location("readme_numbers", ROOT / "figures" / "readme_numbers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _blocks(numbers, text: str) -> dict[str, str]:
    return {m["name"]: m["body"] for m in numbers.BLOCK.finditer(text)}


def test_every_generated_block_of_the_readme_is_what_the_figures_say(numbers):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = _blocks(numbers, text)
    assert set(found) == set(numbers.BLOCKS), "every generator has its block in the README, and only those"
    for name, body in found.items():
        assert body == numbers.BLOCKS[name](), (
            f"README block {name!r} differs from figures/; run python figures/readme_numbers.py --write"
        )


def _sections(text: str, heading: str) -> list[str]:
    """The text under every *heading* line, up to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    out, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == heading:
            body = []
            for other in lines[i + 1 :]:
                if re.match(rf"^#{{1,{level}}} ", other):
                    break
                body.append(other)
            out.append("\n".join(body))
    return out


def test_no_number_about_the_embedded_default_is_written_by_hand(numbers):
    """Within the sections about the embedded default's results, a measured number (one with a decimal point, or
    a signed difference) appears only inside a generated block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    bare = numbers.BLOCK.sub("", text)
    checked = [s for heading in numbers.CHECKED_SECTIONS for s in _sections(bare, heading)]
    assert len(checked) == len(numbers.CHECKED_SECTIONS), "every checked section is in the README"
    measured = re.compile(r"(?<![\w.])[+-−]?\d+\.\d+(?![\w.])|(?<![\w])[+−]\d+(?![\w.])")
    for section in checked:
        for line in section.splitlines():
            hits = measured.findall(re.sub(r"`[^`]*`|\]\([^)]*\)", "", line))  # code and link targets aside
            assert not hits, f"a hand-written number {hits} in README line: {line!r}"


def test_the_generator_refuses_a_block_it_does_not_know(numbers):
    with pytest.raises(KeyError, match="has no generator"):
        numbers.render("<!-- numbers:nope -->\nx\n<!-- /numbers:nope -->\n")
