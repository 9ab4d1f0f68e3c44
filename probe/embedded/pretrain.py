"""Pretrain the embedded ``mma-tiny`` CLIP from scratch on the built-in suite (``mma pretrain-tiny``).

Contrastive image-text training on the *train* splits of every built-in dataset, with captions drawn
from several templates (including the ``"a photo of a {}."`` prompt used later for zero-shot and the
adapter), a symmetric CLIP loss with a learnable temperature, fixed seeds, on the CPU. Several images in
a batch can share a class, so the loss treats every caption of the same class as a positive (soft
targets) instead of CLIP's one-positive diagonal.

The result is a small stand-in that makes the pipeline meaningful offline; it is not real CLIP.
"""

from __future__ import annotations

import hashlib
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mma.io import atomic_write_json
from mma.seeding import seed_everything

from . import EMBEDDED_NAME, RemappedTokenizer, embedded_config, register_config, save_embedded

__all__ = ["PretrainConfig", "CAPTION_TEMPLATES", "pretrain_tiny"]

EVAL_TEMPLATE = "a photo of a {}."
CAPTION_TEMPLATES = (
    "a photo of a {}.",
    "a {}.",
    "a picture of the {}.",
    "an image of a {}.",
    "a photo of a {}, a kind of {domain}.",
    "a {domain} image of a {}.",
)


@dataclass
class PretrainConfig:
    """Everything that decides the pretrained weights (recorded beside the checkpoint)."""

    seed: int = 0
    steps: int = 900
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 60
    image_size: int = 32
    max_shift: int = 2
    templates: tuple[str, ...] = CAPTION_TEMPLATES
    datasets: tuple[str, ...] | None = None
    threads: int = 2
    eval_samples: int | None = None  # per dataset test samples for the zero-shot table (None = all)
    extra: dict = field(default_factory=dict)


def _arrays(datasets) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """All train images as uint8 [N, H, W, 3], their global class ids, and (dataset index, class name)."""
    images, labels, classes = [], [], []
    for di, d in enumerate(datasets):
        offset = len(classes)
        classes += [(di, c) for c in d.classnames]
        for s in d.train:
            images.append(np.asarray(d.load_image(s), dtype=np.uint8))
            labels.append(offset + s.label)
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes


def _domain(name: str) -> str:
    name = name.replace("_", " ")
    return name[:-1] if name.endswith("s") else name


def _captions(datasets, classes, templates) -> list[list[str]]:
    return [[t.format(c, domain=_domain(datasets[di].name)) for t in templates] for di, c in classes]


