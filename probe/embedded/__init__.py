"""The embedded default model, ``mma-tiny``: a small open_clip CLIP that this project pretrains itself.

No real CLIP weights can be downloaded offline, and probing random weights shows nothing, so the toolkit
ships a tiny but genuinely pretrained CLIP (6 blocks per tower, width 128, 32 px images) trained on the
built-in suite (see :mod:`mma.probe.embedded.pretrain`). It is a stand-in that makes the pipeline
meaningful offline, not a substitute for real CLIP weights.

It is a plain open_clip ``CLIP`` (``VisionTransformer`` + the CLIP text transformer) registered with
``open_clip.add_model_config``, so every code path that serves ViT-B/16 serves it too. The only twist
is the vocabulary: the token-embedding table is pruned to the ids the suite's captions use. The normal
CLIP BPE tokenizer still runs on any text; :class:`RemappedTokenizer` maps its ids into the small table
(unseen words map to one shared "unknown" id), keeping EOT the largest id so CLIP's argmax pooling works.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = [
    "EMBEDDED_NAME",
    "CONFIG_PATH",
    "WEIGHTS_PATH",
    "RECORD_PATH",
    "RemappedTokenizer",
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

PAD_ID, UNK_ID = 0, 1  # small-vocabulary ids; SOT and EOT take the two largest ids


def embedded_config() -> dict:
    return json.loads(CONFIG_PATH.read_text())


def register_config() -> None:
    """Register ``mma-tiny`` with open_clip (idempotent), so ``open_clip.create_model('mma-tiny')`` works."""
    import open_clip

    if EMBEDDED_NAME not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_PATH)


class RemappedTokenizer:
    """CLIP's BPE tokenizer followed by a lookup into a pruned vocabulary.

    ``keep_ids`` are the original CLIP token ids that have their own row (besides PAD, SOT, EOT);
    every other id becomes ``UNK_ID``. ``tokenizer(texts) -> LongTensor [n, context_length]``.
    """

    def __init__(self, keep_ids: Sequence[int], *, vocab_size: int, context_length: int) -> None:
        from open_clip.tokenizer import SimpleTokenizer

        self.base = SimpleTokenizer(context_length=context_length)
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.keep_ids = sorted({int(i) for i in keep_ids} - {0, self.base.sot_token_id, self.base.eot_token_id})
        if len(self.keep_ids) + 4 > vocab_size:
            raise ValueError(f"{len(self.keep_ids)} kept tokens do not fit a vocabulary of {vocab_size}")
        lut = torch.full((len(self.base.encoder),), UNK_ID, dtype=torch.long)
        lut[0] = PAD_ID
        lut[torch.tensor(self.keep_ids, dtype=torch.long)] = torch.arange(2, 2 + len(self.keep_ids))
        lut[self.base.sot_token_id] = vocab_size - 2
        lut[self.base.eot_token_id] = vocab_size - 1
        self.lut = lut
        self.sot_token_id = vocab_size - 2
        self.eot_token_id = vocab_size - 1

    @staticmethod
    def ids_used_by(texts: Sequence[str], context_length: int) -> list[int]:
        """The original CLIP ids that *texts* use (to build ``keep_ids`` from the training captions)."""
        from open_clip.tokenizer import SimpleTokenizer

        ids = SimpleTokenizer(context_length=context_length)(list(texts))
        return sorted(set(ids.flatten().tolist()))

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        ids = self.base(list(texts), context_length=context_length or self.context_length)
        return self.lut[ids]


def save_embedded(model: torch.nn.Module, keep_ids: Sequence[int], path: str | Path, *, dtype=torch.float16) -> Path:
    """Write the model's weights (cast to *dtype*) and the kept token ids to a safetensors file, atomically."""
    from safetensors.torch import save_file

    from mma.io import atomic_write

    state = {
        k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    meta = {"keep_ids": json.dumps(list(map(int, keep_ids))), "model": EMBEDDED_NAME}
    return atomic_write(path, lambda p: save_file(state, str(p), metadata=meta))


def load_embedded_state(path: str | Path = WEIGHTS_PATH) -> tuple[dict[str, torch.Tensor], list[int]]:
    """The state dict (float32) and the kept token ids stored by :func:`save_embedded`."""
    from safetensors import safe_open

    state = {}
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        for key in fh.keys():
            t = fh.get_tensor(key)
            state[key] = t.float() if t.is_floating_point() else t
    return state, json.loads(meta.get("keep_ids", "[]"))
