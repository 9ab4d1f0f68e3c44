"""Images made from files shipped inside installed packages (read from their folders, never downloaded).

* handwritten digits: scikit-learn's 8x8 ``load_digits`` images as figure masks;
* textures: recoloured crops of scikit-image's bundled photos (brick wall, grass, cat fur...), each *part*
  (a split, or the pretraining corpus) cropping from its own strip of the photo;
* photo backgrounds: crops of the other bundled photos (astronaut, rocket, motorcycle, camera...), which
  no texture uses, for the downstream suite's "photo" backgrounds.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from mma.errors import MmaError

from .canvas import SEED, Array, luma, pair

DIGITS_PER_CLASS = 174  # scikit-learn has at least this many handwritten images of each digit


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
        # lazy: a fallback branch only; sklearn.datasets takes ~1.2 s to import, which every process drawing the
        # built-in images (the spawned workers too) would pay for a file it reads directly above
        from sklearn.datasets import load_digits

        d = load_digits()
        images, target = d.images, d.target
    out = []
    for k in range(10):
        imgs = images[target == k]
        if len(imgs) < DIGITS_PER_CLASS:
            raise MmaError(f"scikit-learn's digits have only {len(imgs)} images of {k}; need {DIGITS_PER_CLASS}.")
        out.append(imgs[np.random.default_rng([SEED, k]).permutation(len(imgs))][:DIGITS_PER_CLASS])
    return out


def handwritten_layer(c: int, digit: int, index: int, fill: tuple[int, int, int]) -> Image.Image:
    """Handwritten *digit* number *index* (0..173, a fixed shuffled order) as a transparent c x c layer."""
    src = _digit_sources()[digit][index % DIGITS_PER_CLASS]
    mask = Image.fromarray(np.uint8(np.clip(src / 16.0, 0, 1) * 255)).resize((c, c), Image.BICUBIC)
    layer = Image.new("RGBA", (c, c), fill + (0,))
    layer.putalpha(mask)
    return layer


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
#: the strip of each texture photo's region that each part crops from: the corpus, then the suite's splits
PARTS = ("corpus", "train", "val", "test")
PART_SHARE = (0.4, 0.3, 0.1, 0.2)
#: bundled photos no texture uses: the backgrounds of the downstream suite's "photo" look
BACKGROUND_FILES = (
    "astronaut.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "camera.png",
    "moon.png",
    "page.png",
    "horse.png",
    "clock_motion.png",
    "cell.png",
)


def _skimage_data_dir() -> Path:
    return _package_dir("skimage") / "data"


@lru_cache(maxsize=32)
def _photo(file: str) -> Image.Image:
    """A bundled scikit-image sample file, read from the package folder (never downloaded)."""
    path = _skimage_data_dir() / file
    if not path.is_file():
        raise MmaError(f"scikit-image's bundled file {path} is missing; reinstall scikit-image (>= 0.21).")
    im = Image.open(path)
    im = im.convert("RGB") if im.mode not in ("L", "RGB") else im
    im.load()
    return im


def _strip(box, part: str):
    """The part of *box* that *part* may crop from: consecutive strips along its longer side."""
    x0, y0, x1, y1 = box
    k = PARTS.index(part)
    lo, hi = sum(PART_SHARE[:k]), sum(PART_SHARE[: k + 1])
    if x1 - x0 >= y1 - y0:
        return round(x0 + (x1 - x0) * lo), y0, round(x0 + (x1 - x0) * hi), y1
    return x0, round(y0 + (y1 - y0) * lo), x1, round(y0 + (y1 - y0) * hi)


def recolour(rng, a: Array, colour: bool) -> Array:
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


def texture_crop(rng, name: str, part: str, c: int, zoom: float = 1.0) -> Array:
    """A c x c float crop of the texture *name* from *part*'s strip; *zoom* > 1 crops a smaller region."""
    tex = TEXTURES[name]
    src = _photo(tex.file)
    x0, y0, x1, y1 = _strip(tex.box, part)
    k = int(rng.integers(tex.crop[0], tex.crop[1] + 1) / zoom)
    k = max(8, min(k, x1 - x0, y1 - y0))
    cx, cy = int(rng.integers(x0, x1 - k + 1)), int(rng.integers(y0, y1 - k + 1))
    crop = src.crop((cx, cy, cx + k, cy + k))
    if tex.turn and rng.random() < 0.75:
        crop = crop.transpose(rng.choice(list(Image.Transpose)))
    a = np.asarray(crop.resize((c, c), Image.LANCZOS), np.float32)
    return recolour(rng, a, tex.colour and src.mode == "RGB" and rng.random() < 0.5)


def photo_background(rng, c: int) -> Array:
    """A c x c float crop of one of :data:`BACKGROUND_FILES` (random place, size and turn; grey ones tinted)."""
    src = _photo(BACKGROUND_FILES[int(rng.integers(len(BACKGROUND_FILES)))])
    k = int(rng.integers(min(src.size) // 6, min(src.size) // 2))
    cx, cy = int(rng.integers(0, src.width - k + 1)), int(rng.integers(0, src.height - k + 1))
    crop = src.crop((cx, cy, cx + k, cy + k)).transpose(rng.choice(list(Image.Transpose)))
    a = np.asarray(crop.convert("RGB").resize((c, c), Image.BILINEAR), np.float32)
    if src.mode == "L":
        a = a * (0.6 + 0.4 * rng.random(3).astype(np.float32))
    return a