def _shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to *max_shift* pixels per image (reflect padding)."""
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="reflect")
    oy = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    ox = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    rows = (oy[:, None] + torch.arange(h)[None]).view(b, 1, h, 1).expand(b, 3, h, w + 2 * max_shift)
    padded = padded.gather(2, rows)
    cols = (ox[:, None] + torch.arange(w)[None]).view(b, 1, 1, w).expand(b, 3, h, w)
    return padded.gather(3, cols)


def _lr(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))


def _zero_shot_table(model, tokenizer, datasets, normalize, cfg) -> dict[str, float]:
    from mma.probe.data.reading import ImageReader, collate_readable

    out = {}
    model.eval()
    with torch.no_grad():
        for d in datasets:
            tokens = tokenizer([EVAL_TEMPLATE.format(c) for c in d.classnames])
            w = F.normalize(model.encode_text(tokens), dim=-1)
            samples = d.test[: cfg.eval_samples] if cfg.eval_samples else d.test
            loader = torch.utils.data.DataLoader(
                ImageReader(d, samples, normalize), batch_size=512, collate_fn=collate_readable
            )
            correct = total = 0
            for _, x, y, _ in loader:
                pred = (F.normalize(model.encode_image(x), dim=-1) @ w.T).argmax(-1)
                correct += int((pred == y).sum())
                total += len(y)
            out[d.name] = correct / max(1, total)
    return out


def pretrain_tiny(out: str | Path, config: PretrainConfig | None = None, *, progress: bool = True) -> dict:
    """Train ``mma-tiny`` from scratch and write ``out`` (safetensors) plus ``out.with_suffix('.json')``.

    Returns the record written beside the checkpoint: config, data hash, seed, time, zero-shot accuracy
    of the trained model and of the same architecture with random weights.
    """
    import open_clip
    from tqdm.auto import tqdm

    from mma.probe.data.builtin import load_builtin

    cfg = config or PretrainConfig()
    out = Path(out)
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    register_config()
    arch = embedded_config()
    datasets = load_builtin(list(cfg.datasets) if cfg.datasets else None, image_size=cfg.image_size)
    images, labels, classes = _arrays(datasets)
    captions = _captions(datasets, classes, cfg.templates)
    eval_prompts = [EVAL_TEMPLATE.format(c) for d in datasets for c in d.classnames]
    text_cfg = arch["text_cfg"]
    keep_ids = RemappedTokenizer.ids_used_by(
        [c for row in captions for c in row] + eval_prompts, text_cfg["context_length"]
    )
    tokenizer = RemappedTokenizer(
        keep_ids, vocab_size=text_cfg["vocab_size"], context_length=text_cfg["context_length"]
    )
    tokens = torch.stack([tokenizer(row) for row in captions])  # [classes, templates, ctx]
    data_hash = hashlib.sha256(images.tobytes() + labels.tobytes() + repr(captions).encode()).hexdigest()[:16]

    from mma.probe.specs import _quiet_root_logger

    torch.manual_seed(cfg.seed)
    with _quiet_root_logger():  # open_clip logs "No pretrained weights loaded" for a deliberate random init
        model = open_clip.create_model(EMBEDDED_NAME)
        random_model = open_clip.create_model(EMBEDDED_NAME)
    random_model.load_state_dict(model.state_dict())
    mean = torch.tensor(model.visual.preprocess_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.visual.preprocess_cfg["std"]).view(1, 3, 1, 1)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # uint8 [N, 3, H, W]
    y_all = torch.from_numpy(labels)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(y_all), generator=gen)
    cursor = 0
    start = time.perf_counter()
    losses = []
    model.train()
    bar = tqdm(range(cfg.steps), desc="pretrain mma-tiny", unit="step", disable=not progress)
    for step in bar:
        if cursor + cfg.batch_size > len(order):
            order, cursor = torch.randperm(len(y_all), generator=gen), 0
        idx = order[cursor : cursor + cfg.batch_size]
        cursor += cfg.batch_size
        x = (_shift(x_all[idx].float() / 255.0, cfg.max_shift, gen) - mean) / std
        y = y_all[idx]
        t = tokens[y, torch.randint(0, tokens.shape[1], (len(y),), generator=gen)]
        for group in opt.param_groups:
            group["lr"] = _lr(step, cfg)
        img, txt, scale = model(x, t)
        logits = scale * img @ txt.T
        same = (y[:, None] == y[None, :]).float()
        target = same / same.sum(1, keepdim=True)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.detach()))
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
    train_seconds = time.perf_counter() - start

    def normalize(img):
        return (torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1) - mean[0]) / std[0]

    zs = _zero_shot_table(model, tokenizer, datasets, normalize, cfg)
    zs_random = _zero_shot_table(random_model, tokenizer, datasets, normalize, cfg)
    save_embedded(model, keep_ids, out)
    record = {
        "model": EMBEDDED_NAME,
        "architecture": arch,
        "config": {**asdict(cfg), "templates": list(cfg.templates)},
        "seed": cfg.seed,
        "data": {
            "datasets": [d.name for d in datasets],
            "classes": len(classes),
            "train_images": int(len(labels)),
            "hash": data_hash,
        },
        "vocabulary": {"kept_token_ids": len(keep_ids), "vocab_size": text_cfg["vocab_size"]},
        "train_seconds": round(train_seconds, 1),
        "final_loss": float(np.mean(losses[-20:])),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "torch_threads": cfg.threads,
            "torch": torch.__version__,
        },
        "zero_shot": {
            "template": EVAL_TEMPLATE,
            "trained": zs,
            "random_init": zs_random,
            "trained_mean": float(np.mean(list(zs.values()))),
            "random_init_mean": float(np.mean(list(zs_random.values()))),
            "chance": {d.name: 1 / d.num_classes for d in datasets},
        },
        "checkpoint_bytes": out.stat().st_size,
    }
    atomic_write_json(out.with_suffix(".json"), record)
    return record
