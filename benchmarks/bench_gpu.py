"""GPU throughput of all-layer extraction and of one adapter training step, fp32 vs fp16 / bf16 autocast.

Everything is measured in one run on synthetic tensors already on the device, so data loading, decoding
and the feature store are not timed:

1. Extraction, images/s: the forward of :class:`mma.probe.capture.LayerCapture` on the image tower (every
   block hooked, mean-pooled in the hook), as ``extract_images`` runs it, and a plain ``encode_image`` of
   the same batch as the baseline; the capture/plain ratio and each precision's speed over fp32.
2. Training, steps/s: one step of ``fit_adapter`` (adapter from block k, text prefix cached, its
   ``MMAObjective`` loss, the recipe's SGD, fused on CUDA, and the grad scaler for fp16), from the same
   pieces ``fit_adapter`` uses; each precision's speed over fp32.

Each row: warm-up, then the median over repeats of (time of N steps) / N, with ``torch.cuda.synchronize``
around every timed region; peak memory is ``torch.cuda.max_memory_allocated`` since the row started (it
includes the model's fp32 weights). Batch sizes default to the paper's training batch (16; 128 for
ImageNet, SPEC.md section 3) and to 128 / 256 for extraction.

    python benchmarks/bench_gpu.py                                                  # CUDA, ViT-B-16:random
    python benchmarks/bench_gpu.py --json gpu.json --precisions fp32,bf16
    python benchmarks/bench_gpu.py --device cpu --model mma-tiny --steps 2 --repeats 1   # smoke check
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial

import torch


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def measure(fn, device: torch.device, steps: int, warmup: int, repeats: int) -> tuple[float, float | None]:
    """Median seconds per call of *fn* and the peak allocated MB (None on the CPU); OOM gives (nan, None)."""
    cuda = device.type == "cuda"
    sync = partial(torch.cuda.synchronize, device) if cuda else (lambda: None)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            sync()
            times.append((time.perf_counter() - start) / steps)
    except torch.cuda.OutOfMemoryError:  # a row too big for this GPU; the others still run
        torch.cuda.empty_cache()
        return float("nan"), None
    return statistics.median(times), (torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None)


def extraction_rows(loaded, device, args) -> list[dict]:
    from mma.probe.capture import LayerCapture
    from mma.probe.extract import autocast_for
    from mma.probe.layers import layer_maps

    model, image_map = loaded.model, layer_maps(loaded.model)["image"]
    rows = []
    for bs in args.extract_batch_sizes:
        x = torch.randn(bs, 3, loaded.image_size, loaded.image_size, device=device)
        for precision in args.precisions:
            row = {"batch": bs, "precision": precision}
            with torch.no_grad(), autocast_for(device, precision):
                t, row["plain_peak_mb"] = measure(partial(model.encode_image, x), device, *args.timing)
                with LayerCapture(model, {"image": image_map}, pooling="mean") as cap:
                    tc, row["capture_peak_mb"] = measure(partial(cap.encode_image, x), device, *args.timing)
            row["plain_img_per_s"], row["capture_img_per_s"], row["capture_over_plain"] = bs / t, bs / tc, t / tc
            rows.append(row)
    return rows


def adapter_step(loaded, device, precision: str, k: int, tokens, images, labels):
    """One ``fit_adapter`` step (its Objective, optimiser and grad scaler) over a freshly attached adapter."""
    from mma.adapters.mma import MMAObjective, MultiModalAdapter, add_adapter
    from mma.adapters.text_cache import TextPrefixCache
    from mma.adapters.train import optimiser_for, sgd_step
    from mma.probe.extract import autocast_for
    from mma.probe.layers import layer_maps

    cfg = MultiModalAdapter.make_config(k=k, precision=precision)  # the paper recipe's optimiser settings
    adapter = add_adapter(loaded.model, k=k, model_name=str(loaded.spec))
    text = TextPrefixCache(loaded.model, layer_maps(loaded.model)["text"], adapter.k_text, tokens)
    objective = MMAObjective(loaded, adapter, tokens, text)
    opt, scaler = optimiser_for(adapter, cfg, device)

    def step() -> None:
        with autocast_for(device, precision):
            loss = objective(images, labels)
        sgd_step(opt, scaler, loss)

    return step, adapter


def training_rows(loaded, device, args) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    tokens = loaded.tokenizer([f"a photo of a class number {i}." for i in range(args.classes)]).to(device)
    rows = []
    for bs in args.train_batch_sizes:
        images = torch.randn(bs, 3, loaded.image_size, loaded.image_size, generator=g).to(device)
        labels = torch.randint(0, args.classes, (bs,), generator=g).to(device)
        for precision in args.precisions:
            step, adapter = adapter_step(loaded, device, precision, args.k, tokens, images, labels)
            try:
                t, peak = measure(step, device, *args.timing)
            finally:
                adapter.detach()
            rows.append(
                {"batch": bs, "precision": precision, "steps_per_s": 1 / t, "images_per_s": bs / t, "peak_mb": peak}
            )
    return rows


EXTRACT_COLS = [("batch", "batch", "d"), ("precision", "precision", "s"), ("plain img/s", "plain_img_per_s", ".1f")]
EXTRACT_COLS += [("capture img/s", "capture_img_per_s", ".1f"), ("capture/plain", "capture_over_plain", ".3f")]
EXTRACT_COLS += [("peak MB", "capture_peak_mb", ".0f")]
TRAIN_COLS = [("batch", "batch", "d"), ("precision", "precision", "s"), ("steps/s", "steps_per_s", ".2f")]
TRAIN_COLS += [("img/s", "images_per_s", ".1f"), ("peak MB", "peak_mb", ".0f")]


def print_table(title: str, rows: list[dict], cols: list[tuple[str, str, str]], speed_key: str, note) -> None:
    """*cols*: (header, key, format); adds each row's speed over the fp32 row of the same batch."""
    print(title)
    print("  " + "".join(f"{h:>{max(len(h), 9) + 2}}" for h, _, _ in cols) + "   vs fp32")
    fp32 = {r["batch"]: r[speed_key] for r in rows if r["precision"] == "fp32"}
    for r in rows:
        cells = "".join(f"{('-' if r[k] is None else format(r[k], f)):>{max(len(h), 9) + 2}}" for h, k, f in cols)
        ratio = r[speed_key] / fp32[r["batch"]] if r["batch"] in fp32 else float("nan")
        print(f"  {cells}   {ratio:6.2f}x {note(r['precision'])}".rstrip())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke check: no autocast there)")
    p.add_argument("--model", default="ViT-B-16:random", help="a model spec (see mma models)")
    p.add_argument("--precisions", default="fp32,fp16,bf16")
    p.add_argument("--extract-batch-sizes", type=ints, help="default 128,256 (32,64 on cpu)")
    p.add_argument("--train-batch-sizes", type=ints, help="default 16,128: the paper's (ImageNet's); 16,32 on cpu")
    p.add_argument("--classes", type=int, default=100, help="class prompts in the training step")
    p.add_argument("--k", type=int, default=5, help="first adapted block (recipe default 5)")
    p.add_argument("--steps", type=int, default=10, help="timed batches / steps per repeat")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls in the fp32 rows")
    p.add_argument("--json", metavar="PATH", help="also write every number as JSON")
    args = p.parse_args()
    args.precisions = [s.strip() for s in args.precisions.split(",") if s.strip()]
    if not set(args.precisions) <= {"fp32", "fp16", "bf16"}:
        p.error(f"--precisions {','.join(args.precisions)}: each must be fp32, fp16 or bf16")
    args.timing = (args.steps, args.warmup, args.repeats)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.extract_batch_sizes = args.extract_batch_sizes or ([128, 256] if cuda else [32, 64])
    args.train_batch_sizes = args.train_batch_sizes or ([16, 128] if cuda else [16, 32])
    if cuda and not torch.cuda.is_available():
        sys.exit("--device cuda was asked but torch sees no CUDA GPU here; use --device cpu for the smoke check.")
    from mma.probe import load_model

    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    if cuda and "bf16" in args.precisions and not torch.cuda.is_bf16_supported():
        print("bf16 skipped: this GPU does not support it")
        args.precisions.remove("bf16")
    loaded = load_model(args.model, device=device)
    weights_mb = sum(t.numel() * t.element_size() for t in loaded.model.state_dict().values()) / 2**20
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({torch.get_num_threads()} torch threads)"
    print(f"device {name}, torch {torch.__version__}" + (f", CUDA {torch.version.cuda}" if cuda else ""))
    print(
        f"model {loaded.describe()}, {loaded.image_size} px, weights {weights_mb:.0f} MB fp32, tf32 matmul "
        f"{'on' if args.tf32 else 'off'}; median of {args.repeats} x {args.steps} after {args.warmup} warm-up"
    )

    def note(precision: str) -> str:
        return "(no autocast on cpu: same as fp32)" if not cuda and precision != "fp32" else ""

    extract = extraction_rows(loaded, device, args)
    title = "extraction, image tower, no grad (images/s; vs fp32: capture speed over the fp32 row)"
    print_table(f"\n{title}", extract, EXTRACT_COLS, "capture_img_per_s", note)
    train = training_rows(loaded, device, args)
    title = f"training step, adapter k={args.k}, {args.classes} prompts, text prefix cached (steps/s)"
    print_table(f"\n{title}", train, TRAIN_COLS, "steps_per_s", note)
    if args.json:
        from mma.io import atomic_write_json

        setup = {k: v for k, v in vars(args).items() if k not in ("json", "timing")}
        info = {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda if cuda else None}
        atomic_write_json(args.json, {**info, "args": setup, "extraction": extract, "training": train})
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
