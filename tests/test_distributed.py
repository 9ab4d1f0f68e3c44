"""torchrun: 2 gloo processes on the CPU give the same store and the same adapter as 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mma import distributed
from mma.adapters.train import RankBatches
from mma.errors import MmaError
from mma.probe import load_model
from mma.probe.data import load_datasets
from mma.probe.extract import extract_images

PROBE = [
    "probe", "layers", "--model", "mma-tiny:random", "--data", "builtin:colors,scenes,shapes",
    "--samples", "30", "--seeds", "1,2", "--batch-size", "16", "--device", "cpu",
]  # fmt: skip
TRAIN = ["train-selected", "--k", "4", "--data", "builtin:colors,scenes", "--seeds", "1", "--device", "cpu"]


def test_aligned_batches_split_the_pending_rows_exactly_once_over_ranks():
    pending = np.array([0, 1, 2, 5, 6, 7, 8, 9, 16, 17, 40])
    batches = distributed.shard_batches(pending, 4, distributed.World())
    assert [b.tolist() for b in batches] == [[0, 1, 2], [5, 6, 7], [8, 9], [16, 17], [40]]  # row // 4 groups
    for size in (1, 2, 3, 7):
        shares = [distributed.shard_batches(pending, 4, distributed.World(r, size)) for r in range(size)]
        assert [b.tolist() for share in shares for b in share] == [b.tolist() for b in batches]


def test_rank_batches_are_the_one_process_shuffle_cut_into_slices():
    n, batch = 21, 6
    reference = torch.utils.data.DataLoader(
        range(n), batch_size=batch, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(3)
    )
    expected = [b.tolist() for _ in range(3) for b in reference]  # 3 epochs
    for size in (1, 2, 3):
        per_rank = []
        for rank in range(size):
            gen = torch.Generator().manual_seed(3)
            sampler = RankBatches(n, batch, gen, distributed.World(rank, size))
            loader = torch.utils.data.DataLoader(range(n), batch_sampler=sampler, generator=gen)
            per_rank.append([b.tolist() for _ in range(3) for b in loader])
        assert [sum(parts, []) for parts in zip(*per_rank)] == expected
    with pytest.raises(MmaError, match="does not split evenly over 4 processes"):
        RankBatches(n, batch, torch.Generator(), distributed.World(0, 4))


def _stores(out: Path) -> dict[str, dict]:
    return {
        d.name: {name: (d / name).read_bytes() for name in ("blocks.npy", "proj.npy", "samples.json", "manifest.json")}
        for d in sorted((out / "store").iterdir())
    }


def test_store_from_two_ranks_equals_the_store_from_one_process(tmp_path, run_cli):
    run_cli(PROBE + ["--out", str(tmp_path / "one")], 1)
    two = run_cli(PROBE + ["--out", str(tmp_path / "two")], 2)
    one_store, two_store = _stores(tmp_path / "one"), _stores(tmp_path / "two")
    assert len(one_store) == 6 and one_store == two_store  # 3 datasets x (image, text), byte for byte
    for name in ("layers.csv", "layers_summary.csv"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert two.stdout.count("Selected k") == 1  # rank 0 alone reports
    assert not list((tmp_path / "two" / "store").rglob("progress-*.json"))  # folded into the manifests


def test_two_rank_training_equals_one_process_and_resumes_after_a_killed_rank(tmp_path, run_cli):
    config = tmp_path / "train.json"
    config.write_text(json.dumps({"augment": False, "epochs": 2, "shots": 4, "batch_size": 8}))
    for n in (1, 2):
        run_cli(TRAIN + ["--config", str(config), "--out", str(tmp_path / f"p{n}")], n)
    # rank 1 killed in scenes' epoch 2 (colors: 3 steps per epoch, scenes: 2), then 2 ranks resume
    cut = TRAIN + ["--config", str(config), "--out", str(tmp_path / "cut")]
    _kill_rank_1(tmp_path, "step", 3 * 2 + 2 + 1, cut)
    (state,) = (tmp_path / "cut" / "state").iterdir()
    assert "scenes" in state.name and torch.load(state, weights_only=True)["epoch"] == 1
    run_cli(cut, 2)
    for path in sorted((tmp_path / "p2" / "checkpoints").iterdir()):
        assert path.read_bytes() == (tmp_path / "cut" / "checkpoints" / path.name).read_bytes()
    ckpts = sorted((tmp_path / "p1" / "checkpoints").iterdir())
    assert len(ckpts) == 2
    for path in ckpts:
        one, two = load_file(path), load_file(tmp_path / "p2" / "checkpoints" / path.name)
        for name in one:
            torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-6)
    for path in sorted((tmp_path / "p1" / "results").rglob("*.json")):
        one, two = (
            json.loads(path.read_text()),
            json.loads((tmp_path / "p2" / path.relative_to(tmp_path / "p1")).read_text()),
        )
        if one["method"] == "zeroshot":  # evaluation shards count exactly
            assert two["metrics"] == one["metrics"]
        else:
            assert two["metrics"] == pytest.approx(one["metrics"], abs=0.5)
            assert two["train"]["final_loss"] == pytest.approx(one["train"]["final_loss"], rel=1e-4)
            assert (one["train"]["processes"], two["train"]["processes"]) == (1, 2)
            assert two["train"]["steps"] == one["train"]["steps"]


def test_a_store_left_by_two_ranks_is_finished_by_one_process(tmp_path, monkeypatch):
    """Rank 0 of 2 died at its first image, rank 1 finished its share: one process later completes the entry."""
    from mma.probe.data.reading import ImageReader

    loaded = load_model("mma-tiny:random")
    (d,) = load_datasets("builtin:shapes")
    samples = d.train[:70]
    full = extract_images(loaded, d, samples, tmp_path / "full", batch_size=16)
    monkeypatch.setattr(distributed, "barrier", lambda: None)
    monkeypatch.setattr(distributed, "world", lambda: distributed.World(0, 2))
    with monkeypatch.context() as m:
        m.setattr(ImageReader, "__getitem__", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            extract_images(loaded, d, samples, tmp_path / "cut", batch_size=16)  # rank 0 created the entry
    monkeypatch.setattr(distributed, "world", lambda: distributed.World(1, 2))
    with pytest.raises(MmaError, match="incomplete after extraction"):  # nobody finalised rank 0's share
        extract_images(loaded, d, samples, tmp_path / "cut", batch_size=16)
    (folder,) = (tmp_path / "cut").iterdir()
    assert json.loads((folder / "progress-1.json").read_text())["ranges"] == [[48, 70]]  # batches 4 and 5 of 5
    monkeypatch.undo()
    resumed = extract_images(loaded, d, samples, tmp_path / "cut", batch_size=16)
    assert resumed.done and resumed.manifest["done_ranges"] == [[0, 70]] and resumed.manifest["rows_done"] == 70
    assert not list(folder.glob("progress-*.json"))
    for name in ("blocks.npy", "proj.npy"):
        assert (resumed.folder / name).read_bytes() == (full.folder / name).read_bytes()


class _Noise(torch.utils.data.Dataset):
    """Stands in for a random augmentation: each item is a draw from the process's torch RNG."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.rand(1)


