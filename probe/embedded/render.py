"""Render one image of a concept under a :class:`Look`: the corpus look, or one downstream shift.

A look is a distribution over how an image is made. For figures (shapes, objects, letters, digits,
colours) it says how the figure is painted (``fill``), what it stands on (``background``), how large,
how many, what else is in the picture (distractors, occluders) and which fonts or digit sources are
used; for every image it says how the picture is degraded at the end (perspective, blur, noise,
contrast, fog, night, tint, grey). The pretraining corpus and each downstream dataset are one concept
list and one look each, so a shift is a handful of named values that a reader can compare.

:func:`render` returns the uint8 image and the :class:`Attributes` a caption may mention (the colour
name, size, background colour, count, drawing style), each None when the caption must not
claim it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFilter

from .art.canvas import (
    COLOUR_NAMES,
    SS,
    Array,
    color,
    composite,
    contrasting,
    downsample,
    named_colour,
    new_layer,
    outline_of,
    paper_background,
    place,
    plain_background,
    rgb,
    to_image,
)
from .art.glyphs import DIGIT_NAMES, PRINT_FONTS, glyph_layer
from .art.objects import OBJECTS
from .art.patterns import PATTERNS, pattern_frame
from .art.photos import handwritten_layer, photo_background, texture_crop
from .art.scenes import SCENES
from .art.shapes import SHAPES
from .concepts import Concept

__all__ = ["Look", "Attributes", "render", "FILLS", "BACKGROUNDS"]

FILLS = ("flat", "outline", "sketch", "silhouette", "shaded", "texture", "pixel")
BACKGROUNDS = ("plain", "paper", "photo")
SIZES = ("small", "large")
DISTRACTOR_SHAPES = ("circle", "square", "triangle", "ring", "cross", "oval", "diamond")


@dataclass(frozen=True)
class Look:
    """How the images of one distribution are made; every range is sampled uniformly per image.

    ``fill`` and ``background`` are ``(choice, weight)`` pairs. ``named`` is the chance that a figure's
    colour is a shade of a named colour (which captions may then mention). ``digits`` is the chance that
    a digit is handwritten rather than typeset, and ``handwriting`` the range of source indices (of 174
    per digit) it draws from. Degradations: ``perspective`` (corner displacement, share of the side),
    ``blur`` (Gaussian radius, output pixels), ``noise`` (std, grey levels), ``contrast`` (factor range),
    ``fog`` / ``night`` / ``grey`` (chances), ``tint`` (max per-channel gain change), ``zoom`` (texture
    crop magnification).
    """

    fill: tuple[tuple[str, float], ...] = (("flat", 1.0),)
    background: tuple[tuple[str, float], ...] = (("plain", 1.0),)
    named: float = 0.6
    outline_ring: float = 0.25
    scale: tuple[float, float] = (0.5, 0.95)
    counts: tuple[float, ...] = (1.0,)
    rotation: float = 0.0  # degrees on top of the concept's own freedom
    shift: float = 0.7  # share of the free room a figure may move
    distractors: tuple[int, int] = (0, 0)
    occluders: float = 0.0
    fonts: tuple[str, ...] = PRINT_FONTS
    digits: float = 0.0
    handwriting: tuple[int, int] = (0, 60)
    perspective: float = 0.0
    blur: tuple[float, float] = (0.0, 0.0)
    noise: tuple[float, float] = (0.0, 6.0)
    contrast: tuple[float, float] = (0.85, 1.15)
    brightness: float = 18.0
    fog: float = 0.0
    night: float = 0.0
    tint: float = 0.0
    grey: float = 0.0
    zoom: tuple[float, float] = (1.0, 1.0)
    notes: str = field(default="", compare=False)


class Attributes(NamedTuple):
    """What a caption may say about one image (None: the caption must not claim it)."""

    colour: str | None = None
    size: str | None = None
    background: str | None = None
    count: int = 1
    style: str | None = None  # "handwritten", "sketch", "outline" ...


def _choice(rng, pairs: tuple[tuple[str, float], ...]) -> str:
    w = np.array([p for _, p in pairs], float)
    return pairs[int(rng.choice(len(pairs), p=w / w.sum()))][0]


# ------------------------------------------------------------------------------------------ figures
def figure_layer(
    rng, concept: Concept, c: int, fill: tuple[int, int, int], look: Look, serial: int = 0
) -> tuple[Image.Image, str | None]:
    """The concept drawn on a transparent c x c layer in colour *fill*, and its style word if any.

    A handwritten digit is source ``look.handwriting[0] + serial`` (wrapping inside the range), so the
    images of one split never share a source with another split's.
    """
    if concept.family == "letter":
        ch = concept.name[-1].upper() if rng.random() < 0.7 else concept.name[-1].lower()
        return glyph_layer(rng, c, ch, fill, look.fonts), None
    if concept.family == "digit":
        digit = DIGIT_NAMES.index(concept.name)
        if rng.random() < look.digits:
            lo, hi = look.handwriting
            return handwritten_layer(c, digit, lo + serial % (hi - lo), fill), "handwritten"
        return glyph_layer(rng, c, str(digit), fill, look.fonts), "printed"
    layer, d, P = new_layer(c)
    if concept.family == "colour":  # a shape or an object in the named colour
        pool = list(SHAPES) + list(OBJECTS) if rng.random() < 0.5 else ["circle", "square", "oval"]
        name = pool[int(rng.integers(len(pool)))]
        (SHAPES.get(name) or OBJECTS[name])(rng, d, P, fill)
        return layer, None
    (SHAPES.get(concept.name) or OBJECTS[concept.name])(rng, d, P, fill)
    return layer, None


def _restyle(rng, layer: Image.Image, how: str, fill, c: int) -> Image.Image:
    """Repaint a flat figure layer: outline, sketch, silhouette, shaded, texture or pixel art."""
    if how == "flat":
        return layer
    alpha = layer.getchannel("A")
    if how in ("outline", "sketch"):
        lines = outline_of(layer, int(rng.integers(1, 3)) * SS)
        pen = fill if how == "outline" else rgb(np.full(3, rng.uniform(20, 90)))
        strength = 1.0 if how == "outline" else rng.uniform(0.6, 0.95)
        out = Image.new("RGBA", layer.size, pen + (0,))
        out.putalpha(lines.point(lambda v: int(v * strength)))
        return out
    if how == "silhouette":
        out = Image.new("RGBA", layer.size, rgb(np.full(3, rng.uniform(0, 40))) + (0,))
        out.putalpha(alpha)
        return out
    if how == "shaded":  # lit from one side, with a highlight: a rounded, glossy look
        y, x = (np.mgrid[0:c, 0:c].astype(np.float32) + 0.5) / c - 0.5
        th = rng.uniform(0, 2 * math.pi)
        light = 0.55 + 0.9 * (0.5 + x * math.cos(th) + y * math.sin(th))
        hx, hy = 0.25 * math.cos(th), 0.25 * math.sin(th)
        spot = 120 * np.exp(-((x - hx) ** 2 + (y - hy) ** 2) / 0.01)
        rgb_ = np.asarray(layer.convert("RGB"), np.float32) * light[..., None] + spot[..., None]
        out = to_image(rgb_).convert("RGBA")
        out.putalpha(alpha)
        return out
    if how == "texture":
        frame = pattern_frame(rng, PATTERNS[int(rng.integers(len(PATTERNS)))], c)
        out = to_image(frame).convert("RGBA")
        out.putalpha(alpha)
        return out
    if how == "pixel":
        k = int(rng.integers(7, 12))
        small = layer.resize((k, k), Image.BOX)
        return small.resize(layer.size, Image.NEAREST)
    raise ValueError(f"unknown fill {how!r}")


def _distractor(rng, c: int) -> Image.Image:
    layer, d, P = new_layer(c)
    SHAPES[DISTRACTOR_SHAPES[int(rng.integers(len(DISTRACTOR_SHAPES)))]](rng, d, P, rgb(color(rng)))
    s = rng.uniform(0.15, 0.32)
    room = (1 - s) * c / 2
    return place(layer, s, rng.uniform(-180, 180), *rng.uniform(-room, room, 2))


def _occluder(rng, c: int) -> Image.Image:
    layer, d, P = new_layer(c)
    w = rng.uniform(0.12, 0.25)
    y = rng.uniform(-0.5, 0.5)
    d.rectangle(P((-1.5, y - w), (1.5, y + w)), fill=rgb(color(rng)))
    return layer.rotate(rng.uniform(0, 180), Image.BILINEAR)


def _background(rng, how: str, c: int, fg, fg_name: str | None) -> tuple[Array, str | None]:
    if how == "paper":
        return paper_background(rng, c), None
    if how == "photo":
        return photo_background(rng, c), None
    names = tuple(n for n in COLOUR_NAMES if n != fg_name)  # never "a red star on a red background"
    base, name = contrasting(rng, np.asarray(fg, np.float32), names if rng.random() < 0.5 else None)
    return plain_background(rng, c, base), name


def _figure_image(rng, concept: Concept, look: Look, c: int, serial: int) -> tuple[Array, Attributes]:
    named = concept.family == "colour" or rng.random() < look.named
    colour_name = concept.name if concept.family == "colour" else COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]
    fg = named_colour(rng, colour_name) if named else color(rng)
    fill = rgb(fg)
    how = _choice(rng, look.fill)
    layer, style = figure_layer(rng, concept, c, fill, look, serial)
    if how == "flat" and rng.random() < look.outline_ring:  # a contour in another colour
        ring = Image.new("RGBA", layer.size, rgb(color(rng)) + (0,))
        ring.putalpha(outline_of(layer, SS))
        layer = Image.alpha_composite(layer, ring)
    layer = _restyle(rng, layer, how, fill, c)
    if how in ("sketch", "outline", "silhouette", "pixel", "texture"):
        style = how if style is None else f"{how} {style}"
    count = int(rng.choice(len(look.counts), p=np.asarray(look.counts) / sum(look.counts))) + 1
    s = rng.uniform(*look.scale) * (1.0 if count == 1 else 0.62 if count == 2 else 0.5)
    turn = concept.rotation + look.rotation
    placed = []
    for k in range(count):
        room = max(0.0, (1 - s) * c / 2)
        if count == 1:
            tx, ty = rng.uniform(-room, room, 2) * look.shift
        else:  # spread the copies: one per sector of a circle around the centre
            a = 2 * math.pi * (k + rng.uniform(0.2, 0.8)) / count
            tx, ty = room * 0.8 * math.cos(a), room * 0.8 * math.sin(a)
        placed.append(place(layer, s, rng.uniform(-turn, turn), tx, ty))
    background_kind = _choice(rng, look.background)
    bg, bg_name = _background(rng, background_kind, c, fg, colour_name if named else None)
    under = [_distractor(rng, c) for _ in range(int(rng.integers(look.distractors[0], look.distractors[1] + 1)))]
    over = [_occluder(rng, c) for _ in range(1 + int(rng.random() < 0.4))] if rng.random() < look.occluders else []
    image = composite(bg, under + placed + over)
    size = None if count > 1 else ("small" if s < 0.62 else "large" if s > 0.85 else None)
    plain_colour = named and how in ("flat", "shaded", "outline")
    attrs = Attributes(
        colour=colour_name if plain_colour or concept.family == "colour" else None,
        size=size,
        background=bg_name if not under else None,
        count=count,
        style=style,
    )
    return image, attrs


# ------------------------------------------------------------------------------------------- frames
def _frame_image(rng, concept: Concept, look: Look, c: int, part: str) -> tuple[Array, Attributes]:
    if concept.family == "pattern":
        return pattern_frame(rng, concept.name, c), Attributes()
    if concept.family == "scene":
        im = SCENES[concept.name](rng, c)
        if rng.random() < 0.5:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        return np.asarray(im, np.float32), Attributes()
    return texture_crop(rng, concept.name, part, c, zoom=rng.uniform(*look.zoom)), Attributes()


# ---------------------------------------------------------------------------------------- degrading
def _perspective(im: Image.Image, rng, strength: float) -> Image.Image:
    """Look at the picture from an angle: move its corners inwards by up to *strength* of the side."""
    c = im.width
    dst = np.array([(0, 0), (c, 0), (c, c), (0, c)], float)
    src = dst + rng.uniform(0, strength * c, (4, 2)) * np.array([(1, 1), (-1, 1), (-1, -1), (1, -1)])
    rows = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    coeffs = np.linalg.solve(np.array(rows), src.reshape(-1))
    return im.transform((c, c), Image.PERSPECTIVE, tuple(coeffs), Image.BILINEAR, fillcolor=None)


def _degrade(rng, canvas: Array, look: Look, size: int) -> Array:
    if look.perspective > 0:
        canvas = np.asarray(_perspective(to_image(canvas), rng, look.perspective), np.float32)
    a = downsample(canvas, size)
    if look.blur[1] > 0:
        r = rng.uniform(*look.blur)
        if r > 0.05:
            a = np.asarray(to_image(a).filter(ImageFilter.GaussianBlur(r)), np.float32)
    if rng.random() < look.grey:
        a = np.repeat(a.mean(axis=-1, keepdims=True), 3, axis=-1)
    if rng.random() < look.fog:  # haze: blend towards a light grey, more at the top
        t = rng.uniform(0.35, 0.6) * (1 - 0.4 * np.linspace(0, 1, size, dtype=np.float32))[:, None, None]
        a = a + (rng.uniform(190, 235) - a) * t
    if rng.random() < look.night:  # dark, blue-shifted, grainy
        a = a * rng.uniform(0.3, 0.45) * np.array([0.8, 0.9, 1.25], np.float32) + rng.uniform(0, 12)
    if look.tint > 0:
        a = a * (1 + rng.uniform(-look.tint, look.tint, 3)).astype(np.float32)
    a = (a - 128) * rng.uniform(*look.contrast) + 128 + rng.uniform(-look.brightness, look.brightness)
    a += rng.uniform(*look.noise) * rng.standard_normal(a.shape, dtype=np.float32)
    return np.clip(a + 0.5, 0, 255).astype(np.uint8)


def render(
    rng: np.random.Generator, concept: Concept, look: Look, size: int, part: str, serial: int = 0
) -> tuple[Array, Attributes]:
    """One uint8 ``[size, size, 3]`` image of *concept* under *look*, and what a caption may say of it.

    *part* (``"corpus"``, ``"train"``, ``"val"``, ``"test"``) picks the strip of a texture photo to crop;
    *serial* (the image's number within its class and part) picks a handwritten digit's source.
    """
    c = SS * size
    if concept.kind == "frame":
        canvas, attrs = _frame_image(rng, concept, look, c, part)
    else:
        canvas, attrs = _figure_image(rng, concept, look, c, serial)
    return _degrade(rng, canvas, look, size), attrs
