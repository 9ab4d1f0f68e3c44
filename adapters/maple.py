"""MaPLe: deep multi-modal prompts with the text-to-vision coupling, hooked into an unmodified open_clip model.

MaPLe (Khattak et al., CVPR 2023) learns ``n`` context tokens for each of the first ``J`` depths of the text tower
(``J``: the prompt depth) and obtains the vision prompts of each depth from that depth's text prompts through a
linear map, so the two towers' prompts are learned together::

    text depth 1:   P_1 = ctx (n x d_t)          put at positions 1..n of the token embedding (CoOp's place)
    text depth j:   P_j (n x d_t), j = 2..J      replacing the hidden states at positions 1..n of block j's input
    vision depth j: V_j = F_j(P_j) (n x d_v)     F_j: Linear(d_t, d_v), one per depth
                    V_1 appended after the class, patch and position embeddings (before ln_pre);
                    V_j (j >= 2) replacing the n appended tokens at block j's input
    logits(x) = exp(logit_scale) * cos(image(x; V), text(prompt(c); P))

The text prompt is the init words and the class name, ``"a photo of a {name}."``: its first ``n`` word tokens
(``"a photo"`` at n = 2) are replaced by ``ctx``, initialised from their own embeddings; the remaining init words
stay as frozen tokens, as the official code builds it (more context tokens than init words is refused in one
sentence, where the official code falls back to a random init). The deeper text prompts are initialised
N(0, 0.02); the ``J - 1`` deeper maps ``F_j`` are copies of one randomly initialised linear layer (the official
``_get_clones``).

Placement (:mod:`mma.adapters.prompt_layers`): the first-depth text prompts live in the token embedding, before the
positional embedding is added (the official code's ``construct_prompts``); the first-depth vision prompts are
appended after the positional embedding and before ``ln_pre`` (its ``VisionTransformer_MaPLe.forward``). The
appended vision tokens are removed from the last block's output, so the tower's own pooling reads the original
tokens (the official code reads the class token, the same thing).

Depth **[ours]** (:mod:`mma.adapters.depth`): at start block ``k`` on a text tower of ``L`` blocks the prompt depth is
``J = L - k + 1``; the published ``J = 9`` is ``k = 4`` (base-to-novel) and the cross-dataset / domain-generalisation
``J = 3`` is ``k = 10``. The towers cannot start apart (``per_tower`` False: the vision prompts are the text prompts'
images). On an image tower deeper than the text tower (ViT-L/14: 24 and 12 blocks) **[ours]**, the vision prompts of
text depth ``j`` enter the image block that starts at the same relative depth, ``ceil((j - 1) L_v / L_t) + 1``, and
the blocks between pass them on; an image tower shallower than the text tower is refused.

Defaults are the published configuration (github.com/muzairkhattak/multimodal-prompt-learning):
``configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml``: 2 context tokens from "a photo of a", prompt depth 9,
SGD lr 0.0035, batch 4, 5 epochs, cosine with one warm-up epoch at a constant 1e-5 (Dassl's SGD momentum 0.9 and
weight decay 5e-4, the shared defaults); ``..._2ctx_cross_datasets.yaml`` (cross-dataset and domain generalisation,
``scripts/maple/xd_train_maple.sh``): prompt depth 3, lr 0.0026, 2 epochs. ViT-B/16 at depth 9: 3,555,072 trainable
parameters (the paper's 3.55M; the arithmetic is in ``tests/test_maple.py``).

The hooks exist only during the method's own passes (:func:`~mma.adapters.prompt_layers.prompted`), so the model is
never left changed and ``attach`` / ``detach`` have nothing to do. :class:`DeepPromptLearner` is what MaPLe and
PromptSRC (:mod:`mma.adapters.promptsrc`) share: the text context, the prompts' tokens, the prompted towers.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mma.errors import MmaError
from mma.probe.layers import layer_maps
from mma.probe.textcut import cut_text, live_length

from .coop import prompt_texts, token_embedding
from .depth import DepthOptions, relative_start
from .method_base import WARMUP, MethodBase, feature_width, freeze, model_device_dtype
from .prompt_layers import TowerPrompts, prompted

__all__ = ["MaPLe", "MaPLeOptions", "DeepPromptLearner", "context_from_words", "prompt_depth"]

_PLACEHOLDER = "X"
_FILES = "github.com/muzairkhattak/multimodal-prompt-learning"
_B2N_FILE = (
    f"MaPLe ({_FILES}) configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml, scripts/maple/base2new_train_maple.sh "
    "(PROMPT_DEPTH 9 = k 4 on 12-block towers [ours])"
)
_XD_FILE = (
    f"MaPLe ({_FILES}) configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml, "
    "scripts/maple/xd_train_maple.sh (PROMPT_DEPTH 3 = k 10 on 12-block towers [ours])"
)
#: cross-dataset and domain generalisation train once on ImageNet with the cross-dataset config
_XD = {"k": 10, "lr": 0.0026, "epochs": 2}


def prompt_depth(start: int, depth: int) -> int:
    """The prompt depth ``J = L - k + 1`` at start block *start* of a tower of *depth* blocks (module doc)."""
    return depth - start + 1


def context_from_words(loaded, words: str, n: int) -> torch.Tensor:
    """``[n, width]``: the token embeddings of the first *n* word tokens of *words* (the official init), float32 CPU;
    an :class:`MmaError` when *words* have fewer than *n* tokens."""
    tokens = loaded.tokenizer([words])[0]
    end = int(tokens.argmax())  # the EOT token has the largest id
    ids = tokens[1:end]
    if len(ids) < n:
        raise MmaError(
            f"ctx_init={words!r} has {len(ids)} tokens, fewer than the {n} context tokens to initialise; give at most "
            f"{len(ids)} context tokens, longer init words, or ctx_init='' (random)."
        )
    model = loaded.model
    with torch.no_grad():
        return token_embedding(model, str(loaded.spec))(ids[:n].to(model_device_dtype(model)[0])).float().cpu()


def _init_normal(*shape: int) -> torch.Tensor:
    return nn.init.normal_(torch.empty(*shape), std=0.02)


@dataclass
class MaPLeOptions(DepthOptions):
    """MaPLe's own options (Dassl's ``TRAINER.MAPLE``; its PROMPT_DEPTH is ``k``, module doc)."""

    n_ctx: int = 2  # context tokens per depth (N_CTX)
    ctx_init: str = "a photo of a"  # words whose embeddings initialise the first depth's text context ("": N(0, 0.02))

    def checks(self) -> list[tuple[str, bool, str]]:
        return [*super().checks(), ("n_ctx", self.n_ctx >= 1, "an integer >= 1")]


class DeepPromptLearner(MethodBase):
    """What the deep prompt learners share (MaPLe, PromptSRC): the first text depth's context ``ctx`` in the token
    embedding, the class prompts ``"<ctx_init or X ...> <name>."``, and the towers run with the prompts of
    :meth:`text_prompts` / :meth:`image_prompts` (places as in :mod:`mma.adapters.prompt_layers`).

    A subclass sets ``self.ctx`` (``[n_text, d_t]``), ``self.ctx_init`` and ``self.n_text`` and returns its
    prompts from :meth:`text_prompts` and :meth:`image_prompts`.
    """

    depth_indexed: ClassVar[bool] = True
    depth_knob: ClassVar[str] = "prompt depth"
    reads_template: ClassVar[bool] = False  # it learns its context (from ctx_init), whatever --template says

    ctx: nn.Parameter
    ctx_init: str
    n_text: int

    # -- what the towers receive ---------------------------------------------------------------------

    def text_prompts(self) -> dict[int, torch.Tensor]:
        """Text place -> tokens ``[n_text, d_t]`` (place 0: the token embedding)."""
        raise NotImplementedError

    def image_prompts(self) -> dict[int, torch.Tensor]:
        """Image place -> tokens ``[n_image, d_v]`` (place 0: appended before ``ln_pre``)."""
        raise NotImplementedError

    @property
    def prefix(self) -> str:
        """The words before the class name; the first ``n_text`` of their tokens are replaced by ``ctx``."""
        return self.ctx_init or " ".join([_PLACEHOLDER] * self.n_text)

    def prompts(self, loaded, classnames: Sequence[str], device) -> dict:
        """The class prompts' tokens and their live length (found once, not in every step)."""
        tokens = loaded.tokenizer(prompt_texts(self.prefix, classnames)).to(device)
        return {"tokens": tokens, "length": live_length(layer_maps(loaded.model)["text"], tokens)}

    def encode_text(self, model: nn.Module, prompts: Mapping) -> torch.Tensor:
        """Text features (unnormalised) of the class prompts with the text prompts in, on the live positions."""
        with TowerPrompts(model, "text", self.text_prompts()):
            with cut_text(model, layer_maps(model)["text"], prompts["tokens"], prompts["length"]) as live:
                return model.encode_text(live)

    def encode_image(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Image features (unnormalised) with the vision prompts in."""
        with prompted(model, image=self.image_prompts()):
            return model.encode_image(images)

    # -- the classifier --------------------------------------------------------------------------------

    def head(self, loaded, classnames, template, device, *, train: bool) -> dict:
        prompts = self.prompts(loaded, classnames, device)
        if train:
            return prompts
        return {"text": F.normalize(self.encode_text(loaded.model, prompts).float(), dim=-1)}

    def logits(self, model, images, head, *, train: bool) -> torch.Tensor:
        img = F.normalize(self.encode_image(model, images).float(), dim=-1)
        text = head.get("text")
        if text is None:
            text = F.normalize(self.encode_text(model, head).float(), dim=-1)
        return model.logit_scale.exp().float() * img @ text.T

    # -- what it needs of a model -----------------------------------------------------------------------

    @classmethod
    def check_model(cls, loaded, cfg) -> None:
        """Transformer towers holding tokens, an open_clip text tower (its token embedding) and valid starts."""
        maps = layer_maps(loaded.model)
        for t, m in maps.items():
            if not m.transformer or m.layout not in ("NLD", "LND"):
                raise MmaError(
                    f"{cls.title} puts prompt tokens into transformer blocks, but the {t} tower of "
                    f"{str(loaded.spec)!r} is {m.family} ({m.layout}); choose a ViT-family model."
                )
        token_embedding(loaded.model, str(loaded.spec))
        cls.starts(loaded, cfg)

    @staticmethod
    def _sizes(loaded) -> dict[str, Any]:
        """The tower widths and depths and the feature width the prompts are built for."""
        maps = layer_maps(loaded.model)
        return {
            "widths": {t: maps[t].layers[1].width for t in ("image", "text")},
            "depths": {t: maps[t].depth for t in ("image", "text")},
            "embed_dim": feature_width(loaded),
        }

    @classmethod
    def _check_restore(cls, config: Mapping[str, Any], loaded) -> dict[str, Any]:
        sizes = cls._sizes(loaded)
        if {k: config[k] for k in sizes} != sizes:
            raise MmaError(
                f"The {cls.name} checkpoint was trained on towers {config['depths']} blocks deep and "
                f"{config['widths']} wide, but this model's are {sizes['depths']} and {sizes['widths']} (valid: the "
                "model it was built for)."
            )
        return sizes


class MaPLe(DeepPromptLearner):
    """MaPLe (module doc): ``J`` depths of ``n`` text prompts and the maps of their vision prompts (ViT-B/16 at
    J = 9, n = 2: 3,555,072 parameters)."""

    name: ClassVar[str] = "maple"
    title: ClassVar[str] = "MaPLe"
    Options: ClassVar[type[MaPLeOptions]] = MaPLeOptions
    per_tower: ClassVar[bool] = False  # the vision prompts are projections of the text prompts of the same depth
    paper: ClassVar[dict] = {
        "lr": 0.0035,
        "batch_size": 4,
        "epochs": 5,
        "k": 4,
        "n_ctx": 2,
        "ctx_init": "a photo of a",
        **WARMUP,
    }
    paper_protocols: ClassVar[dict[str, dict]] = {"base2novel": {"k": 4}, "cross-dataset": _XD, "domain-gen": _XD}
    paper_files: ClassVar[dict[str, str]] = {
        "": _B2N_FILE,
        "base2novel": _B2N_FILE,
        "cross-dataset": _XD_FILE,
        "domain-gen": _XD_FILE,
    }
    search_space: ClassVar[dict[str, list]] = {
        "lr": [0.0009, 0.0035, 0.014, 0.056],  # factors of 4 around the published 0.0035
        "epochs": [2, 5, 10, 20],
    }

    def __init__(
        self,
        *,
        widths: Mapping[str, int],
        depths: Mapping[str, int],
        embed_dim: int,
        depth: int,
        n_ctx: int = 2,
        ctx_init: str = "",
        init: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if depths["image"] < depths["text"]:
            raise MmaError(
                f"MaPLe couples one vision prompt to each text prompt depth, so its image tower must be at least as "
                f"deep as its text tower; this model's have {depths['image']} and {depths['text']} blocks; choose "
                "another model or method."
            )
        if not 1 <= depth <= depths["text"]:
            raise MmaError(f"MaPLe's prompt depth {depth} is out of range (valid: 1..{depths['text']}).")
        self.widths, self.depths, self.embed_dim = dict(widths), dict(depths), embed_dim
        self.depth, self.n_text, self.ctx_init = depth, n_ctx, ctx_init
        d_t, d_v = widths["text"], widths["image"]
        self.ctx = nn.Parameter(init.clone() if init is not None else _init_normal(n_ctx, d_t))
        self.proj = nn.Linear(d_t, d_v)  # the first depth's vision prompts: proj(ctx)
        self.deep_text = nn.ParameterList([nn.Parameter(_init_normal(n_ctx, d_t)) for _ in range(depth - 1)])
        one = nn.Linear(d_t, d_v)
        self.deep_proj = nn.ModuleList([copy.deepcopy(one) for _ in range(depth - 1)])

    # -- depth ---------------------------------------------------------------------------------------------

    @classmethod
    def depth_label(cls, starts, depths) -> str:
        return f"prompt depth {prompt_depth(starts['text'], depths['text'])}"

    def image_block(self, j: int) -> int:
        """The image block (1-based) that receives the vision prompts of text depth *j* >= 2 (module doc)."""
        return relative_start(j, self.depths["image"], self.depths["text"])

    # -- the prompts -----------------------------------------------------------------------------------------

    def text_prompts(self) -> dict[int, torch.Tensor]:
        return {0: self.ctx, **{j: p for j, p in enumerate(self.deep_text, start=2)}}

    def image_prompts(self) -> dict[int, torch.Tensor]:
        deep = zip(self.deep_text, self.deep_proj, strict=True)
        return {0: self.proj(self.ctx), **{self.image_block(j): f(p) for j, (p, f) in enumerate(deep, start=2)}}

    # -- building ------------------------------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "depth": self.depth,
            "n_ctx": self.n_text,
            "ctx_init": self.ctx_init,
            "widths": self.widths,
            "depths": self.depths,
            "embed_dim": self.embed_dim,
        }

    @classmethod
    def build(cls, loaded, cfg, classnames: Sequence[str] = ()) -> MaPLe:
        """A fresh MaPLe for *loaded*'s model (frozen) at the prompt depth of ``cfg``'s k, on its device."""
        cls.check_model(loaded, cfg)
        opts, sizes = cfg.options, cls._sizes(loaded)
        depth = prompt_depth(cls.starts(loaded, cfg)["text"], sizes["depths"]["text"])
        init = context_from_words(loaded, opts.ctx_init, opts.n_ctx) if opts.ctx_init else None
        freeze(loaded.model)
        method = cls(**sizes, depth=depth, n_ctx=opts.n_ctx, ctx_init=opts.ctx_init, init=init)
        return method.to(*model_device_dtype(loaded.model))

    @classmethod
    def restore(cls, config: Mapping[str, Any], loaded) -> MaPLe:
        sizes = cls._check_restore(config, loaded)
        freeze(loaded.model)
        method = cls(**sizes, depth=config["depth"], n_ctx=config["n_ctx"], ctx_init=config["ctx_init"])
        return method.to(*model_device_dtype(loaded.model))
