"""Letters and digits set in fonts that ship inside installed packages, drawn as figures.

Two font families: :data:`PRINT_FONTS` (sans-serif and monospace faces: Pillow's built-in Aileron and
matplotlib's DejaVu Sans / Sans Mono / Computer Modern Sans) for the pretraining corpus, and
:data:`BOOK_FONTS` (serif and italic faces: DejaVu Serif Italic, STIX General, Computer Modern Roman and
Italic) that only the downstream suite uses, a shift in rendering style like a new typeface.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from mma.errors import MmaError

PRINT_FONTS = ("aileron", "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf", "cmss10.ttf")
BOOK_FONTS = ("DejaVuSerif-Italic.ttf", "STIXGeneral.ttf", "STIXGeneralItalic.ttf", "cmr10.ttf", "cmti10.ttf")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _matplotlib_fonts() -> Path:
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise MmaError("matplotlib is not installed; the embedded world needs its fonts (pip install mma-toolkit).")
    return Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "fonts" / "ttf"


@lru_cache(maxsize=64)
def font(name: str, px: int) -> ImageFont.FreeTypeFont:
    """The font *name* (``"aileron"`` = Pillow's built-in face, else a matplotlib TTF file) at *px* pixels."""
    if name == "aileron":
        try:
            f = ImageFont.load_default(size=px)
        except TypeError:  # Pillow < 10.1
            f = None
        if not isinstance(f, ImageFont.FreeTypeFont):
            raise MmaError("The embedded world needs Pillow >= 10.1 built with FreeType (pip install -U Pillow).")
        return f
    path = _matplotlib_fonts() / name
    if not path.is_file():
        raise MmaError(f"matplotlib's bundled font {str(path)!r} is missing; reinstall matplotlib (>= 3.7).")
    return ImageFont.truetype(str(path), px)


def glyph_layer(rng, c: int, text: str, fill: tuple[int, int, int], fonts: tuple[str, ...]) -> Image.Image:
    """*text* in one of *fonts* (random face, size and stroke), centred on a transparent c x c layer."""
    face = fonts[int(rng.integers(len(fonts)))]
    mask = Image.new("L", (c, c), 0)
    sw = int(rng.integers(0, max(1, c // 24) + 1))
    ImageDraw.Draw(mask).text(
        (c / 2, c / 2), text, fill=255, font=font(face, int(c * 0.8)), anchor="mm", stroke_width=sw, stroke_fill=255
    )
    layer = Image.new("RGBA", (c, c), fill + (0,))
    layer.putalpha(mask)
    return layer
