"""Training time per step of every method beside MMA's, measured side by side in one run.

Each trained method (every registered one, plugins included, or ``--methods``) trains with its own paper's batch
size (MMA 16, CoOp 32, CoCoOp 1, CLIP-Adapter 32) through the very objective ``mma train-selected`` uses
(:meth:`objective` of :mod:`mma.adapters.method_base`: MMA with its text prefix cache, CoOp and CoCoOp through
the frozen text tower, CLIP-Adapter on the image feature), SGD, fp32 on the CPU and fp16 autocast with a grad
scaler on CUDA, random images and labels. Each method steps twice over: with its frozen inputs cached (what the
training loop reads with augmentation off: the image tower below its first trainable layer ran once,
:mod:`mma.adapters.frozen`) and without (that frozen part recomputed every step, as with augmentation on). The time
per step is the median of ``--steps`` timed steps after ``--warmup`` steps; the ratio is to the default method's
(MMA's) cached step in the same run. A method with its own fit
(the linear probe) takes no SGD steps: its row is one whole fit (features of ``shots x classes`` images, the C
search, the final fit), shown apart.

    python benchmarks/bench_methods.py                                      # both models below
    python benchmarks/bench_methods.py --model mma-tiny --classes 5         # the embedded default
    python benchmarks/bench_methods.py --model ViT-B-16:random --classes 50 --steps 2 --warmup 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from mma.adapters.frozen import image_part
from mma.adapters.linear_probe import LinearProbeMethod, _fit_lr, choose_c
from mma.adapters.methods import DEFAULT, get_method, registry
from mma.adapters.train import optimiser_for, sgd_step
from mma.io import atomic_write_json
from mma.probe import load_model
from mma.probe.extract import autocast_for, resolve_device


def _config(method, k: int | None, device: torch.device, batch: int | None):
    """*method*'s published values (its paper's batch and optimiser), at *k* when it has a depth (None: its published
    base-to-novel k), in the device's precision."""
    values = {**method.published_values(), "precision": "fp16" if device.type == "cuda" else "fp32"}
    if method.depth_indexed:
        values["k"] = k if k is not None else method.published_k("base2novel") or 5
    if batch is not None:
        values["batch_size"] = batch
    return method.make_config(values)


def step_times(loaded, method, cfg, classnames, device, steps: int, warmup: int, cached: bool = True) -> list[float]:
    """Seconds of each timed SGD step of *method* on random images (the training loop's own step), its frozen image
    part computed once before the steps (*cached*) or in every step."""
    torch.manual_seed(0)
    method = method.build(loaded, cfg, classnames).attach(loaded.model)
    try:
        objective = method.objective(loaded, classnames, "a photo of a {}.", cfg)
        opt, scaler = optimiser_for(method, cfg, device)
        g = torch.Generator().manual_seed(0)
        size = loaded.image_size
        images = torch.randn(cfg.batch_size, 3, size, size, generator=g).to(device)
        labels = torch.randint(0, len(classnames), (cfg.batch_size,), generator=g).to(device)
        part = image_part(loaded, method.image_start(loaded))
        prefix = part.prefix if part is not None else (lambda x: x)
        with autocast_for(device, cfg.precision):
            inputs = prefix(images)
        times = []
        for i in range(warmup + steps):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            with autocast_for(device, cfg.precision):
                loss = objective(inputs if cached else prefix(images), labels)
            sgd_step(opt, scaler, loss)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - start)
        return times
    finally:
        method.detach()


def linear_probe_fit(loaded, classnames, shots: int, device) -> float:
    """Seconds of one linear-probe fit on ``shots`` random images per class (4 per class for validation)."""
    g = torch.Generator().manual_seed(0)
    size = loaded.image_size
    start = time.perf_counter()
    feats = {}
    for split, per_class in (("train", shots), ("val", min(shots, 4))):
        n = per_class * len(classnames)
        out = []
        with torch.no_grad():
            for i in range(0, n, 64):
                images = torch.randn(min(64, n - i), 3, size, size, generator=g).to(device)
                out.append(loaded.model.encode_image(images).float().cpu())
        feats[split] = (torch.cat(out).double().numpy(), np.repeat(np.arange(len(classnames)), per_class))
    C, _, _ = choose_c(*feats["train"], *feats["val"])
    method = LinearProbeMethod(embed_dim=feats["train"][0].shape[1], classnames=classnames)
    method.load_fit(_fit_lr(C, *feats["train"]), C)
    return time.perf_counter() - start


