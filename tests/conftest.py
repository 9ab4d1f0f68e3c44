"""Shared fixtures: a private cache folder per test session, tiny random models, tiny datasets."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("XDG_CACHE_HOME", os.path.join(os.path.dirname(__file__), ".cache-tests"))
torch.set_num_threads(2)


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
