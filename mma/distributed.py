"""Many processes: the same commands under ``torchrun``, detected from its environment variables.

``torchrun --nproc_per_node N`` (or a multi-node launch) sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``.
:func:`setup` starts the process group once: ``nccl`` when the job runs on CUDA (each process takes the GPU
``cuda:LOCAL_RANK``), ``gloo`` on the CPU. Without those variables everything below is the one-process case:
rank 0 of 1, and every collective is a no-op, so the jobs have a single code path.

Who does what (see the README's "On a GPU, many GPUs, many machines"):

* extraction: every rank extracts a disjoint share of the store's pending rows; rank 0 finalises the
  manifest after a barrier;
* training: the adapter is wrapped in DistributedDataParallel, each rank reads its slice of every global
  batch, and only rank 0 writes checkpoints and results;
* evaluation: every rank classifies its share of the batches one process would run; the counts are summed;
* probing (scikit-learn on the stored features) and plotting run on rank 0 alone.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from mma.errors import MmaError

__all__ = [
    "World",
    "world",
    "launched",
    "setup",
    "barrier",
    "all_sum",
    "all_gather",
    "broadcast",
    "shard",
    "shard_batches",
]


def _timeout() -> timedelta:
    """How long a collective waits for a rank that does not arrive (``MMA_DIST_TIMEOUT_MIN``, default 30)."""
    text = os.environ.get("MMA_DIST_TIMEOUT_MIN", "30")
    try:
        minutes = float(text)
    except ValueError:
        raise MmaError(f"MMA_DIST_TIMEOUT_MIN={text!r} is not a number of minutes.") from None
    return timedelta(minutes=minutes)


@dataclass(frozen=True)
class World:
    """This process's place among the launched processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes shared outputs and prints."""
        return self.rank == 0

    @property
    def many(self) -> bool:
        return self.size > 1


def world() -> World:
    """This process's place in the joined process group; rank 0 of 1 before :func:`setup` or without torchrun."""
    if not _active():
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def launched() -> World:
    """The launch environment (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` as torchrun sets them)."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        size = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise MmaError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them).") from None
    if not (size >= 1 and 0 <= rank < size and local >= 0):
        raise MmaError(f"RANK={rank} is not valid for WORLD_SIZE={size}; launch with torchrun.")
    return World(rank, size, local)


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group when launched by torchrun; returns this process's world and device.

    On CUDA each process uses ``cuda:LOCAL_RANK`` and the ``nccl`` backend; on the CPU, ``gloo``.
    Idempotent: a second call (e.g. two jobs in one process) reuses the group.
    """
    w = launched()
    if not w.many:
        return w, device
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if w.local_rank < count:
            device = torch.device("cuda", w.local_rank)
        elif count == 1:  # a launcher that shows each process only its own GPU (e.g. SLURM --gpus-per-task)
            device = torch.device("cuda", 0)
        else:
            raise MmaError(f"LOCAL_RANK={w.local_rank} but this machine shows {count} GPU(s); lower --nproc_per_node.")
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=_timeout())
        atexit.register(_shutdown)
    return w, device


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if _active():
        dist.barrier()


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks (returns *values* itself in one process)."""
    if not _active():
        return values
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    buf = values.to(on, copy=True)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(values.device)


def broadcast(obj):
    """Rank 0's *obj* on every rank (a picklable object; *obj* itself in one process)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj) -> list:
    """Every rank's *obj* (picklable), in rank order; ``[obj]`` in one process."""
    if not _active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shard_batches(rows: np.ndarray, batch_size: int, w: World | None = None) -> list[np.ndarray]:
    """This rank's batches of *rows* (ascending indices), batches cut where ``row // batch_size`` changes.

    These are exactly the batches one process would run from row 0, dealt out in contiguous blocks, so
    the numbers do not depend on how many processes share the work (batch-dependent kernels included).
    """
    rows = np.asarray(rows, dtype=np.int64)
    if not len(rows):
        return []
    batches = np.split(rows, np.flatnonzero(np.diff(rows // batch_size)) + 1)
    return shard(batches, w)


def shard(items: list, w: World | None = None) -> list:
    """This rank's contiguous share of *items* (the first ``len % size`` ranks get one more)."""
    w = w or world()
    n, size = len(items), w.size
    start = w.rank * (n // size) + min(w.rank, n % size)
    return items[start : start + n // size + (w.rank < n % size)]