def bench(model: str, classes: int, k: int | None, steps: int, warmup: int, shots: int, device: str, batch, methods):
    dev = resolve_device(device)
    loaded = load_model(model, device=str(dev))
    classnames = [f"class number {i}" for i in range(classes)]
    rows = []
    for name in methods:
        method = get_method(name)
        if method.fit is not None:  # its own training procedure: one whole fit (timed here for the linear probe)
            seconds = linear_probe_fit(loaded, classnames, shots, dev) if method is LinearProbeMethod else float("nan")
            rows.append({"method": name, "batch": None, "fit_s": seconds})
            continue
        cfg = _config(method, k, dev, batch)
        times = step_times(loaded, method, cfg, classnames, dev, steps, warmup)
        uncached = statistics.median(step_times(loaded, method, cfg, classnames, dev, steps, warmup, cached=False))
        step = statistics.median(times)
        depth = cfg.options.k if method.depth_indexed else None
        rows.append(
            {"method": name, "batch": cfg.batch_size, "k": depth, "step_s": step, "times": times,
             "step_uncached_s": uncached}
        )  # fmt: skip
        rows[-1]["cache_speedup"] = uncached / step
    ref = next((r for r in rows if r["method"] == DEFAULT.name and "step_s" in r), None)
    for r in rows:
        if "step_s" in r and ref:
            r["ratio_to_mma"] = r["step_s"] / ref["step_s"]
            r["per_image_ratio_to_mma"] = (r["step_s"] / r["batch"]) / (ref["step_s"] / ref["batch"])
    return {"model": model, "device": str(dev), "classes": classes, "k": k, "rows": rows}


def _print(record: dict) -> None:
    k = "each method's published k" if record["k"] is None else f"k = {record['k']}"
    print(f"\n{record['model']} on {record['device']}, {record['classes']} classes, {k}:")
    print(
        f"{'method':<14}{'k':>4}{'batch':>6}{'s / step':>11}{'uncached':>10}{'cache gain':>12}{'ratio to MMA':>14}"
        f"{'per image, ratio':>18}"
    )
    for r in record["rows"]:
        if "step_s" in r:
            print(
                f"{r['method']:<14}{r['k'] or '-':>4}{r['batch']:>6}{r['step_s']:>11.4f}{r['step_uncached_s']:>10.4f}"
                f"{r['cache_speedup']:>11.2f}x{r.get('ratio_to_mma', float('nan')):>14.2f}"
                f"{r.get('per_image_ratio_to_mma', float('nan')):>18.2f}"
            )
        else:
            print(f"{r['method']:<14}{'-':>4}{'-':>6}{'(one whole fit: ' + format(r['fit_s'], '.2f') + ' s)':>65}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", help="repeatable (default: mma-tiny and ViT-B-16:random)")
    p.add_argument("--classes", type=int, action="append", help="per --model (default: 5 for mma-tiny, 50 else)")
    p.add_argument(
        "--k", type=int, default=None, help="every layer-deep method's start block (default: each its published k)"
    )
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=None, help="one batch for every method instead of the papers'")
    p.add_argument("--methods", default=None, help="comma-separated (default: every trained method)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, help="also write the measurements here")
    args = p.parse_args()
    models = args.model or ["mma-tiny", "ViT-B-16:random"]
    records = []
    for i, model in enumerate(models):
        tiny = model.split(":")[0] == "mma-tiny"
        classes = args.classes[i] if args.classes and i < len(args.classes) else (5 if tiny else 50)
        k = args.k
        names = args.methods.split(",") if args.methods else [n for n, m in registry().items() if m.trains]
        methods = [m.strip() for m in names if m.strip()]
        record = bench(model, classes, k, args.steps, args.warmup, args.shots, args.device, args.batch_size, methods)
        _print(record)
        records.append(record)
    if args.json:
        atomic_write_json(args.json, records)


if __name__ == "__main__":
    main()
