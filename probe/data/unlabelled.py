"""Images without labels, to classify with a model (``mma predict --images PATH``).

PATH is a folder (searched recursively for image files), one image file, or a text file listing images (one path
per line, relative to the list's folder or absolute; blank lines and lines starting with ``#`` are ignored). The
result is an :class:`~mma.probe.data.base.ImageDataset` whose ``test`` split holds every image, each labelled 0,
with the path as it will be reported as its ``ref``.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from mma.data_spec import user_path
from mma.errors import MmaError

from .base import ImageDataset, Sample
from .folder import IMAGE_SUFFIXES, images_in

__all__ = ["load_unlabelled"]


def load_unlabelled(path: str | Path) -> ImageDataset:
    """The images of *path* (a folder, an image file or a list file) as an unlabelled dataset."""
    root = user_path(path, "--images")
    if root.is_dir():
        files = [str(p) for p in images_in(root)]
        if not files:
            raise MmaError(f"--images {str(root)!r} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    elif root.is_file() and root.suffix.lower() in IMAGE_SUFFIXES:
        files = [str(root)]
    elif root.is_file():
        files = _listed(root)
    else:
        raise MmaError(f"--images {str(root)!r} does not exist; give a folder of images, an image or a list file.")
    return ImageDataset(root.name or str(root), ["unlabelled"], {"test": [Sample(f, 0) for f in files]}, Image.open)


def _listed(file: Path) -> list[str]:
    """The paths a list file names, each resolved against the list's folder."""
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise MmaError(
            f"--images {str(file)!r} is neither an image ({', '.join(sorted(IMAGE_SUFFIXES))}) nor a UTF-8 list "
            "of image paths."
        ) from None
    names = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not names:
        raise MmaError(f"--images {str(file)!r} lists no images; put one image path per line.")
    return [str(p if (p := Path(n).expanduser()).is_absolute() else file.parent / p) for n in names]
