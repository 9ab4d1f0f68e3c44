"""Datasets made from files shipped inside installed packages (read from their folders, never downloaded).

``digits`` colourises and places scikit-learn's 8x8 handwritten digits; ``textures`` recolours crops of
scikit-image's bundled photos; ``faces`` renders scikit-image's ``lfw_subset`` face and background crops.
Each split takes its own part of the source: separate source images, or separate strips of one photo.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from mma.errors import MmaError

from ..base import SPLITS
from .drawing import SEED, SS, Array, color, draw_object, finish, luma, pair, rgb

DIGITS_COUNTS = (110, 20, 40)  # of >= 174 source images per class
FACE_SOURCES = (60, 10, 30)  # of the 100 source images per class
FACE_REPEATS = 2  # renders (crop, flip, palette) per face source image
FACE_COUNTS = tuple(n * FACE_REPEATS for n in FACE_SOURCES)


def _split_offset(counts: tuple[int, int, int], split: str) -> int:
    return sum(counts[: SPLITS.index(split)])


# ---------------------------------------------------------------------------------------- digits
def _package_dir(package: str) -> Path:
    """Where an installed package lives, found without importing it (importing scikit-learn takes ~1 s)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MmaError(f"{package} is not installed; the built-in datasets need it (pip install mma-toolkit).")
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=1)
def _digit_sources() -> list[Array]:
    """scikit-learn's digits (the file ``load_digits`` reads), per class, in a fixed shuffled order."""
    path = _package_dir("sklearn") / "datasets" / "data" / "digits.csv.gz"
    if path.is_file():
        data = np.loadtxt(path, delimiter=",")
        images, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    else:  # a future layout: fall back on the public loader
        from sklearn.datasets import load_digits

        d = load_digits()
        images, target = d.images, d.target
    out = []
    for k in range(10):
        imgs = images[target == k]
        if len(imgs) < sum(DIGITS_COUNTS):
            raise MmaError(f"scikit-learn's digits have only {len(imgs)} images of {k}; need {sum(DIGITS_COUNTS)}.")
        out.append(imgs[np.random.default_rng([SEED, k]).permutation(len(imgs))])
    return out


def draw_digits(rng, label, split, i, size):
    c = SS * size
    src = _digit_sources()[label][_split_offset(DIGITS_COUNTS, split) + i]
    mask = Image.fromarray(np.uint8(np.clip(src / 16.0, 0, 1) * 255)).resize((c, c), Image.BICUBIC)
    fg = color(rng)
    layer = Image.new("RGBA", (c, c), rgb(fg) + (0,))
    layer.putalpha(mask)
    return draw_object(rng, size, layer, fg, scale=(0.7, 1.0), angle=12, shift=0.6)


# -------------------------------------------------------------------------------------- textures
@dataclass(frozen=True)
class _Texture:
    file: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the usable region, cut into train/val/test strips
    crop: tuple[int, int]  # crop side range in source pixels
    turn: bool = True  # random 90-degree turns and flips
    colour: bool = True  # colour sources: keep (shuffled) colours in half the crops; False: always a grey ramp


TEXTURES = {
    "brick wall": _Texture("brick.png", (0, 0, 512, 512), (80, 180)),
    "grass": _Texture("grass.png", (0, 0, 512, 512), (64, 160)),
    "gravel": _Texture("gravel.png", (0, 0, 512, 512), (48, 128)),
    "cat fur": _Texture("chelsea.png", (20, 95, 140, 290), (36, 70)),
    "wood grain": _Texture("coffee.png", (485, 0, 600, 400), (40, 100)),
    "coin": _Texture("coins.png", (0, 0, 384, 303), (50, 100)),
    "starfield": _Texture("hubble_deep_field.jpg", (0, 0, 1000, 872), (80, 200)),
    "stained tissue": _Texture("ihc.png", (0, 0, 512, 512), (64, 160)),
    "handwriting": _Texture("text.png", (0, 0, 448, 172), (60, 120), turn=False),
    "retina": _Texture("retina.jpg", (230, 230, 1180, 1180), (180, 360), colour=False),  # faint vessels
}
TEXTURE_FILES = tuple(dict.fromkeys(t.file for t in TEXTURES.values()))
SPLIT_SHARE = (0.6, 0.15, 0.25)  # the strip of each photo's region that each split crops from


