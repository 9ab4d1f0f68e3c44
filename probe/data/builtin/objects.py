"""The ``objects`` dataset: clip-art objects (house, car, fish, umbrella...) drawn with Pillow."""

from __future__ import annotations

import math

from PIL import Image

from .drawing import SS, color, draw_object, jit, new_layer, rgb


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
    d.ellipse(P((0.35, -0.18), (0.68, 0.28)), fill=(0, 0, 0, 0))
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
        d.ellipse(P((cx - 0.9 / n, -0.23), (cx + 0.9 / n, 0.05)), fill=(0, 0, 0, 0))


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
    d.ellipse(P((-0.72, -0.15), (-0.45, 0.15)), fill=(0, 0, 0, 0))
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
}


def draw_objects(rng, label, split, i, size):
    c = SS * size
    im, d, P = new_layer(c)
    main = color(rng)
    list(OBJECTS.values())[label](rng, d, P, rgb(main))
    if rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    angle = 180 if label == list(OBJECTS).index("key") else 15
    return draw_object(rng, size, im, main, scale=(0.65, 0.95), angle=angle, shift=0.6)
