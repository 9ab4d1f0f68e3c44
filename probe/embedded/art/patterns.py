"""Two-colour patterns (stripes, checkerboard, polka dots, spiral...) that fill the canvas, drawn with NumPy."""

from __future__ import annotations

import math

import numpy as np

from .canvas import Array, grid, pair

PATTERNS = (
    "horizontal stripes",
    "vertical stripes",
    "diagonal stripes",
    "checkerboard",
    "polka dots",
    "grid",
    "zigzag",
    "wavy lines",
    "concentric circles",
    "spiral",
)


def pattern_frame(rng, name: str, c: int) -> Array:
    """The pattern *name* in two random contrasting colours on a c x c float canvas, softly lit."""
    x, y = grid(c)
    p = c * rng.uniform(0.14, 0.28)  # period in canvas pixels
    duty, ph, ph2 = rng.uniform(0.35, 0.6), rng.random(), rng.random()
    th = math.radians(rng.uniform(-12, 12))
    if name == "vertical stripes":
        th += math.pi / 2
    elif name == "diagonal stripes":
        th += math.pi / 4 * rng.choice((-1, 1))
    elif name in ("zigzag", "wavy lines"):
        th = rng.uniform(0, math.pi)
    u = x * math.cos(th) + y * math.sin(th)
    v = -x * math.sin(th) + y * math.cos(th)

    def frac(z):
        return z - np.floor(z)

    if name.endswith("stripes"):
        m = frac(v / p + ph) < duty
    elif name == "checkerboard":
        m = (np.floor(u / p + ph) + np.floor(v / p + ph2)) % 2 == 1
    elif name == "polka dots":
        row = np.floor(v / p + ph)
        uu = u / p + ph2 + 0.5 * row * (rng.random() < 0.5)
        m = (frac(uu) - 0.5) ** 2 + (frac(v / p + ph) - 0.5) ** 2 < rng.uniform(0.2, 0.36) ** 2
    elif name == "grid":
        w = rng.uniform(0.1, 0.22)
        m = (frac(u / p + ph) < w) | (frac(v / p + ph2) < w)
    elif name in ("zigzag", "wavy lines"):
        wl, amp = p * rng.uniform(1.2, 2.2), p * rng.uniform(0.4, 0.8)
        wave = 2 * np.abs(frac(u / wl + ph2) - 0.5) if name == "zigzag" else 0.5 * np.sin(2 * math.pi * u / wl)
        m = frac((v + 2 * amp * wave) / p + ph) < duty
    else:
        cx, cy = rng.uniform(-0.3, 0.3, 2) * c
        r = np.hypot(x - cx, y - cy)
        if name == "spiral":
            arms = rng.choice((1, 2)) * rng.choice((-1, 1))
            m = frac(r / p + arms * np.arctan2(y - cy, x - cx) / (2 * math.pi) + ph) < duty
        else:
            m = frac(r / p + ph) < duty
    c1, c2 = pair(rng, 50)
    img = c1 + (c2 - c1) * m[..., None].astype(np.float32)
    light = 1 + 0.15 * (rng.uniform(-1, 1) * x + rng.uniform(-1, 1) * y)[..., None] / c
    return img * light