def _draws(rank: int, workers: int) -> torch.Tensor:
    from mma.adapters.train import _augmentation_seed, _worker_seeder

    torch.manual_seed(7)
    _augmentation_seed(7, rank)
    loader = torch.utils.data.DataLoader(
        _Noise(), batch_size=4, num_workers=workers, worker_init_fn=_worker_seeder(rank),
        generator=torch.Generator().manual_seed(7),
    )  # fmt: skip
    return next(iter(loader))


@pytest.mark.parametrize("workers", [0, 1])
def test_each_rank_draws_its_own_augmentations_and_rank_0_the_one_process_ones(workers):
    torch.manual_seed(7)
    plain = next(
        iter(
            torch.utils.data.DataLoader(
                _Noise(), batch_size=4, num_workers=workers, generator=torch.Generator().manual_seed(7)
            )
        )
    )
    rank0, rank1 = _draws(0, workers), _draws(1, workers)
    assert torch.equal(rank0, plain) and not torch.equal(rank1, rank0)


RANK_KILLER = """
import os, signal, sys
import torch
from mma.probe.data.reading import ImageReader
target, n, calls = sys.argv[1], int(sys.argv[2]), [0]
owner, name = (ImageReader, "__getitem__") if target == "read" else (torch.optim.SGD, "step")
original = getattr(owner, name)
def counted(self, *args, **kwargs):
    calls[0] += 1
    if os.environ["RANK"] == "1" and calls[0] == n:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, *args, **kwargs)
setattr(owner, name, counted)
from mma.app.cli import app
app(sys.argv[3:], prog_name="mma")
"""


def _kill_rank_1(tmp_path, target: str, n: int, args: list[str]) -> None:
    """Run the CLI on 2 ranks and SIGKILL rank 1 at its n-th image read or optimiser step."""
    script = tmp_path / "killer.py"
    script.write_text(RANK_KILLER)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launcher, target, str(n), *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0  # torchrun stops rank 0 once rank 1 died


def test_a_killed_rank_leaves_a_store_one_process_finishes_identically(tmp_path, run_cli):
    args = ["probe", "layers", "--model", "mma-tiny:random", "--data", "builtin:colors,scenes", "--samples", "24"]
    args += ["--seeds", "1", "--batch-size", "8", "--device", "cpu", "--out", str(tmp_path / "cut")]
    _kill_rank_1(tmp_path, "read", 12, args)  # rank 1 reads 8 images per dataset: it dies in its scenes batch
    (scenes,) = (tmp_path / "cut" / "store").glob("scenes-image-*")
    assert not json.loads((scenes / "manifest.json").read_text())["done"]  # rank 1's batch never arrived
    run_cli(args, 1)  # resumed by one process (one thread, as each torchrun rank had: CPU sums round per thread count)
    run_cli(args[:-1] + [str(tmp_path / "full")], 1)
    assert _stores(tmp_path / "cut") == _stores(tmp_path / "full")
    assert (tmp_path / "cut" / "layers.csv").read_bytes() == (tmp_path / "full" / "layers.csv").read_bytes()
