"""The concepts of the embedded world: every class name the corpus captions and the suite's classes use.

A concept is a name, a family (shape, object, letter, digit, colour, pattern, scene, texture), how it is
drawn (a *figure* on a background, or a *frame* that fills the picture), its plural for captions such as
"two red stars", and how far a figure may turn and keep its name.

The pretraining corpus draws from :data:`CORPUS_CONCEPTS`. The downstream suite's classes are concepts too,
all of them in the corpus except :data:`UNSEEN_NAMES` (fine-grained polygon names the model never reads
in pretraining, as a real benchmark holds names rare on the web).
"""

from __future__ import annotations

from dataclasses import dataclass

from .art.canvas import COLOUR_NAMES
from .art.glyphs import DIGIT_NAMES, LETTERS
from .art.objects import OBJECTS
from .art.patterns import PATTERNS
from .art.photos import TEXTURES
from .art.scenes import SCENES
from .art.shapes import ROTATION, SHAPES

__all__ = ["Concept", "CONCEPTS", "CORPUS_CONCEPTS", "UNSEEN_NAMES", "FAMILIES", "concept"]

FAMILIES = ("shape", "object", "letter", "digit", "colour", "pattern", "scene", "texture")
UNSEEN_NAMES = ("heptagon", "nonagon", "decagon")
_IRREGULAR = {"glasses": "glasses", "cactus": "cacti", "leaf": "leaves", "knife": "knives", "fish": "fish"}
#: objects whose upright pose is part of what they are (everything else may also be mirrored)
_FREE_OBJECTS = {"key": 180, "pencil": 180, "spoon": 180, "sword": 180, "hammer": 180, "leaf": 180, "banana": 60}


@dataclass(frozen=True)
class Concept:
    name: str
    family: str
    kind: str  # "figure" or "frame"
    rotation: float = 15.0

    @property
    def plural(self) -> str:
        if self.family == "letter":
            return f"letters {self.name[-1]}"
        if self.name in _IRREGULAR:
            return _IRREGULAR[self.name]
        last = self.name.split()[-1]
        if last in _IRREGULAR:
            return self.name[: -len(last)] + _IRREGULAR[last]
        if self.name.endswith(("s", "x", "ch", "sh")):
            return self.name + "es"
        return self.name + "s"


def _concepts() -> dict[str, Concept]:
    out: dict[str, Concept] = {}
    for name in SHAPES:
        out[name] = Concept(name, "shape", "figure", ROTATION.get(name, 180.0))
    for name in OBJECTS:
        out[name] = Concept(name, "object", "figure", _FREE_OBJECTS.get(name, 15.0))
    for ch in LETTERS:
        out[f"letter {ch.lower()}"] = Concept(f"letter {ch.lower()}", "letter", "figure", 10.0)
    for name in DIGIT_NAMES:
        out[name] = Concept(name, "digit", "figure", 10.0)
    for name in COLOUR_NAMES:
        out[name] = Concept(name, "colour", "figure", 180.0)
    for name in PATTERNS:
        out[name] = Concept(name, "pattern", "frame")
    for name in SCENES:
        out[name] = Concept(name, "scene", "frame")
    for name in TEXTURES:
        out[name] = Concept(name, "texture", "frame")
    return out


CONCEPTS: dict[str, Concept] = _concepts()
CORPUS_CONCEPTS: tuple[str, ...] = tuple(n for n in CONCEPTS if n not in UNSEEN_NAMES)


def concept(name: str) -> Concept:
    return CONCEPTS[name]
