"""One helper seeds Python's ``random``, NumPy and torch together; every output records its seed. One check
refuses a seed list that is empty or repeats a seed (a repeat would silently run once), for every job."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch

from mma.errors import MmaError

__all__ = ["seed_everything", "check_seeds"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def check_seeds(seeds: Sequence[int]) -> None:
    """One sentence for an empty ``--seeds`` or one that repeats a seed."""
    if not seeds:
        raise MmaError("--seeds is empty; give at least one seed, e.g. --seeds 1,2,3.")
    if len(set(seeds)) != len(seeds):
        raise MmaError(f"--seeds {list(seeds)} repeats a seed; give distinct seeds.")
