"""Fitting the Multi-Modal Adapter: the official recipe (SPEC.md section 3) as the default config.

SGD (lr 0.0015, momentum 0.9, weight decay 5e-4; AdamW for a recipe that names it, CLIP-LoRA's), cosine
schedule stepped per epoch, no warm-up,
5 epochs, batch 16, last incomplete batch dropped, random-resized-crop (scale 0.08-1) + horizontal flip,
plain cross-entropy on ``exp(logit_scale) * cosine`` logits, last-epoch weights evaluated. On CUDA, AMP
(fp16 with a grad scaler, or bf16). The frozen text blocks below k run once per run (prefix cache).

Under torchrun the adapter is wrapped in DistributedDataParallel: every rank draws the same seeded
permutation, cuts it into the same global batches of ``batch_size`` and trains on its own slice of each,
so the gradient (averaged over ranks) is the one-process gradient of the global batch; rank 0 draws the
one-process augmentations, the other ranks their own (so with augmentation off, N processes give the
one-process adapter up to float rounding). The loop makes no
per-step host sync: losses stay on the device and are checked once per epoch. With a ``state_path`` the
full training state (adapter, optimiser, schedule, grad scaler, every RNG, the history so far) is saved atomically
after each epoch, and a rerun resumes from it; a non-finite loss stops training and keeps the last good state. The
result keeps every step's loss and one row per epoch (``TrainResult.history``: its mean loss, the learning rate it ran
at, its seconds), the same for a resumed run as for an uninterrupted one (the seconds aside).

The loop knows no method: it builds the one it is given (:mod:`mma.adapters.methods`), trains the parameters of
its ``objective``, calls its ``after_epoch`` at each epoch's end (before the state is saved; PromptSRC's prompt
averaging) and its ``after_training`` (MMA++'s ``alpha_eval``); a method with its own ``fit`` (the linear probe) runs
that instead.

Pay only for what trains (:mod:`mma.adapters.frozen`): the objective reads the method's inputs, the image tower's
output below the first block the method changes (``image_start``). With augmentation off (``augment=False``)
and ``cache`` on, those inputs are computed once per image (in ``cache_dir``, shared by every seed, method and
k of a run, or in memory) and the loop reads them back in the very batches it would have drawn; otherwise each
batch's frozen part runs under ``no_grad`` before the step. The loader's generator is drawn from identically
in both cases, so caching changes no number (bit for bit on the CPU; ``tests/test_frozen.py``).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from mma import distributed
from mma.errors import MmaError
from mma.io import atomic_write
from mma.probe.data.base import ImageDataset, Sample
from mma.probe.data.reading import ReadReport, collate_readable, readable_batches
from mma.probe.extract import autocast_for
from mma.probe.specs import LoadedModel

from .config import TrainConfig
from .frozen import image_part, method_inputs
from .method_base import MethodBase, TrainResult
from .methods import DEFAULT, get_method

__all__ = [
    "TrainConfig",
    "TrainResult",
    "RankBatches",
    "optimiser_for",
    "ADAMW_BETAS",
    "ADAMW_EPS",
    "sgd_step",
    "train_transform",
    "fit_adapter",
    "fit_method",
    "schedule_for",
    "effective_batch_size",
    "training_key",
]


def effective_batch_size(batch_size: int, n_samples: int, processes: int = 1) -> int:
    """The global batch for *n_samples* training images: *batch_size*, or all the images if fewer.

    Under torchrun it must split evenly over the *processes*, so a shrunk batch is rounded down to a
    multiple of them; an :class:`MmaError` if fewer images than processes are left.
    """
    batch = min(batch_size, n_samples)
    batch -= batch % processes
    if batch < 1:
        raise MmaError(
            f"{n_samples} training image(s) cannot be split over {processes} torchrun processes; use fewer "
            "processes or more shots."
        )
    return batch


def train_transform(loaded: LoadedModel, cfg: TrainConfig):
    """Random-resized-crop (scale crop_scale_min..1, bicubic) + flip + CLIP normalisation.

    With ``augment=False``, the model's own evaluation preprocessing.
    """
    if not cfg.augment:
        return loaded.preprocess
    # lazy: torchvision (with the torch._dynamo it pulls in) adds about 1.1 s to every import of mma.adapters,
    # which every job, and every refusal of a bad option, pays; only augmenting training needs it
    from torchvision import transforms as T

    pcfg = getattr(loaded.model.visual, "preprocess_cfg", {})
    mean = pcfg.get("mean", (0.48145466, 0.4578275, 0.40821073))
    std = pcfg.get("std", (0.26862954, 0.26130258, 0.27577711))
    steps = [
        T.RandomResizedCrop(
            loaded.image_size, scale=(cfg.crop_scale_min, 1.0), interpolation=T.InterpolationMode.BICUBIC
        )
    ]
    if cfg.flip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


class RankBatches(torch.utils.data.Sampler):
    """This rank's slice of every global batch: seeded shuffle, ``batch_size`` per batch, last partial dropped.

    The global batches are exactly those of ``DataLoader(shuffle=True, drop_last=True, generator=...)``
    in one process, and they consume the generator the same way, so one process and N ranks see the
    same samples in the same order.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, world: distributed.World) -> None:
        if batch_size % world.size:
            raise MmaError(
                f"The global batch size {batch_size} does not split evenly over {world.size} processes; "
                f"choose a --batch-size divisible by {world.size}."
            )
        sampler = torch.utils.data.RandomSampler(range(n), generator=generator)
        self.batches = torch.utils.data.BatchSampler(sampler, batch_size, drop_last=True)
        self.per_rank = batch_size // world.size
        self.rank = world.rank

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            yield batch[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]