def _skimage_data_dir() -> Path:
    return _package_dir("skimage") / "data"


@lru_cache(maxsize=16)
def _photo(file: str) -> Image.Image:
    """A bundled scikit-image sample file, read from the package folder (never downloaded)."""
    path = _skimage_data_dir() / file
    if not path.is_file():
        raise MmaError(f"scikit-image's bundled file {path} is missing; reinstall scikit-image (>= 0.21).")
    im = Image.open(path)
    im = im.convert("RGB") if im.mode not in ("L", "RGB") else im
    im.load()
    return im


def _strip(box, split):
    """The part of *box* that *split* may crop from: consecutive strips along its longer side."""
    x0, y0, x1, y1 = box
    k = SPLITS.index(split)
    lo, hi = sum(SPLIT_SHARE[:k]), sum(SPLIT_SHARE[: k + 1])
    if x1 - x0 >= y1 - y0:
        return round(x0 + (x1 - x0) * lo), y0, round(x0 + (x1 - x0) * hi), y1
    return x0, round(y0 + (y1 - y0) * lo), x1, round(y0 + (y1 - y0) * hi)


def _recolour(rng, a: Array, colour: bool) -> Array:
    """Stretch a photo crop's contrast, then either keep its colours (channels shuffled, saturation scaled)
    or map its grey levels through a random two-colour ramp."""
    grey = a.mean(axis=-1, keepdims=True) if a.ndim == 3 else a[..., None]
    lo, hi = np.percentile(grey, (2, 98))
    scale = 1.0 / max(hi - lo, 1.0)
    if colour:
        a = np.clip((a[..., rng.permutation(3)] - lo) * scale, 0, 1) * 255
        mean = a.mean(axis=-1, keepdims=True)
        return mean + (a - mean) * rng.uniform(0.4, 1.3)
    g = np.clip((grey - lo) * scale, 0, 1)
    dark, light = sorted(pair(rng, 80), key=luma)
    if rng.random() < 0.2:
        dark, light = light, dark
    return dark + (light - dark) * g


def draw_textures(rng, label, split, i, size):
    tex = list(TEXTURES.values())[label]
    src = _photo(tex.file)
    x0, y0, x1, y1 = _strip(tex.box, split)
    k = min(int(rng.integers(tex.crop[0], tex.crop[1] + 1)), x1 - x0, y1 - y0)
    cx, cy = int(rng.integers(x0, x1 - k + 1)), int(rng.integers(y0, y1 - k + 1))
    crop = src.crop((cx, cy, cx + k, cy + k))
    if tex.turn and rng.random() < 0.75:
        crop = crop.transpose(rng.choice(list(Image.Transpose)))
    a = np.asarray(crop.resize((size, size), Image.LANCZOS), np.float32)
    colour = tex.colour and src.mode == "RGB" and rng.random() < 0.5
    return finish(_recolour(rng, a, colour), rng, size, jitter=0.7)


# ----------------------------------------------------------------------------------------- faces
@lru_cache(maxsize=1)
def _face_sources() -> list[Array]:
    """lfw_subset.npy: 100 face crops then 100 background crops, 25 x 25 floats in [0, 1]."""
    path = _skimage_data_dir() / "lfw_subset.npy"
    if not path.is_file():
        raise MmaError(f"scikit-image's bundled file {path} is missing; reinstall scikit-image (>= 0.21).")
    a = np.load(path)
    out = []
    for k, part in enumerate((a[:100], a[100:])):
        out.append(part[np.random.default_rng([SEED, 7, k]).permutation(len(part))])
    return out


def draw_faces(rng, label, split, i, size):
    src = _face_sources()[label][_split_offset(FACE_SOURCES, split) + i // FACE_REPEATS]
    pad = 4  # reflect-pad so a small rotation leaves no empty corners inside the crop
    im = Image.fromarray(np.uint8(np.clip(np.pad(src, pad, mode="reflect"), 0, 1) * 255))
    im = im.rotate(rng.uniform(-8, 8), Image.BILINEAR)
    k = int(rng.integers(19, 26))
    x0, y0 = (pad + rng.integers(0, 26 - k, 2)).tolist()
    im = im.crop((x0, y0, x0 + k, y0 + k)).resize((size, size), Image.BICUBIC)
    if rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    return finish(_recolour(rng, np.asarray(im, np.float32), False), rng, size, jitter=0.7)
