"""One MMA training step, four ways, on identical weights, batch and prompts, in one run.

* ``official``  the official implementation's step (ZjjConan/Multi-Modal-Adapter, ``trainers/mmadapter.py``:
  its ``CustomCLIP`` in training mode, both towers in full every step), when ``--official PATH`` names a
  checkout of it (fetch it yourself: ``git clone https://github.com/ZjjConan/Multi-Modal-Adapter``; nothing
  of it is copied here; its Dassl imports are stubbed, since only the model is used).
* ``recompute`` mma's hooked model with nothing cached: ``encode_image`` + ``encode_text`` at full length.
* ``cached``    the step as ``mma train-selected`` runs it: the image blocks below ``k_image`` read from the
  frozen-input cache (:mod:`mma.adapters.frozen`), the text blocks below ``k_text`` run once (prefix cache),
  the text on its live positions only (:mod:`mma.probe.textcut`).
* ``limit``     blocks k..L alone, with their adapters, on the cut sequences (forward and backward): what no
  implementation of a frozen trunk can avoid.

The weights are random (the official model's, loaded into open_clip's quick-GELU CLIP, or open_clip's own
random ``ViT-B-16-quickgelu`` without a checkout). It prints each step's time and the ratios.

    python benchmarks/bench_train_step.py                                  # mma-tiny, 100 classes
    python benchmarks/bench_train_step.py --model ViT-B-16-quickgelu --k 5 --steps 2 --official ~/Multi-Modal-Adapter
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

_VIT_B16 = dict(
    embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
    context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12,
)  # fmt: skip


def _timed(step, steps: int) -> float:
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        step()
        if i:  # the first step warms up
            times.append(time.perf_counter() - start)
    return min(times)


def _sgd_step(params, loss_fn):
    opt = torch.optim.SGD([p for p in params if p.requires_grad], lr=1e-3, momentum=0.9)

    def step():
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _official(path: Path, k: int, classnames, seed: int):
    """The official CustomCLIP (random ViT-B/16 weights) and its trainable parameters; Dassl stubbed."""
    sys.path.insert(0, str(path))
    stubs = {
        "dassl": {},
        "dassl.engine": {"TRAINER_REGISTRY": types.SimpleNamespace(register=lambda: lambda c: c), "TrainerX": object},
        "dassl.utils": {"load_pretrained_weights": None, "load_checkpoint": None},
        "dassl.optim": {"build_optimizer": None, "build_lr_scheduler": None},
    }
    for name, attrs in stubs.items():
        sys.modules.setdefault(name, types.SimpleNamespace(**attrs))
    from clip.model import CLIP

    spec = importlib.util.spec_from_file_location("official_mmadapter", path / "trainers" / "mmadapter.py")
    official = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official)
    torch.manual_seed(seed)
    clip_model = CLIP(**_VIT_B16).float()
    ns = types.SimpleNamespace
    mm = ns(TEXT_CTX_INIT="a photo of a", ADAPTER_START=k, ADAPTER_END=12, ADAPTER_DIM=32, ADAPTER_SCALE=0.001)
    cfg = ns(TRAINER=ns(MMADAPTER=mm), INPUT=ns(SIZE=(224, 224)))
    model = official.CustomCLIP(cfg, classnames, clip_model)
    for name, p in model.named_parameters():
        p.requires_grad_("adapter_learner" in name)
    model.train()
    return model, clip_model.state_dict()


def _limit(loaded, adapter, x_img, text_cache):
    """Forward + backward through blocks k..L of both towers (adapters attached) on their cached inputs."""
    from mma.probe.layers import layer_maps

    maps = layer_maps(loaded.model)
    img_blocks = maps["image"].blocks(loaded.model)[adapter.k_image - 1 :]
    txt_blocks = maps["text"].blocks(loaded.model)[adapter.k_text - 1 :]
    owner = loaded.model.get_submodule(maps["text"].cut_owner or "")
    n = text_cache.length or text_cache.tokens.shape[1]
    mask = owner.attn_mask[:n, :n] if getattr(owner, "attn_mask", None) is not None else None

    def loss():
        x = x_img
        for blk in img_blocks:
            x = blk(x)
        t = text_cache.hidden
        for blk in txt_blocks:
            t = blk(t, attn_mask=mask)
        return x.float().square().mean() + t.float().square().mean()

    return loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mma-tiny")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--official", type=Path, default=None, help="a checkout of ZjjConan/Multi-Modal-Adapter")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from mma.adapters.frozen import ImagePart, to_layout
    from mma.adapters.mma import MMAObjective, MultiModalAdapter
    from mma.adapters.text_cache import TextPrefixCache
    from mma.probe import layer_maps, load_model

    classnames = [f"class name {i}" for i in range(args.classes)]
    official = None
    if args.official is not None:
        official, state = _official(args.official.expanduser(), args.k, classnames, seed=0)
        loaded = load_model("ViT-B-16-quickgelu:random")
        loaded.model.load_state_dict(state)  # the same weights: open_clip's CLIP keeps OpenAI's names
    else:
        loaded = load_model(args.model if ":" in args.model else f"{args.model}:random")
    model = loaded.model
    cfg = MultiModalAdapter.make_config(k=args.k, alpha=1e-3, dim=32)
    adapter = MultiModalAdapter.build(loaded, cfg, classnames).attach(model)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, loaded.image_size, loaded.image_size, generator=g)
    labels = torch.randint(0, args.classes, (args.batch_size,), generator=g)
    tokens = loaded.tokenizer([f"a photo of a {c}." for c in classnames])
    scale = model.logit_scale.exp()

    def recompute():
        img = F.normalize(model.encode_image(images), dim=-1)
        txt = F.normalize(model.encode_text(tokens), dim=-1)
        return F.cross_entropy(scale * img @ txt.T, labels)

    part = ImagePart(loaded, adapter.k_image)
    cached = part.prefix(images)  # what the frozen-input cache holds for this batch
    text = TextPrefixCache(model, layer_maps(model)["text"], adapter.k_text, tokens)
    objective = MMAObjective(loaded, adapter, tokens, text, images=part)
    t = {
        "recompute": _timed(_sgd_step(adapter.parameters(), recompute), args.steps),
        "cached": _timed(_sgd_step(adapter.parameters(), lambda: objective(cached, labels)), args.steps),
    }
    x_img = to_layout(part.map, cached)
    t["limit"] = _timed(_sgd_step(adapter.parameters(), _limit(loaded, adapter, x_img, text)), args.steps)
    if official is not None:
        off_tokens = official.tokenized_prompts
        assert torch.equal(off_tokens, tokens), "the official prompts differ from mma's"

        def official_loss():
            return F.cross_entropy(official(images), labels)

        t["official"] = _timed(_sgd_step(official.parameters(), official_loss), args.steps)
    name = "ViT-B-16-quickgelu (official weights)" if official is not None else args.model
    print(
        f"model {name}, k={args.k} (image block {adapter.k_image}, text block {adapter.k_text}), {args.classes} "
        f"class prompts (live positions {text.length} of {tokens.shape[1]}), batch {args.batch_size}, torch threads "
        f"{torch.get_num_threads()}, best of {args.steps} steps"
    )
    print(f"  trainable parameters : {adapter.num_parameters():,}")
    for key in ("official", "recompute", "cached", "limit"):
        if key in t:
            print(f"  step, {key:<10}    : {1000 * t[key]:9.1f} ms")
    if "official" in t:
        print(f"  official / cached    : {t['official'] / t['cached']:.2f}x  (target >= 2)")
    print(f"  recompute / cached   : {t['recompute'] / t['cached']:.2f}x")
    print(f"  cached / limit       : {t['cached'] / t['limit']:.2f}x  (target <= 1.3)")


if __name__ == "__main__":
    main()
