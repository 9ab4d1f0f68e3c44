"""The interface every few-shot adaptation method shares (the registry is :mod:`mma.adapters.methods`).

The few-shot adaptation methods mma runs through one data path, one draw and one evaluation.

Every method shares one small interface (DESIGN.md, "Growing the rooms"); training loops, protocols,
checkpoints and jobs work through it and never branch on a method's name. Adding a method is one module
plus one line in :data:`METHODS`.

=================  ==============================================================================================
method             what it learns (ViT-B/16 trainable parameters)
=================  ==============================================================================================
``zeroshot``       nothing: the frozen model with the dataset's prompt (0)
``mma``            the Multi-Modal Adapter from block k (:mod:`mma.adapters.mma`; 674,560 at k = 5)
``coop``           16 context vectors shared by all classes, class token at the end (:mod:`.coop`; 8,192)
``cocoop``         CoOp's 4 context vectors plus an image-conditioned meta-network (:mod:`.coop`; 35,360)
``clip-adapter``   a residual bottleneck MLP on the image feature (:mod:`.clip_adapter`; 131,072)
``linear-probe``   logistic regression on the image feature, C chosen on the few-shot val split
                   (:mod:`.linear_probe`; 512 x classes + classes); it cannot name unseen classes
=================  ==============================================================================================

A method class (an ``nn.Module``) provides:

* ``name``, ``paper`` (its published training values, on top of :class:`~mma.adapters.train.TrainConfig`'s
  defaults), ``uses`` (the TrainConfig fields it reads: only these are resolved, printed and recorded),
  ``names_unseen_classes`` (False: novel classes and other datasets' classes are "not applicable");
* ``build(loaded, cfg, classnames)``: a fresh method for the loaded model, its trunk frozen, on its device;
* ``attach(model)`` / ``detach()``: whatever it changes in the model (forward hooks), undone exactly;
* ``objective(loaded, classnames, template, cfg)``: an ``nn.Module`` whose only parameters are the method's,
  mapping ``(images, labels)`` to the training loss (what DDP wraps);
* ``classifier(loaded, classnames, template, device)``: ``images -> logits`` for evaluation, or None when
  the model as it is (hooks attached) is evaluated by the zero-shot code (MMA);
* ``config()`` / ``restore(config, loaded)``: JSON-able values to rebuild it from a checkpoint;
* ``fit`` (optional): a training procedure of its own instead of the SGD loop (the linear probe).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mma.errors import MmaError

__all__ = [
    "ZERO_SHOT",
    "MethodBase",
    "ClassifierObjective",
    "COMMON_FIELDS",
    "WARMUP",
    "freeze",
    "model_device_dtype",
    "feature_width",
    "check_feature_width",
]

ZERO_SHOT = "zeroshot"

#: TrainConfig fields every SGD-trained method reads (MMA's own list is in mma.adapters.mma).
COMMON_FIELDS = (
    "lr",
    "momentum",
    "weight_decay",
    "epochs",
    "batch_size",
    "shots",
    "crop_scale_min",
    "flip",
    "augment",
    "precision",
    "workers",
    "warmup_epochs",
    "warmup_lr",
)
#: the constant warm-up epoch of CoOp's Dassl configs, which CoCoOp and CLIP-Adapter's trainer share
WARMUP = {"warmup_epochs": 1, "warmup_lr": 1e-5}


def freeze(model: nn.Module) -> None:
    """Every parameter of *model* stops requiring grad (the trunk of every method is frozen)."""
    for p in model.parameters():
        p.requires_grad_(False)


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype of *model*'s first floating parameter."""
    ref = next((p for p in model.parameters() if p.is_floating_point()), None)
    if ref is None:
        return torch.device("cpu"), torch.float32
    return ref.device, ref.dtype


def feature_width(loaded) -> int:
    """The width of the features the model returns (one short text through the frozen text tower)."""
    model = loaded.model
    with torch.no_grad():
        return int(model.encode_text(loaded.tokenizer(["a"]).to(model_device_dtype(model)[0])).shape[-1])


def check_feature_width(name: str, config, loaded, *, fitted: bool = False) -> None:
    """Refuse a checkpoint of method *name* whose ``embed_dim`` is not this model's feature width."""
    width = feature_width(loaded)
    if config["embed_dim"] != width:
        done, made = ("fitted", "fitted") if fitted else ("trained", "built")
        raise MmaError(
            f"The {name} checkpoint was {done} on {config['embed_dim']}-wide features, but this model's "
            f"are {width} wide (valid: the model it was {made} for)."
        )


class MethodBase(nn.Module):
    """What the methods other than MMA share: no hooks unless they add some, a CLIP-style loss, a classifier."""

    name: ClassVar[str] = ""
    paper: ClassVar[dict] = {}
    uses: ClassVar[tuple[str, ...]] = COMMON_FIELDS
    names_unseen_classes: ClassVar[bool] = True
    fit = None  # a method with its own training procedure sets a function here (see linear_probe)

    def attach(self, model: nn.Module) -> MethodBase:
        return self

    def detach(self) -> None:
        return None

    @contextlib.contextmanager
    def attached(self, model: nn.Module) -> Iterator[MethodBase]:
        self.attach(model)
        try:
            yield self
        finally:
            self.detach()

    def can_classify(self, classnames: Sequence[str]) -> bool:
        """Whether the method can name these classes (the linear probe: only those it was fitted on)."""
        return True

    def num_parameters(self) -> int:
        """Number of trainable parameters of the method (the frozen trunk not counted)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # the training loss and the evaluation logits, from one function: the tapped path cannot drift
    def logits(self, model: nn.Module, images: torch.Tensor, head: Any, *, train: bool) -> torch.Tensor:
        raise NotImplementedError

    def head(self, loaded, classnames: Sequence[str], template: str, device: torch.device, *, train: bool) -> Any:
        """What :meth:`logits` needs besides the images (tokens, or frozen text features)."""
        raise NotImplementedError

    def objective(self, loaded, classnames: Sequence[str], template: str, cfg) -> nn.Module:
        device = model_device_dtype(loaded.model)[0]
        return ClassifierObjective(self, loaded.model, self.head(loaded, classnames, template, device, train=True))

    def classifier(
        self, loaded, classnames: Sequence[str], template: str, device: torch.device
    ) -> Callable[[torch.Tensor], torch.Tensor] | None:
        with torch.no_grad():
            head = self.head(loaded, classnames, template, device, train=False)

        def predict(images: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return self.logits(loaded.model, images, head, train=False)

        return predict


class ClassifierObjective(nn.Module):
    """Cross-entropy of a method's logits; its only parameters are the method's (the trunk sits in a tuple)."""

    def __init__(self, method: MethodBase, model: nn.Module, head: Any) -> None:
        super().__init__()
        self.method = method
        self._frozen = (model, head)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        model, head = self._frozen
        return F.cross_entropy(self.method.logits(model, images, head, train=True).float(), labels)
