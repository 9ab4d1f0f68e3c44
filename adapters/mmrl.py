"""MMRL (Guo and Gu, CVPR 2025): a shared representation space put into the upper blocks of both towers.

A learnable space of ``K`` tokens ``R`` (``K x d_r``, N(0, 0.02)) is mapped into each tower by one linear layer
per block from the start layer on (its "representation aligners"; each starts as a copy of one default-initialised
``nn.Linear``, as the official ``_get_clones``)::

    R_v^j = F_v^j(R)   (d_r -> image width),   j = k_image .. L        R_t^j = F_t^j(R)   (d_r -> text width)

* **image tower**: at block ``k_image`` the ``K`` tokens join the class token and the patches; at every later block
  they are replaced by that block's ``R_v^j`` (what the block before made of them is dropped, as the official code
  does); after the last block they are taken out again, so the tower's own pooling, ``ln_post`` and ``proj`` give
  the **class-token feature** ``f_c``. Their outputs of the last block give the **representation feature**
  ``f_r = mean_K(ln_post(tokens)) @ P_r``, with ``P_r`` (image width x feature width) learned and initialised as the
  official ``proj_rep`` (``width ** -0.5 * N(0, 1)``); the frozen ``proj`` stays the class token's;
* **text tower**: at block ``k_text`` the ``K`` tokens are inserted right after the start-of-text token, at later
  blocks they replace positions ``1..K``; the causal mask is lengthened to match and the tokens are taken out after
  the last block, so the end-of-text readout is the tower's own.

The official code inserts the image tokens right after the class token; :mod:`mma.adapters.prompt_layers` appends
them after the patches. The image tower has no mask and no positions after its embedding, so the two differ only
in the order attention sums its terms (``tests/test_mmrl.py`` checks the logits against the official order).

Training (``trainers/mmrl.py``, ``MMRL_Loss``), with ``s = exp(logit_scale)`` (100 for CLIP's weights, the official
constant), ``t`` the text features with the tokens in and ``f_c0``, ``t_0`` the frozen model's own features::

    L = alpha * CE(s cos(f_c, t)) + (1 - alpha) * CE(s cos(f_r, t))
        + reg_weight * (1 - mean cos(f_c, f_c0)) + reg_weight * (1 - mean cos(t, t_0))

``t_0`` is the frozen text tower on the same prompts (once per run); ``f_c0`` the frozen image tower on the same
batch (every step, no gradient; from the frozen inputs below ``k_image`` it is blocks ``k_image..L`` again with
the tokens out, :meth:`MMRL.suspended`).

Decoupled inference (the official ``test``): on the classes it was trained on, the logits are
``alpha * s cos(f_c, t) + (1 - alpha) * s cos(f_r, t)``; on any other class set (novel classes, another dataset's,
the union of base and novel classes of the all-classes evaluation, which it cannot split) the class-token logits
``s cos(f_c, t)`` alone. The method decides it from the class names: it records the ones it was trained on (its
config's ``classnames``) and fuses when the names it is asked about are the same set (:meth:`MMRL.fuses`). The
tokens stay in both towers either way. **[difference]** The official code switches on the dataset's name in its
cross-dataset task: ImageNet-V2 and ImageNet-Sketch, which share ImageNet's 1000 names, are read there by the
class token alone; here, with the same names, they are fused.

Depth: the official ``REP_LAYERS`` lists the blocks that receive tokens, ``[6, ..., 12]`` in every released config,
one list for both towers: ``k = 6``. **[ours]** Each tower may start at its own block (``k_image``, ``k_text``,
:mod:`mma.adapters.depth`), with one aligner per block of that tower from its start on.

The frozen model is never the method at some parameter value: the tokens take part in every attention from the
start block on whatever they hold (a zero token still has the key of its LayerNorm's bias). What is exact instead
(``tests/test_mmrl.py``): everything below the start blocks is the frozen model's, the regulariser's targets are
the frozen model's features, and :meth:`MMRL.detach` leaves the model exactly as it was.

Hooks: the tokens go in and out through :class:`~mma.adapters.prompt_layers.TowerPrompts` (pre-hooks on blocks
``k..L``, prepended, and a forward hook on the last block that takes them out). The representation tokens' outputs
are read by a forward hook on the last image block registered *before* that removal. Below ``k_image`` the image
tower is frozen (:meth:`MMRL.image_start`); :func:`mma.adapters.frozen.from_block` swaps block ``k``'s input in
with a prepended pre-hook, so the tokens are put into the swapped input.

Published values (``github.com/yunncheng/MMRL``): AdamW (Dassl's ``OPTIM.NAME "adamw"``: betas 0.9 / 0.999, eps
1e-8, weight decay 5e-4, which the loop's ``optimizer="adamw"`` runs) at lr 0.001, cosine schedule with one warm-up
epoch at a constant 1e-5, random-resized crops of scale 0.5..1 and flips, ``K = 5``, ``d_r = 512``, ``alpha = 0.7``;
base-to-novel 10 epochs in batches of 4 with ``REG_WEIGHT`` 1.0 (``vit_b16.yaml``), few-shot 50 epochs in batches of
32 with 0.5 (``vit_b16_few_shot.yaml``), cross-dataset and domain generalisation 1 epoch, no warm-up, batches of 32,
0.2 (``vit_b16_cross_datasets.yaml`` and ``scripts/mmrl/cross_datasets_train.sh``); per training dataset
``trainers/config.py`` sets ``REG_WEIGHT`` (and ``REP_DIM`` 2048 on EuroSAT); ImageNet trains in batches of 32
(``vit_b16_imagenet.yaml``). The official runs use AMP (``PREC "amp"``), as the device default here on CUDA.
**Left out**: a dataset's values cannot differ per protocol here, so ImageNet's 5 epochs (base-to-novel and
few-shot, ``vit_b16_imagenet.yaml``) and its base-to-novel ``REG_WEIGHT`` 0.5 (``trainers/config.py``; few-shot's
protocol value is 0.5 too) are not set: they would override the cross-dataset protocol's 1 epoch and 0.2, which
always trains on ImageNet. ImageNet base-to-novel therefore runs 10 epochs at 1.0, few-shot 50 epochs.

ViT-B/16 (image width 768, text 512, features 512), ``k = 6``, ``K = 5``, ``d_r = 512``: ``5 x 512`` tokens
+ ``7 x (512 x 768 + 768)`` image aligners + ``7 x (512 x 512 + 512)`` text aligners + ``768 x 512`` for ``P_r``
= 4,992,256 trainable parameters.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mma.errors import MmaError
from mma.probe.layers import TOWERS, layer_maps
from mma.probe.textcut import encode_text

from .config import Options, TrainConfig
from .depth import DepthOptions
from .frozen import image_part
from .method_base import WARMUP, MethodBase, check_feature_width, feature_width, freeze, model_device_dtype
from .prompt_layers import TowerPrompts
from .text_cache import TextPrefixCache

__all__ = ["MMRL", "MMRLOptions", "MMRLObjective"]


@dataclass
class MMRLOptions(DepthOptions):
    """MMRL's own options (the official ``TRAINER.MMRL``); ``k``, ``k_image``, ``k_text``: the start layers."""

    k: int = 6  # REP_LAYERS [6..12]
    n_tokens: int = 5  # N_REP_TOKENS: K
    rep_dim: int = 512  # REP_DIM: d_r
    alpha: float = 0.7  # ALPHA: the class token's weight in the loss and in the fused logits
    reg_weight: float = 1.0  # REG_WEIGHT: the weight of each cosine term toward the frozen features
    prefix_cache: bool = True  # run the frozen text blocks below k_text once per run

    def checks(self) -> list[tuple[str, bool, str]]:
        return [
            *super().checks(),
            ("n_tokens", self.n_tokens >= 1, "an integer >= 1"),
            ("rep_dim", self.rep_dim >= 1, "an integer >= 1"),
            ("alpha", 0 <= self.alpha <= 1, "a float in [0, 1]"),
            ("reg_weight", self.reg_weight >= 0, "a float >= 0"),
        ]