def schedule_for(opt, cfg: TrainConfig):
    """Cosine over ``epochs``, stepped per epoch; with ``warmup_epochs`` (CoOp, CoCoOp, CLIP-Adapter: 1) those
    first epochs run at the constant ``warmup_lr`` and the cosine then runs from the full lr as if they had
    not happened (Dassl's constant warm-up)."""
    if not cfg.warmup_epochs:
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    w, lr = cfg.warmup_epochs, cfg.lr
    return torch.optim.lr_scheduler.LambdaLR(
        opt, functools.partial(_warm_cosine, w=w, ratio=cfg.warmup_lr / lr, n=cfg.epochs)
    )


def _warm_cosine(epoch: int, *, w: int, ratio: float, n: int) -> float:
    return ratio if epoch < w else 0.5 * (1 + math.cos(math.pi * (epoch - w) / n))


#: AdamW's betas and eps (``optimizer="adamw"``): CLIP-LoRA's ``lora.py`` passes betas (0.9, 0.999) and leaves eps
#: at PyTorch's default
ADAMW_BETAS = (0.9, 0.999)
ADAMW_EPS = 1e-8


def optimiser_for(adapter: nn.Module, cfg: TrainConfig, device: torch.device):
    """The recipe's optimiser over the method's trainable parameters, and the grad scaler (active for CUDA fp16).

    ``cfg.optimizer``: ``"sgd"`` (lr, momentum, weight decay), or ``"adamw"`` (lr, decoupled weight decay,
    :data:`ADAMW_BETAS`, :data:`ADAMW_EPS`; ``momentum`` is not read). On CUDA the step is the fused kernel, which
    takes the scaler's inf check on the device: no host sync per step.
    """
    params = [p for p in adapter.parameters() if p.requires_grad]
    fused = True if device.type == "cuda" else None
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(
            params, lr=cfg.lr, betas=ADAMW_BETAS, eps=ADAMW_EPS, weight_decay=cfg.weight_decay, fused=fused
        )
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=fused)
    return opt, torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and cfg.precision == "fp16")


