"""Single drawn figures on a random background: the ``shapes``, ``colors`` and ``letters`` datasets."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mma.errors import MmaError

from .drawing import SS, background, color, draw_object, finish, hsv, new_layer, paste, place, rgb

# ---------------------------------------------------------------------------------------- shapes
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "hexagon", "heart", "arrow", "crescent")


def _regular(n: int, r: float = 0.9, rot: float = -math.pi / 2):
    return [(r * math.cos(rot + 2 * math.pi * k / n), r * math.sin(rot + 2 * math.pi * k / n)) for k in range(n)]


def draw_shapes(rng, label, split, i, size):
    c = SS * size
    im, d, P = new_layer(c)
    fg = color(rng)
    fill = rgb(fg) + (255,)
    kw = dict(fill=fill)
    if rng.random() < 0.3:  # an outline in another colour
        kw.update(outline=rgb(color(rng)) + (255,), width=max(1, c // 24))
    hole = (0, 0, 0, 0)
    name = SHAPES[label]
    if name == "circle":
        d.ellipse(P((-0.85, -0.85), (0.85, 0.85)), **kw)
    elif name == "square":
        d.polygon(P(*_regular(4, 0.95, math.pi / 4)), **kw)
    elif name == "triangle":
        pts = _regular(3, 0.95)
        pts[0] = (pts[0][0] + rng.uniform(-0.25, 0.25), pts[0][1])
        d.polygon(P(*pts), **kw)
    elif name == "star":
        r_in = rng.uniform(0.35, 0.5)
        pts = [
            (r * math.cos(-math.pi / 2 + k * math.pi / 5), r * math.sin(-math.pi / 2 + k * math.pi / 5))
            for k, r in enumerate([0.95, r_in] * 5)
        ]
        d.polygon(P(*pts), **kw)
    elif name == "cross":
        w = rng.uniform(0.22, 0.34)
        d.polygon(
            P(
                (-w, -0.9),
                (w, -0.9),
                (w, -w),
                (0.9, -w),
                (0.9, w),
                (w, w),
                (w, 0.9),
                (-w, 0.9),
                (-w, w),
                (-0.9, w),
                (-0.9, -w),
                (-w, -w),
            ),
            **kw,
        )
    elif name == "ring":
        r = rng.uniform(0.4, 0.62)
        d.ellipse(P((-0.9, -0.9), (0.9, 0.9)), **kw)
        d.ellipse(P((-r, -r), (r, r)), fill=hole)
    elif name == "hexagon":
        d.polygon(P(*_regular(6, 0.92)), **kw)
    elif name == "heart":
        t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        x = 16 * np.sin(t) ** 3 / 17
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)) / 17 - 0.05
        d.polygon(P(*zip(x, y, strict=True)), **kw)
    elif name == "arrow":
        w, h, neck = rng.uniform(0.12, 0.22), rng.uniform(0.4, 0.6), rng.uniform(0.0, 0.35)
        d.polygon(P((-0.9, -w), (neck, -w), (neck, -h), (0.9, 0), (neck, h), (neck, w), (-0.9, w)), **kw)
    else:  # crescent
        off, r = rng.uniform(0.35, 0.6), rng.uniform(0.75, 0.9)
        d.ellipse(P((-0.9, -0.9), (0.9, 0.9)), **kw)
        d.ellipse(P((off - r, -r - 0.1), (off + r, r - 0.1)), fill=hole)
    angle = 25 if name == "heart" else 180
    return draw_object(rng, size, im, fg, scale=(0.55, 0.9), angle=angle, shift=0.6)


# ---------------------------------------------------------------------------------------- colors
# hue range in degrees, saturation range, value range
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
COLOURS = tuple(NAMED_COLOURS)


def draw_colors(rng, label, split, i, size):
    c = SS * size
    (h0, h1), (s0, s1), (v0, v1) = NAMED_COLOURS[COLOURS[label]]
    fg = hsv(rng.uniform(h0, h1) / 360, rng.uniform(s0, s1), rng.uniform(v0, v1))
    bg = color(rng)
    while np.linalg.norm(bg - fg) < 150:  # a background far from the object's colour
        bg = color(rng)
    im, d, P = new_layer(c)
    kind = rng.integers(3)
    if kind == 0:
        a = rng.uniform(0.55, 0.9)
        d.ellipse(P((-0.9, -a), (0.9, a)), fill=rgb(fg))
    elif kind == 1:
        d.rounded_rectangle(P((-0.85, -0.7), (0.85, 0.7)), radius=c * rng.uniform(0.02, 0.2), fill=rgb(fg))
    else:
        t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        r = 0.8 * (1 + sum(rng.uniform(-0.12, 0.12) * np.sin(k * t + rng.uniform(0, 6.3)) for k in (2, 3, 4)))
        d.polygon(P(*zip(r * np.cos(t), r * np.sin(t), strict=True)), fill=rgb(fg))
    placed = place(im, rng, scale=(0.6, 0.9), angle=180, shift=0.4)
    return finish(paste(background(rng, c, bg), placed), rng, size, jitter=0.4)


# --------------------------------------------------------------------------------------- letters
LETTERS = "ABDEFGHKMRTW"


@lru_cache(maxsize=4)
def _font(px: int) -> ImageFont.FreeTypeFont:
    try:
        font = ImageFont.load_default(size=px)
    except TypeError:  # Pillow < 10.1
        font = None
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise MmaError("The letters dataset needs Pillow >= 10.1 built with FreeType (pip install -U Pillow).")
    return font


def draw_letters(rng, label, split, i, size):
    c = SS * size
    ch = LETTERS[label] if rng.random() < 0.7 else LETTERS[label].lower()
    mask = Image.new("L", (c, c), 0)
    sw = int(rng.integers(0, max(1, c // 24) + 1))
    ImageDraw.Draw(mask).text(
        (c / 2, c / 2), ch, fill=255, font=_font(int(c * 0.8)), anchor="mm", stroke_width=sw, stroke_fill=255
    )
    fg = color(rng)
    layer = Image.new("RGBA", (c, c), rgb(fg) + (0,))
    layer.putalpha(mask)
    return draw_object(rng, size, layer, fg, scale=(0.65, 0.95), angle=15, shift=0.6)
