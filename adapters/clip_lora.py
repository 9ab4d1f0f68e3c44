"""CLIP-LoRA (Zanella and Ben Ayed, CVPRW 2024): low-rank adapters on the attention of both towers of open_clip.

In every adapted block of both towers, each chosen attention matrix ``W`` (``params``: the query, key and value
projections ``q``, ``k``, ``v`` by default; the output projection ``o`` optionally) gets its own pair ``A`` (``r x
d``) and ``B`` (``d x r``)::

    W' = W + s * B @ A,      s = lora_alpha / sqrt(r)

The scale is the official ``loralib/layers.py`` ``LoRALayer``'s ``lora_alpha / math.sqrt(r)`` (its ``alpha / r``
is commented out), and so is the initialisation: ``A`` as ``nn.Linear``'s default (``kaiming_uniform_`` with ``a =
sqrt(5)``), ``B`` zero, so a fresh method is the frozen model exactly. open_clip's blocks hold a
``torch.nn.MultiheadAttention``: ``q``, ``k``, ``v`` are the three row blocks of its packed ``in_proj_weight``
(``[3d, d]``), ``o`` its ``out_proj.weight``; the biases stay frozen.

Depth: LoRA on blocks ``k_image..L`` of the image tower and ``k_text..L`` of the text tower (:mod:`.depth`). The
official ``--position`` sets that end at the top are start blocks of 12-block towers: ``all`` = ``k 1`` (the
published default, ``run_utils.py``), ``half-up`` = 7, ``up`` = 9, ``top3`` = 10, ``top1`` = 12; ``bottom``,
``mid`` and ``half-bottom`` stop below the top and have no start block, and ``--encoder text`` / ``vision`` (one tower
alone) is not expressible: both towers are adapted, as published (``--encoder both``).

How it reaches an unmodified open_clip model: :meth:`ClipLoRA.attach` registers a parametrization
(``torch.nn.utils.parametrize``) on ``in_proj_weight`` and, with ``o``, on ``out_proj.weight`` of every adapted
block; reading the weight then gives ``W'``, so open_clip's blocks and torch's attention run unchanged, and the
gradient reaches ``A`` and ``B`` through it. :meth:`ClipLoRA.detach` removes the parametrizations, which puts the
very same ``Parameter`` objects back (the model is then bit for bit what it was, its class included). The
parametrization holds the method in a tuple, so the model never registers the LoRA weights as its own.

LoRA dropout, as the official ``LinearLoRA``: in training, each adapted matrix reads its own dropout of its input,
``W x + s * B A drop(x)`` (``dropout_rate`` 0.25, ``run_utils.py``), so the frozen path sees ``x`` and each of
``q``, ``k``, ``v`` (and ``o``) its own mask; evaluation reads ``W'`` (the official code merges ``B A`` into ``W``
when put in eval mode). A weight cannot depend on the input, so while the training loss runs
(:meth:`ClipLoRA.dropping`) the adapted attention modules run :meth:`ClipLoRA.attention` instead of their own
``forward``: the projections with their dropped LoRA branch, then ``F.scaled_dot_product_attention``, as the
official ``PlainMultiheadAttentionLoRA`` computes attention (this re-states torch's attention, not open_clip; a
test checks it against torch's ``MultiheadAttention`` with all-ones masks). **[difference]** Each mask keeps an
element with probability ``1 - p`` and scales it by ``1 / (1 - p)`` as ``nn.Dropout`` does, drawn from a generator
seeded once per step from torch's CPU RNG (which the training loop saves and restores, so a resumed run draws the
same masks), and the branch is computed as ``s * B (A drop(x))`` (the official ``drop(x) @ (B A)^T * s``: the
same in exact arithmetic, ``r / d`` of the work).

Why not ``peft``: its ``MultiheadAttention`` LoRA trains one ``A``, ``B`` pair over the whole packed ``in_proj``
(not one per ``q``, ``k``, ``v``: another parametrisation and another parameter count) and always adapts
``out_proj`` with it (the official default leaves ``o`` out); it merges the weights before each forward, so its
dropout never acts there; it replaces the model's modules (``inject_adapter_in_model`` / ``get_peft_model``) and
unmerges by subtracting the delta, so detaching is not bit-exact; and it would be a new dependency.

Published recipe (few-shot only; the paper reports no base-to-novel): AdamW (``lora.py``: lr 2e-4,
``weight_decay`` 1e-2, betas (0.9, 0.999), eps PyTorch's 1e-8), batch 32, ``n_iters = 500 x shots`` iterations,
cosine schedule over them to ``eta_min`` 1e-6, random-resized crops of scale 0.08..1 and flips (``main.py``),
r 2, alpha 1, dropout 0.25, ``q``, ``k``, ``v``, every block of both towers (``run_utils.py``), the prompt "a photo
of a {}." for every dataset (each ``datasets/*.py`` overrides its dataset's own template with it), fp16 autocast.
**[difference]** mma trains by epochs, with a cosine schedule stepped per epoch to 0, and drops the last partial
batch. The iteration budget becomes epochs per training dataset (:func:`epochs_for`): ``500 x 16`` iterations at
16 shots, with ``floor(16 x classes / 32)`` steps per epoch, over the base classes (``ceil(C / 2)``) of each CoOp
dataset: ImageNet 32 epochs, SUN397 81, Stanford Cars 163, Caltech101 / Flowers / Food101 / Aircraft / UCF101 320,
DTD 667, Oxford Pets 889, EuroSAT 4000. Since ``steps = shots x classes / 32``, the epochs barely depend on the
shots; any other dataset takes the median of these, 320 (a typical base split of about 50 classes). A dataset's
values cannot differ per protocol here, so few-shot (every class) runs these same epochs: about twice the official
iterations (pass ``--epochs`` half as large to match). The logits use the model's ``exp(logit_scale)`` (the
official constant 100 for CLIP's own weights).

ViT-B/16 (widths 768 and 512), r 2, ``q``, ``k``, ``v`` of all 12 blocks of both towers: ``12 x 3 x 2 x 2 x 768 +
12 x 3 x 2 x 2 x 512`` = 184,320 trainable parameters.
"""

