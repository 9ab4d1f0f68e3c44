"""Shared fixtures: a private cache folder per test session, tiny random models, tiny datasets."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys

import pytest
import torch
from hypothesis import settings

os.environ.setdefault("XDG_CACHE_HOME", os.path.join(os.path.dirname(__file__), ".cache-tests"))
torch.set_num_threads(2)

# Property tests are derandomised: every run (CI included) tries the same examples, so a test can fail only
# through a code change, never through a new random draw. HYPOTHESIS_PROFILE=explore searches afresh.
settings.register_profile("deterministic", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


def patch_everywhere(monkeypatch, target: str, replacement) -> object:
    """Replace the function ``"module.name"`` in its module and in every loaded module that imported it by name
    (``from module import name``), so a tripwire or a counter sees every call whatever the import style.
    Returns the original.

    The application's modules (which the CLI imports only inside its commands) are loaded first: one loaded
    while the patch is active would keep the replacement after the patch is undone.
    """
    import mma.app

    for info in pkgutil.walk_packages(mma.app.__path__, "mma.app."):
        importlib.import_module(info.name)
    module, name = target.rsplit(".", 1)
    original = getattr(importlib.import_module(module), name)
    for mod in list(sys.modules.values()):
        if getattr(mod, name, None) is original:
            monkeypatch.setattr(mod, name, replacement)
    return original


def run_mma(*args, env=None) -> tuple[int, str]:
    """``(exit code, output)`` of the CLI in this process (typer's runner), every argument as a string."""
    from typer.testing import CliRunner

    from mma.app.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    return result.exit_code, result.output


def one_line_error(code: int, out: str, message: str) -> None:
    """The CLI refused with exit 2 and one line, ``Error: ...`` holding *message*, and no traceback."""
    assert code == 2, out
    assert out.startswith("Error: ") and out.count("\n") == 1 and "Traceback" not in out, out
    assert message in out, out


def tripwire(monkeypatch, *targets: str) -> None:
    """Fail the test if the real work starts (the refusal must come before it): every *target* raises."""

    def boom(*args, **kwargs):
        raise AssertionError("work started before the refusal")

    for target in targets:
        patch_everywhere(monkeypatch, target, boom)


def colour_folder(root, colours: dict, counts: dict, *, seed: int, noise: int, size: int):
    """An image-folder dataset ``root/<split>/<class>/<i>.png``: for each split of *counts* (``{"train": n, ...}``,
    in order) n images per class of uniform noise in [-noise, noise) around the class's RGB colour, *size* px,
    all drawn from one generator seeded with *seed*. Returns *root*."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    for split, n in counts.items():
        for name, rgb in colours.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                shift = torch.randint(-noise, noise, (size, size, 3), generator=g)
                arr = (torch.tensor(rgb).view(1, 1, 3) + shift).clamp(0, 255).to(torch.uint8).numpy()
                Image.fromarray(arr).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def tiny_random():
    """The embedded architecture with seeded random weights."""
    from mma.probe import load_model

    return load_model("mma-tiny:random")


@pytest.fixture(scope="session")
def tiny_trained():
    """The embedded default model with its shipped weights."""
    from mma.probe import load_model

    return load_model()


@pytest.fixture(scope="session")
def vit_b32():
    """A random-init ViT-B-32 (open_clip's own config), for reference checks against open_clip."""
    from mma.probe import load_model

    return load_model("ViT-B-32")


def _run_cli(args: list[str], processes: int = 1) -> subprocess.CompletedProcess:
    """Run the CLI in 1 process, or under torchrun with *processes* gloo ranks (one thread each, as torchrun sets)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "mma"]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        launcher += ["-m", "mma"]
    done = subprocess.run(launcher + [str(a) for a in args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return done


@pytest.fixture(scope="session")
def run_cli():
    """``run_cli(args, processes=1)``: the CLI as a subprocess, under torchrun when *processes* > 1."""
    return _run_cli


def _one_and_two_ranks(args: list[str], root, table: str, banner: str) -> list:
    """The CLI run once in one process and once under 2 gloo ranks, augmentation off (so both fit the same
    adapter up to rounding); rank 0 alone prints *banner*. Returns the two runs' *table* CSVs as DataFrames."""
    import pandas as pd

    config = root / "noaug.json"
    config.write_text('{"augment": false}')
    tables = []
    for processes in (1, 2):
        out = root / f"p{processes}"
        done = _run_cli([*args, "--config", str(config), "--out", str(out)], processes)
        assert done.stdout.count(banner) == 1
        tables.append(pd.read_csv(out / table))
    return tables


@pytest.fixture(scope="session")
def one_and_two_ranks():
    """``one_and_two_ranks(args, root, table, banner)``: *table* of the CLI in 1 process and under 2 ranks."""
    return _one_and_two_ranks
