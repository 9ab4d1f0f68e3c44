"""Pretrain the embedded ``mma-tiny`` CLIP from scratch on the corpus (``mma pretrain-tiny``).

Contrastive image-text training on :mod:`~mma.probe.embedded.corpus` only (never on the downstream
suite): each step draws a batch of corpus images, one of each image's captions, a random shift of up to
``max_shift`` pixels, and minimises CLIP's symmetric cross-entropy with a learnable temperature. A
corpus of a few hundred concepts repeats captions within a batch, so the targets are soft: a caption is
a positive for every image it was written for verbatim, and (with weight ``same_concept``) for every
other image of the same concept. A second term (weight ``concept_loss``) contrasts each image with the
prompts ``"a photo of a {concept}."`` of every corpus concept of its family (a red circle drawn for the
concept "red" is also a circle, so other families' names are not negatives), the image-label half of
UniCL (Yang et al., 2022): a dense signal for the concept nouns that the small batches of a CPU-sized run
sample too sparsely. AdamW, linear warm-up then cosine decay, fixed seeds, CPU threads set, so a run is
deterministic on one machine.

The record written beside the checkpoint holds the configuration, the corpus hash, the time, the
machine, and zero-shot accuracy (prompt ``"a photo of a {}."``) of the trained model and of the same
architecture with random weights, on every downstream dataset and on held-out corpus images per family.
When only the downstream suite changes (its looks are calibrated on validation splits; the corpus and the
weights stay as they are), :func:`rescore` redoes the record's suite-dependent parts (``python -m
mma.probe.embedded.pretrain --rescore``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mma.io import atomic_write_json
from mma.probe.specs import _quiet_root_logger
from mma.seeding import seed_everything

from . import EMBEDDED_NAME, WEIGHTS_PATH, embedded_config, load_embedded_state, register_config, save_embedded
from .cache import source_digest
from .concepts import CONCEPTS, FAMILIES
from .corpus import EVAL_TEMPLATE, build_corpus
from .suite import BUILTIN_DATASETS, REGISTRY, prebuild, suite_arrays

__all__ = ["PretrainConfig", "pretrain_tiny", "rescore", "zero_shot_suite", "zero_shot_heldout"]


@dataclass
class PretrainConfig:
    """Everything that decides the pretrained weights (recorded beside the checkpoint)."""

    seed: int = 0
    steps: int = 1300
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    image_size: int = 32
    max_shift: int = 2
    corpus_size: int = 48_000
    captions: int = 4
    same_concept: float = 0.5
    concept_loss: float = 1.0
    heldout_size: int = 3_000
    suite: tuple[str, ...] | None = None  # downstream datasets for the zero-shot table (None: all)
    threads: int = 2


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


def encode_text_trimmed(model, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)`` computed on the columns up to the batch's longest caption only.

    CLIP's text tower is causal and reads its output at the EOT token, so the padding after the longest
    EOT cannot change the result; dropping it saves about a third of the text tower's work in pretraining
    (corpus captions are 9-16 tokens of a 24-token context). ``tests/test_embedded.py`` checks the equality.
    """
    n = int((tokens != 0).sum(1).max())
    x = model.token_embedding(tokens[:, :n]) + model.positional_embedding[:n]
    x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0]), tokens[:, :n].argmax(dim=-1)]
    return x @ model.text_projection


def _lr(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))


def _normalizer(model):
    mean = torch.tensor(model.visual.preprocess_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.visual.preprocess_cfg["std"]).view(1, 3, 1, 1)
    return lambda x: (x - mean) / std  # x: float [B, 3, H, W] in [0, 1]


@torch.no_grad()
def _classify(model, tokenizer, images: np.ndarray, classnames, batch: int = 500) -> np.ndarray:
    """Zero-shot predictions of uint8 images ``[N, H, W, 3]`` among *classnames*."""
    model.eval()
    norm = _normalizer(model)
    w = F.normalize(model.encode_text(tokenizer([EVAL_TEMPLATE.format(c) for c in classnames])), dim=-1)
    preds = []
    for i in range(0, len(images), batch):
        x = norm(torch.from_numpy(images[i : i + batch]).permute(0, 3, 1, 2).float() / 255.0)
        preds.append((F.normalize(model.encode_image(x), dim=-1) @ w.T).argmax(-1).numpy())
    return np.concatenate(preds) if preds else np.zeros(0, np.int64)


def zero_shot_suite(model, tokenizer, names=None, split: str = "test", size: int = 32) -> dict[str, float]:
    """Zero-shot accuracy (0-1) on the *split* of every downstream dataset (all of them when None)."""
    out = {}
    prebuild(names or BUILTIN_DATASETS, size)
    for name in names or BUILTIN_DATASETS:
        arrays, _ = suite_arrays(name, size)
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        out[name] = float((_classify(model, tokenizer, x, REGISTRY[name].classes) == y).mean())
    return out