_CFG = "MMRL configs/trainers/MMRL"
_B2N = f"{_CFG}/vit_b16.yaml via scripts/mmrl/base2new_train.sh (REP_LAYERS [6..12]: k = 6)"
_FS = f"{_CFG}/vit_b16_few_shot.yaml via scripts/mmrl/few_shot.sh"
_XD = f"{_CFG}/vit_b16_cross_datasets.yaml, scripts/mmrl/cross_datasets_train.sh (REG_WEIGHT 0.2)"
_PER_DATASET = "MMRL trainers/config.py (get_dataset_specified_config, MMRL)"
_PUBLISHED_XD = {"k": 6, "epochs": 1, "batch_size": 32, "warmup_epochs": 0, "reg_weight": 0.2}
#: REG_WEIGHT (and REP_DIM) per training dataset, for base-to-novel and few-shot alike (trainers/config.py)
_DATASET_VALUES = {
    "stanford_cars": {"reg_weight": 7.0},
    "fgvc_aircraft": {"reg_weight": 6.0},
    "sun397": {"reg_weight": 6.0},
    "dtd": {"reg_weight": 6.0},
    "food101": {"reg_weight": 5.0},
    "oxford_flowers": {"reg_weight": 4.0},
    "ucf101": {"reg_weight": 3.0},
    "caltech101": {"reg_weight": 0.5},
    "oxford_pets": {"reg_weight": 0.2},
    "eurosat": {"rep_dim": 2048, "reg_weight": 0.01},
}
#: learning rates mma tune may try: factors of 2 around the published 0.001 (AdamW)
_LRS = [0.00025, 0.0005, 0.001, 0.002, 0.004]


