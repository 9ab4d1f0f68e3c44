"""The Multi-Modal Adapter (MMA, Yang et al., CVPR 2024), hooked into an unmodified open_clip model.

For every adapted residual block ``i`` of both towers (``m`` = image or text, width ``d_m``, bottleneck
``r = dim``)::

    h   = pre_norm_i(x)                 # x: the block's input; its own frozen pre-attention norm
    a   = relu(down[m][i](h))           # d_m -> r, one per tower
    a   = relu(shared[s(i)](a))         # r -> r, ONE per adapted depth, used by both towers
    a   = up[m][i](a)                   # r -> d_m, no activation
    out = block(x) + alpha * a          # on every token

``pre_norm_i`` is read from the tower's layer map (:mod:`mma.probe.towers`): ``ln_1`` in open_clip blocks,
``norm1`` in timm ViT / EVA / Swin blocks, the pre-attention norm of T5 / M2M100 layers, and the block's
input itself for post-norm blocks (RoBERTa / BERT layers, whose input is already the previous layer's
LayerNorm output; EVA02-E). The adapter never looks inside a tower: where a block receives and returns its
hidden state, and its width, come from the map too. Widths may differ per block (Swin's stages); ``Down``
and ``Up`` of block ``i`` then have that block's width. Convolutional stages have no such blocks: the
adapter refuses them ("MMA needs transformer blocks").

``alpha = 0`` is the frozen model: the branch is skipped, so the output is exactly the model's own (what
``--alpha-eval 0`` evaluates). Training needs ``alpha > 0`` (the gradient scaling divides by it).

Nothing of open_clip is forked: :meth:`MultiModalAdapter.attach` registers one forward hook per adapted
block, and :meth:`MultiModalAdapter.detach` removes them, leaving the model exactly as it was. The adapter
is not a submodule of the model, so ``adapter.state_dict()`` holds the adapter weights only, keyed
``down.image.9.weight``, ``up.text.5.bias``, ``shared.5.weight`` (the numbers are block numbers, 1-based).

Gradient scaling (``grad_scale=True``, the official code's behaviour): the branch input ``h`` passes an
identity whose backward multiplies the gradient by ``alpha``, and the branch output (already times
``alpha``) passes one whose backward divides it by ``alpha``. The trunk receives the exact gradient; the
adapter weights receive gradients ``1/alpha`` times larger, as if ``alpha`` were 1.

Towers of different depth (e.g. ViT-L-14: 24 image blocks, 12 text blocks). ``k`` always counts blocks of
the *shallower* tower (``L_min`` blocks), so it is valid in ``1..L_min``. With equal depths the two modes
below are identical.

``depth_mode="relative"`` (default) **[ours]**: block ``j`` of a tower with ``L_m`` blocks covers the
relative depth ``[(j-1)/L_m, j/L_m)``. A tower adapts every block whose span starts at or after the start
of block ``k`` of the shallower tower, i.e. blocks ``k_m = ceil((k-1) * L_m / L_min) + 1`` through
``L_m``. Each adapted block uses the shared layer of the shallower tower's block whose span contains its
start, ``s(j) = floor((j-1) * L_min / L_m) + 1``. So there is exactly one shared layer per adapted block
of the shallower tower (``k..L_min``) and each is used by both towers. ViT-L-14 with ``k=5``: text blocks
5..12, image blocks 9..24, image blocks 9 and 10 share with text block 5, ..., 23 and 24 with 12.

``depth_mode="block"`` (the official code): both towers adapt blocks ``k..L_min`` by number and
``s(j) = j``; blocks above ``L_min`` of the deeper tower are not adapted.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from mma.errors import MmaError, closest
from mma.probe.layers import TOWERS, LayerMap, layer_maps
from mma.probe.towers import check_mma_support

from .config import Options, TrainConfig
from .depth import DepthOptions, check_starts, relative_start
from .frozen import ImagePart, image_part
from .method_base import MethodBase, freeze, model_device_dtype
from .text_cache import TextPrefixCache

__all__ = ["MultiModalAdapter", "MMAOptions", "MMAObjective", "add_adapter", "check_alpha", "DEPTH_MODES"]

DEPTH_MODES = ("relative", "block")


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by ``scale``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def _block_plan(depth: int, min_depth: int, k: int, depth_mode: str, first: int | None = None) -> dict[int, int]:
    """``{adapted block j: shared-layer number s(j)}`` for a tower of ``depth`` blocks (see module doc); *first*:
    the tower's own first adapted block, given apart from k (per-tower depth, :mod:`mma.adapters.depth`)."""
    if depth_mode == "block":
        return {j: j for j in range(first or k, min_depth + 1)}
    first = first or relative_start(k, depth, min_depth)
    return {j: (j - 1) * min_depth // depth + 1 for j in range(first, depth + 1)}


def _kaiming_linear(n_in: int, n_out: int) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(layer.bias)
    return layer


def check_alpha(alpha: Any, name: str = "alpha") -> float:
    """*alpha* as a float, or one sentence: it must be a finite number >= 0 (0 is the frozen model)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
        raise MmaError(
            f"{name}={alpha!r} is out of range (valid: a finite number >= 0, 0 meaning the frozen model; "
            "the official default is 0.001)."
        )
    return float(alpha)


@dataclass
class MMAOptions(DepthOptions):
    """MMA's own options (the shared optimisation values are :class:`~mma.adapters.config.TrainConfig`'s); ``k``,
    ``k_image``, ``k_text``: the start blocks (:mod:`mma.adapters.depth`)."""

    k: int = 5
    dim: int = 32
    alpha: float = 1e-3
    alpha_eval: float | None = None  # MMA++: a different alpha at inference
    grad_scale: bool = True
    depth_mode: str = "relative"
    consistency: float = 0.0  # MMA++: the alpha-consistency loss weight
    prefix_cache: bool = True  # run the frozen text blocks below k once per run

    def checks(self) -> list[tuple[str, bool, str]]:
        return [
            *super().checks(),
            ("dim", self.dim >= 1, "an integer >= 1"),
            ("alpha", self.alpha > 0, "a float > 0"),
            ("alpha_eval", self.alpha_eval is None or self.alpha_eval >= 0, "a float >= 0 (0 = the frozen model)"),
            ("consistency", self.consistency >= 0, "a float >= 0"),
        ]


#: every training value MMA reads, in the order the recipe line names them
MMA_FIELDS = (
    "k",
    "k_image",
    "k_text",
    "dim",
    "alpha",
    "alpha_eval",
    "grad_scale",
    "depth_mode",
    "lr",
    "momentum",
    "weight_decay",
    "epochs",
    "batch_size",
    "shots",
    "crop_scale_min",
    "flip",
    "augment",
    "consistency",
    "precision",
    "workers",
    "prefix_cache",
    "cache",
)
#: the published per-protocol values (SPEC.md section 3): k 5 for base-to-novel (the released
#: configs/trainers/MultiModalAdapter/vit_b16_ep5.yaml); k 9 and one epoch for cross-dataset and domain
#: generalisation, from the paper's text only (the released code ships no config for them; the official repository's
#: issue #3 quotes the sentence); ImageNet trains in batches of 128 (vit_b16_ep5_imnet.yaml)
_PUBLISHED_XD = {"k": 9, "epochs": 1}
_RELEASED = "MMA configs/trainers/MultiModalAdapter/vit_b16_ep5.yaml"
_PAPER_TEXT = "the MMA paper's text, section 4 (k = 9, 1 epoch; no released config; official issue #3)"


class MultiModalAdapter(MethodBase):
    """The MMA branches for both towers of one model; attach them with hooks, train only these weights.

    Parameters
    ----------
    maps : dict[str, LayerMap]
        ``mma.probe.layers.layer_maps(model)``: only each tower's depth and block widths are used.
    k : int, default 5
        First adapted block (1-based, inclusive), counted in blocks of the shallower tower: ``1..L_min``.
    dim : int, default 32
        Bottleneck width ``r``.
    alpha : float, default 1e-3
        Scale of the branch output (>= 0; 0 = the frozen model); may be changed at any time (e.g. a
        different alpha at inference).
    grad_scale : bool, default True
        Scale gradients so the adapter weights learn as if ``alpha`` were 1 (module doc).
    depth_mode : {"relative", "block"}, default "relative"
        How ``k`` maps onto towers of different depth (module doc).
    model_name : str, default "model"
        Used in error messages only.

    Attributes
    ----------
    k_image, k_text : int
        First adapted block of each tower.
    image_blocks, text_blocks : list[int]
        Adapted block numbers of each tower.
    shared_of : dict[str, dict[int, int]]
        ``shared_of[tower][block]`` = the number of the shared layer that block uses.
    """

    # the method interface (mma.adapters.method_base): the shared defaults and MMAOptions' are the published recipe
    name: ClassVar[str] = "mma"
    title: ClassVar[str] = "MMA"
    Options: ClassVar[type[Options]] = MMAOptions
    uses: ClassVar[tuple[str, ...]] = MMA_FIELDS
    paper_protocols: ClassVar[dict[str, dict]] = {
        "base2novel": {"k": 5},
        "cross-dataset": _PUBLISHED_XD,
        "domain-gen": _PUBLISHED_XD,
    }
    paper_datasets: ClassVar[dict[str, dict]] = {"imagenet": {"batch_size": 128}}
    paper_files: ClassVar[dict[str, str]] = {
        "": _RELEASED,
        "base2novel": _RELEASED,
        "cross-dataset": _PAPER_TEXT,
        "domain-gen": _PAPER_TEXT,
        "imagenet": "MMA configs/trainers/MultiModalAdapter/vit_b16_ep5_imnet.yaml",
    }
    search_space: ClassVar[dict[str, list]] = {
        "alpha": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3],
        "lr": [0.0015, 0.006, 0.024, 0.1, 0.4],
        "epochs": [5, 10, 15, 20],
    }
    depth_indexed: ClassVar[bool] = True
    colour: ClassVar[str] = "#2ca02c"  # green

    def __init__(
        self,
        maps: Mapping[str, LayerMap],
        *,
        k: int = 5,
        dim: int = 32,
        alpha: float = 1e-3,
        grad_scale: bool = True,
        depth_mode: str = "relative",
        model_name: str = "model",
        k_image: int | None = None,
        k_text: int | None = None,
    ) -> None:
        super().__init__()
        missing = [t for t in TOWERS if t not in maps]
        if missing:
            raise MmaError(f"maps lacks the {missing[0]!r} tower (valid: a dict with keys {list(TOWERS)}).")
        if depth_mode not in DEPTH_MODES:
            hint = closest(str(depth_mode), DEPTH_MODES)
            raise MmaError(
                f"depth_mode={depth_mode!r} is not valid (valid: {', '.join(map(repr, DEPTH_MODES))})"
                + (f"; {hint}" if hint else ".")
            )
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise MmaError(f"dim={dim!r} is out of range (valid: an integer >= 1; the official default is 32).")
        for t in TOWERS:
            if not maps[t].transformer:
                raise MmaError(
                    f"MMA needs transformer blocks, but the {t} tower of {model_name!r} is a convolutional network "
                    f"({maps[t].family}, probed stage by stage); choose a ViT-family model."
                )
        depths = {t: maps[t].depth for t in TOWERS}
        widths = {t: maps[t].layers[1].width for t in TOWERS}
        block_widths = {t: [layer.width for layer in maps[t].layers[1:-1]] for t in TOWERS}
        min_depth = min(depths.values())
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= min_depth:
            if depths["image"] == depths["text"]:
                where = f"{model_name}, whose towers have {min_depth} blocks"
            else:
                shallow = min(TOWERS, key=lambda t: depths[t])
                where = (
                    f"the {shallow} tower of {model_name}, which has {min_depth} blocks (k counts blocks "
                    "of the shallower tower)"
                )
            raise MmaError(f"k={k!r} is out of range for {where} (valid: 1..{min_depth}).")
        own = {"image": k_image, "text": k_text}
        top = {t: min_depth if depth_mode == "block" else depths[t] for t in TOWERS}
        check_starts("MMA", {"k": k, **{f"k_{t}": own[t] for t in TOWERS}}, top, model_name, per_tower=True)

        self.k = k
        self.own_starts = own  # the starts given apart from k (None: follow k)
        self.dim = dim
        self.alpha = alpha
        self.grad_scale = bool(grad_scale)
        self.depth_mode = depth_mode
        self.model_name = model_name
        self.depths = depths
        self.widths = widths
        self.block_widths = block_widths
        self.shared_of = {t: _block_plan(depths[t], min_depth, k, depth_mode, own[t]) for t in TOWERS}
        self.image_blocks = list(self.shared_of["image"])
        self.text_blocks = list(self.shared_of["text"])
        self.k_image = self.image_blocks[0]
        self.k_text = self.text_blocks[0]

        self.down = nn.ModuleDict()
        self.up = nn.ModuleDict()
        for t in TOWERS:
            w = block_widths[t]
            self.down[t] = nn.ModuleDict({str(j): _kaiming_linear(w[j - 1], dim) for j in self.shared_of[t]})
            self.up[t] = nn.ModuleDict({str(j): _kaiming_linear(dim, w[j - 1]) for j in self.shared_of[t]})
        used = sorted({s for plan in self.shared_of.values() for s in plan.values()})
        self.shared = nn.ModuleDict({str(s): _kaiming_linear(dim, dim) for s in used})
        self._handles: list[RemovableHandle] = []
        self._maps: dict[str, LayerMap] = {}

    # -- options ------------------------------------------------------------------------------------

    @property
    def alpha(self) -> float:
        """Scale of the branch output (>= 0; 0 = the frozen model); settable at any time, used on the next forward."""
        return self._alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        self._alpha = check_alpha(value)

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this adapter (with :meth:`from_config`), as plain JSON-able values.

        ``block_widths`` is recorded only for towers whose blocks differ in width (e.g. Swin).
        """
        config = {
            "k": self.k,
            **{f"k_{t}": self.own_starts[t] for t in TOWERS if self.own_starts[t] is not None},
            "dim": self.dim,
            "alpha": self.alpha,
            "grad_scale": self.grad_scale,
            "depth_mode": self.depth_mode,
            "model_name": self.model_name,
            "depths": dict(self.depths),
            "widths": dict(self.widths),
        }
        uneven = {t: w for t, w in self.block_widths.items() if len(set(w)) > 1}
        if uneven:
            config["block_widths"] = uneven
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any], maps: Mapping[str, LayerMap]) -> MultiModalAdapter:
        """Rebuild an adapter from :meth:`config` for the model *maps* describes (its towers must match)."""
        adapter = cls(
            maps,
            k=config["k"],
            k_image=config.get("k_image"),
            k_text=config.get("k_text"),
            dim=config["dim"],
            alpha=config["alpha"],
            grad_scale=config["grad_scale"],
            depth_mode=config["depth_mode"],
            model_name=config.get("model_name", "model"),
        )
        for key in ("depths", "widths"):
            if key in config and dict(config[key]) != getattr(adapter, key):
                raise MmaError(
                    f"The adapter config has {key} {dict(config[key])} but the model has {getattr(adapter, key)} "
                    "(valid: the same model the adapter was built for)."
                )
        if config.get("block_widths", {}) != adapter.config().get("block_widths", {}):
            raise MmaError(
                "The adapter config's per-block widths differ from the model's (valid: the same model the adapter "
                "was built for)."
            )
        return adapter

    @classmethod
    def build(cls, loaded, cfg: TrainConfig, classnames=()) -> MultiModalAdapter:
        """A fresh adapter from ``cfg.options`` for *loaded*'s model (frozen), on its device and dtype, not attached."""
        opts = cfg.options
        freeze(loaded.model)
        adapter = cls(
            layer_maps(loaded.model),
            k=opts.k,
            k_image=opts.k_image,
            k_text=opts.k_text,
            dim=opts.dim,
            alpha=opts.alpha,
            grad_scale=opts.grad_scale,
            depth_mode=opts.depth_mode,
            model_name=str(loaded.spec),
        )
        return adapter.to(*model_device_dtype(loaded.model))

    @classmethod
    def restore(cls, config: Mapping[str, Any], loaded) -> MultiModalAdapter:
        """:meth:`from_config` for *loaded*'s model, frozen, on its device (the checkpoint interface)."""
        adapter = cls.from_config(config, layer_maps(loaded.model))
        freeze(loaded.model)
        return adapter

    @classmethod
    def check_spec(cls, spec) -> None:
        """ "MMA needs transformer blocks", from the model's config before any weights load."""
        check_mma_support(spec.name)

    @classmethod
    def check_model(cls, loaded, cfg: TrainConfig) -> None:
        """The towers must be transformers and k within the shallower tower's blocks."""
        maps = layer_maps(loaded.model)
        convolutional = [t for t, m in maps.items() if not m.transformer]
        if convolutional:  # an hf-hub: / local-dir: model whose config could not be read before loading
            raise MmaError(
                f"MMA needs transformer blocks, but the {convolutional[0]} tower of {str(loaded.spec)!r} is a "
                f"convolutional network ({maps[convolutional[0]].family}); choose a ViT-family model."
            )
        cls.starts(loaded, cfg)

    @classmethod
    def file_key(cls, seed, depth) -> str:
        return f"seed{seed}-{depth}"  # MMA's checkpoint names, kept from before the other methods existed

    @classmethod
    def record_name(cls, depth) -> str:
        return f"train-{depth}.json"

    @classmethod
    def qualify(cls, source: str) -> str:
        return source  # the default method: its sources carry no name

    def image_start(self, loaded) -> int:
        return self.k_image  # the image blocks below it are frozen

    def objective(self, loaded, classnames, template: str, cfg: TrainConfig) -> nn.Module:
        """The training loss: the dataset's prompts, the frozen text blocks below k run once (prefix cache), the
        image tower from block ``k_image`` on (its inputs are that block's input, :mod:`mma.adapters.frozen`)."""
        model = loaded.model
        device = next(self.parameters()).device
        text_map = layer_maps(model)["text"]
        tokens = loaded.tokenizer([template.format(c) for c in classnames]).to(device)
        cacheable = cfg.options.prefix_cache and text_map.prefix_cache  # Hugging Face towers run in full
        text = TextPrefixCache(model, text_map, self.k_text, tokens) if cacheable else None
        images = image_part(loaded, self.image_start(loaded))
        return MMAObjective(loaded, self, tokens, text, cfg.options.consistency, images)

    def after_training(self, cfg: TrainConfig) -> None:
        """MMA++: evaluate at ``alpha_eval`` when one is given."""
        if cfg.options.alpha_eval is not None:
            self.alpha = cfg.options.alpha_eval

    def classifier(self, loaded, classnames, template, device):
        """None: the hooked model is evaluated by the zero-shot code, exactly as the frozen model is."""
        return None

    def extra_repr(self) -> str:
        return (
            f"k={self.k}, dim={self.dim}, alpha={self.alpha}, grad_scale={self.grad_scale}, "
            f"depth_mode={self.depth_mode!r}, image_blocks={self.image_blocks}, text_blocks={self.text_blocks}"
        )

    # -- the branch ---------------------------------------------------------------------------------

    def branch(self, tower: str, block: int, h: torch.Tensor) -> torch.Tensor:
        """``alpha * up(relu(shared(relu(down(h)))))`` for block *block* of *tower*; ``h``: ``[..., d_m]``.

        With ``grad_scale`` the gradient scaling ops wrap it (identity in the forward pass). Zeros for alpha 0.
        """
        key = str(block)
        down, up = self.down[tower][key], self.up[tower][key]
        shared = self.shared[str(self.shared_of[tower][block])]
        alpha = self.alpha
        h = h.to(down.weight.dtype)
        if alpha == 0:  # the frozen model: no branch (and no 1/alpha)
            return torch.zeros_like(h)
        if self.grad_scale:
            h = _ScaleGrad.apply(h, alpha)
        a = up(torch.relu(shared(torch.relu(down(h))))) * alpha
        if self.grad_scale:
            a = _ScaleGrad.apply(a, 1.0 / alpha)
        return a

    def _hook(self, tower: str, block: int, module: nn.Module, args: tuple, kwargs: dict, output: Any):
        if self._alpha == 0:  # the frozen model, exactly
            return None
        lmap = self._maps[tower]
        h = lmap.adapter_input(module, lmap.block_input(args, kwargs))
        hidden = lmap.block_output(output)
        return lmap.with_block_output(output, hidden + self.branch(tower, block, h).to(hidden.dtype))

    # -- attaching ----------------------------------------------------------------------------------

    @property
    def is_attached(self) -> bool:
        return bool(self._handles)

    def attach(self, model: nn.Module) -> MultiModalAdapter:
        """Register one forward hook per adapted block of *model*; returns self.

        The adapter must be on the model's device. Raises :class:`MmaError` if already attached or if the
        model's towers differ from the ones the adapter was built for.
        """
        if self._handles:
            raise MmaError("This adapter is already attached to a model; call detach() first.")
        maps = layer_maps(model)
        depths = {t: maps[t].depth for t in TOWERS}
        widths = {t: [layer.width for layer in maps[t].layers[1:-1]] for t in TOWERS}
        if depths != self.depths or widths != self.block_widths:
            raise MmaError(
                f"The adapter was built for towers with depths {self.depths} and widths {self.widths}, but this "
                f"model has depths {depths} and widths { {t: w[0] for t, w in widths.items()} } "
                "(valid: the model it was built for)."
            )
        self._maps = maps
        try:
            for t in TOWERS:
                blocks = maps[t].blocks(model)
                for j in self.shared_of[t]:
                    hook = functools.partial(self._hook, t, j)
                    self._handles.append(blocks[j - 1].register_forward_hook(hook, with_kwargs=True))
        except BaseException:
            self.detach()
            raise
        return self

    def detach(self) -> None:
        """Remove the hooks (the model is then exactly the original); a no-op when not attached."""
        while self._handles:
            self._handles.pop().remove()

    @contextlib.contextmanager
    def attached(self, model: nn.Module) -> Iterator[MultiModalAdapter]:
        """``with adapter.attached(model): ...`` attaches for the block and always detaches after it."""
        self.attach(model)
        try:
            yield self
        finally:
            self.detach()


