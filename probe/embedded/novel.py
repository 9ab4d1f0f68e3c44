"""A user's own data, simulated: a ``folder:`` dataset of pictures the model never saw, named with made-up words.

Ten objects that only the pretraining corpus draws (no downstream dataset has them), rendered in the look of
the suite's ``objects`` (silhouettes or shaded figures on paper, some at night or in fog, which the corpus
never draws), each class named with a nonsense word that occurs in no caption ("blicket", "dax", ...).
Zero-shot can only guess: the words carry no meaning for the model. Because ``mma-tiny`` keeps CLIP's whole
vocabulary, the ten prompts still differ, so few-shot adaptation can learn what each word means, which is what
a user adapting the model to their own labels needs. ``python -m mma.probe.embedded.novel ROOT`` writes the
tree.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from mma.io import atomic_write

from .art.canvas import SEED
from .concepts import CONCEPTS
from .render import render
from .suite import OBJECTS_LOOK

__all__ = ["MADE_UP", "write_made_up_folder"]

#: made-up class name -> the corpus-only object its pictures show
MADE_UP = {
    "blicket": "hat",
    "dax": "glasses",
    "wug": "lock",
    "toma": "anchor",
    "fep": "ladder",
    "zorb": "tent",
    "glorp": "trophy",
    "snarf": "teapot",
    "quib": "guitar",
    "mip": "spider",
}
COUNTS = {"train": 40, "val": 10, "test": 30}


def write_made_up_folder(root: str | Path, *, size: int = 32, counts: dict[str, int] | None = None) -> Path:
    """Write ``root/{train,val,test}/<made-up name>/NNN.png`` and return *root*."""
    root = Path(root)
    for s, (split, n) in enumerate((counts or COUNTS).items()):
        for label, (word, obj) in enumerate(MADE_UP.items()):
            folder = root / split / word
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                rng = np.random.default_rng([SEED, zlib.crc32(b"made-up"), s, label, i])
                image = Image.fromarray(render(rng, CONCEPTS[obj], OBJECTS_LOOK, size, split, i)[0])
                atomic_write(folder / f"{i:03d}.png", lambda p, im=image: im.save(p, format="PNG"))
    return root


if __name__ == "__main__":  # pragma: no cover - a convenience for the README's recipe
    print(write_made_up_folder(sys.argv[1] if len(sys.argv) > 1 else "made-up-names"))
