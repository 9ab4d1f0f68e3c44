"""Geometric shapes and regular polygons, drawn as figures: ``drawer(rng, d, P, main)``.

Every drawer paints one shape in the colour *main* (a Pillow tuple) with ``d`` (an ``ImageDraw`` of a
transparent RGBA layer) in the ``[-1, 1]`` coordinates that ``P`` maps to pixels; holes are painted
transparent. :data:`ROTATION` says how far a shape may turn and still be itself.
"""

from __future__ import annotations

import math

import numpy as np

HOLE = (0, 0, 0, 0)


def regular(n: int, r: float = 0.9, rot: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [(r * math.cos(rot + 2 * math.pi * k / n), r * math.sin(rot + 2 * math.pi * k / n)) for k in range(n)]


def _polygon(n: int):
    def draw(rng, d, P, main):
        d.polygon(P(*regular(n, 0.92, rng.uniform(0, 2 * math.pi))), fill=main)

    return draw


def _circle(rng, d, P, main):
    d.ellipse(P((-0.85, -0.85), (0.85, 0.85)), fill=main)


def _oval(rng, d, P, main):
    a = rng.uniform(0.4, 0.6)
    d.ellipse(P((-0.9, -a), (0.9, a)), fill=main)


def _square(rng, d, P, main):
    d.polygon(P(*regular(4, 0.95, math.pi / 4)), fill=main)


def _rectangle(rng, d, P, main):
    h = rng.uniform(0.35, 0.55)
    d.rectangle(P((-0.92, -h), (0.92, h)), fill=main)


def _triangle(rng, d, P, main):
    pts = regular(3, 0.95)
    pts[0] = (pts[0][0] + rng.uniform(-0.25, 0.25), pts[0][1])
    d.polygon(P(*pts), fill=main)


def _diamond(rng, d, P, main):
    w = rng.uniform(0.5, 0.7)
    d.polygon(P((0, -0.95), (w, 0), (0, 0.95), (-w, 0)), fill=main)


def _trapezoid(rng, d, P, main):
    top = rng.uniform(0.3, 0.55)
    d.polygon(P((-top, -0.55), (top, -0.55), (0.92, 0.55), (-0.92, 0.55)), fill=main)


def _star(rng, d, P, main):
    r_in = rng.uniform(0.35, 0.5)
    pts = [
        (r * math.cos(-math.pi / 2 + k * math.pi / 5), r * math.sin(-math.pi / 2 + k * math.pi / 5))
        for k, r in enumerate([0.95, r_in] * 5)
    ]
    d.polygon(P(*pts), fill=main)


def _cross(rng, d, P, main):
    w = rng.uniform(0.22, 0.34)
    pts = ((-w, -0.9), (w, -0.9), (w, -w), (0.9, -w), (0.9, w), (w, w), (w, 0.9), (-w, 0.9))
    d.polygon(P(*pts, (-w, w), (-0.9, w), (-0.9, -w), (-w, -w)), fill=main)


def _ring(rng, d, P, main):
    r = rng.uniform(0.4, 0.62)
    d.ellipse(P((-0.9, -0.9), (0.9, 0.9)), fill=main)
    d.ellipse(P((-r, -r), (r, r)), fill=HOLE)


def _heart(rng, d, P, main):
    t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3 / 17
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)) / 17 - 0.05
    d.polygon(P(*zip(x, y, strict=True)), fill=main)


def _arrow(rng, d, P, main):
    w, h, neck = rng.uniform(0.12, 0.22), rng.uniform(0.4, 0.6), rng.uniform(0.0, 0.35)
    d.polygon(P((-0.9, -w), (neck, -w), (neck, -h), (0.9, 0), (neck, h), (neck, w), (-0.9, w)), fill=main)


def _crescent(rng, d, P, main):
    off, r = rng.uniform(0.35, 0.6), rng.uniform(0.75, 0.9)
    d.ellipse(P((-0.9, -0.9), (0.9, 0.9)), fill=main)
    d.ellipse(P((off - r, -r - 0.1), (off + r, r - 0.1)), fill=HOLE)


def _semicircle(rng, d, P, main):
    d.pieslice(P((-0.92, -0.6), (0.92, 1.24)), 180, 360, fill=main)


SHAPES = {
    "circle": _circle,
    "oval": _oval,
    "square": _square,
    "rectangle": _rectangle,
    "triangle": _triangle,
    "diamond": _diamond,
    "trapezoid": _trapezoid,
    "star": _star,
    "cross": _cross,
    "ring": _ring,
    "heart": _heart,
    "arrow": _arrow,
    "crescent": _crescent,
    "semicircle": _semicircle,
    "pentagon": _polygon(5),
    "hexagon": _polygon(6),
    "heptagon": _polygon(7),
    "octagon": _polygon(8),
    "nonagon": _polygon(9),
    "decagon": _polygon(10),
}

#: degrees a shape may be turned either way and keep its name (an upright heart or arrow stays so)
ROTATION = {"heart": 20, "arrow": 180, "trapezoid": 20, "semicircle": 20, "triangle": 20}