def zero_shot_heldout(model, tokenizer, corpus) -> dict[str, float]:
    """Zero-shot accuracy (0-1) on held-out corpus images, per family, among that family's concepts."""
    out = {}
    for family in FAMILIES:
        ids = [i for i, n in enumerate(corpus.names) if CONCEPTS[n].family == family]
        rows = np.flatnonzero(np.isin(corpus.concepts, ids))
        if not len(rows):
            continue
        pred = _classify(model, tokenizer, corpus.images[rows], [corpus.names[i] for i in ids])
        truth = np.searchsorted(np.asarray(ids), corpus.concepts[rows])
        out[family] = float((pred == truth).mean())
    return out


def image_hashes(images: np.ndarray) -> set[bytes]:
    """sha1 of every uint8 image's bytes."""
    return {hashlib.sha1(np.ascontiguousarray(a).tobytes()).digest() for a in images}


def check_disjoint(corpus_images: np.ndarray, size: int) -> dict:
    """Hash every corpus image and every image of every downstream split; fail loudly on any overlap."""
    prebuild(BUILTIN_DATASETS, size)
    corpus = image_hashes(corpus_images)
    suite = set()
    for name in BUILTIN_DATASETS:
        arrays, _ = suite_arrays(name, size)
        for key, a in arrays.items():
            if key.endswith("_x"):
                suite |= image_hashes(a)
    shared = len(corpus & suite)
    if shared:
        raise RuntimeError(f"{shared} corpus image(s) also appear in the downstream suite")
    return {"corpus_images_hashed": len(corpus), "suite_images_hashed": len(suite), "shared": shared}


def pretrain_tiny(out: str | Path, config: PretrainConfig | None = None, *, progress: bool = True) -> dict:
    """Train ``mma-tiny`` from scratch and write ``out`` (safetensors) plus ``out.with_suffix('.json')``.

    Returns the record written beside the checkpoint.
    """
    cfg = config or PretrainConfig()
    out = Path(out)
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    register_config()
    arch = embedded_config()
    ctx = arch["text_cfg"]["context_length"]
    corpus = build_corpus(cfg.corpus_size, size=cfg.image_size, captions=cfg.captions, context_length=ctx)
    heldout = build_corpus(cfg.heldout_size, size=cfg.image_size, part="heldout", captions=1, context_length=ctx)
    tokenizer = open_clip.get_tokenizer(EMBEDDED_NAME)
    disjoint = check_disjoint(np.concatenate([corpus.images, heldout.images]), cfg.image_size)

    torch.manual_seed(cfg.seed)
    with _quiet_root_logger():  # open_clip logs "No pretrained weights loaded" for a deliberate random init
        model = open_clip.create_model(EMBEDDED_NAME)
        random_model = open_clip.create_model(EMBEDDED_NAME)
    random_model.load_state_dict(model.state_dict())
    norm = _normalizer(model)
    x_all = torch.from_numpy(corpus.images).permute(0, 3, 1, 2).contiguous()  # uint8 [N, 3, H, W]
    concepts = torch.from_numpy(corpus.concepts.astype(np.int64))
    tokens = torch.from_numpy(corpus.tokens.astype(np.int64))  # [N, captions, ctx]

    prompts = tokenizer([EVAL_TEMPLATE.format(n) for n in corpus.names])  # one per corpus concept
    family = torch.tensor([FAMILIES.index(CONCEPTS[n].family) for n in corpus.names])
    other_family = family[:, None] != family[None, :]  # [concept, concept]: not a negative for each other
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(concepts), generator=gen)
    cursor = 0
    start = time.perf_counter()
    losses = []
    model.train()
    bar = tqdm(range(cfg.steps), desc="pretrain mma-tiny", unit="step", disable=not progress)
    for step in bar:
        if cursor + cfg.batch_size > len(order):
            order, cursor = torch.randperm(len(concepts), generator=gen), 0
        idx = order[cursor : cursor + cfg.batch_size]
        cursor += cfg.batch_size
        x = norm(_shift(x_all[idx].float() / 255.0, cfg.max_shift, gen))
        t = tokens[idx, torch.randint(0, tokens.shape[1], (len(idx),), generator=gen)]
        for group in opt.param_groups:
            group["lr"] = _lr(step, cfg)
        img = F.normalize(model.encode_image(x), dim=-1)
        txt = F.normalize(encode_text_trimmed(model, t), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.T  # [image, caption]
        same_text = (t[:, None, :] == t[None, :, :]).all(-1).float()
        same_concept = (concepts[idx][:, None] == concepts[idx][None, :]).float()
        target = torch.maximum(same_text, cfg.same_concept * same_concept)
        loss = 0.5 * (
            F.cross_entropy(logits, target / target.sum(1, keepdim=True))
            + F.cross_entropy(logits.T, target.T / target.T.sum(1, keepdim=True))
        )
        if cfg.concept_loss > 0:
            names = F.normalize(encode_text_trimmed(model, prompts), dim=-1)
            by_name = (model.logit_scale.exp() * img @ names.T).masked_fill(other_family[concepts[idx]], -1e4)
            loss = loss + cfg.concept_loss * F.cross_entropy(by_name, concepts[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.detach()))
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
    train_seconds = time.perf_counter() - start

    suite_scores = _suite_scores(model, random_model, tokenizer, cfg)
    held = zero_shot_heldout(model, tokenizer, heldout)
    held_random = zero_shot_heldout(random_model, tokenizer, heldout)
    save_embedded(model, out, meta={"corpus": corpus.digest[:16], "seed": cfg.seed})
    record = {
        "model": EMBEDDED_NAME,
        "architecture": arch,
        "config": {**asdict(cfg), "suite": list(cfg.suite) if cfg.suite else None},
        "seed": cfg.seed,
        "corpus": {
            "images": int(len(concepts)),
            "concepts": len(corpus.names),
            "captions_per_image": cfg.captions,
            "hash": corpus.digest[:16],
            "heldout_images": int(len(heldout.concepts)),
            "disjoint_from_suite": disjoint,
        },
        "train_seconds": round(train_seconds, 1),
        "final_loss": float(np.mean(losses[-20:])),
        "loss_curve": [round(float(np.mean(losses[i : i + 50])), 4) for i in range(0, len(losses), 50)],
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "torch_threads": cfg.threads,
            "torch": torch.__version__,
        },
        "zero_shot": {
            "template": EVAL_TEMPLATE,
            "split": "test",
            **suite_scores,
            "suite_source": source_digest(),
            "heldout_corpus": held,
            "heldout_corpus_random_init": held_random,
        },
        "checkpoint_bytes": out.stat().st_size,
    }
    atomic_write_json(out.with_suffix(".json"), record)
    return record