class MMRL(MethodBase):
    """MMRL's representation space, aligners and representation projection for one model (module docstring).

    Parameters
    ----------
    starts : dict
        ``{"image": k_image, "text": k_text}``: each tower's first block with tokens (1-based).
    depths, widths : dict
        Each tower's number of blocks and width.
    embed_dim : int
        The width of the model's features (``P_r``'s output).
    n_tokens, rep_dim : int
        ``K`` and ``d_r``.
    alpha : float
        The class token's weight in the loss and in the fused logits.
    classnames : sequence of str
        The classes it is trained on (on these it fuses the two features).
    k, k_image, k_text :
        The depth options it was built from (recorded for its config and label).
    """

    name: ClassVar[str] = "mmrl"
    title: ClassVar[str] = "MMRL"
    Options: ClassVar[type[Options]] = MMRLOptions
    paper: ClassVar[dict] = {
        "optimizer": "adamw",
        "lr": 0.001,
        "epochs": 10,
        "batch_size": 4,
        "crop_scale_min": 0.5,
        "weight_decay": 5e-4,
        **WARMUP,  # Dassl's constant warm-up epoch, as the MMRL config sets it
        "n_tokens": 5,
        "rep_dim": 512,
        "alpha": 0.7,
        "reg_weight": 1.0,
    }
    paper_protocols: ClassVar[dict[str, dict]] = {
        "base2novel": {"k": 6},
        "few-shot": {"k": 6, "epochs": 50, "batch_size": 32, "reg_weight": 0.5},
        "cross-dataset": _PUBLISHED_XD,
        "domain-gen": _PUBLISHED_XD,
    }
    paper_datasets: ClassVar[dict[str, dict]] = {"imagenet": {"batch_size": 32}, **_DATASET_VALUES}
    paper_files: ClassVar[dict[str, str]] = {
        "": _B2N,
        "base2novel": _B2N,
        "few-shot": _FS,
        "cross-dataset": _XD,
        "domain-gen": _XD + " (the domain shifts are tested by scripts/mmrl/cross_datasets_test.sh)",
        "imagenet": f"{_CFG}/vit_b16_imagenet.yaml",
        **{d: _PER_DATASET for d in _DATASET_VALUES},
    }
    published_prompts: ClassVar[bool] = True  # trainers/mmrl.py CUSTOM_TEMPLATES: CoOp's per-dataset prompts
    search_space: ClassVar[dict[str, list]] = {"lr": _LRS, "epochs": [5, 10, 20, 40]}
    depth_indexed: ClassVar[bool] = True
    per_tower: ClassVar[bool] = True
    depth_knob: ClassVar[str] = "start layer"

    def __init__(
        self,
        *,
        starts: Mapping[str, int],
        depths: Mapping[str, int],
        widths: Mapping[str, int],
        embed_dim: int,
        n_tokens: int = 5,
        rep_dim: int = 512,
        alpha: float = 0.7,
        classnames: Sequence[str] = (),
        k: int = 6,
        k_image: int | None = None,
        k_text: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("n_tokens", n_tokens), ("rep_dim", rep_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MmaError(f"{name}={value!r} is out of range (valid: an integer >= 1; the official: 5 and 512).")
        self.starts = {t: int(starts[t]) for t in TOWERS}
        self.depths = {t: int(depths[t]) for t in TOWERS}
        self.widths = {t: int(widths[t]) for t in TOWERS}
        self.embed_dim, self.n_tokens, self.rep_dim, self.alpha = int(embed_dim), n_tokens, rep_dim, float(alpha)
        self.classnames = [str(c) for c in classnames]
        self.k, self.own_starts = k, {"image": k_image, "text": k_text}
        self.rep = nn.Parameter(torch.empty(n_tokens, rep_dim))
        nn.init.normal_(self.rep, std=0.02)
        self.to_image = self._aligners("image")
        self.to_text = self._aligners("text")
        width = self.widths["image"]
        self.proj_rep = nn.Parameter(width**-0.5 * torch.randn(width, self.embed_dim))
        self._live: tuple = ()  # (model, the towers' TowerPrompts, the grab hook's handle) while attached
        self._grabbed: torch.Tensor | None = None  # the representation tokens' outputs of the last image block

    def _aligners(self, tower: str) -> nn.ModuleDict:
        """One ``d_r -> width`` layer per block from the tower's start on, each a copy of one fresh layer."""
        one = nn.Linear(self.rep_dim, self.widths[tower])
        blocks = range(self.starts[tower], self.depths[tower] + 1)
        return nn.ModuleDict({str(j): copy.deepcopy(one) for j in blocks})

    # -- configuration ------------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "k": self.k,
            **{f"k_{t}": self.own_starts[t] for t in TOWERS if self.own_starts[t] is not None},
            "starts": dict(self.starts),
            "depths": dict(self.depths),
            "widths": dict(self.widths),
            "embed_dim": self.embed_dim,
            "n_tokens": self.n_tokens,
            "rep_dim": self.rep_dim,
            "alpha": self.alpha,
            "classnames": list(self.classnames),
        }

    @classmethod
    def _towers(cls, loaded) -> tuple[dict[str, int], dict[str, int]]:
        maps = layer_maps(loaded.model)
        return {t: maps[t].depth for t in TOWERS}, {t: maps[t].layers[1].width for t in TOWERS}

    @classmethod
    def build(cls, loaded, cfg: TrainConfig, classnames: Sequence[str] = ()) -> MMRL:
        """A fresh MMRL from ``cfg.options`` for *loaded*'s model (frozen), on its device and dtype, not attached."""
        cls.check_model(loaded, cfg)
        opts = cfg.options
        depths, widths = cls._towers(loaded)
        method = cls(
            starts=cls.starts(loaded, cfg),
            depths=depths,
            widths=widths,
            embed_dim=feature_width(loaded),
            n_tokens=opts.n_tokens,
            rep_dim=opts.rep_dim,
            alpha=opts.alpha,
            classnames=classnames,
            k=opts.k,
            k_image=opts.k_image,
            k_text=opts.k_text,
        )
        freeze(loaded.model)
        return method.to(*model_device_dtype(loaded.model))

    @classmethod
    def restore(cls, config: Mapping[str, Any], loaded) -> MMRL:
        """The MMRL of a checkpoint's *config* for *loaded*'s model (the towers must be the ones it was built for)."""
        check_feature_width(cls.title, config, loaded)
        depths, widths = cls._towers(loaded)
        if (dict(config["depths"]), dict(config["widths"])) != (depths, widths):
            raise MmaError(
                f"The MMRL checkpoint was built for towers with depths {dict(config['depths'])} and widths "
                f"{dict(config['widths'])}, but this model has {depths} and {widths} (valid: the model it was built "
                "for)."
            )
        method = cls(
            starts=config["starts"],
            depths=depths,
            widths=widths,
            embed_dim=config["embed_dim"],
            n_tokens=config["n_tokens"],
            rep_dim=config["rep_dim"],
            alpha=config["alpha"],
            classnames=config["classnames"],
            k=config["k"],
            k_image=config.get("k_image"),
            k_text=config.get("k_text"),
        )
        freeze(loaded.model)
        return method.to(*model_device_dtype(loaded.model))

    @classmethod
    def check_model(cls, loaded, cfg: TrainConfig) -> None:
        """open_clip's own ViT image tower (``ln_post``, ``proj``) and text transformer, and starts in range."""
        maps = layer_maps(loaded.model)
        visual = getattr(loaded.model, "visual", None)
        ok_image = maps["image"].transformer and maps["image"].layout in ("NLD", "LND")
        ok_image = ok_image and isinstance(getattr(visual, "proj", None), nn.Parameter) and hasattr(visual, "ln_post")
        if not ok_image or not maps["text"].prefix_cache:
            raise MmaError(
                f"MMRL needs open_clip's own ViT image tower and text transformer (the official CLIP's); "
                f"{str(loaded.spec)!r} has a {maps['image'].family} image tower and a {maps['text'].family} text "
                "tower; choose a ViT CLIP model."
            )
        cls.starts(loaded, cfg)

    @classmethod
    def depth_label(cls, starts: Mapping[str, int], depths: Mapping[str, int]) -> str:
        if starts["image"] == starts["text"]:
            return f"representation tokens from layer {starts['image']}"
        return f"representation tokens from image layer {starts['image']}, text layer {starts['text']}"

    def image_start(self, loaded) -> int:
        return self.starts["image"]  # the image blocks below it are frozen

    def extra_repr(self) -> str:
        return f"starts={self.starts}, n_tokens={self.n_tokens}, rep_dim={self.rep_dim}, alpha={self.alpha}"

    # -- the tokens in the towers -------------------------------------------------------------------

    def tokens(self, tower: str, block: int) -> torch.Tensor:
        """``F^j(R)``: the ``[K, width]`` tokens *tower* receives at block *block*."""
        aligners = self.to_image if tower == "image" else self.to_text
        return aligners[str(block)](self.rep)

    def _places(self, tower: str) -> dict[int, Any]:
        blocks = range(self.starts[tower], self.depths[tower] + 1)
        return {j: functools.partial(self.tokens, tower, j) for j in blocks}

    def _grab(self, lmap, _module, _args, _kwargs, output) -> None:
        """Forward hook of the last image block (before the tokens are taken out): keep their outputs."""
        self._grabbed = lmap.tokens(lmap.block_output(output))[:, -self.n_tokens :]

    @property
    def is_attached(self) -> bool:
        return bool(self._live)

    def attach(self, model: nn.Module) -> MMRL:
        """Put the tokens into *model*'s towers (hooks) and read the representation tokens out; returns self."""
        if self._live:
            raise MmaError("This MMRL is already attached to a model; call detach() first.")
        maps = layer_maps(model)
        found = ({t: maps[t].depth for t in TOWERS}, {t: maps[t].layers[1].width for t in TOWERS})
        if found != (self.depths, self.widths):
            raise MmaError(
                f"The MMRL was built for towers with depths {self.depths} and widths {self.widths}, but this model "
                f"has {found[0]} and {found[1]} (valid: the model it was built for)."
            )
        image = maps["image"]
        last = image.blocks(model)[-1]
        # registered before the prompts' own removal hook on that block, so it sees the tokens
        grab = last.register_forward_hook(functools.partial(self._grab, image), with_kwargs=True)
        prompts = [
            TowerPrompts(model, "image", self._places("image")),
            TowerPrompts(model, "text", self._places("text"), insert=True),
        ]
        try:
            for p in prompts:
                p.attach()
        except BaseException:
            for p in prompts:
                p.detach()
            grab.remove()
            raise
        self._live = (model, prompts, grab)
        return self

    def detach(self) -> None:
        """Remove every hook (the model is then exactly as it was); a no-op when not attached."""
        if not self._live:
            return
        _, prompts, grab = self._live
        for p in prompts:
            p.detach()
        grab.remove()
        self._live = ()
        self._grabbed = None

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        """While inside, the model it is attached to is the frozen model (the tokens out); then they are back."""
        if not self._live:
            yield
            return
        model = self._live[0]
        self.detach()
        try:
            yield
        finally:
            self.attach(model)

    # -- features and logits ------------------------------------------------------------------------

    def image_features(self, encode, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f_c, f_r)``, unnormalised, of a batch of its inputs through *encode* (the tower from its inputs)."""
        if not self._live:
            raise MmaError("MMRL reads its representation tokens from the model; attach it first.")
        self._grabbed = None
        cls_feature = encode(inputs)
        tokens, self._grabbed = self._grabbed, None
        if tokens is None:
            raise MmaError("MMRL's image path did not reach the last image block; encode through the image tower.")
        ln_post = self._live[0].visual.ln_post
        return cls_feature, ln_post(tokens).mean(dim=1) @ self.proj_rep.to(tokens.dtype)

    def fuses(self, classnames: Sequence[str]) -> bool:
        """Whether it reads *classnames* with both features: they are the classes it was trained on (any order)."""
        return sorted(map(str, classnames)) == sorted(self.classnames)

    def head(self, loaded, classnames, template: str, device, *, train: bool) -> dict:
        """The prompts' tokens, the text features with the tokens in (evaluation), the image path, and whether to
        fuse (:meth:`fuses`)."""
        model = loaded.model
        tokens = loaded.tokenizer([template.format(c) for c in classnames]).to(device)
        part = image_part(loaded, self.image_start(loaded))
        head = {"tokens": tokens, "encode": part.rest if part is not None else model.encode_image}
        head["fuse"] = self.fuses(classnames)
        if not train:
            head["text"] = F.normalize(encode_text(model, layer_maps(model)["text"], tokens).float(), dim=-1)
        return head

    def logits(self, model: nn.Module, inputs: torch.Tensor, head: dict, *, train: bool) -> torch.Tensor:
        """The decoupled logits: fused on the trained classes, the class token's alone on any other set."""
        text = head.get("text")
        if text is None:
            text = F.normalize(encode_text(model, layer_maps(model)["text"], head["tokens"]).float(), dim=-1)
        f_c, f_r = self.image_features(head["encode"], inputs)
        scale = float(model.logit_scale.exp())
        logits = scale * F.normalize(f_c.float(), dim=-1) @ text.T
        if not head["fuse"]:
            return logits
        rep = scale * F.normalize(f_r.float(), dim=-1) @ text.T
        return self.alpha * logits + (1 - self.alpha) * rep

    def objective(self, loaded, classnames, template: str, cfg: TrainConfig) -> nn.Module:
        """The training loss (module docstring): the frozen text blocks below ``k_text`` run once (prefix cache),
        the image tower from ``k_image`` on; the frozen text features once, the frozen image features per batch."""
        model = loaded.model
        device = self.rep.device
        text_map = layer_maps(model)["text"]
        tokens = loaded.tokenizer([template.format(c) for c in classnames]).to(device)
        with torch.no_grad(), self.suspended():
            frozen_text = encode_text(model, text_map, tokens)
        if cfg.options.prefix_cache and text_map.prefix_cache:
            text = TextPrefixCache(model, text_map, self.starts["text"], tokens).encode
        else:
            text = functools.partial(encode_text, model, text_map, tokens)
        part = image_part(loaded, self.image_start(loaded))
        encode = part.rest if part is not None else model.encode_image
        return MMRLObjective(self, model, text, frozen_text, encode, cfg.options.reg_weight)


class MMRLObjective(nn.Module):
    """MMRL's training loss of one batch (``MMRL_Loss``); its only parameters are the method's (what DDP wraps)."""

    def __init__(self, method: MMRL, model: nn.Module, text, frozen_text: torch.Tensor, encode, reg_weight: float):
        super().__init__()
        self.method = method
        self._frozen = (text, frozen_text.float(), encode)  # a tuple: not registered, DDP leaves the trunk alone
        self.logit_scale = float(model.logit_scale.exp())
        self.reg_weight = float(reg_weight)

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """*inputs*: the images, or the input of image block ``k_image`` when the objective was given that split."""
        text, frozen_text, encode = self._frozen
        method, s = self.method, self.logit_scale
        f_c, f_r = method.image_features(encode, inputs)
        with torch.no_grad(), method.suspended():
            frozen_image = encode(inputs).float()
        t = F.normalize(text().float(), dim=-1)
        f_c, f_r = F.normalize(f_c.float(), dim=-1), F.normalize(f_r.float(), dim=-1)
        alpha = method.alpha
        loss = alpha * F.cross_entropy(s * f_c @ t.T, labels) + (1 - alpha) * F.cross_entropy(s * f_r @ t.T, labels)
        reg = (1 - F.cosine_similarity(f_c, frozen_image, dim=1).mean()) + (
            1 - F.cosine_similarity(t, frozen_text, dim=1).mean()
        )
        return loss + self.reg_weight * reg
