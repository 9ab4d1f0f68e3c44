"""The embedded world: a stand-in for "CLIP + the CoOp benchmark" that needs nothing from the network.

No real CLIP weights can be downloaded offline, and probing random weights shows nothing, so the toolkit
ships its own world, in this one room:

* :mod:`.corpus` — the pretraining corpus, the stand-in for web image-text pairs: about 150 concepts
  (shapes, objects, letters, digits, colours, patterns, scenes, textures) drawn in one plain look, with
  captions that name colour, size, background and count besides the class noun;
* :mod:`.suite` — the downstream suite (``--data builtin``): datasets of those concepts, each *shifted*
  from the corpus (silhouettes, photo backgrounds, outline drawings, unseen typefaces, handwriting, viewpoint,
  fog and night...), which the model never saw; ``objects`` plays ImageNet and has four shifted variants;
* :mod:`.pretrain` — ``mma pretrain-tiny``, which trains ``mma-tiny`` contrastively on the corpus;
* :mod:`.art`, :mod:`.render`, :mod:`.concepts` — how every image is drawn.

``mma-tiny`` is a plain open_clip ``CLIP`` (``VisionTransformer`` + the CLIP text transformer: 12 blocks
per tower like ViT-B/16, width 96, 32 px images in 4 px patches) registered with
``open_clip.add_model_config``, so every code path that serves ViT-B/16 serves it too. It keeps CLIP's
whole BPE vocabulary (49,408 ids) and tokenizer: words the corpus never uses keep their own (untrained,
randomly initialised) embedding rows, so different class names always give different prompts, and a
user's own folder with new names can still be adapted few-shot. It is a stand-in that makes the pipeline
meaningful offline; its numbers say nothing about real CLIP.
"""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch  # used as safetensors.torch.save_file, so a patch of that module reaches it (tests)
import torch

from mma.io import atomic_write

from ..openclip import import_open_clip

__all__ = [
    "EMBEDDED_NAME",
    "CONFIG_PATH",
    "WEIGHTS_PATH",
    "RECORD_PATH",
    "register_config",
    "embedded_config",
    "save_embedded",
    "load_embedded_state",
]

EMBEDDED_NAME = "mma-tiny"
_HERE = Path(__file__).resolve().parent
CONFIG_PATH = _HERE / f"{EMBEDDED_NAME}.json"
WEIGHTS_PATH = _HERE / "weights" / f"{EMBEDDED_NAME}.safetensors"
RECORD_PATH = _HERE / "weights" / f"{EMBEDDED_NAME}.json"


def embedded_config() -> dict:
    return json.loads(CONFIG_PATH.read_text())


def register_config() -> None:
    """Register ``mma-tiny`` with open_clip (idempotent), so ``open_clip.create_model('mma-tiny')`` works."""
    open_clip = import_open_clip()  # lazy: ~2.5 s on top of torch; this package loads with every `import mma.probe`

    if EMBEDDED_NAME not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_PATH)


def save_embedded(model: torch.nn.Module, path: str | Path, *, dtype=torch.float16, meta: dict | None = None) -> Path:
    """Write the model's weights (cast to *dtype*) to a safetensors file, atomically (*meta*: header strings)."""
    state = {
        k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    header = {"model": EMBEDDED_NAME, **{k: str(v) for k, v in (meta or {}).items()}}
    return atomic_write(path, lambda p: safetensors.torch.save_file(state, str(p), metadata=header))


def load_embedded_state(path: str | Path = WEIGHTS_PATH) -> dict[str, torch.Tensor]:
    """The state dict (float32) stored by :func:`save_embedded`."""
    return {k: v.float() if v.is_floating_point() else v for k, v in safetensors.torch.load_file(str(path)).items()}
