"""All-layer capture vs its baselines, measured in one run (issue: speed and memory of extraction).

1. Throughput of capturing every layer of both towers (hooks, pooled in the hook) vs a plain
   ``encode_image`` + ``encode_text`` of the same batches: the ratio capture / plain (target >= 0.9).
2. The naive alternative: one truncated forward pass per layer (open_clip ``forward_intermediates`` with
   one index and ``stop_early``) to get the same features: the ratio capture / naive.
3. Peak private memory (RssAnon, sampled every 20 ms) of a full extraction into the feature store at N and
   at 10N images, each in a fresh process: streaming means its growth is far below the size of the extra
   features. Plain peak RSS also counts the pages of the memory-mapped store, which are file-backed and
   evictable, so it grows with the store; it is printed for reference.

    python benchmarks/bench_capture.py                      # mma-tiny, 32 px
    python benchmarks/bench_capture.py --model ViT-B-32 --batch-size 32 --batches 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import torch


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def throughput(model_spec: str, batch_size: int, batches: int, repeats: int) -> dict:
    from mma.probe import layer_maps, load_model
    from mma.probe.capture import LayerCapture

    loaded = load_model(model_spec)
    model, maps = loaded.model, layer_maps(loaded.model)
    g = torch.Generator().manual_seed(0)
    images = [torch.randn(batch_size, 3, loaded.image_size, loaded.image_size, generator=g) for _ in range(batches)]
    tokens = loaded.tokenizer([f"a photo of a thing number {i}." for i in range(batch_size)])

    @torch.no_grad()
    def plain():
        for x in images:
            model.encode_image(x)
            model.encode_text(tokens)

    @torch.no_grad()
    def capture():
        with LayerCapture(model, maps) as cap:
            for x in images:
                cap.encode_image(x)
                cap.encode_text(tokens)

    depth = maps["image"].depth

    @torch.no_grad()
    def naive():  # one truncated pass per layer, as a tool without hooks would do
        for x in images:
            for i in range(depth):
                model.visual.forward_intermediates(x, indices=[i], stop_early=True, intermediates_only=True)
                model.forward_intermediates(text=tokens, text_indices=[i], stop_early=True, intermediates_only=True)
            model.encode_image(x)  # XProj
            model.encode_text(tokens)

    t_plain, t_capture, t_naive = (_time(f, repeats) for f in (plain, capture, naive))
    n = batch_size * batches
    return {
        "images": n,
        "plain_img_per_s": n / t_plain,
        "capture_img_per_s": n / t_capture,
        "naive_img_per_s": n / t_naive,
        "capture_over_plain": t_plain / t_capture,
        "capture_over_naive": t_naive / t_capture,
    }


CHILD = r"""
import json, resource, sys, tempfile, threading, time
import numpy as np
from PIL import Image
from mma.probe import load_model
from mma.probe.data import ImageDataset, Sample
from mma.probe.extract import extract_images

def rss_anon_mb():  # private memory only: pages of the memory-mapped store are file-backed and evictable
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")

peak = [rss_anon_mb()]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], rss_anon_mb())
        time.sleep(0.02)

n = int(sys.argv[1])
def loader(ref):
    rng = np.random.default_rng(int(ref))
    return Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
samples = [Sample(str(i), i % 10) for i in range(n)]
d = ImageDataset("synthetic", [f"c{i}" for i in range(10)], {"train": samples}, loader)
loaded = load_model(sys.argv[2])
watcher = threading.Thread(target=sample, daemon=True)
watcher.start()
with tempfile.TemporaryDirectory() as tmp:
    e = extract_images(loaded, d, samples, tmp, batch_size=256)
    feature_bytes = e.blocks.nbytes + e.proj.nbytes
stop.set()
watcher.join()
print(json.dumps({"n": n, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_anon_mb": peak[0], "feature_mb": feature_bytes / 2**20}))
"""


def memory(model_spec: str, n: int) -> dict:
    runs = {}
    for size in (n, 10 * n):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(size), model_spec],
            capture_output=True,
            text=True,
            check=True,
            cwd=tempfile.gettempdir(),
        )
        runs[size] = json.loads(out.stdout.strip().splitlines()[-1])
    small, large = runs[n], runs[10 * n]
    return {
        "n": n,
        "peak_rss_mb_n": small["peak_rss_mb"],
        "peak_rss_mb_10n": large["peak_rss_mb"],
        "peak_anon_mb_n": small["peak_anon_mb"],
        "peak_anon_mb_10n": large["peak_anon_mb"],
        "anon_growth_mb": large["peak_anon_mb"] - small["peak_anon_mb"],
        "extra_features_mb": large["feature_mb"] - small["feature_mb"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mma-tiny")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--memory-n", type=int, default=2000, help="N for the memory check (0 skips it)")
    args = p.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    t = throughput(args.model, args.batch_size, args.batches, args.repeats)
    print(f"model {args.model}, {t['images']} images per pass, torch threads {torch.get_num_threads()}")
    print(f"  plain encode_image+encode_text : {t['plain_img_per_s']:8.1f} img/s")
    print(f"  all-layer capture (hooks)      : {t['capture_img_per_s']:8.1f} img/s")
    print(f"  one truncated pass per layer   : {t['naive_img_per_s']:8.1f} img/s")
    print(f"  ratio capture / plain          : {t['capture_over_plain']:.3f}  (target >= 0.9)")
    print(f"  ratio capture / naive          : {t['capture_over_naive']:.2f}x faster")
    if args.memory_n:
        m = memory(args.model, args.memory_n)
        print(
            f"peak private memory (RssAnon), extraction of {m['n']} images: {m['peak_anon_mb_n']:.0f} MB; "
            f"of {10 * m['n']}: {m['peak_anon_mb_10n']:.0f} MB (peak RSS, which also counts the file-backed pages "
            f"of the memory-mapped store: {m['peak_rss_mb_n']:.0f} / {m['peak_rss_mb_10n']:.0f} MB)"
        )
        print(
            f"  growth {m['anon_growth_mb']:.1f} MB vs {m['extra_features_mb']:.1f} MB of extra features "
            f"(ratio {m['anon_growth_mb'] / m['extra_features_mb']:.2f}; features that stream to the store "
            "leave it under 1 unless per-sample bookkeeping is as large as the features)"
        )


if __name__ == "__main__":
    main()
