"""Drawing helpers shared by every concept: colours, named colours, backgrounds, layers and placement.

Colours are float RGB arrays in [0, 255] (:func:`rgb` turns one into a Pillow tuple). Images are drawn on a
canvas :data:`SS` times the target size and box-filtered down at the end (antialiasing). Figures (shapes,
objects, glyphs) are drawn centred on a transparent RGBA layer in the coordinates ``[-1, 1]`` that
:func:`new_layer`'s ``P`` maps to pixels; :func:`place` scales, rotates and moves a layer.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SEED = 20240613
SS = 2  # images are drawn at SS x the target size, then box-filtered down (antialiasing)

Array = np.ndarray

# hue range in degrees, saturation range, value range of each colour name used in captions and `colors`
NAMED_COLOURS = {
    "red": ((-10, 8), (0.7, 1.0), (0.6, 1.0)),
    "orange": ((20, 36), (0.75, 1.0), (0.85, 1.0)),
    "yellow": ((50, 62), (0.7, 1.0), (0.85, 1.0)),
    "green": ((90, 150), (0.55, 1.0), (0.35, 0.9)),
    "blue": ((205, 240), (0.6, 1.0), (0.45, 1.0)),
    "purple": ((265, 290), (0.45, 0.9), (0.35, 0.8)),
    "pink": ((315, 345), (0.3, 0.6), (0.9, 1.0)),
    "brown": ((18, 34), (0.55, 0.85), (0.25, 0.5)),
    "black": ((0, 360), (0.0, 0.3), (0.0, 0.12)),
    "white": ((0, 360), (0.0, 0.06), (0.92, 1.0)),
    "gray": ((0, 360), (0.0, 0.06), (0.38, 0.68)),
}
COLOUR_NAMES = tuple(NAMED_COLOURS)


def rgb(c: Array) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.rint(c), 0, 255))


def hsv(h: float, s: float, v: float) -> Array:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32) * 255


def color(rng: np.random.Generator) -> Array:
    """Any colour: uniform hue, saturation skewed high, value from nearly black to full."""
    return hsv(rng.random(), rng.random() ** 0.7, 0.08 + 0.92 * rng.random())


def named_colour(rng: np.random.Generator, name: str) -> Array:
    """A random shade of the colour *name* (a key of :data:`NAMED_COLOURS`)."""
    (h0, h1), (s0, s1), (v0, v1) = NAMED_COLOURS[name]
    return hsv(rng.uniform(h0, h1) / 360, rng.uniform(s0, s1), rng.uniform(v0, v1))


def jit(rng: np.random.Generator, colour: tuple[int, int, int], h: float = 0.03, s: float = 0.15, v: float = 0.15):
    """A colour near *colour* (hue, saturation, value jittered), as a Pillow tuple."""
    hh, ss, vv = colorsys.rgb_to_hsv(*(np.asarray(colour) / 255))
    hh += rng.uniform(-h, h)
    ss = float(np.clip(ss * (1 + rng.uniform(-s, s)), 0, 1))
    vv = float(np.clip(vv * (1 + rng.uniform(-v, v)), 0, 1))
    return rgb(hsv(hh, ss, vv))


def luma(c: Array) -> float:
    return float(np.dot(c, (0.299, 0.587, 0.114)))


def pair(rng: np.random.Generator, min_luma: float = 60.0) -> tuple[Array, Array]:
    """Two random colours whose luminances differ by at least *min_luma* (so a shape stays visible)."""
    a = color(rng)
    for _ in range(30):
        b = color(rng)
        if abs(luma(a) - luma(b)) >= min_luma:
            return a, b
    return a, np.full(3, 0.0 if luma(a) > 127 else 255.0, np.float32)


def contrasting(rng: np.random.Generator, fg: Array, names: tuple[str, ...] | None = None) -> tuple[Array, str | None]:
    """A background colour at least 60 luma levels (or far in RGB) from *fg*, and its name if it has one.

    With *names*, the colour is a shade of one of those names (the first that contrasts); else any colour.
    """
    for _ in range(40):
        name = None if names is None else names[int(rng.integers(len(names)))]
        base = color(rng) if name is None else named_colour(rng, name)
        if abs(luma(fg) - luma(base)) >= 60 or np.linalg.norm(base - fg) > 200:
            return base, name
    return np.full(3, 0.0 if luma(fg) > 127 else 255.0, np.float32), None


@lru_cache(maxsize=8)
def grid(c: int) -> tuple[Array, Array]:
    """Pixel-centre coordinates of a c x c canvas, origin at its centre."""
    y, x = np.mgrid[0:c, 0:c].astype(np.float32) + 0.5 - c / 2
    return x, y


def plain_background(rng: np.random.Generator, c: int, base: Array) -> Array:
    """A c x c float background around colour *base*: flat, a gradient, soft colour clouds or grain."""
    kind = rng.integers(4)
    if kind == 0:
        return np.broadcast_to(base, (c, c, 3)).astype(np.float32)
    if kind == 1:
        x, y = grid(c)
        th = rng.uniform(0, 2 * math.pi)
        t = ((x * math.cos(th) + y * math.sin(th)) / c + 0.5)[..., None]
        other = base + rng.normal(0, 45, 3)
        return (base * (1 - t) + other * t).astype(np.float32)
    if kind == 2:
        k = int(rng.integers(2, 5))
        small = np.clip(base + rng.normal(0, 30, (k, k, 3)), 0, 255).astype(np.uint8)
        return np.asarray(Image.fromarray(small).resize((c, c), Image.BICUBIC), np.float32)
    return base + rng.uniform(6, 20) * rng.standard_normal((c, c, 1), dtype=np.float32)


def paper_background(rng: np.random.Generator, c: int) -> Array:
    """Off-white paper: a warm or cool light tone with fibre-like grain and a faint shading gradient."""
    tone = np.array([rng.uniform(225, 250), rng.uniform(220, 245), rng.uniform(205, 240)], np.float32)
    x, y = grid(c)
    shade = 1 - 0.06 * ((x * rng.uniform(-1, 1) + y * rng.uniform(-1, 1)) / c)[..., None]
    grain = rng.uniform(3, 9) * rng.standard_normal((c, c, 1), dtype=np.float32)
    return tone * shade + grain


def to_image(a: Array) -> Image.Image:
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def new_layer(c: int) -> tuple[Image.Image, ImageDraw.ImageDraw, Callable]:
    """A transparent RGBA canvas, its drawer, and P(points) mapping [-1, 1] coordinates to pixels."""
    im = Image.new("RGBA", (c, c), (0, 0, 0, 0))

    def P(*pts):
        return [(c * (0.5 + 0.5 * x), c * (0.5 + 0.5 * y)) for x, y in pts]

    return im, ImageDraw.Draw(im), P


def place(layer: Image.Image, s: float, angle: float, tx: float, ty: float) -> Image.Image:
    """Scale by *s*, rotate by *angle* degrees and move the centre by (tx, ty) canvas pixels."""
    c = layer.width
    th = math.radians(angle)
    a, b = math.cos(th) / s, math.sin(th) / s
    d, e = -b, a
    ox, oy = c / 2 + tx, c / 2 + ty
    data = (a, b, c / 2 - a * ox - b * oy, d, e, c / 2 - d * ox - e * oy)
    return layer.transform((c, c), Image.AFFINE, data, Image.BILINEAR)  # Pillow premultiplies alpha itself


def composite(bg: Array, layers: list[Image.Image]) -> Array:
    """Alpha-composite RGBA *layers* in order over the float background *bg*; float RGB result."""
    out = to_image(bg).convert("RGBA")
    for layer in layers:
        out = Image.alpha_composite(out, layer)
    return np.asarray(out.convert("RGB"), np.float32)


def outline_of(layer: Image.Image, width: int) -> Image.Image:
    """An 'L' mask of the contours of *layer*: its silhouette edge plus edges between its colour regions."""
    alpha = layer.getchannel("A")
    grey = Image.composite(layer.convert("L"), Image.new("L", layer.size, 128), alpha)
    size = 2 * max(1, width) + 1
    inner = (np.asarray(grey.filter(ImageFilter.FIND_EDGES), np.int16) > 40) * 255
    inner[[0, -1], :] = inner[:, [0, -1]] = 0  # FIND_EDGES answers the canvas border too
    silhouette = np.asarray(alpha.filter(ImageFilter.MaxFilter(size)), np.int16) - np.asarray(
        alpha.filter(ImageFilter.MinFilter(size)), np.int16
    )
    edge = Image.fromarray(np.maximum(silhouette, inner).clip(0, 255).astype(np.uint8))
    return edge.filter(ImageFilter.MaxFilter(3)) if width > 2 else edge


def downsample(a: Array | Image.Image, size: int) -> Array:
    """Box-filter a float (or PIL) canvas to size x size; float RGB result."""
    im = to_image(a) if isinstance(a, np.ndarray) else a
    if im.width != size:
        im = im.resize((size, size), Image.BOX)
    return np.asarray(im.convert("RGB"), np.float32)