from __future__ import annotations

import contextlib
import functools
import math
import statistics
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from mma.errors import MmaError
from mma.probe.data.coop import describe_coop
from mma.probe.layers import TOWERS, layer_maps

from .config import Options, TrainConfig
from .depth import DepthOptions, check_starts
from .frozen import image_part
from .method_base import MethodBase, freeze, model_device_dtype
from .mma import MMAObjective
from .text_cache import TextPrefixCache

__all__ = ["ClipLoRA", "ClipLoRAOptions", "LowRank", "epochs_for", "MATRICES"]

#: the attention matrices LoRA may adapt: the rows of the packed in-projection, then the output projection
MATRICES = "qkvo"
_IN_PROJ = "qkv"

# the official few-shot budget (run_utils.py: --n_iters 500 per shot, --batch_size 32; the paper's 16 shots)
_ITERS_PER_SHOT, _BATCH, _SHOTS = 500, 32, 16


def epochs_for(classes: int, shots: int = _SHOTS, batch: int = _BATCH) -> int:
    """The epochs of mma's loop (``floor(classes x shots / batch)`` steps each) nearest the official ``500 x shots``
    iterations on *classes* classes of *shots* images each."""
    steps = max(1, classes * shots // batch)
    return max(1, round(_ITERS_PER_SHOT * shots / steps))


def _base_to_novel_epochs() -> dict[str, dict]:
    """``{dataset: {"epochs": n}}`` for each CoOp dataset with a training split, trained on its base classes."""
    return {
        row["name"]: {"epochs": epochs_for(math.ceil(row["classes"] / 2))} for row in describe_coop() if row["train"]
    }


_PER_DATASET = _base_to_novel_epochs()
_TYPICAL_EPOCHS = round(statistics.median(v["epochs"] for v in _PER_DATASET.values()))
_OFFICIAL = "CLIP-LoRA run_utils.py (r, alpha, dropout, params, position all), lora.py (AdamW), main.py (augmentation)"
_EPOCHS_NOTE = (
    "CLIP-LoRA run_utils.py n_iters 500 x 16 shots at batch 32, as epochs over this dataset's base classes "
    "(mma.adapters.clip_lora.epochs_for)"
)


@dataclass
class ClipLoRAOptions(DepthOptions):
    """CLIP-LoRA's own options (``run_utils.py``); ``k``, ``k_image``, ``k_text``: the start blocks (:mod:`.depth`)."""

    k: int = 1  # --position all
    r: int = 2  # the rank
    lora_alpha: float = 1.0  # the scale is lora_alpha / sqrt(r)
    dropout_rate: float = 0.25  # dropout on each adapted matrix's input, in training
    params: str = "qkv"  # the adapted matrices, letters of "qkvo"

    def checks(self) -> list[tuple[str, bool, str]]:
        return [
            *super().checks(),
            ("r", self.r >= 1, "an integer >= 1"),
            ("lora_alpha", self.lora_alpha > 0, "a float > 0"),
            ("dropout_rate", 0 <= self.dropout_rate < 1, "a float in [0, 1)"),
            ("params", _valid_params(self.params), f"some of the letters {MATRICES!r}, each once (e.g. 'qkv')"),
        ]


def _valid_params(params: Any) -> bool:
    return isinstance(params, str) and bool(params) and set(params) <= set(MATRICES) and len(set(params)) == len(params)


#: every training value CLIP-LoRA reads, in the order the recipe line names them (no momentum: AdamW; no warm-up)
CLIP_LORA_FIELDS = (
    "k",
    "k_image",
    "k_text",
    "r",
    "lora_alpha",
    "dropout_rate",
    "params",
    "optimizer",
    "lr",
    "weight_decay",
    "epochs",
    "batch_size",
    "shots",
    "crop_scale_min",
    "flip",
    "augment",
    "precision",
    "workers",
    "cache",
)


class LowRank(nn.Module):
    """One adapted matrix's pair: ``A`` (``r x d_in``, ``nn.Linear``'s default init) and ``B`` (``d_out x r``, 0)."""

    def __init__(self, d_in: int, d_out: int, r: int) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.empty(r, d_in))
        self.B = nn.Parameter(torch.zeros(d_out, r))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))

    def delta(self, scale: float) -> torch.Tensor:
        """``scale * B @ A`` (``[d_out, d_in]``): what is added to the frozen matrix."""
        return (self.B @ self.A) * scale

    def forward(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        """``scale * B A x`` for ``x`` of shape ``[..., d_in]``, through the rank ``r`` (not the merged matrix)."""
        return F.linear(F.linear(x, self.A), self.B) * scale


class _Merged(nn.Module):
    """The parametrization of one frozen matrix: its rows plus ``s * B @ A`` for the adapted ones among *slots*."""

    def __init__(self, owner: ClipLoRA, tower: str, block: int, slots: str) -> None:
        super().__init__()
        self._owner = (owner,)  # a tuple: the model does not register the method's parameters as its own
        self.tower, self.block, self.slots = tower, block, slots

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return self._owner[0].merged(self.tower, self.block, self.slots, weight)


def _attention(block: nn.Module, tower: str, j: int, model_name: str) -> nn.MultiheadAttention:
    """Block *j*'s attention, or one sentence: CLIP-LoRA adapts torch's packed ``nn.MultiheadAttention`` only."""
    attn = getattr(block, "attn", None)
    if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim:
        has = type(attn).__name__ if attn is not None else f"none (a {type(block).__name__})"
        raise MmaError(
            f"CLIP-LoRA adapts torch's nn.MultiheadAttention in open_clip's transformer blocks, but the attention of "
            f"{tower} block {j} of {model_name!r} is {has}; choose an open_clip ViT model such as ViT-B-16."
        )
    return attn


def _towers(model: nn.Module, model_name: str) -> tuple[dict[str, int], dict[str, int]]:
    """``(depths, widths)`` of *model*'s towers: blocks, and the width of their attention (every block checked)."""
    maps = layer_maps(model)
    depths, widths = {}, {}
    for t in TOWERS:
        if not maps[t].transformer:
            raise MmaError(
                f"CLIP-LoRA adapts the attention of transformer blocks, but the {t} tower of {model_name!r} is a "
                f"convolutional network ({maps[t].family}); choose an open_clip ViT model such as ViT-B-16."
            )
        attns = [_attention(b, t, j, model_name) for j, b in enumerate(maps[t].blocks(model), 1)]
        depths[t], widths[t] = len(attns), attns[0].embed_dim
    return depths, widths


def _original(module: nn.Module, name: str) -> torch.Tensor:
    """The frozen tensor *name* of *module*, beneath its parametrization if it has one."""
    if parametrize.is_parametrized(module, name):
        return module.parametrizations[name].original
    return getattr(module, name)


def _additive_mask(mask: torch.Tensor | None, batch: int, heads: int, dtype: torch.dtype) -> torch.Tensor | None:
    """``nn.MultiheadAttention``'s ``attn_mask`` (``[L, S]`` or ``[batch x heads, L, S]``; True or -inf = masked) as
    an additive mask for ``F.scaled_dot_product_attention`` (``[L, S]`` or ``[batch, heads, L, S]``)."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    mask = mask.to(dtype)
    return mask.view(batch, heads, *mask.shape[-2:]) if mask.dim() == 3 else mask


class ClipLoRA(MethodBase):
    """Low-rank adapters on the attention matrices of blocks ``k_m..L_m`` of both towers (module docstring).

    Parameters
    ----------
    depths, widths : dict[str, int]
        Each tower's number of blocks and width (``{"image": 12, "text": 12}``, ``{"image": 768, "text": 512}``).
    k, k_image, k_text : int
        The start blocks (:mod:`mma.adapters.depth`): LoRA on blocks ``start_blocks[m]..depths[m]`` of tower ``m``.
    r : int, default 2
        The rank.
    lora_alpha : float, default 1
        The scale is ``lora_alpha / sqrt(r)``.
    dropout_rate : float, default 0.25
        Dropout on each adapted matrix's input while the training loss runs (:meth:`dropping`).
    params : str, default "qkv"
        The adapted matrices: letters of ``"qkvo"``.
    model_name : str
        Used in messages only.

    The weights are ``lora[tower][block][matrix]`` (:class:`LowRank`): ``state_dict`` keys ``lora.image.1.q.A``.
    """

    name: ClassVar[str] = "clip-lora"
    title: ClassVar[str] = "CLIP-LoRA"
    Options: ClassVar[type[Options]] = ClipLoRAOptions
    uses: ClassVar[tuple[str, ...]] = CLIP_LORA_FIELDS
    paper: ClassVar[dict] = {
        "k": 1,
        "r": 2,
        "lora_alpha": 1.0,
        "dropout_rate": 0.25,
        "params": "qkv",
        "optimizer": "adamw",
        "lr": 2e-4,
        "weight_decay": 1e-2,
        "epochs": _TYPICAL_EPOCHS,
        "batch_size": 32,
        "shots": 16,
        "crop_scale_min": 0.08,
        "flip": True,
    }
    paper_datasets: ClassVar[dict[str, dict]] = _PER_DATASET
    paper_files: ClassVar[dict[str, str]] = {
        "": f"{_OFFICIAL}; epochs: n_iters 500 x 16 shots at batch 32 over a typical base split of about 50 classes",
        **{d: _EPOCHS_NOTE for d in _PER_DATASET},
    }
    search_space: ClassVar[dict[str, list]] = {
        "lr": [5e-5, 1e-4, 2e-4, 4e-4, 8e-4],  # factors of 2 around the published 2e-4
        "epochs": [40, 80, 160, 320],  # up to the published budget on a dataset outside CoOp's (paper["epochs"])
    }
    depth_indexed: ClassVar[bool] = True
    per_tower: ClassVar[bool] = True
    depth_knob: ClassVar[str] = "LoRA layers"

    def __init__(
        self,
        *,
        depths: Mapping[str, int],
        widths: Mapping[str, int],
        k: int = 1,
        k_image: int | None = None,
        k_text: int | None = None,
        r: int = 2,
        lora_alpha: float = 1.0,
        dropout_rate: float = 0.25,
        params: str = "qkv",
        model_name: str = "model",
    ) -> None:
        super().__init__()
        ClipLoRAOptions(k=k, k_image=k_image, k_text=k_text, r=r, lora_alpha=lora_alpha, dropout_rate=dropout_rate,
                        params=params).validate()  # fmt: skip
        self.depths, self.widths = dict(depths), dict(widths)
        self.k, self.own_starts = k, {"image": k_image, "text": k_text}
        values = {"k": k, "k_image": k_image, "k_text": k_text}
        self.start_blocks = check_starts(self.title, values, self.depths, model_name, per_tower=True)
        self.r, self.lora_alpha, self.dropout_rate = r, float(lora_alpha), float(dropout_rate)
        self.params = "".join(m for m in MATRICES if m in params)
        self.scale = self.lora_alpha / math.sqrt(r)
        self.model_name = model_name
        self.lora = nn.ModuleDict()
        for t in TOWERS:
            d = self.widths[t]
            self.lora[t] = nn.ModuleDict(
                {str(j): nn.ModuleDict({m: LowRank(d, d, r) for m in self.params}) for j in self.blocks(t)}
            )
        self._attns: dict[tuple[str, int], nn.MultiheadAttention] = {}
        self._registered: list[tuple[nn.Module, str, list[str]]] = []
        self._gen: torch.Generator | None = None

    def blocks(self, tower: str) -> range:
        """The adapted blocks of *tower* (1-based)."""
        return range(self.start_blocks[tower], self.depths[tower] + 1)

    # -- configuration ------------------------------------------------------------------------------

    @classmethod
    def for_model(cls, model: nn.Module, model_name: str = "model", **options) -> ClipLoRA:
        """A fresh method for *model*'s towers (their depths and attention widths), not attached, on the CPU."""
        depths, widths = _towers(model, model_name)
        return cls(depths=depths, widths=widths, model_name=model_name, **options)

    @staticmethod
    def _options(cfg: TrainConfig) -> dict[str, Any]:
        o = cfg.options
        return dict(k=o.k, k_image=o.k_image, k_text=o.k_text, r=o.r, lora_alpha=o.lora_alpha,
                    dropout_rate=o.dropout_rate, params=o.params)  # fmt: skip

    @classmethod
    def build(cls, loaded, cfg: TrainConfig, classnames=()) -> ClipLoRA:
        """A fresh method from ``cfg.options`` for *loaded*'s model (frozen), on its device and dtype, not attached."""
        method = cls.for_model(loaded.model, str(loaded.spec), **cls._options(cfg))
        freeze(loaded.model)
        return method.to(*model_device_dtype(loaded.model))

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild it (:meth:`restore`), as plain JSON-able values."""
        return {
            "method": self.name,
            "k": self.k,
            "k_image": self.own_starts["image"],
            "k_text": self.own_starts["text"],
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "dropout_rate": self.dropout_rate,
            "params": self.params,
            "depths": dict(self.depths),
            "widths": dict(self.widths),
            "model_name": self.model_name,
        }

    @classmethod
    def restore(cls, config: Mapping[str, Any], loaded) -> ClipLoRA:
        """The method of a checkpoint's *config* for *loaded*'s model (frozen), on its device; its towers must match."""
        keys = ("k", "k_image", "k_text", "r", "lora_alpha", "dropout_rate", "params")
        method = cls.for_model(loaded.model, str(loaded.spec), **{key: config[key] for key in keys})
        for key in ("depths", "widths"):
            if dict(config[key]) != getattr(method, key):
                raise MmaError(
                    f"The CLIP-LoRA checkpoint was trained on towers with {key} {dict(config[key])}, but this model's "
                    f"are {getattr(method, key)} (valid: the model it was trained on)."
                )
        freeze(loaded.model)
        return method.to(*model_device_dtype(loaded.model))

    @classmethod
    def check_model(cls, loaded, cfg: TrainConfig) -> None:
        """Every block of both towers must hold torch's packed attention, and the start blocks lie within them."""
        cls.for_model(loaded.model, str(loaded.spec), **cls._options(cfg))

    @classmethod
    def depth_label(cls, starts: Mapping[str, int], depths: Mapping[str, int]) -> str:
        if starts["image"] == starts["text"] and depths["image"] == depths["text"]:
            return f"LoRA on blocks {starts['image']}..{depths['image']}"
        return "LoRA on " + ", ".join(f"{t} blocks {starts[t]}..{depths[t]}" for t in TOWERS)

    def extra_repr(self) -> str:
        return (
            f"r={self.r}, lora_alpha={self.lora_alpha}, dropout_rate={self.dropout_rate}, params={self.params!r}, "
            f"image_blocks={list(self.blocks('image'))}, text_blocks={list(self.blocks('text'))}"
        )

    # -- the weights --------------------------------------------------------------------------------

    def merged(self, tower: str, block: int, slots: str, weight: torch.Tensor) -> torch.Tensor:
        """*weight* (the frozen rows of the matrices *slots*, stacked) with ``s * B @ A`` added to the adapted ones.

        Rows of a matrix without LoRA are *weight*'s own; with ``B = 0`` every row equals *weight*'s.
        """
        pairs = self.lora[tower][str(block)]
        rows = weight.chunk(len(slots))
        out = [w + pairs[m].delta(self.scale).to(w.dtype) if m in pairs else w for w, m in zip(rows, slots)]
        return out[0] if len(out) == 1 else torch.cat(out)

    # -- attaching ----------------------------------------------------------------------------------

    @property
    def is_attached(self) -> bool:
        return bool(self._registered)

    def attach(self, model: nn.Module) -> ClipLoRA:
        """Parametrize the adapted attention matrices of *model* (which must have the towers it was built for)."""
        if self._registered:
            raise MmaError("This CLIP-LoRA is already attached to a model; call detach() first.")
        depths, widths = _towers(model, self.model_name)
        if (depths, widths) != (self.depths, self.widths):
            raise MmaError(
                f"This CLIP-LoRA was built for towers with depths {self.depths} and widths {self.widths}, but this "
                f"model has {depths} and {widths} (valid: the model it was built for)."
            )
        maps = layer_maps(model)
        try:
            for t in TOWERS:
                blocks = maps[t].blocks(model)
                for j in self.blocks(t):
                    attn = _attention(blocks[j - 1], t, j, self.model_name)
                    self._attns[t, j] = attn
                    if set(_IN_PROJ) & set(self.params):
                        self._parametrize(attn, "in_proj_weight", _Merged(self, t, j, _IN_PROJ))
                    if "o" in self.params:
                        self._parametrize(attn.out_proj, "weight", _Merged(self, t, j, "o"))
        except BaseException:
            self.detach()
            raise
        return self

    def _parametrize(self, module: nn.Module, name: str, merged: _Merged) -> None:
        order = list(module._parameters)  # removing the parametrization appends the parameter: its place is kept
        parametrize.register_parametrization(module, name, merged)
        self._registered.append((module, name, order))

    def detach(self) -> None:
        """Remove the parametrizations: the model's own parameters are back, in their places (its class, its
        ``state_dict`` and its ``parameters()`` order as they were); a no-op when not attached."""
        while self._registered:
            module, name, order = self._registered.pop()
            parametrize.remove_parametrizations(module, name, leave_parametrized=False)
            for key in order:  # in place: each moved to the end, in the original order
                module._parameters[key] = module._parameters.pop(key)
        self._attns.clear()

    # -- the dropout path ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def dropping(self, active: bool = True) -> Iterator[None]:
        """While inside (and *active*, with ``dropout_rate`` > 0), the adapted attentions read dropped inputs in
        their LoRA branches (:meth:`attention`); the masks come from a generator seeded from torch's CPU RNG."""
        if not active or self.dropout_rate == 0 or not self._attns:
            yield
            return
        device = next(self.parameters()).device
        seed = int(torch.randint(2**62, (1,)))
        self._gen = torch.Generator(device=device).manual_seed(seed)
        try:
            for (t, j), attn in self._attns.items():
                attn.forward = functools.partial(self.attention, t, j, attn)
            yield
        finally:
            for attn in self._attns.values():
                attn.__dict__.pop("forward", None)
            self._gen = None

    def keep(self, x: torch.Tensor) -> torch.Tensor:
        """A dropout mask for *x*: each element kept (True) with probability ``1 - dropout_rate``."""
        return torch.rand(x.shape, generator=self._gen, device=x.device) >= self.dropout_rate

    def drop(self, x: torch.Tensor) -> torch.Tensor:
        """*x* under dropout: kept elements scaled by ``1 / (1 - dropout_rate)``, the others zero (``nn.Dropout``)."""
        return x * self.keep(x).to(x.dtype) / (1 - self.dropout_rate)

    def attention(
        self,
        tower: str,
        block: int,
        attn: nn.MultiheadAttention,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, None]:
        """*attn*'s self-attention with each adapted matrix as ``W x + s * B A drop(x)`` (``nn.MultiheadAttention``'s
        call; what open_clip's blocks pass: one batched input as query, key and value, and an attention mask)."""
        if (
            key is not query or value is not query or query.dim() != 3 or key_padding_mask is not None or is_causal
            or attn.bias_k is not None or attn.add_zero_attn
        ):  # fmt: skip
            raise MmaError(
                "CLIP-LoRA's dropout runs self-attention as open_clip's blocks call it (one batched input and an "
                "attention mask); this block calls its attention otherwise; train with dropout_rate 0."
            )
        pairs = self.lora[tower][str(block)]
        x = query if attn.batch_first else query.transpose(0, 1)
        batch, length, width = x.shape
        heads = attn.num_heads
        qkv = list(F.linear(x, _original(attn, "in_proj_weight"), attn.in_proj_bias).chunk(3, dim=-1))
        for i, m in enumerate(_IN_PROJ):
            if m in pairs:
                qkv[i] = qkv[i] + pairs[m](self.drop(x), self.scale)
        q, k, v = (p.reshape(batch, length, heads, width // heads).transpose(1, 2) for p in qkv)
        mask = _additive_mask(attn_mask, batch, heads, q.dtype)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=attn.dropout if attn.training else 0.0)
        o = o.transpose(1, 2).reshape(batch, length, width)
        out = F.linear(o, _original(attn.out_proj, "weight"), attn.out_proj.bias)
        if "o" in pairs:
            out = out + pairs["o"](self.drop(o), self.scale)
        return (out if attn.batch_first else out.transpose(0, 1)), None

    # -- training and evaluation --------------------------------------------------------------------

    def image_start(self, loaded) -> int:
        return self.start_blocks["image"]  # the image blocks below it are frozen

    def objective(self, loaded, classnames, template: str, cfg: TrainConfig) -> nn.Module:
        """The training loss: cross-entropy of ``exp(logit_scale) * cosine`` logits, the dataset's prompts through the
        adapted text tower (its frozen blocks below ``k_text`` run once), the image tower from block ``k_image``, the
        LoRA dropout on."""
        model = loaded.model
        device = next(self.parameters()).device
        text_map = layer_maps(model)["text"]
        tokens = loaded.tokenizer([template.format(c) for c in classnames]).to(device)
        text = TextPrefixCache(model, text_map, self.start_blocks["text"], tokens) if text_map.prefix_cache else None
        return _LoRAObjective(loaded, self, tokens, text, images=image_part(loaded, self.image_start(loaded)))

    def classifier(self, loaded, classnames, template, device):
        """None: the model with its merged weights is evaluated by the zero-shot code, as the frozen model is."""
        return None


class _LoRAObjective(MMAObjective):
    """MMA's loss without its consistency term, run with the LoRA dropout on while the objective is training."""

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with self.adapter.dropping(self.training):
            return super().forward(inputs, labels)