class MMAObjective(nn.Module):
    """MMA's training loss of one batch; its only parameters are the adapter's (what DDP synchronises).

    Plain cross-entropy on ``exp(logit_scale) * cosine`` logits, plus, with ``consistency`` > 0, MMA++'s
    alpha-consistency term: a second no-grad pass at ``alpha2 = U(0,1) * alpha`` and ``-consistency * mean
    cosine`` between the two passes' features, per tower.
    """

    def __init__(
        self,
        loaded,
        adapter: MultiModalAdapter,
        tokens,
        text,
        consistency: float = 0.0,
        images: ImagePart | None = None,
    ) -> None:
        super().__init__()
        self.adapter = adapter
        # a tuple: not registered, so DDP leaves the trunk alone
        self._frozen = (loaded.model, tokens, text, images.rest if images is not None else loaded.model.encode_image)
        self.logit_scale = float(loaded.model.logit_scale.exp())
        self.consistency = consistency

    def encode_text(self) -> torch.Tensor:
        model, tokens, text, _ = self._frozen
        return text.encode() if text is not None else model.encode_text(tokens)

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """*inputs*: the images, or the input of image block ``k_image`` when the objective was given that split."""
        encode_image = self._frozen[3]
        img_n = F.normalize(encode_image(inputs).float(), dim=-1)
        txt_n = F.normalize(self.encode_text().float(), dim=-1)
        loss = F.cross_entropy(self.logit_scale * img_n @ txt_n.T, labels)
        if self.consistency > 0:
            loss = loss + self.consistency * self._consistency(inputs, img_n, txt_n)
        return loss

    def _consistency(self, inputs, img_n, txt_n) -> torch.Tensor:
        """MMA++ alpha-consistency: -mean cosine between features at alpha and at alpha2 = U(0,1)*alpha."""
        encode_image, adapter = self._frozen[3], self.adapter
        alpha = adapter.alpha
        adapter.alpha = random.random() * alpha  # seeded by the training loop; no host sync
        try:
            with torch.no_grad():
                img2 = F.normalize(encode_image(inputs).float(), dim=-1)
                txt2 = F.normalize(self.encode_text().float(), dim=-1)
        finally:
            adapter.alpha = alpha
        return -((img_n * img2).sum(-1).mean() + (txt_n * txt2).sum(-1).mean())


def add_adapter(
    model: nn.Module,
    *,
    k: int = 5,
    dim: int = 32,
    alpha: float = 1e-3,
    grad_scale: bool = True,
    depth_mode: str = "relative",
    model_name: str = "model",
) -> MultiModalAdapter:
    """Freeze every parameter of *model*, build an MMA for it on its device and dtype, attach it.

    Options as in :class:`MultiModalAdapter`. Train ``adapter.parameters()``; nothing else requires grad.
    """
    freeze(model)
    adapter = MultiModalAdapter(
        layer_maps(model),
        k=k,
        dim=dim,
        alpha=alpha,
        grad_scale=grad_scale,
        depth_mode=depth_mode,
        model_name=model_name,
    )
    return adapter.to(*model_device_dtype(model)).attach(model)
