"""``feature-lora``: an example method for mma from another package (see this package's README)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mma.adapters import MethodBase, Options
from mma.adapters.method_base import check_feature_width, feature_width, freeze, model_device_dtype

__all__ = ["FeatureLoRA", "FeatureLoRAOptions"]


@dataclass
class FeatureLoRAOptions(Options):
    """The method's own options (a ``--config`` file's ``[feature-lora]`` table)."""

    rank: int = 4
    scale: float = 1.0

    def checks(self) -> list[tuple[str, bool, str]]:
        return [("rank", self.rank >= 1, "an integer >= 1"), ("scale", self.scale > 0, "a float > 0")]


class FeatureLoRA(MethodBase):
    """``f + scale * B(A f)`` on the image and on the text features; only A and B train."""

    name: ClassVar[str] = "feature-lora"
    title: ClassVar[str] = "feature LoRA"
    Options: ClassVar[type[Options]] = FeatureLoRAOptions
    paper: ClassVar[dict] = {"lr": 0.002, "epochs": 10, "batch_size": 32}  # a starting point, not published

    def __init__(self, *, embed_dim: int, rank: int = 4, scale: float = 1.0) -> None:
        super().__init__()
        self.embed_dim, self.rank, self.scale = embed_dim, rank, float(scale)
        self.down = nn.ModuleDict({t: nn.Linear(embed_dim, rank, bias=False) for t in ("image", "text")})
        self.up = nn.ModuleDict({t: nn.Linear(rank, embed_dim, bias=False) for t in ("image", "text")})
        for layer in self.up.values():
            nn.init.zeros_(layer.weight)  # untrained, the method is the zero-shot model

    def config(self) -> dict[str, Any]:
        return {"method": self.name, "embed_dim": self.embed_dim, "rank": self.rank, "scale": self.scale}

    @classmethod
    def build(cls, loaded, cfg, classnames=()) -> FeatureLoRA:
        freeze(loaded.model)
        method = cls(embed_dim=feature_width(loaded), rank=cfg.options.rank, scale=cfg.options.scale)
        return method.to(*model_device_dtype(loaded.model))

    @classmethod
    def restore(cls, config: Mapping[str, Any], loaded) -> FeatureLoRA:
        check_feature_width(cls.name, config, loaded)
        freeze(loaded.model)
        method = cls(embed_dim=config["embed_dim"], rank=config["rank"], scale=config["scale"])
        return method.to(*model_device_dtype(loaded.model))

    def adapt(self, features: torch.Tensor, tower: str) -> torch.Tensor:
        f = features.to(self.down[tower].weight.dtype)
        return f + self.scale * self.up[tower](self.down[tower](f))

    def head(self, loaded, classnames, template, device, *, train: bool):
        tokens = loaded.tokenizer([template.format(c) for c in classnames]).to(device)
        with torch.no_grad():  # the text tower is frozen: its features are computed once
            return {"text": loaded.model.encode_text(tokens).float()}

    def logits(self, model, images, head, *, train: bool) -> torch.Tensor:
        with torch.no_grad():
            img = model.encode_image(images).float()
        img = F.normalize(self.adapt(img, "image").float(), dim=-1)
        text = F.normalize(self.adapt(head["text"], "text").float(), dim=-1)
        return float(model.logit_scale.exp()) * img @ text.T