def sgd_step(opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss: torch.Tensor) -> None:
    """One step of *opt* on *loss* through *scaler* (from :func:`optimiser_for`; inactive off CUDA fp16)."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()


def _seed_all(seed: int) -> torch.Generator:
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _fingerprint(
    cfg: TrainConfig, seed: int, samples: Sequence[Sample], classnames, template: str, model: str, method: str
) -> str:
    """What a saved training state must match to be resumed."""
    what = [asdict(cfg), seed, [s.ref for s in samples], [s.label for s in samples], list(classnames), template, model]
    what.append(method)
    return hashlib.sha256(json.dumps(what, default=str).encode()).hexdigest()[:16]


def training_key(
    loaded: LoadedModel,
    method: type[MethodBase],
    samples: Sequence[Sample],
    classnames,
    cfg: TrainConfig,
    *,
    seed: int,
    template: str,
    device: torch.device,
    val: Sequence[Sample] = (),
) -> str:
    """Everything a trained method depends on, hashed: two trainings with the same key give the same weights
    (the weights, the method and its values, the seed, the exact training and validation samples, the classes,
    the prompt, the device type and the number of processes)."""
    what = _fingerprint(cfg, seed, samples, classnames, template, str(loaded.spec), method.name)
    extra = [loaded.weights_id, [s.ref for s in val], torch.device(device).type, distributed.world().size]
    return hashlib.sha256(json.dumps([what, extra]).encode()).hexdigest()[:16]


def _rng_state(gen: torch.Generator) -> dict:
    """The RNGs training draws from: the loader's, torch's, Python's, and on CUDA the GPU's (a method's dropout
    draws there: MMA++, CLIP-LoRA)."""
    state = {"loader": gen.get_state(), "torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(gen: torch.Generator, state: dict) -> None:
    gen.set_state(state["loader"])
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


_RANK_STREAM = 1_000_003  # rank r > 0 draws its augmentations from seed + r * _RANK_STREAM


def _augmentation_seed(seed: int, rank: int) -> None:
    """Give every rank its own crops and flips; rank 0 keeps the one-process stream.

    The shuffle (the loader's generator) and Python's ``random`` (the MMA++ alpha draw) stay shared.
    """
    if rank:
        torch.manual_seed(seed + rank * _RANK_STREAM)


def _worker_seeder(rank: int):
    """DataLoader workers are seeded from the shared generator; offset them per rank too."""
    if not rank:
        return None
    return functools.partial(_offset_worker_seed, rank=rank)


def _offset_worker_seed(_worker_id: int, rank: int) -> None:
    torch.manual_seed(torch.initial_seed() + rank * _RANK_STREAM)


def _save_state(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, lambda p: p.write_bytes(buf.getvalue()))


def _load_state(path: Path | None, fingerprint: str) -> dict | None:
    """The saved state at *path* if it exists and belongs to this very run (else None: start afresh)."""
    if path is None or not Path(path).is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a foreign or damaged file is never trusted
        return None
    return state if isinstance(state, dict) and state.get("fingerprint") == fingerprint else None


def fit_adapter(
    loaded: LoadedModel,
    dataset: ImageDataset,
    samples: Sequence[Sample],
    classnames: Sequence[str],
    cfg: TrainConfig,
    *,
    seed: int,
    device: torch.device = torch.device("cpu"),
    template: str | None = None,
    state_path: str | Path | None = None,
) -> TrainResult:
    """Attach a fresh adapter from block ``cfg.options.k`` to ``loaded.model`` and train it on *samples*.

    *samples* are labelled 0..len(classnames)-1. The adapter stays attached on return (detach it, or use
    it for evaluation). Deterministic for a fixed seed on one device. With *state_path*, the training
    state is saved there after every epoch (rank 0) and an interrupted run resumes from it; the caller
    removes it once the results are safe. Under torchrun, call it on every rank. Fewer *samples* than
    ``cfg.batch_size`` train in batches of all of them (:func:`effective_batch_size`).
    """
    return fit_method(
        loaded, DEFAULT, dataset, samples, classnames, cfg, seed=seed, device=device, template=template,
        state_path=state_path,
    )  # fmt: skip


def fit_method(
    loaded: LoadedModel,
    method: str | type[MethodBase],
    dataset: ImageDataset,
    samples: Sequence[Sample],
    classnames: Sequence[str],
    cfg: TrainConfig,
    *,
    seed: int,
    device: torch.device = torch.device("cpu"),
    template: str | None = None,
    state_path: str | Path | None = None,
    val: Sequence[Sample] = (),
    cache_dir: str | Path | None = None,
    report: ReadReport | None = None,
) -> TrainResult:
    """Build a fresh *method* (a class or a name of :func:`mma.adapters.methods.registry`) on ``loaded.model`` and
    train it with *cfg* (:meth:`~mma.adapters.method_base.MethodBase.make_config`).

    As :func:`fit_adapter` (which is ``fit_method(loaded, mma.adapters.methods.DEFAULT, ...)``): the same loop,
    resume and torchrun rules for every method trained by SGD; a method with its own ``fit`` (the linear probe)
    runs that, with the few-shot validation samples *val*. The method stays attached on return. *cache_dir*: where
    the frozen inputs are kept on disk (module doc; None: in memory, for this call). *report*: where the unreadable
    training images are counted (:mod:`mma.probe.data.reading`; strict: the first one stops the run).
    """
    kind = get_method(method) if isinstance(method, str) else method
    if not kind.trains:
        raise MmaError(f"--method {kind.name!r} is not a trained method; it has nothing to fit.")
    if kind.fit is not None:
        if not samples:
            raise MmaError(f"Dataset {dataset.name!r} has no training images for this task; nothing can be fitted.")
        return kind.fit(loaded, dataset, samples, classnames, cfg, seed=seed, device=device, val=val, report=report)
    cfg.validate()
    if not samples:
        raise MmaError(f"Dataset {dataset.name!r} has no training images for this task; nothing can be trained.")
    effective_batch_size(cfg.batch_size, len(samples), distributed.world().size)
    template = kind.prompt_template(dataset, template)
    state_path = Path(state_path) if state_path is not None else None
    fingerprint = _fingerprint(cfg, seed, samples, classnames, template, str(loaded.spec), kind.name)
    gen = _seed_all(seed)
    adapter = kind.build(loaded, cfg, classnames).attach(loaded.model)
    _augmentation_seed(seed, distributed.world().rank)
    try:
        inputs = _inputs(loaded, adapter, dataset, samples, cfg, device, cache_dir, report)
        if report is not None:  # the frozen cache read every image once: a batch the sampler drops still counts
            for i in sorted(getattr(inputs[0], "unreadable", ())):
                report.add(samples[i].ref)
        batches = functools.partial(readable_batches, samples=samples, report=report)
        result = _train(
            loaded, dataset, inputs, batches, classnames, cfg, adapter, gen, device, template, state_path, fingerprint
        )
        if report is not None:
            report.merge_ranks()
        return result
    except BaseException:
        adapter.detach()  # an interrupted or failed run leaves the model as it found it
        raise


def _inputs(loaded, method, dataset, samples, cfg: TrainConfig, device, cache_dir, report):
    """``(reader, prefix)``: the training set as the method's inputs, read back from the frozen cache (prefix None),
    or as images with the function that turns a batch of them into inputs (None: the images are the inputs)."""
    part = image_part(loaded, method.image_start(loaded))
    cached = cfg.cache and not cfg.augment  # the eval preprocessing: the same tensor every epoch
    transform = loaded.preprocess if cached else train_transform(loaded, cfg)
    return method_inputs(
        part, loaded, dataset, samples, transform, cached=cached, device=device, precision=cfg.precision,
        folder=cache_dir, workers=cfg.workers, strict=report is not None and report.strict,
    )  # fmt: skip


def _train(loaded, dataset, inputs, batches, classnames, cfg, adapter, gen, device, template, state_path, fingerprint):
    """The training loop of :func:`fit_method` (the method is attached; resume from *state_path* if it fits).
    *batches*: :func:`~mma.probe.data.reading.readable_batches` over the training samples."""
    world = distributed.world()
    model = loaded.model
    model.eval()  # frozen trunk: no dropout / batch-norm updates; adapters have neither
    objective = adapter.objective(loaded, classnames, template, cfg)
    step_fn = objective
    if world.many:
        ids = [device.index] if device.type == "cuda" else None
        step_fn = nn.parallel.DistributedDataParallel(objective, device_ids=ids, broadcast_buffers=False)

    reader, prefix = inputs
    batch = effective_batch_size(cfg.batch_size, len(reader), world.size)
    loader = torch.utils.data.DataLoader(
        reader,
        batch_sampler=RankBatches(len(reader), batch, gen, world),
        generator=gen,
        num_workers=cfg.workers,
        worker_init_fn=_worker_seeder(world.rank),
        collate_fn=collate_readable,
        pin_memory=device.type == "cuda",
    )
    opt, scaler = optimiser_for(adapter, cfg, device)
    sched = schedule_for(opt, cfg)
    history: list[float] = []  # every step's loss
    rows: list[dict] = []  # one per epoch (:func:`_epoch_row`)
    first_epoch = last_saved = 0
    # rank 0 decides whether to resume, so every rank runs the same epochs (and collectives)
    saved = distributed.broadcast(_load_state(state_path, fingerprint) if world.main else None)
    if saved is not None:
        adapter.load_state_dict(saved["adapter"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        rngs = saved["rng"]
        _set_rng_state(gen, rngs[world.rank] if len(rngs) == world.size else rngs[0])
        history, first_epoch = list(saved["losses"]), int(saved["epoch"])
        rows = _saved_rows(saved, history, first_epoch)
        last_saved = first_epoch
    start = time.perf_counter()
    for epoch in range(first_epoch, cfg.epochs):
        lr, began = opt.param_groups[0]["lr"], time.perf_counter()  # the lr this epoch runs at (stepped per epoch)
        losses: list[torch.Tensor] = []
        for _, images, labels in batches(loader):
            if images is None:
                if world.many:  # the other ranks would wait for this one's gradients forever
                    raise MmaError(f"A whole batch of dataset {dataset.name!r} was unreadable on rank {world.rank}.")
                continue
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            with autocast_for(device, cfg.precision):
                loss = step_fn(prefix(images) if prefix is not None else images, labels)
            sgd_step(opt, scaler, loss)
            losses.append(loss.detach())
        sched.step()
        if not losses:
            raise MmaError(f"No readable training images in dataset {dataset.name!r}; nothing was trained.")
        # one host sync per epoch: the rank-averaged losses (= the one-process losses of the global batches)
        epoch_losses = distributed.all_sum(torch.stack(losses).float()) / world.size
        if not torch.isfinite(epoch_losses).all():
            kept = (
                f"the state after epoch {last_saved} is kept in {str(state_path)!r}"
                if last_saved
                else "no epoch finished, so no state was saved"
            )
            raise MmaError(
                f"Training diverged on {dataset.name!r}: a non-finite loss in epoch {epoch + 1}; {kept}. "
                "Lower --lr or --alpha (a changed setting starts afresh)."
            )
        adapter.after_epoch(epoch + 1, cfg.epochs)  # before the state is saved: a resumed run ends the same
        step_losses = epoch_losses.cpu().tolist()
        history += step_losses
        rows.append(_epoch_row(epoch + 1, step_losses, lr, time.perf_counter() - began))
        if state_path is not None:
            _save_epoch(state_path, world, fingerprint, epoch + 1, adapter, opt, sched, scaler, gen, history, rows)
            last_saved = epoch + 1
    adapter.after_training(cfg)
    return TrainResult(adapter, len(history), time.perf_counter() - start, history[-1], history, batch, rows)


def _epoch_row(epoch: int, step_losses: list[float], lr: float, seconds: float) -> dict:
    """One row of :attr:`TrainResult.history`: the epoch (1-based), its steps, their mean loss, the learning rate it
    ran at and its wall-clock seconds (every value but ``seconds`` is the same for a resumed run)."""
    return {"epoch": epoch, "steps": len(step_losses), "loss": sum(step_losses) / len(step_losses), "lr": lr,
            "seconds": round(seconds, 3)}  # fmt: skip


def _saved_rows(saved: dict, losses: list[float], epochs: int) -> list[dict]:
    """The per-epoch rows of a saved state (a state saved before they were kept: rebuilt from its step losses, the
    learning rate and the seconds unknown)."""
    if "history" in saved:
        return [dict(row) for row in saved["history"]]
    per = len(losses) // max(epochs, 1)
    return [{**_epoch_row(e + 1, losses[e * per : (e + 1) * per], 0.0, 0.0), "lr": None, "seconds": None}
            for e in range(epochs)]  # fmt: skip


def _save_epoch(path, world, fingerprint, epoch, adapter, opt, sched, scaler, gen, history, rows) -> None:
    """Rank 0 writes the state after *epoch* with every rank's RNG states (the others only send theirs)."""
    rngs = distributed.all_gather(_rng_state(gen))
    if world.main:
        _save_state(
            path,
            {
                "fingerprint": fingerprint,
                "epoch": epoch,
                "adapter": adapter.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": rngs,
                "losses": history,
                "history": rows,
            },
        )
