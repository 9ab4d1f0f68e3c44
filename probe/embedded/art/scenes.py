"""Drawn landscapes that fill the canvas (sunset, night sky, forest, city skyline...): ``SCENES[name](rng, c)``."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .canvas import SS, jit, rgb


def _vgrad(c: int, top, bottom) -> Image.Image:
    t = np.linspace(0, 1, c, dtype=np.float32)[:, None, None]
    rows = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
    return Image.fromarray(np.broadcast_to(rows, (c, c, 3)).astype(np.uint8))


def _hills(rng, c, y0, amp, n=24):
    xs = np.linspace(0, c, n)
    ys = y0 - amp * np.abs(np.sin(xs / c * rng.uniform(2, 6) + rng.uniform(0, 6.3)))
    return list(zip(xs, ys, strict=True)) + [(c, c), (0, c)]


def _scene_sunset(rng, c):
    hy = c * rng.uniform(0.55, 0.75)
    top = jit(rng, [(70, 40, 110), (40, 30, 90), (150, 60, 120)][rng.integers(3)])
    im = _vgrad(c, top, jit(rng, (250, 140, 60)))
    d = ImageDraw.Draw(im)
    r, sx = c * rng.uniform(0.08, 0.16), c * rng.uniform(0.25, 0.75)
    sy = hy - r * rng.uniform(-0.2, 0.7)
    sun = jit(rng, (255, 215, 90), v=0.05)
    d.ellipse((sx - r, sy - r, sx + r, sy + r), fill=sun)
    if rng.random() < 0.5:  # sea with the sun's reflection
        d.rectangle((0, hy, c, c), fill=jit(rng, (60, 35, 80)))
        for k in range(int(rng.integers(3, 7))):
            yy, w = hy + (k + 1) * (c - hy) / 8, r * rng.uniform(0.4, 1.2)
            d.line((sx - w, yy, sx + w, yy), fill=sun, width=SS)
    else:
        d.polygon(_hills(rng, c, hy + c * 0.05, c * 0.08), fill=jit(rng, (35, 20, 35)))
    return im


def _scene_night_sky(rng, c):
    sky_top = jit(rng, (8, 10, 35), v=0.4)
    im = _vgrad(c, sky_top, jit(rng, (30, 45, 100), v=0.3))
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(15, 45))):
        sx, sy, r = rng.uniform(0, c), rng.uniform(0, c * 0.85), SS * rng.uniform(0.35, 0.9)
        d.ellipse((sx - r, sy - r, sx + r, sy + r), fill=jit(rng, (255, 250, 220), v=0.25))
    r, mx, my = c * rng.uniform(0.07, 0.13), c * rng.uniform(0.15, 0.85), c * rng.uniform(0.12, 0.45)
    d.ellipse((mx - r, my - r, mx + r, my + r), fill=jit(rng, (245, 240, 200), v=0.05))
    if rng.random() < 0.5:  # crescent: cover part of the moon with sky
        o = r * rng.uniform(0.4, 0.7) * rng.choice((-1, 1))
        d.ellipse((mx - r + o, my - r - r * 0.2, mx + r + o, my + r - r * 0.2), fill=im.getpixel((int(mx), int(my))))
    if rng.random() < 0.6:
        d.polygon(_hills(rng, c, c * rng.uniform(0.85, 0.95), c * 0.1), fill=jit(rng, (10, 12, 20)))
    return im


def _scene_ocean_waves(rng, c):
    hy = c * rng.uniform(0.15, 0.4)
    im = _vgrad(c, jit(rng, (130, 185, 235)), jit(rng, (220, 235, 245)))
    d = ImageDraw.Draw(im)
    sea = Image.fromarray(np.asarray(_vgrad(c, jit(rng, (40, 120, 175)), jit(rng, (10, 50, 100)))))
    im.paste(sea.crop((0, 0, c, c - int(hy))), (0, int(hy)))
    foam = jit(rng, (235, 245, 255), v=0.05)
    n = int(rng.integers(3, 7))
    wl, phase = c * rng.uniform(0.3, 0.7), rng.uniform(0, 6.3)
    xs = np.linspace(0, c, 40)
    for k in range(n):
        yk = hy + (c - hy) * (k + 0.6) / n
        amp = (c - hy) / n * rng.uniform(0.15, 0.35)
        ys = yk + amp * np.sin(2 * math.pi * xs / wl + phase + k * 1.3)
        d.line(list(zip(xs, ys, strict=True)), fill=foam, width=int(SS * rng.uniform(1, 2.2)))
    return im


def _tree(d, rng, x, base, h, colour, trunk, conifer):
    w = h * rng.uniform(0.35, 0.5)
    d.rectangle((x - w * 0.1, base - h * 0.25, x + w * 0.1, base), fill=trunk)
    if conifer:
        for k in range(2):
            top, bot = base - h * (1 - 0.3 * k), base - h * (0.45 - 0.25 * k)
            d.polygon([(x, top), (x - w * (0.4 + 0.15 * k), bot), (x + w * (0.4 + 0.15 * k), bot)], fill=colour)
    else:
        d.ellipse((x - w * 0.6, base - h, x + w * 0.6, base - h * 0.2), fill=colour)


def _scene_forest(rng, c):
    sky = (135, 190, 235) if rng.random() < 0.6 else (180, 185, 190)
    im = _vgrad(c, jit(rng, sky), jit(rng, (225, 235, 240)))
    d = ImageDraw.Draw(im)
    gy = c * rng.uniform(0.7, 0.88)
    d.rectangle((0, gy, c, c), fill=jit(rng, (70, 125, 50)))
    conifer = rng.random() < 0.6
    for _ in range(int(rng.integers(6, 12))):
        x, h = rng.uniform(-0.05, 1.05) * c, c * rng.uniform(0.3, 0.6)
        colour, trunk = jit(rng, (35, 95, 40), h=0.05, v=0.3), jit(rng, (90, 60, 35))
        _tree(d, rng, x, gy + c * rng.uniform(0, 0.1), h, colour, trunk, conifer or rng.random() < 0.2)
    return im


def _scene_snowy_mountain(rng, c):
    im = _vgrad(c, jit(rng, (70, 130, 210)), jit(rng, (190, 215, 240)))
    d = ImageDraw.Draw(im)
    rock = [(110, 110, 125), (95, 105, 130), (120, 100, 85)][rng.integers(3)]
    for _ in range(int(rng.integers(1, 4))):
        px, py = c * rng.uniform(0.2, 0.8), c * rng.uniform(0.12, 0.4)
        base, wl, wr = c * rng.uniform(0.85, 1.05), c * rng.uniform(0.35, 0.7), c * rng.uniform(0.35, 0.7)
        d.polygon([(px, py), (px - wl, base), (px + wr, base)], fill=jit(rng, rock))
        f = rng.uniform(0.25, 0.4)
        lx, ly = px - wl * f, py + (base - py) * f
        rx, ry = px + wr * f, ly
        cap = [(px, py), (rx, ry)]
        for k in range(1, 4):  # jagged lower edge of the snow cap
            t = k / 4
            cap.append((rx + (lx - rx) * t, ry - (base - py) * f * rng.uniform(0.1, 0.35) * (k % 2)))
        d.polygon(cap + [(lx, ly)], fill=jit(rng, (245, 248, 255), v=0.05))
    if rng.random() < 0.5:
        d.polygon(_hills(rng, c, c * rng.uniform(0.9, 0.98), c * 0.05), fill=jit(rng, (240, 245, 250), v=0.05))
    return im


def _scene_desert_dunes(rng, c):
    sky = [(150, 195, 235), (235, 190, 140)][rng.integers(2)]
    im = _vgrad(c, jit(rng, sky), jit(rng, (240, 230, 210)))
    d = ImageDraw.Draw(im)
    if rng.random() < 0.4:
        r, sx, sy = c * rng.uniform(0.05, 0.1), c * rng.uniform(0.1, 0.9), c * rng.uniform(0.08, 0.3)
        d.ellipse((sx - r, sy - r, sx + r, sy + r), fill=jit(rng, (255, 245, 200), v=0.05))
    sand = np.array((215, 170, 100), np.float32)
    n = int(rng.integers(2, 5))
    xs = np.linspace(0, c, 32)
    for k in range(n):
        y0 = c * (0.45 + 0.5 * k / n + rng.uniform(0, 0.08))
        ys = y0 - c * rng.uniform(0.05, 0.15) * np.sin(np.pi * xs / c * rng.uniform(0.7, 2) + rng.uniform(0, 6.3))
        tone = sand * (0.75 + 0.35 * k / n) + rng.normal(0, 8, 3)
        d.polygon(list(zip(xs, ys, strict=True)) + [(c, c), (0, c)], fill=jit(rng, rgb(tone), h=0.02))
    return im


def _scene_city_skyline(rng, c):
    mode = rng.integers(3)  # day, dusk, night
    top, bot = [((80, 140, 215), (200, 220, 240)), ((90, 60, 120), (245, 150, 80)), ((10, 15, 40), (40, 50, 90))][mode]
    im = _vgrad(c, jit(rng, top), jit(rng, bot))
    d = ImageDraw.Draw(im)
    wall = [(90, 95, 110), (45, 40, 60), (25, 28, 40)][mode]
    lit = (255, 225, 120) if mode else (200, 220, 235)
    gy = c * rng.uniform(0.88, 1.0)
    for row, shade in ((0, 1.3), (1, 1.0)):  # a paler back row, then the front row
        x = -c * rng.uniform(0, 0.1)
        while x < c:
            w, h = c * rng.uniform(0.08, 0.2), c * rng.uniform(0.2, 0.5 + 0.2 * (1 - row))
            colour = jit(rng, rgb(np.array(wall) * shade), v=0.2)
            d.rectangle((x, gy - h, x + w, c), fill=colour)
            if row:
                step = c * 0.06
                for wy in np.arange(gy - h + step * 0.6, gy - step * 0.5, step):
                    for wx in np.arange(x + step * 0.4, x + w - step * 0.5, step):
                        if rng.random() < 0.5:
                            d.rectangle((wx, wy, wx + step * 0.45, wy + step * 0.5), fill=lit)
            x += w + c * rng.uniform(0, 0.04)
    return im


RAINBOW = ((230, 40, 40), (250, 140, 30), (250, 230, 50), (60, 180, 70), (50, 110, 220), (80, 60, 170), (150, 70, 190))


def _scene_rainbow(rng, c):
    im = _vgrad(c, jit(rng, (90, 150, 225)), jit(rng, (200, 225, 245)))
    d = ImageDraw.Draw(im)
    cx, cy, r = c * rng.uniform(0.3, 0.7), c * rng.uniform(0.75, 1.05), c * rng.uniform(0.45, 0.75)
    w = c * rng.uniform(0.03, 0.05)
    for k, col in enumerate(RAINBOW):
        rk = r - k * w
        d.arc((cx - rk, cy - rk, cx + rk, cy + rk), 180, 360, fill=jit(rng, col, v=0.1), width=int(w) + 1)
    for _ in range(int(rng.integers(0, 3))):
        x, y, s = c * rng.uniform(0, 1), c * rng.uniform(0.05, 0.4), c * rng.uniform(0.06, 0.12)
        for dx in (-s, 0, s):
            d.ellipse((x + dx - s, y - s * 0.7, x + dx + s, y + s * 0.7), fill=jit(rng, (250, 250, 250), v=0.05))
    d.polygon(_hills(rng, c, c * rng.uniform(0.82, 0.95), c * 0.08), fill=jit(rng, (80, 160, 60)))
    return im


SCENES = {
    "sunset": _scene_sunset,
    "night sky": _scene_night_sky,
    "ocean waves": _scene_ocean_waves,
    "forest": _scene_forest,
    "snowy mountain": _scene_snowy_mountain,
    "desert dunes": _scene_desert_dunes,
    "city skyline": _scene_city_skyline,
    "rainbow": _scene_rainbow,
}
