"""CLIP-Adapter (Gao et al., IJCV 2023): a residual bottleneck MLP on the frozen model's image feature.

With ``f`` the image feature (the model's own ``encode_image``), ``d`` its width and ``r`` the reduction::

    a      = relu(W2 relu(W1 f))          # W1: d -> d / r, W2: d / r -> d, no biases
    f'     = ratio * a + (1 - ratio) * f  # residual blending
    logits = exp(logit_scale) * cos(f', t_c)

``t_c``: the frozen text feature of the dataset's published prompt for class ``c`` (computed once): the released
trainer's CUSTOM_TEMPLATES, CoOp's per-dataset zero-shot templates (``a centered satellite photo of {}.`` for
EuroSAT, ...), read on ``coop:`` data; elsewhere the dataset's prompt. Defaults from its released code
(github.com/gaopengcuhk/CLIP-Adapter, ``clip_adapter.py`` at commit 08d07f8): reduction 4, ratio 0.2 (both
hard-coded there), no biases, PyTorch's default initialisation. ViT-B/16 (d = 512): 2 x 512 x 128 = 131,072
trainable parameters. That file sets no optimiser values: its README says to run it with CoOp's command, so they
are CoOp's Dassl config (``configs/trainers/CoOp/vit_b16.yaml``: SGD lr 0.002, batch 32, 200 epochs, cosine with
one warm-up epoch at a constant 1e-5). The paper's own values (lr, and a larger ratio for fine-grained datasets)
could not be read here and are not used. The model is never changed: the adapter acts on the returned features,
so ``attach`` / ``detach`` have nothing to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mma.errors import MmaError
from mma.probe.layers import layer_maps
from mma.probe.textcut import encode_text

from .config import Options
from .method_base import (
    WARMUP,
    MethodBase,
    check_feature_width,
    feature_width,
    freeze,
    model_device_dtype,
    whole_image_tower,
)

__all__ = ["ClipAdapter", "ClipAdapterOptions"]


@dataclass
class ClipAdapterOptions(Options):
    """CLIP-Adapter's own options."""

    reduction: int = 4  # bottleneck = width / reduction
    ratio: float = 0.2  # residual ratio

    def checks(self) -> list[tuple[str, bool, str]]:
        return [
            ("reduction", self.reduction >= 1, "an integer >= 1"),
            ("ratio", 0 <= self.ratio <= 1, "a float in [0, 1]"),
        ]


class ClipAdapter(MethodBase):
    """The residual feature adapter on the image side; ``reduction`` and ``ratio`` as in the paper."""

    name: ClassVar[str] = "clip-adapter"
    title: ClassVar[str] = "CLIP-Adapter"
    paper: ClassVar[dict] = {
        "lr": 0.002,
        "batch_size": 32,
        "epochs": 200,
        **WARMUP,
        "reduction": 4,
        "ratio": 0.2,
    }
    paper_files: ClassVar[dict[str, str]] = {
        "": "CLIP-Adapter clip_adapter.py (reduction, ratio, templates) + CoOp configs/trainers/CoOp/vit_b16.yaml",
    }
    published_prompts: ClassVar[bool] = True
    search_space: ClassVar[dict[str, list]] = {
        "ratio": [0.2, 0.4, 0.6, 0.8],
        "lr": [0.0005, 0.002, 0.008, 0.032, 0.128],
        "epochs": [25, 50, 100, 200],
    }
    Options: ClassVar[type[Options]] = ClipAdapterOptions

    def __init__(self, *, embed_dim: int, reduction: int = 4, ratio: float = 0.2) -> None:
        super().__init__()
        if isinstance(reduction, bool) or not isinstance(reduction, int) or not 1 <= reduction <= embed_dim:
            raise MmaError(f"reduction={reduction!r} is out of range (valid: 1..{embed_dim}; the paper's is 4).")
        if not 0 <= ratio <= 1:
            raise MmaError(f"ratio={ratio!r} is out of range (valid: a float in [0, 1]; the paper's is 0.2).")
        self.embed_dim, self.reduction, self.ratio = embed_dim, reduction, float(ratio)
        hidden = embed_dim // reduction
        self.fc = nn.Sequential(
            nn.Linear(embed_dim, hidden, bias=False),
            nn.ReLU(),
            nn.Linear(hidden, embed_dim, bias=False),
            nn.ReLU(),
        )

    def config(self) -> dict[str, Any]:
        return {"method": self.name, "embed_dim": self.embed_dim, "reduction": self.reduction, "ratio": self.ratio}

    @classmethod
    def build(cls, loaded, cfg, classnames=()) -> ClipAdapter:
        freeze(loaded.model)
        opts = cfg.options
        method = cls(embed_dim=feature_width(loaded), reduction=opts.reduction, ratio=opts.ratio)
        return method.to(*model_device_dtype(loaded.model))

    @classmethod
    def restore(cls, config: Mapping[str, Any], loaded) -> ClipAdapter:
        check_feature_width(cls.name, config, loaded)
        freeze(loaded.model)
        method = cls(embed_dim=config["embed_dim"], reduction=config["reduction"], ratio=config["ratio"])
        return method.to(*model_device_dtype(loaded.model))

    def adapt(self, features: torch.Tensor) -> torch.Tensor:
        """``ratio * adapter(f) + (1 - ratio) * f`` (unnormalised)."""
        f = features.to(self.fc[0].weight.dtype)
        return self.ratio * self.fc(f) + (1 - self.ratio) * f

    def image_start(self, loaded) -> int:
        return whole_image_tower(loaded)  # it adapts the final feature only

    def head(self, loaded, classnames, template, device, *, train: bool):
        tokens = loaded.tokenizer([template.format(c) for c in classnames]).to(device)
        with torch.no_grad():
            text = encode_text(loaded.model, layer_maps(loaded.model)["text"], tokens)
            return {"text": F.normalize(text.float(), dim=-1)}

    def logits(self, model, features, head, *, train: bool) -> torch.Tensor:
        img = F.normalize(self.adapt(features.float()).float(), dim=-1)
        return float(model.logit_scale.exp()) * img @ head["text"].T
