"""Shared drawing helpers for the built-in datasets: colours, backgrounds, placement and finishing.

Colours are float RGB arrays in [0, 255] (:func:`rgb` turns one into a Pillow tuple). Procedural images are
drawn on a canvas :data:`SS` times the target size; :func:`finish` box-filters them down, jitters contrast and
brightness and adds noise, so no dataset is recognisable by its low-level statistics.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

SEED = 20240613
SS = 2  # procedural images are drawn at SS x the target size, then box-filtered down (antialiasing)
LIGHT_ON_DARK = 0.5  # share of object images whose foreground is lighter than the background

Array = np.ndarray


def rgb(c: Array) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.rint(c), 0, 255))


def hsv(h: float, s: float, v: float) -> Array:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32) * 255


def color(rng: np.random.Generator) -> Array:
    """Any colour: uniform hue, saturation skewed high, value from nearly black to full."""
    return hsv(rng.random(), rng.random() ** 0.7, 0.08 + 0.92 * rng.random())


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


@lru_cache(maxsize=8)
def grid(c: int) -> tuple[Array, Array]:
    """Pixel-centre coordinates of a c x c canvas, origin at its centre."""
    y, x = np.mgrid[0:c, 0:c].astype(np.float32) + 0.5 - c / 2
    return x, y


def background(rng: np.random.Generator, c: int, base: Array) -> Array:
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


def place(layer: Image.Image, rng: np.random.Generator, scale=(0.5, 0.9), angle=180.0, shift=1.0):
    """Scale, rotate (degrees, +-angle) and shift an RGBA layer drawn centred on its canvas."""
    c = layer.width
    s = rng.uniform(*scale)
    th = math.radians(rng.uniform(-angle, angle))
    room = max(0.0, (1 - s) * c / 2 * shift)
    tx, ty = rng.uniform(-room, room, 2) if room else (0.0, 0.0)
    a, b = math.cos(th) / s, math.sin(th) / s
    d, e = -b, a
    ox, oy = c / 2 + tx, c / 2 + ty
    data = (a, b, c / 2 - a * ox - b * oy, d, e, c / 2 - d * ox - e * oy)
    return layer.transform((c, c), Image.AFFINE, data, Image.BILINEAR)  # Pillow premultiplies alpha itself


def paste(bg: Array, layer: Image.Image) -> Image.Image:
    return Image.alpha_composite(to_image(bg).convert("RGBA"), layer)


def to_image(a: Array) -> Image.Image:
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def new_layer(c: int) -> tuple[Image.Image, ImageDraw.ImageDraw, Callable]:
    """A transparent RGBA canvas, its drawer, and P(points) mapping [-1, 1] coordinates to pixels."""
    im = Image.new("RGBA", (c, c), (0, 0, 0, 0))

    def P(*pts):
        return [(c * (0.5 + 0.5 * x), c * (0.5 + 0.5 * y)) for x, y in pts]

    return im, ImageDraw.Draw(im), P


def finish(canvas: Array | Image.Image, rng: np.random.Generator, size: int, jitter: float = 1.0) -> Array:
    """Downsample to size x size, jitter contrast and brightness, add a little noise; uint8 RGB."""
    if isinstance(canvas, np.ndarray):
        canvas = to_image(canvas)
    if canvas.width != size:
        canvas = canvas.resize((size, size), Image.BOX)
    a = np.asarray(canvas.convert("RGB"), np.float32)
    contrast = 1 + jitter * rng.uniform(-0.15, 0.15)
    a = (a - 128) * contrast + 128 + jitter * rng.uniform(-18, 18)
    a += rng.uniform(0, 6) * rng.standard_normal(a.shape, dtype=np.float32)
    return np.clip(a + 0.5, 0, 255).astype(np.uint8)


def backdrop(rng: np.random.Generator, fg: Array) -> Array:
    """A background colour at least 60 luma levels from *fg*; lighter foregrounds in LIGHT_ON_DARK of cases."""
    light_fg = rng.random() < LIGHT_ON_DARK
    if luma(fg) < 60 or luma(fg) > 195:  # no room on one side: take the other
        light_fg = luma(fg) > 195
    for _ in range(50):
        base = color(rng)
        if (luma(fg) - luma(base) if light_fg else luma(base) - luma(fg)) >= 60:
            return base
    return np.full(3, 0.0 if light_fg else 255.0, np.float32)


def draw_object(rng: np.random.Generator, size: int, layer: Image.Image, fg: Array, **placement) -> Array:
    """Composite a drawn layer (scaled, rotated, shifted) on a random background that contrasts with *fg*."""
    bg = background(rng, layer.width, backdrop(rng, fg))
    return finish(paste(bg, place(layer, rng, **placement)), rng, size)
