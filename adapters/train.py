"""Fitting the Multi-Modal Adapter: the official recipe (SPEC.md section 3) as the default config.

SGD (lr 0.0015, momentum 0.9, weight decay 5e-4), cosine schedule stepped per epoch, no warm-up,
5 epochs, batch 16, last incomplete batch dropped, random-resized-crop (scale 0.08-1) + horizontal flip,
plain cross-entropy on ``exp(logit_scale) * cosine`` logits, last-epoch weights evaluated. On CUDA, AMP
(fp16 with a grad scaler, or bf16). The frozen text blocks below k run once per run (prefix cache).

MMA++ options: ``alpha_eval`` (a different alpha at inference) and ``consistency`` (the
alpha-consistency loss: a second no-grad pass with alpha2 = U(0,1) * alpha, loss
``-lambda * mean cosine`` between the two passes' features, per tower).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from mma.errors import MmaError
from mma.probe.data.base import ImageDataset, Sample
from mma.probe.data.reading import ImageReader, collate_readable
from mma.probe.extract import autocast_for
from mma.probe.layers import layer_maps
from mma.probe.specs import LoadedModel

from .mma import MultiModalAdapter, add_adapter
from .text_cache import TextPrefixCache

__all__ = ["TrainConfig", "TrainResult", "train_transform", "fit_adapter"]


@dataclass
class TrainConfig:
    """The adapter and its training recipe; every field can be overridden from the CLI or a config file."""

    k: int = 5
    dim: int = 32
    alpha: float = 1e-3
    alpha_eval: float | None = None
    grad_scale: bool = True
    depth_mode: str = "relative"
    lr: float = 0.0015
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 5
    batch_size: int = 16
    shots: int = 16
    crop_scale_min: float = 0.08
    flip: bool = True
    consistency: float = 0.0
    precision: str = "fp32"
    workers: int = 0
    prefix_cache: bool = True

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise MmaError(f"Unknown training option(s) {unknown}; valid: {sorted(known)}.")
        return cls(**values)

    def validate(self) -> None:
        checks = [
            ("dim", self.dim >= 1, "an integer >= 1"),
            ("alpha", self.alpha > 0, "a float > 0"),
            ("alpha_eval", self.alpha_eval is None or self.alpha_eval > 0, "a float > 0"),
            ("lr", self.lr > 0, "a float > 0"),
            ("momentum", 0 <= self.momentum < 1, "a float in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "a float >= 0"),
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1"),
            ("shots", self.shots >= 1, "an integer >= 1"),
            ("crop_scale_min", 0 < self.crop_scale_min <= 1, "a float in (0, 1]"),
            ("consistency", self.consistency >= 0, "a float >= 0"),
            ("precision", self.precision in ("fp32", "fp16", "bf16"), "one of fp32, fp16, bf16"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise MmaError(f"The training option {name}={getattr(self, name)!r} is not valid; it must be {rule}.")


@dataclass
class TrainResult:
    adapter: MultiModalAdapter
    steps: int
    seconds: float
    final_loss: float
    losses: list[float]


def train_transform(loaded: LoadedModel, cfg: TrainConfig):
    """Random-resized-crop (scale crop_scale_min..1, bicubic) + flip + CLIP normalisation."""
    from torchvision import transforms as T

    pcfg = getattr(loaded.model.visual, "preprocess_cfg", {})
    mean = pcfg.get("mean", (0.48145466, 0.4578275, 0.40821073))
    std = pcfg.get("std", (0.26862954, 0.26130258, 0.27577711))
    steps = [
        T.RandomResizedCrop(
            loaded.image_size, scale=(cfg.crop_scale_min, 1.0), interpolation=T.InterpolationMode.BICUBIC
        )
    ]
    if cfg.flip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


def _seed_all(seed: int) -> torch.Generator:
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def fit_adapter(
    loaded: LoadedModel,
    dataset: ImageDataset,
    samples: Sequence[Sample],
    classnames: Sequence[str],
    cfg: TrainConfig,
    *,
    seed: int,
    device: torch.device = torch.device("cpu"),
    template: str | None = None,
    progress: bool = False,
) -> TrainResult:
    """Attach a fresh adapter from block ``cfg.k`` to ``loaded.model`` and train it on *samples*.

    *samples* are labelled 0..len(classnames)-1. The adapter stays attached on return (detach it, or use
    it for evaluation). Deterministic for a fixed seed on one device.
    """
    cfg.validate()
    if len(samples) < cfg.batch_size:
        raise MmaError(
            f"Dataset {dataset.name!r} has {len(samples)} training samples, fewer than one batch "
            f"(--batch-size {cfg.batch_size}); lower the batch size or raise --shots."
        )
    gen = _seed_all(seed)
    model = loaded.model
    adapter = add_adapter(
        model,
        k=cfg.k,
        dim=cfg.dim,
        alpha=cfg.alpha,
        grad_scale=cfg.grad_scale,
        depth_mode=cfg.depth_mode,
        model_name=str(loaded.spec),
    )
    model.eval()  # frozen trunk: no dropout / batch-norm updates; adapters have neither
    template = template or dataset.template
    maps = layer_maps(model)
    tokens = loaded.tokenizer([template.format(c) for c in classnames]).to(device)
    text = TextPrefixCache(model, maps["text"], adapter.k_text, tokens) if cfg.prefix_cache else None

    reader = ImageReader(dataset, samples, train_transform(loaded, cfg))
    loader = torch.utils.data.DataLoader(
        reader,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
        generator=gen,
        num_workers=cfg.workers,
        collate_fn=collate_readable,
        pin_memory=device.type == "cuda",
    )
    params = [p for p in adapter.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and cfg.precision == "fp16")
    logit_scale = model.logit_scale.exp().detach()
    losses: list[torch.Tensor] = []
    start = time.perf_counter()
    steps = 0
    for _epoch in range(cfg.epochs):
        for _, images, labels, _ in loader:
            if images is None:
                continue
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            with autocast_for(device, cfg.precision):
                img = model.encode_image(images)
                txt = text.encode() if text is not None else model.encode_text(tokens)
                img_n, txt_n = F.normalize(img.float(), dim=-1), F.normalize(txt.float(), dim=-1)
                loss = F.cross_entropy(logit_scale * img_n @ txt_n.T, labels)
                if cfg.consistency > 0:
                    loss = loss + cfg.consistency * _consistency(model, adapter, images, text, tokens, img_n, txt_n)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(loss.detach())
            steps += 1
        sched.step()
    if steps == 0:
        raise MmaError(f"No readable training images in dataset {dataset.name!r}; nothing was trained.")
    history = torch.stack(losses).float().cpu().tolist()  # one host sync, after training
    if not math.isfinite(history[-1]):
        raise MmaError(f"Training diverged on {dataset.name!r} (loss {history[-1]}); lower --lr or --alpha.")
    if cfg.alpha_eval is not None:
        adapter.alpha = cfg.alpha_eval
    return TrainResult(adapter, steps, time.perf_counter() - start, history[-1], history)


def _consistency(model, adapter, images, text, tokens, img_n, txt_n) -> torch.Tensor:
    """MMA++ alpha-consistency: -mean cosine between features at alpha and at alpha2 = U(0,1)*alpha."""
    alpha = adapter.alpha
    adapter.alpha = random.random() * alpha  # seeded in fit_adapter; no host sync
    try:
        with torch.no_grad():
            img2 = F.normalize(model.encode_image(images).float(), dim=-1)
            txt2 = F.normalize((text.encode() if text is not None else model.encode_text(tokens)).float(), dim=-1)
    finally:
        adapter.alpha = alpha
    return -((img_n * img2).sum(-1).mean() + (txt_n * txt2).sum(-1).mean())