def _suite_scores(model, random_model, tokenizer, cfg: PretrainConfig) -> dict:
    """The record's zero-shot entries on the downstream suite: trained, random init and chance."""
    zs = zero_shot_suite(model, tokenizer, cfg.suite, size=cfg.image_size)
    return {
        "trained": zs,
        "random_init": zero_shot_suite(random_model, tokenizer, cfg.suite, size=cfg.image_size),
        "chance": {n: 1 / len(REGISTRY[n].classes) for n in zs},
    }


def rescore(path: str | Path = WEIGHTS_PATH) -> dict:
    """Redo the suite-dependent parts of the record beside *path* for the downstream suite as it is now.

    The weights and the corpus do not change (the corpus hash is checked); the corpus-suite disjointness check
    and the zero-shot table on the suite are recomputed, and ``suite_source`` names the suite code they
    describe. Returns the updated record, which is written back atomically.
    """
    path = Path(path)
    record = json.loads(path.with_suffix(".json").read_text())
    values = {k: v for k, v in record["config"].items() if k in PretrainConfig.__dataclass_fields__}
    cfg = PretrainConfig(**{**values, "suite": tuple(values["suite"]) if values.get("suite") else None})
    torch.set_num_threads(cfg.threads)
    register_config()
    ctx = embedded_config()["text_cfg"]["context_length"]
    corpus = build_corpus(cfg.corpus_size, size=cfg.image_size, captions=cfg.captions, context_length=ctx)
    if corpus.digest[:16] != record["corpus"]["hash"]:
        raise RuntimeError(f"the corpus changed ({corpus.digest[:16]} != {record['corpus']['hash']}); retrain instead")
    heldout = build_corpus(cfg.heldout_size, size=cfg.image_size, part="heldout", captions=1, context_length=ctx)
    disjoint = check_disjoint(np.concatenate([corpus.images, heldout.images]), cfg.image_size)
    torch.manual_seed(cfg.seed)
    with _quiet_root_logger():  # the same random init as pretrain_tiny's first model
        random_model = open_clip.create_model(EMBEDDED_NAME)
        model = open_clip.create_model(EMBEDDED_NAME)
    model.load_state_dict(load_embedded_state(path))
    tokenizer = open_clip.get_tokenizer(EMBEDDED_NAME)
    record["corpus"]["disjoint_from_suite"] = disjoint
    record["zero_shot"].update(_suite_scores(model, random_model, tokenizer, cfg))
    record["zero_shot"]["suite_source"] = source_digest()
    atomic_write_json(path.with_suffix(".json"), record)
    return record


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Maintenance of the embedded model's record.")
    parser.add_argument("--rescore", action="store_true", help="redo the record's suite-dependent parts")
    parser.add_argument("path", nargs="?", default=str(WEIGHTS_PATH))
    args = parser.parse_args()
    if args.rescore:
        print(json.dumps(rescore(args.path)["zero_shot"], indent=1))
