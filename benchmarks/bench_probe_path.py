"""Time the whole linear-probe sweep: warm-started C path vs cold fits, in one run.

Synthetic stand-in for one tower of the layer analysis: ``--layers`` layers of ``--samples`` x
``--dim`` features, ``--classes`` classes, separability growing with depth (low layers overlap, top
layers are nearly separable, as CLIP's are for the "which dataset?" task). Each layer is split 60/20/20
into train/val/test and probed with :class:`mma.analysis.linear_probe.LinearProbe`, once with
``warm_start=True`` and once with ``warm_start=False``; every other setting is shared.

Prints one row per layer (chosen C, test accuracy, seconds, lbfgs iterations, per mode), then the
totals, the speed-up and whether both modes chose identical C on every layer.

    python benchmarks/bench_probe_path.py            # defaults: 14 layers, 1400 x 128, 7 classes
    python benchmarks/bench_probe_path.py --repeats 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split

from mma.analysis.linear_probe import DEFAULT_CS, LinearProbe


def make_layers(n_layers: int, n_samples: int, dim: int, n_classes: int, seed: int) -> list[tuple]:
    """Per layer: (X_train, y_train, X_val, y_val, X_test, y_test), separability growing with depth."""
    rng = np.random.default_rng(seed)
    layers = []
    for layer, sep in enumerate(np.linspace(0.3, 2.5, n_layers)):
        X, y = make_classification(
            n_samples=n_samples,
            n_features=dim,
            n_informative=dim // 4,
            n_redundant=dim // 4,
            n_classes=n_classes,
            n_clusters_per_class=2,
            class_sep=float(sep),
            flip_y=0.01,
            random_state=seed * 1000 + layer,
        )
        # Deep features have wildly different per-channel scales and offsets; the probe standardises.
        X = X * rng.lognormal(0.0, 1.0, size=dim) + rng.normal(0.0, 3.0, size=dim)
        X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, train_size=0.6, stratify=y, random_state=seed)
        X_va, X_te, y_va, y_te = train_test_split(X_rest, y_rest, train_size=0.5, stratify=y_rest, random_state=seed)
        layers.append((X_tr, y_tr, X_va, y_va, X_te, y_te))
    return layers


def run_sweep(layers: list[tuple], **probe_kwargs) -> tuple[float, float, list[dict]]:
    """Probe every layer; return (wall seconds, CPU seconds, per-layer rows)."""
    rows = []
    wall = cpu = 0.0
    for X_tr, y_tr, X_va, y_va, X_te, y_te in layers:
        t0, c0 = time.perf_counter(), time.process_time()
        probe = LinearProbe(**probe_kwargs).fit(X_tr, y_tr, X_va, y_va)
        dt = time.perf_counter() - t0
        wall += dt
        cpu += time.process_time() - c0
        rows.append(
            {
                "C": probe.C_,
                "test": probe.score(X_te, y_te),
                "seconds": dt,
                "iters": sum(probe.path_n_iter_),
                "fits": len(probe.path_),
            }
        )
    return wall, cpu, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=14)
    parser.add_argument("--samples", type=int, default=1400)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--classes", type=int, default=7)
    parser.add_argument("--n-refine", type=int, default=4)
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--tol", type=float, default=1e-5)
    parser.add_argument("--blas-threads", type=int, default=1, help="LinearProbe(blas_threads=...); 0: library default")
    parser.add_argument("--repeats", type=int, default=3, help="best-of-N timing per mode, interleaved")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    layers = make_layers(args.layers, args.samples, args.dim, args.classes, args.seed)
    common = {
        "Cs": DEFAULT_CS,
        "n_refine": args.n_refine,
        "max_iter": args.max_iter,
        "tol": args.tol,
        "blas_threads": args.blas_threads or None,
    }
    # Interleave the modes and keep each one's fastest repeat: other load on the machine hits both alike.
    results: dict[str, tuple[float, float, list[dict]]] = {}
    for _ in range(args.repeats):
        for mode, warm in (("warm", True), ("cold", False)):
            run = run_sweep(layers, warm_start=warm, **common)
            if mode not in results or run[0] < results[mode][0]:
                results[mode] = run
    (t_warm, cpu_warm, warm_rows), (t_cold, cpu_cold, cold_rows) = results["warm"], results["cold"]
    print(
        f"{args.layers} layers x [{args.samples} x {args.dim}], {args.classes} classes, "
        f"grid {len(DEFAULT_CS)} + {args.n_refine} bisection steps, max_iter={args.max_iter}, "
        f"tol={args.tol}, blas_threads={args.blas_threads or 'library default'}"
    )
    header = (
        f"{'layer':>5} {'C warm':>10} {'C cold':>10} {'test warm':>9} {'test cold':>9} "
        f"{'s warm':>7} {'s cold':>7} {'it warm':>8} {'it cold':>8}"
    )
    print(header)
    print("-" * len(header))
    for i, (w, c) in enumerate(zip(warm_rows, cold_rows, strict=True)):
        print(
            f"{i:>5} {w['C']:>10.3g} {c['C']:>10.3g} {w['test']:>9.3f} {c['test']:>9.3f} "
            f"{w['seconds']:>7.2f} {c['seconds']:>7.2f} {w['iters']:>8d} {c['iters']:>8d}"
        )
    same_c = all(w["C"] == c["C"] for w, c in zip(warm_rows, cold_rows, strict=True))
    n_same = sum(w["C"] == c["C"] for w, c in zip(warm_rows, cold_rows, strict=True))
    print("-" * len(header))
    print(f"wall seconds   warm {t_warm:.2f}   cold {t_cold:.2f}   (best of {args.repeats})")
    print(f"CPU seconds    warm {cpu_warm:.2f}   cold {cpu_cold:.2f}")
    print(f"speed-up (cold / warm): wall {t_cold / t_warm:.2f}x   CPU {cpu_cold / cpu_warm:.2f}x")
    print(f"lbfgs iterations   warm {sum(r['iters'] for r in warm_rows)}   cold {sum(r['iters'] for r in cold_rows)}")
    print(f"identical chosen C on all layers: {same_c} ({n_same}/{len(warm_rows)})")


if __name__ == "__main__":
    main()
