"""Clip-art objects (house, car, fish, umbrella...), drawn as figures: ``drawer(rng, d, P, main)``.

Each drawer paints one object with ``d`` (an ``ImageDraw`` of a transparent RGBA layer) in the ``[-1, 1]``
coordinates that ``P`` maps to pixels; *main* (a Pillow tuple) is the object's main colour, the colour its
caption names. Secondary parts take their usual colours (wheels dark, leaves green) or random ones.
"""

from __future__ import annotations

import math

import numpy as np

from .canvas import color, jit, rgb
from .shapes import HOLE


def _w(d, k=28):
    """A stroke width proportional to the canvas."""
    return max(2, d.im.size[0] // k)


def _obj_house(rng, d, P, main):
    roof, door = rgb(color(rng)), rgb(color(rng))
    top = rng.uniform(-0.2, 0.05)
    d.rectangle(P((-0.65, top), (0.65, 0.85)), fill=main)
    d.polygon(P((-0.85, top + 0.05), (0, rng.uniform(-0.9, -0.65)), (0.85, top + 0.05)), fill=roof)
    dx = rng.uniform(-0.35, 0.35)
    d.rectangle(P((dx - 0.14, 0.35), (dx + 0.14, 0.85)), fill=door)
    wx = -0.45 if dx > 0 else 0.2
    d.rectangle(P((wx, top + 0.25), (wx + 0.25, top + 0.5)), fill=jit(rng, (200, 225, 245)))


def _obj_tree(rng, d, P, main):
    d.rectangle(P((-0.12, 0.2), (0.12, 0.9)), fill=jit(rng, (110, 75, 40), v=0.3))
    green = jit(rng, [(50, 140, 50), (30, 100, 40), (200, 120, 30)][rng.integers(3)], h=0.04)
    for cx, cy, r in ((0, -0.35, 0.55), (-0.35, -0.05, 0.42), (0.35, -0.05, 0.42)):
        d.ellipse(P((cx - r, cy - r), (cx + r, cy + r)), fill=green)


def _obj_car(rng, d, P, main):
    glass = jit(rng, (170, 210, 235))
    d.polygon(P((-0.45, -0.05), (-0.25, -0.45), (0.35, -0.45), (0.55, -0.05)), fill=main)
    d.polygon(P((-0.35, -0.1), (-0.2, -0.37), (0.03, -0.37), (0.03, -0.1)), fill=glass)
    d.polygon(P((0.1, -0.1), (0.1, -0.37), (0.3, -0.37), (0.43, -0.1)), fill=glass)
    d.rounded_rectangle(P((-0.9, -0.1), (0.9, 0.35)), radius=6, fill=main)
    for x in (-0.5, 0.5):
        d.ellipse(P((x - 0.22, 0.15), (x + 0.22, 0.59)), fill=(25, 25, 25))
        d.ellipse(P((x - 0.1, 0.27), (x + 0.1, 0.47)), fill=(170, 170, 175))


def _obj_fish(rng, d, P, main):
    d.polygon(P((0.35, 0), (0.9, -0.45), (0.8, 0), (0.9, 0.45)), fill=rgb(color(rng)))
    h = rng.uniform(0.35, 0.55)
    d.ellipse(P((-0.85, -h), (0.5, h)), fill=main)
    d.polygon(P((-0.2, -h + 0.05), (0.1, -h - 0.25), (0.2, -h + 0.1)), fill=main)
    d.ellipse(P((-0.6, -0.15), (-0.4, 0.05)), fill=(250, 250, 250))
    d.ellipse(P((-0.55, -0.1), (-0.45, 0.0)), fill=(10, 10, 10))


def _obj_mug(rng, d, P, main):
    d.ellipse(P((0.2, -0.35), (0.85, 0.45)), fill=main)
    d.ellipse(P((0.35, -0.18), (0.68, 0.28)), fill=HOLE)
    d.rounded_rectangle(P((-0.6, -0.6), (0.45, 0.8)), radius=5, fill=main)
    d.ellipse(P((-0.6, -0.72), (0.45, -0.48)), fill=jit(rng, (90, 55, 30)))
    if rng.random() < 0.5:
        d.rectangle(P((-0.6, 0.0), (0.45, 0.2)), fill=rgb(color(rng)))


def _obj_umbrella(rng, d, P, main):
    other = rgb(color(rng))
    d.line(P((0, -0.2), (0, 0.75)), fill=(60, 60, 60), width=max(2, d.im.size[0] // 28))
    d.arc(P((-0.3, 0.55), (0.0, 0.9)), 0, 180, fill=(60, 60, 60), width=max(2, d.im.size[0] // 28))
    n = int(rng.integers(4, 7))
    for k in range(n):
        a0, a1 = 180 + 180 * k / n, 180 + 180 * (k + 1) / n
        d.pieslice(P((-0.9, -0.75), (0.9, 0.55)), a0, a1, fill=main if k % 2 == 0 else other)
    for k in range(n):
        cx = -0.9 + (2 * k + 1) * 0.9 / n
        d.ellipse(P((cx - 0.9 / n, -0.23), (cx + 0.9 / n, 0.05)), fill=HOLE)


def _obj_flower(rng, d, P, main):
    stem = jit(rng, (50, 140, 50))
    d.line(P((0, -0.1), (0, 0.95)), fill=stem, width=max(2, d.im.size[0] // 24))
    d.ellipse(P((0.0, 0.4), (0.45, 0.6)), fill=stem)
    n, cy, r = int(rng.integers(5, 9)), -0.35, rng.uniform(0.22, 0.3)
    for k in range(n):
        a = 2 * math.pi * k / n
        px, py = 0.35 * math.cos(a), cy + 0.35 * math.sin(a)
        d.ellipse(P((px - r, py - r), (px + r, py + r)), fill=main)
    d.ellipse(P((-0.2, cy - 0.2), (0.2, cy + 0.2)), fill=jit(rng, (250, 200, 40), h=0.05))


def _obj_sailboat(rng, d, P, main):
    d.polygon(P((-0.9, 0.45), (0.9, 0.45), (0.6, 0.85), (-0.6, 0.85)), fill=main)
    d.line(P((0.05, -0.9), (0.05, 0.45)), fill=(70, 50, 40), width=max(2, d.im.size[0] // 32))
    sail = jit(rng, (245, 245, 240), v=0.1) if rng.random() < 0.6 else rgb(color(rng))
    d.polygon(P((0.12, -0.85), (0.12, 0.35), (0.75, 0.35)), fill=sail)
    d.polygon(P((-0.02, -0.6), (-0.02, 0.35), (-0.55, 0.35)), fill=sail)


def _obj_key(rng, d, P, main):
    d.ellipse(P((-0.9, -0.35), (-0.2, 0.35)), fill=main)
    d.ellipse(P((-0.72, -0.15), (-0.45, 0.15)), fill=HOLE)
    d.rectangle(P((-0.25, -0.09), (0.9, 0.09)), fill=main)
    for x in (0.45, 0.7) if rng.random() < 0.5 else (0.35, 0.55, 0.75):
        d.rectangle(P((x, 0.05), (x + 0.12, rng.uniform(0.25, 0.4))), fill=main)


def _obj_envelope(rng, d, P, main):
    line = rgb(color(rng))
    w = max(2, d.im.size[0] // 28)
    d.rectangle(P((-0.85, -0.55), (0.85, 0.55)), fill=main, outline=line, width=w)
    d.line(P((-0.85, -0.55), (0, rng.uniform(0.0, 0.2)), (0.85, -0.55)), fill=line, width=w)
    if rng.random() < 0.5:
        d.rectangle(P((0.5, -0.45), (0.75, -0.15)), fill=rgb(color(rng)))


def _obj_airplane(rng, d, P, main):
    d.polygon(P((-0.9, -0.08), (0.7, -0.1), (0.95, 0), (0.7, 0.1), (-0.9, 0.08)), fill=main)
    sweep = rng.uniform(0.0, 0.25)
    d.polygon(P((-0.05, -0.05), (-0.35 - sweep, -0.85), (-0.15 - sweep, -0.85), (0.3, -0.05)), fill=main)
    d.polygon(P((-0.05, 0.05), (-0.35 - sweep, 0.85), (-0.15 - sweep, 0.85), (0.3, 0.05)), fill=main)
    d.polygon(P((-0.9, -0.05), (-0.95, -0.4), (-0.78, -0.4), (-0.65, -0.05)), fill=main)


def _obj_rocket(rng, d, P, main):
    d.polygon(P((-0.22, 0.55), (-0.22, -0.35), (0, -0.92), (0.22, -0.35), (0.22, 0.55)), fill=main)
    fin = rgb(color(rng))
    d.polygon(P((-0.22, 0.1), (-0.5, 0.65), (-0.22, 0.5)), fill=fin)
    d.polygon(P((0.22, 0.1), (0.5, 0.65), (0.22, 0.5)), fill=fin)
    d.ellipse(P((-0.1, -0.3), (0.1, -0.1)), fill=jit(rng, (170, 210, 235)))
    d.polygon(P((-0.15, 0.55), (0, rng.uniform(0.8, 0.98)), (0.15, 0.55)), fill=jit(rng, (250, 150, 40)))


def _obj_bicycle(rng, d, P, main):
    w = _w(d, 22)
    for x in (-0.52, 0.52):
        d.ellipse(P((x - 0.38, 0.0), (x + 0.38, 0.76)), outline=(30, 30, 30), width=w)
    frame = [(-0.52, 0.38), (-0.1, 0.38), (0.25, -0.1), (-0.25, -0.1), (-0.52, 0.38)]
    d.line(P(*frame), fill=main, width=w)
    d.line(P((0.25, -0.1), (0.52, 0.38)), fill=main, width=w)
    d.line(P((0.25, -0.1), (0.2, -0.35), (0.38, -0.35)), fill=main, width=w)
    d.line(P((-0.25, -0.1), (-0.3, -0.25)), fill=main, width=w)
    d.line(P((-0.42, -0.27), (-0.18, -0.27)), fill=(30, 30, 30), width=w)


def _obj_truck(rng, d, P, main):
    box = rgb(color(rng)) if rng.random() < 0.6 else main
    d.rectangle(P((-0.9, -0.55), (0.25, 0.35)), fill=box)
    d.polygon(P((0.3, 0.35), (0.3, -0.3), (0.7, -0.3), (0.92, 0.0), (0.92, 0.35)), fill=main)
    d.polygon(P((0.42, -0.2), (0.66, -0.2), (0.82, 0.0), (0.42, 0.0)), fill=jit(rng, (170, 210, 235)))
    for x in (-0.6, -0.25, 0.62):
        d.ellipse(P((x - 0.18, 0.2), (x + 0.18, 0.56)), fill=(25, 25, 25))


def _obj_bus(rng, d, P, main):
    d.rounded_rectangle(P((-0.92, -0.55), (0.92, 0.4)), radius=6, fill=main)
    glass = jit(rng, (170, 210, 235))
    for k in range(5):
        x = -0.8 + k * 0.33
        d.rectangle(P((x, -0.42), (x + 0.24, -0.1)), fill=glass)
    d.line(P((-0.92, 0.1), (0.92, 0.1)), fill=rgb(color(rng)), width=_w(d, 30))
    for x in (-0.55, 0.55):
        d.ellipse(P((x - 0.2, 0.22), (x + 0.2, 0.62)), fill=(25, 25, 25))


def _obj_bird(rng, d, P, main):
    d.ellipse(P((-0.6, -0.3), (0.45, 0.45)), fill=main)
    d.ellipse(P((0.15, -0.6), (0.65, -0.1)), fill=main)
    d.polygon(P((0.6, -0.4), (0.92, -0.3), (0.6, -0.22)), fill=jit(rng, (240, 170, 40)))
    d.ellipse(P((0.4, -0.44), (0.5, -0.34)), fill=(10, 10, 10))
    d.polygon(P((-0.55, 0.0), (-0.95, -0.3), (-0.9, 0.2)), fill=main)
    d.polygon(P((-0.3, -0.05), (0.1, -0.05), (-0.2, 0.3)), fill=rgb(color(rng)))
    d.line(P((-0.1, 0.42), (-0.15, 0.75)), fill=(80, 60, 40), width=_w(d, 40))
    d.line(P((0.1, 0.42), (0.12, 0.75)), fill=(80, 60, 40), width=_w(d, 40))


def _obj_butterfly(rng, d, P, main):
    other = rgb(color(rng))
    for s in (-1, 1):
        d.ellipse(P((s * 0.05 if s > 0 else -0.9, -0.8), (0.9 if s > 0 else -0.05, 0.05)), fill=main)
        d.ellipse(P((s * 0.05 if s > 0 else -0.7, 0.0), (0.7 if s > 0 else -0.05, 0.7)), fill=other)
        d.ellipse(P((s * 0.45 - 0.12, -0.5), (s * 0.45 + 0.12, -0.26)), fill=other)
    d.rounded_rectangle(P((-0.07, -0.6), (0.07, 0.65)), radius=3, fill=(40, 30, 30))
    d.line(P((0, -0.6), (-0.3, -0.95)), fill=(40, 30, 30), width=_w(d, 50))
    d.line(P((0, -0.6), (0.3, -0.95)), fill=(40, 30, 30), width=_w(d, 50))


def _obj_snail(rng, d, P, main):
    d.polygon(P((-0.9, 0.6), (0.8, 0.6), (0.9, 0.3), (0.55, 0.35), (-0.6, 0.45)), fill=jit(rng, (200, 170, 120)))
    d.line(P((0.75, 0.35), (0.85, -0.05)), fill=(90, 70, 50), width=_w(d, 40))
    d.ellipse(P((-0.55, -0.45), (0.45, 0.55)), fill=main)
    line = rgb(color(rng))
    for r in (0.32, 0.18):
        d.arc(P((-0.05 - r, 0.05 - r), (-0.05 + r, 0.05 + r)), 0, 300, fill=line, width=_w(d, 30))


def _obj_apple(rng, d, P, main):
    d.ellipse(P((-0.8, -0.5), (0.05, 0.8)), fill=main)
    d.ellipse(P((-0.05, -0.5), (0.8, 0.8)), fill=main)
    d.line(P((0, -0.45), (0.1, -0.85)), fill=(100, 70, 40), width=_w(d, 24))
    d.ellipse(P((0.1, -0.85), (0.55, -0.6)), fill=jit(rng, (60, 150, 50)))


def _obj_banana(rng, d, P, main):
    d.chord(P((-0.9, -1.1), (0.9, 0.7)), 20, 160, fill=main)
    d.chord(P((-0.7, -1.25), (0.7, 0.35)), 20, 160, fill=HOLE)
    d.ellipse(P((0.72, -0.05), (0.9, 0.12)), fill=(90, 70, 40))


def _obj_pear(rng, d, P, main):
    d.ellipse(P((-0.65, -0.05), (0.65, 0.9)), fill=main)
    d.ellipse(P((-0.38, -0.6), (0.38, 0.3)), fill=main)
    d.line(P((0, -0.55), (0.08, -0.9)), fill=(100, 70, 40), width=_w(d, 26))


def _obj_cherry(rng, d, P, main):
    stem = jit(rng, (70, 120, 40))
    d.line(P((-0.4, 0.3), (0.1, -0.8), (0.45, 0.2)), fill=stem, width=_w(d, 30))
    d.ellipse(P((-0.75, 0.05), (-0.05, 0.75)), fill=main)
    d.ellipse(P((0.1, -0.05), (0.8, 0.65)), fill=main)
    d.ellipse(P((0.05, -0.9), (0.5, -0.65)), fill=jit(rng, (60, 150, 50)))


def _obj_carrot(rng, d, P, main):
    d.polygon(P((-0.3, -0.5), (0.3, -0.5), (0.05, 0.95), (-0.05, 0.95)), fill=main)
    green = jit(rng, (60, 150, 50))
    for dx in (-0.2, 0, 0.2):
        d.polygon(P((dx - 0.08, -0.5), (dx + rng.uniform(-0.2, 0.2), -0.95), (dx + 0.08, -0.5)), fill=green)
    for y in (-0.2, 0.15, 0.45):
        d.line(P((-0.18, y), (-0.05, y + 0.05)), fill=(150, 80, 20), width=_w(d, 50))


def _obj_mushroom(rng, d, P, main):
    d.rounded_rectangle(P((-0.22, -0.05), (0.22, 0.85)), radius=4, fill=jit(rng, (240, 230, 210)))
    d.pieslice(P((-0.9, -0.7), (0.9, 0.4)), 180, 360, fill=main)
    for _ in range(int(rng.integers(2, 5))):
        x, y, r = rng.uniform(-0.55, 0.55), rng.uniform(-0.55, -0.25), rng.uniform(0.07, 0.12)
        d.ellipse(P((x - r, y - r), (x + r, y + r)), fill=(250, 250, 245))


def _obj_leaf(rng, d, P, main):
    t = np.linspace(0, math.pi, 24)
    w = rng.uniform(0.35, 0.55)
    left = [(-0.85 + 1.7 * k / 23, -w * math.sin(v)) for k, v in enumerate(t)]
    right = [(0.85 - 1.7 * k / 23, w * math.sin(v)) for k, v in enumerate(t)]
    d.polygon(P(*left, *right), fill=main)
    d.line(P((-0.95, 0.05), (0.85, 0)), fill=jit(rng, (90, 70, 40)), width=_w(d, 40))


def _obj_cactus(rng, d, P, main):
    d.rounded_rectangle(P((-0.16, -0.9), (0.16, 0.65)), radius=8, fill=main)
    ya, yb = rng.uniform(-0.2, 0.1), rng.uniform(-0.4, -0.05)
    d.rounded_rectangle(P((-0.6, ya - 0.5), (-0.38, ya + 0.12)), radius=6, fill=main)
    d.rectangle(P((-0.6, ya - 0.02), (-0.1, ya + 0.12)), fill=main)
    d.rounded_rectangle(P((0.38, yb - 0.45), (0.6, yb + 0.12)), radius=6, fill=main)
    d.rectangle(P((0.1, yb - 0.02), (0.6, yb + 0.12)), fill=main)
    d.polygon(P((-0.5, 0.6), (0.5, 0.6), (0.35, 0.95), (-0.35, 0.95)), fill=jit(rng, (190, 100, 60)))


def _obj_sun(rng, d, P, main):
    n = int(rng.integers(8, 13))
    for k in range(n):
        a = 2 * math.pi * k / n
        d.line(
            P((0.5 * math.cos(a), 0.5 * math.sin(a)), (0.92 * math.cos(a), 0.92 * math.sin(a))),
            fill=main,
            width=_w(d, 20),
        )
    d.ellipse(P((-0.5, -0.5), (0.5, 0.5)), fill=main)


def _obj_cloud(rng, d, P, main):
    for cx, cy, r in ((-0.45, 0.1, 0.35), (0.0, -0.15, 0.45), (0.45, 0.1, 0.35)):
        d.ellipse(P((cx - r, cy - r), (cx + r, cy + r)), fill=main)
    d.rounded_rectangle(P((-0.8, 0.05), (0.8, 0.45)), radius=10, fill=main)


def _obj_snowman(rng, d, P, main):
    white = jit(rng, (245, 245, 250), v=0.05)
    d.ellipse(P((-0.55, 0.0), (0.55, 0.95)), fill=white)
    d.ellipse(P((-0.38, -0.6), (0.38, 0.12)), fill=white)
    d.rectangle(P((-0.3, -0.72), (0.3, -0.62)), fill=main)
    d.rectangle(P((-0.18, -0.98), (0.18, -0.7)), fill=main)
    d.polygon(P((0.0, -0.3), (0.3, -0.25), (0.0, -0.2)), fill=jit(rng, (240, 130, 30)))
    for y in (0.3, 0.55):
        d.ellipse(P((-0.05, y - 0.05), (0.05, y + 0.05)), fill=(20, 20, 20))


def _obj_ice_cream(rng, d, P, main):
    d.polygon(P((-0.42, -0.05), (0.42, -0.05), (0, 0.95)), fill=jit(rng, (215, 165, 100)))
    d.line(P((-0.25, 0.15), (0.15, 0.6)), fill=(170, 120, 60), width=_w(d, 50))
    d.ellipse(P((-0.5, -0.75), (0.5, 0.1)), fill=main)
    if rng.random() < 0.5:
        d.ellipse(P((-0.12, -0.95), (0.12, -0.7)), fill=jit(rng, (220, 30, 50)))


def _obj_bottle(rng, d, P, main):
    d.rounded_rectangle(P((-0.35, -0.25), (0.35, 0.92)), radius=6, fill=main)
    d.polygon(P((-0.35, -0.2), (-0.12, -0.55), (0.12, -0.55), (0.35, -0.2)), fill=main)
    d.rectangle(P((-0.12, -0.9), (0.12, -0.5)), fill=main)
    d.rectangle(P((-0.14, -0.98), (0.14, -0.85)), fill=rgb(color(rng)))
    d.rectangle(P((-0.35, 0.15), (0.35, 0.5)), fill=rgb(color(rng)))


def _obj_lamp(rng, d, P, main):
    d.polygon(P((-0.25, -0.8), (0.25, -0.8), (0.5, -0.2), (-0.5, -0.2)), fill=main)
    d.line(P((0, -0.2), (0, 0.75)), fill=(70, 70, 70), width=_w(d, 24))
    d.rounded_rectangle(P((-0.4, 0.72), (0.4, 0.9)), radius=3, fill=(70, 70, 70))


def _obj_chair(rng, d, P, main):
    w = _w(d, 20)
    d.rectangle(P((-0.45, -0.9), (-0.3, 0.9)), fill=main)
    d.rectangle(P((-0.45, 0.05), (0.5, 0.2)), fill=main)
    d.rectangle(P((0.38, 0.05), (0.5, 0.9)), fill=main)
    for y in (-0.6, -0.3):
        d.line(P((-0.45, y), (-0.3, y)), fill=main, width=w)


def _obj_clock(rng, d, P, main):
    d.ellipse(P((-0.9, -0.9), (0.9, 0.9)), fill=main)
    d.ellipse(P((-0.72, -0.72), (0.72, 0.72)), fill=jit(rng, (245, 245, 240), v=0.05))
    for k in range(12):
        a = 2 * math.pi * k / 12
        d.ellipse(
            P(
                (0.6 * math.cos(a) - 0.04, 0.6 * math.sin(a) - 0.04),
                (0.6 * math.cos(a) + 0.04, 0.6 * math.sin(a) + 0.04),
            ),
            fill=(30, 30, 30),
        )
    h, m = rng.uniform(0, 2 * math.pi, 2)
    d.line(P((0, 0), (0.32 * math.sin(h), -0.32 * math.cos(h))), fill=(20, 20, 20), width=_w(d, 22))
    d.line(P((0, 0), (0.52 * math.sin(m), -0.52 * math.cos(m))), fill=(20, 20, 20), width=_w(d, 32))


def _obj_book(rng, d, P, main):
    d.rectangle(P((-0.7, -0.85), (0.7, 0.85)), fill=main)
    d.rectangle(P((-0.7, -0.85), (-0.5, 0.85)), fill=jit(rng, rgb(np.asarray(main) * 0.7), v=0.05))
    d.rectangle(P((0.55, -0.8), (0.7, 0.8)), fill=(245, 240, 225))
    d.rectangle(P((-0.3, -0.5), (0.4, -0.3)), fill=rgb(color(rng)))


def _obj_bell(rng, d, P, main):
    d.pieslice(P((-0.5, -0.8), (0.5, 0.2)), 180, 360, fill=main)
    d.polygon(P((-0.5, -0.3), (0.5, -0.3), (0.75, 0.55), (-0.75, 0.55)), fill=main)
    d.rectangle(P((-0.82, 0.5), (0.82, 0.65)), fill=main)
    d.ellipse(P((-0.15, 0.55), (0.15, 0.85)), fill=jit(rng, (120, 90, 40)))
    d.ellipse(P((-0.1, -0.95), (0.1, -0.75)), fill=main)


def _obj_crown(rng, d, P, main):
    n = int(rng.integers(3, 6))
    pts = [(-0.85, 0.6), (-0.85, -0.5)]
    for k in range(n):
        x0 = -0.85 + 1.7 * k / n
        pts += [(x0 + 0.85 / n, 0.05), (x0 + 1.7 / n, -0.5)]
    d.polygon(P(*pts, (0.85, 0.6)), fill=main)
    gem = rgb(color(rng))
    for k in range(n):
        x = -0.85 + 1.7 * (k + 0.5) / n
        d.ellipse(P((x - 0.08, 0.22), (x + 0.08, 0.38)), fill=gem)


def _obj_candle(rng, d, P, main):
    d.rectangle(P((-0.25, -0.35), (0.25, 0.9)), fill=main)
    d.line(P((0, -0.35), (0, -0.5)), fill=(30, 30, 30), width=_w(d, 40))
    d.ellipse(P((-0.15, -0.9), (0.15, -0.45)), fill=jit(rng, (250, 180, 40)))
    d.ellipse(P((-0.06, -0.72), (0.06, -0.52)), fill=jit(rng, (255, 240, 150)))


def _obj_kite(rng, d, P, main):
    other = rgb(color(rng))
    d.polygon(P((0, -0.9), (0.5, -0.3), (0, 0.5), (-0.5, -0.3)), fill=main)
    d.polygon(P((0, -0.9), (0.5, -0.3), (0, -0.3)), fill=other)
    d.polygon(P((0, 0.5), (-0.5, -0.3), (0, -0.3)), fill=other)
    d.line(P((0, 0.5), (-0.15, 0.7), (0.1, 0.8), (-0.1, 0.95)), fill=(60, 60, 60), width=_w(d, 40))


def _obj_balloon(rng, d, P, main):
    d.ellipse(P((-0.55, -0.95), (0.55, 0.35)), fill=main)
    d.polygon(P((-0.08, 0.33), (0.08, 0.33), (0, 0.45)), fill=main)
    d.line(P((0, 0.42), (0.1, 0.65), (-0.08, 0.8), (0.05, 0.98)), fill=(70, 70, 70), width=_w(d, 45))
    d.ellipse(P((-0.35, -0.7), (-0.18, -0.45)), fill=(250, 250, 250))


def _obj_hat(rng, d, P, main):
    d.ellipse(P((-0.95, 0.25), (0.95, 0.65)), fill=main)
    d.rounded_rectangle(P((-0.5, -0.6), (0.5, 0.45)), radius=6, fill=main)
    d.rectangle(P((-0.5, 0.1), (0.5, 0.3)), fill=rgb(color(rng)))


def _obj_glasses(rng, d, P, main):
    w = _w(d, 18)
    for x in (-0.48, 0.48):
        d.ellipse(P((x - 0.38, -0.3), (x + 0.38, 0.3)), outline=main, width=w)
    d.arc(P((-0.14, -0.2), (0.14, 0.15)), 200, 340, fill=main, width=w)
    d.line(P((-0.86, -0.05), (-0.98, -0.2)), fill=main, width=w)
    d.line(P((0.86, -0.05), (0.98, -0.2)), fill=main, width=w)


def _obj_lock(rng, d, P, main):
    d.arc(P((-0.45, -0.9), (0.45, 0.1)), 180, 360, fill=(150, 150, 160), width=_w(d, 10))
    d.line(P((-0.42, -0.4), (-0.42, -0.1)), fill=(150, 150, 160), width=_w(d, 10))
    d.line(P((0.42, -0.4), (0.42, -0.1)), fill=(150, 150, 160), width=_w(d, 10))
    d.rounded_rectangle(P((-0.65, -0.15), (0.65, 0.9)), radius=6, fill=main)
    d.ellipse(P((-0.1, 0.2), (0.1, 0.4)), fill=(20, 20, 20))
    d.rectangle(P((-0.04, 0.35), (0.04, 0.6)), fill=(20, 20, 20))


def _obj_anchor(rng, d, P, main):
    w = _w(d, 14)
    d.ellipse(P((-0.15, -0.95), (0.15, -0.65)), outline=main, width=max(2, w // 2))
    d.line(P((0, -0.65), (0, 0.8)), fill=main, width=w)
    d.line(P((-0.4, -0.45), (0.4, -0.45)), fill=main, width=w)
    d.arc(P((-0.75, -0.05), (0.75, 0.85)), 20, 160, fill=main, width=w)
    d.polygon(P((-0.8, 0.35), (-0.6, 0.2), (-0.6, 0.5)), fill=main)
    d.polygon(P((0.8, 0.35), (0.6, 0.2), (0.6, 0.5)), fill=main)


def _obj_ladder(rng, d, P, main):
    w = _w(d, 16)
    d.line(P((-0.45, -0.95), (-0.45, 0.95)), fill=main, width=w)
    d.line(P((0.45, -0.95), (0.45, 0.95)), fill=main, width=w)
    n = int(rng.integers(4, 7))
    for k in range(n):
        y = -0.8 + 1.6 * k / (n - 1)
        d.line(P((-0.45, y), (0.45, y)), fill=main, width=max(2, w - 1))


def _obj_tent(rng, d, P, main):
    d.polygon(P((-0.95, 0.75), (0, -0.75), (0.95, 0.75)), fill=main)
    d.polygon(P((-0.25, 0.75), (0, 0.1), (0.25, 0.75)), fill=(30, 25, 25))
    d.line(P((0, -0.75), (0, -0.95)), fill=(90, 70, 50), width=_w(d, 30))


def _obj_lighthouse(rng, d, P, main):
    d.polygon(P((-0.35, 0.9), (-0.2, -0.45), (0.2, -0.45), (0.35, 0.9)), fill=(245, 245, 245))
    for y in (-0.15, 0.35):
        d.polygon(
            P((-0.25 - 0.04 * y, y), (0.25 + 0.04 * y, y), (0.28 + 0.04 * y, y + 0.22), (-0.28 - 0.04 * y, y + 0.22)),
            fill=main,
        )
    d.rectangle(P((-0.2, -0.72), (0.2, -0.45)), fill=jit(rng, (255, 230, 120)))
    d.polygon(P((-0.26, -0.72), (0, -0.95), (0.26, -0.72)), fill=main)


def _obj_trophy(rng, d, P, main):
    d.pieslice(P((-0.55, -1.2), (0.55, 0.1)), 0, 180, fill=main)
    w = _w(d, 22)
    d.arc(P((-0.8, -0.65), (-0.3, -0.15)), 90, 270, fill=main, width=w)
    d.arc(P((0.3, -0.65), (0.8, -0.15)), 270, 90, fill=main, width=w)
    d.rectangle(P((-0.08, 0.05), (0.08, 0.55)), fill=main)
    d.rectangle(P((-0.4, 0.55), (0.4, 0.85)), fill=jit(rng, (90, 60, 40)))


def _obj_gift(rng, d, P, main):
    ribbon = rgb(color(rng))
    d.rectangle(P((-0.75, -0.35), (0.75, 0.9)), fill=main)
    d.rectangle(P((-0.85, -0.55), (0.85, -0.3)), fill=main)
    d.rectangle(P((-0.1, -0.55), (0.1, 0.9)), fill=ribbon)
    d.ellipse(P((-0.5, -0.9), (-0.02, -0.5)), outline=ribbon, width=_w(d, 24))
    d.ellipse(P((0.02, -0.9), (0.5, -0.5)), outline=ribbon, width=_w(d, 24))


def _obj_teapot(rng, d, P, main):
    d.ellipse(P((-0.6, -0.45), (0.6, 0.75)), fill=main)
    d.polygon(P((0.5, 0.1), (0.95, -0.4), (0.98, -0.3), (0.55, 0.4)), fill=main)
    d.arc(P((-0.95, -0.3), (-0.4, 0.45)), 90, 270, fill=main, width=_w(d, 14))
    d.ellipse(P((-0.35, -0.62), (0.35, -0.35)), fill=main)
    d.ellipse(P((-0.08, -0.78), (0.08, -0.6)), fill=main)


def _obj_hammer(rng, d, P, main):
    d.rectangle(P((-0.09, -0.5), (0.09, 0.95)), fill=jit(rng, (160, 110, 60)))
    d.polygon(P((-0.65, -0.85), (0.45, -0.85), (0.6, -0.75), (0.6, -0.5), (-0.65, -0.5)), fill=main)


def _obj_sword(rng, d, P, main):
    d.polygon(P((-0.1, 0.4), (-0.1, -0.75), (0, -0.98), (0.1, -0.75), (0.1, 0.4)), fill=jit(rng, (200, 205, 215)))
    d.rectangle(P((-0.45, 0.38), (0.45, 0.5)), fill=main)
    d.rectangle(P((-0.07, 0.5), (0.07, 0.85)), fill=main)
    d.ellipse(P((-0.12, 0.82), (0.12, 0.98)), fill=main)


def _obj_flag(rng, d, P, main):
    d.rectangle(P((-0.75, -0.95), (-0.65, 0.95)), fill=(90, 80, 70))
    wave = rng.uniform(0.05, 0.15)
    d.polygon(P((-0.65, -0.85), (0.0, -0.85 + wave), (0.85, -0.85), (0.85, 0.0), (0.0, wave), (-0.65, 0.0)), fill=main)
    if rng.random() < 0.5:
        d.rectangle(P((-0.65, -0.57), (0.85, -0.28)), fill=rgb(color(rng)))


def _obj_shoe(rng, d, P, main):
    d.polygon(P((-0.7, -0.6), (-0.3, -0.6), (-0.2, -0.1), (0.5, 0.05), (0.9, 0.3), (0.9, 0.5), (-0.75, 0.5)), fill=main)
    d.rectangle(P((-0.78, 0.48), (0.92, 0.65)), fill=jit(rng, (60, 50, 45)))
    for k in range(3):
        x = -0.25 + 0.15 * k
        d.line(P((x, -0.15 + 0.05 * k), (x + 0.12, -0.25 + 0.05 * k)), fill=(250, 250, 250), width=_w(d, 40))


def _obj_shirt(rng, d, P, main):
    d.polygon(
        P(
            (-0.3, -0.8),
            (-0.9, -0.45),
            (-0.7, -0.1),
            (-0.5, -0.25),
            (-0.5, 0.9),
            (0.5, 0.9),
            (0.5, -0.25),
            (0.7, -0.1),
            (0.9, -0.45),
            (0.3, -0.8),
            (0.0, -0.6),
        ),
        fill=main,
    )


def _obj_guitar(rng, d, P, main):
    d.rectangle(P((-0.07, -0.95), (0.07, 0.1)), fill=jit(rng, (110, 75, 40)))
    d.rectangle(P((-0.12, -0.98), (0.12, -0.8)), fill=jit(rng, (60, 40, 25)))
    d.ellipse(P((-0.42, -0.15), (0.42, 0.45)), fill=main)
    d.ellipse(P((-0.55, 0.25), (0.55, 0.98)), fill=main)
    d.ellipse(P((-0.14, 0.2), (0.14, 0.48)), fill=(30, 20, 15))


def _obj_pencil(rng, d, P, main):
    d.rectangle(P((-0.7, -0.14), (0.5, 0.14)), fill=main)
    d.polygon(P((0.5, -0.14), (0.92, 0), (0.5, 0.14)), fill=jit(rng, (235, 200, 150)))
    d.polygon(P((0.8, -0.04), (0.92, 0), (0.8, 0.04)), fill=(40, 40, 40))
    d.rectangle(P((-0.92, -0.14), (-0.7, 0.14)), fill=jit(rng, (240, 150, 160)))


def _obj_spoon(rng, d, P, main):
    d.ellipse(P((-0.3, -0.95), (0.3, -0.2)), fill=main)
    d.rounded_rectangle(P((-0.07, -0.3), (0.07, 0.95)), radius=3, fill=main)


def _obj_bucket(rng, d, P, main):
    d.polygon(P((-0.6, -0.3), (0.6, -0.3), (0.45, 0.85), (-0.45, 0.85)), fill=main)
    d.ellipse(P((-0.6, -0.42), (0.6, -0.18)), fill=jit(rng, rgb(np.asarray(main) * 0.6), v=0.05))
    d.arc(P((-0.55, -0.95), (0.55, 0.05)), 190, 350, fill=(90, 90, 95), width=_w(d, 30))


def _obj_dog(rng, d, P, main):
    d.ellipse(P((-0.75, -0.2), (0.45, 0.4)), fill=main)
    d.ellipse(P((0.2, -0.7), (0.8, -0.1)), fill=main)
    d.polygon(P((0.22, -0.55), (0.1, -0.1), (0.32, -0.3)), fill=rgb(np.asarray(main) * 0.6))
    d.ellipse(P((0.7, -0.45), (0.9, -0.28)), fill=(20, 20, 20))
    d.ellipse(P((0.5, -0.52), (0.6, -0.42)), fill=(20, 20, 20))
    for x in (-0.6, -0.35, 0.1, 0.3):
        d.rectangle(P((x, 0.2), (x + 0.14, 0.8)), fill=main)
    d.line(P((-0.7, -0.05), (-0.95, -0.45)), fill=main, width=_w(d, 22))


def _obj_cat(rng, d, P, main):
    d.ellipse(P((-0.7, -0.55), (0.7, 0.75)), fill=main)
    d.polygon(P((-0.68, -0.2), (-0.6, -0.95), (-0.15, -0.5)), fill=main)
    d.polygon(P((0.68, -0.2), (0.6, -0.95), (0.15, -0.5)), fill=main)
    eye = jit(rng, (120, 200, 80))
    for x in (-0.3, 0.3):
        d.ellipse(P((x - 0.13, -0.1), (x + 0.13, 0.12)), fill=eye)
        d.ellipse(P((x - 0.04, -0.08), (x + 0.04, 0.1)), fill=(10, 10, 10))
    d.polygon(P((-0.08, 0.25), (0.08, 0.25), (0, 0.35)), fill=jit(rng, (240, 150, 160)))
    for s in (-1, 1):
        for dy in (0.3, 0.42):
            d.line(P((s * 0.15, dy), (s * 0.85, dy + (dy - 0.36))), fill=(230, 230, 230), width=max(1, _w(d, 60)))


def _obj_turtle(rng, d, P, main):
    skin = jit(rng, (120, 160, 80))
    for x in (-0.5, 0.4):
        d.ellipse(P((x - 0.15, 0.1), (x + 0.15, 0.6)), fill=skin)
    d.ellipse(P((0.55, -0.3), (0.95, 0.1)), fill=skin)
    d.pieslice(P((-0.8, -0.6), (0.7, 0.6)), 180, 360, fill=main)
    d.rectangle(P((-0.8, -0.02), (0.7, 0.15)), fill=main)
    line = rgb(np.asarray(main) * 0.6)
    for x in (-0.35, 0.2):
        d.polygon(P((x - 0.18, -0.05), (x, -0.4), (x + 0.18, -0.05)), outline=line, width=_w(d, 40))


def _obj_spider(rng, d, P, main):
    w = _w(d, 26)
    for s in (-1, 1):
        for k in range(4):
            y = -0.35 + 0.25 * k
            d.line(P((0, y), (s * 0.55, y - 0.3), (s * 0.9, y + 0.25)), fill=main, width=w)
    d.ellipse(P((-0.3, -0.3), (0.3, 0.5)), fill=main)
    d.ellipse(P((-0.2, -0.6), (0.2, -0.2)), fill=main)


OBJECTS = {
    "house": _obj_house,
    "tree": _obj_tree,
    "car": _obj_car,
    "fish": _obj_fish,
    "mug": _obj_mug,
    "umbrella": _obj_umbrella,
    "flower": _obj_flower,
    "sailboat": _obj_sailboat,
    "key": _obj_key,
    "envelope": _obj_envelope,
    "airplane": _obj_airplane,
    "rocket": _obj_rocket,
    "bicycle": _obj_bicycle,
    "truck": _obj_truck,
    "bus": _obj_bus,
    "bird": _obj_bird,
    "butterfly": _obj_butterfly,
    "snail": _obj_snail,
    "apple": _obj_apple,
    "banana": _obj_banana,
    "pear": _obj_pear,
    "cherry": _obj_cherry,
    "carrot": _obj_carrot,
    "mushroom": _obj_mushroom,
    "leaf": _obj_leaf,
    "cactus": _obj_cactus,
    "sun": _obj_sun,
    "cloud": _obj_cloud,
    "snowman": _obj_snowman,
    "ice cream": _obj_ice_cream,
    "bottle": _obj_bottle,
    "lamp": _obj_lamp,
    "chair": _obj_chair,
    "clock": _obj_clock,
    "book": _obj_book,
    "bell": _obj_bell,
    "crown": _obj_crown,
    "candle": _obj_candle,
    "kite": _obj_kite,
    "balloon": _obj_balloon,
    "hat": _obj_hat,
    "glasses": _obj_glasses,
    "lock": _obj_lock,
    "anchor": _obj_anchor,
    "ladder": _obj_ladder,
    "tent": _obj_tent,
    "lighthouse": _obj_lighthouse,
    "trophy": _obj_trophy,
    "gift": _obj_gift,
    "teapot": _obj_teapot,
    "hammer": _obj_hammer,
    "sword": _obj_sword,
    "flag": _obj_flag,
    "shoe": _obj_shoe,
    "shirt": _obj_shirt,
    "guitar": _obj_guitar,
    "pencil": _obj_pencil,
    "spoon": _obj_spoon,
    "bucket": _obj_bucket,
    "dog": _obj_dog,
    "cat": _obj_cat,
    "turtle": _obj_turtle,
    "spider": _obj_spider,
}
