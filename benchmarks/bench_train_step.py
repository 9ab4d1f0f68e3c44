"""Training-step time of the Multi-Modal Adapter with and without the text prefix cache, in one run.

The prompts never change, so the frozen text blocks below k can run once per run instead of once per
step (:class:`mma.adapters.text_cache.TextPrefixCache`). This prints the step time both ways, their ratio,
and the trainable-parameter count. Prefix caching saves the most when there are many classes (ImageNet:
1000 prompts every step) and k is high.

    python benchmarks/bench_train_step.py                               # mma-tiny, 100 classes
    python benchmarks/bench_train_step.py --model ViT-B-16 --k 5 --classes 100 --steps 2
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def step_time(loaded, adapter, images, labels, tokens, cache, steps: int) -> float:
    params = [p for p in adapter.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    model = loaded.model
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        img = F.normalize(model.encode_image(images), dim=-1)
        txt = F.normalize(cache.encode() if cache is not None else model.encode_text(tokens), dim=-1)
        loss = F.cross_entropy(model.logit_scale.exp() * img @ txt.T, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:  # the first step warms up
            times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mma-tiny")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()

    from mma.adapters.mma import add_adapter
    from mma.adapters.text_cache import TextPrefixCache
    from mma.probe import layer_maps, load_model

    loaded = load_model(args.model)
    adapter = add_adapter(loaded.model, k=args.k)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, loaded.image_size, loaded.image_size, generator=g)
    labels = torch.randint(0, args.classes, (args.batch_size,), generator=g)
    tokens = loaded.tokenizer([f"a photo of a class number {i}." for i in range(args.classes)])
    cache = TextPrefixCache(loaded.model, layer_maps(loaded.model)["text"], adapter.k_text, tokens)
    t_cached = step_time(loaded, adapter, images, labels, tokens, cache, args.steps)
    t_full = step_time(loaded, adapter, images, labels, tokens, None, args.steps)
    print(
        f"model {args.model}, k={args.k}, {args.classes} class prompts, batch {args.batch_size}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"  trainable parameters           : {adapter.num_parameters():,}")
    print(f"  step, text tower run every step: {1000 * t_full:8.1f} ms")
    print(f"  step, text prefix cached       : {1000 * t_cached:8.1f} ms")
    print(f"  ratio (speed-up)               : {t_full / t_cached:.2f}x")


if __name__ == "__main__":
    main()
