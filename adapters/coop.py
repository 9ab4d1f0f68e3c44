"""CoOp and CoCoOp: learned context vectors in the text prompt of a frozen open_clip text tower.

CoOp (Zhou et al., IJCV 2022) replaces the hand-written words of the prompt by ``n_ctx`` learned vectors
``v_1..v_n`` shared by every class, with the class name at the end::

    prompt(c) = [SOT] v_1 ... v_n  name(c) . [EOT]       text feature = the frozen text tower on it

CoCoOp (Zhou et al., CVPR 2022) adds a meta-network ``h`` (two linear layers with a ReLU, width / 16 in the
middle) that turns the image's normalised feature ``f`` into one shift added to every context vector, so each
image gets its own prompts::

    v_i(x) = v_i + h(f(x)),   logits(x) = exp(logit_scale) * cos(f(x), text(prompt_x(c)))

How it reaches the text tower without forking open_clip: the prompt is tokenised with ``n_ctx`` placeholder
words (CoOp's own trick: ``"X X ... X name."``, or the words of ``ctx_init``), and while the method encodes
text, a forward hook on the tower's token embedding replaces the embeddings at positions ``1..n_ctx`` by the
context vectors. Everything else (positions, blocks, final norm, the EOT readout at the highest token id, the
projection) is open_clip's ``encode_text`` unchanged, run on the live positions only
(:mod:`mma.probe.textcut`). The hook exists only during the method's own text pass,
so the model is never left changed (``attach`` / ``detach`` have nothing to do).

Defaults are the configurations behind each published row (github.com/KaiyangZhou/CoOp at commit ff61507):

* CoOp, few-shot (the CoOp paper): 16 context vectors initialised N(0, 0.02), generic (shared by all classes),
  class token at the end, SGD lr 0.002, batch 32, 200 epochs, cosine schedule with one warm-up epoch at a
  constant 1e-5 (``configs/trainers/CoOp/vit_b16.yaml``, ``scripts/coop/main.sh``);
* CoOp, base-to-novel, cross-dataset and domain generalisation (the CoCoOp paper's protocol, which gives the
  published CoOp rows): 4 context vectors initialised from "a photo of a", otherwise the same
  (``configs/trainers/CoOp/vit_b16_ctxv1.yaml``, as the comments of ``scripts/cocoop/base2new_train.sh`` and
  ``xd_train.sh`` say to run CoOp; the repository's issues #27 and #70); ViT-B/16 at 4 vectors: 2,048 parameters;
* CoOp on ImageNet: 50 epochs (``vit_b16_ep50_ctxv1.yaml`` / ``vit_b16_ep50.yaml``);
* CoCoOp: 4 context vectors initialised from "a photo of a", batch 1, 10 epochs, otherwise the same
  (``configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mma.errors import MmaError
from mma.probe.layers import layer_maps
from mma.probe.textcut import cut_text, live_length

from .config import Options
from .method_base import WARMUP, MethodBase, feature_width, freeze, model_device_dtype, whole_image_tower

__all__ = ["CoOp", "CoCoOp", "PromptOptions", "token_embedding", "prompt_texts"]

#: CoOp as the CoCoOp paper's protocol runs it (the published base-to-novel, cross-dataset and domain-gen rows)
_CTXV1 = {"n_ctx": 4, "ctx_init": "a photo of a"}
_CTXV1_FILE = "CoOp configs/trainers/CoOp/vit_b16_ctxv1.yaml via scripts/cocoop/base2new_train.sh, xd_train.sh"
#: the learning rates mma tune may try for the prompt learners (factors of 4 around the published 0.002)
_PROMPT_LRS = [0.0005, 0.002, 0.008, 0.032, 0.128]

_PLACEHOLDER = "X"
# images per evaluation chunk of CoCoOp: every image encodes every class's prompt
_PROMPTS_PER_CHUNK = 4096


def token_embedding(model: nn.Module, model_name: str = "model") -> nn.Embedding:
    """The text tower's token embedding (open_clip ``CLIP`` or ``CustomTextCLIP`` with a CLIP text transformer)."""
    for owner in (model, getattr(model, "text", None)):
        emb = getattr(owner, "token_embedding", None)
        if isinstance(emb, nn.Embedding):
            return emb
    raise MmaError(
        f"Prompt learning (CoOp, CoCoOp) needs an open_clip CLIP text transformer with a token embedding; the text "
        f"tower of {model_name!r} has none (a Hugging Face text tower?); choose another model or method."
    )


def prompt_texts(prefix: str, classnames: Sequence[str]) -> list[str]:
    """``"<prefix> <name>."`` for every class (underscores in names become spaces), CoOp's prompt layout."""
    return [f"{prefix} {c.replace('_', ' ')}." for c in classnames]


@contextlib.contextmanager
def _context_in(model: nn.Module, ctx: torch.Tensor) -> Iterator[None]:
    """While inside, the token embedding's output at positions 1..n holds *ctx* (``[n, w]`` or ``[prompts, n, w]``)."""
    emb = token_embedding(model)
    n = ctx.shape[-2]

    def put(_module, _args, out: torch.Tensor) -> torch.Tensor:
        c = ctx.to(out.dtype)
        c = c.expand(out.shape[0], -1, -1) if c.dim() == 2 else c
        return torch.cat([out[:, :1], c, out[:, 1 + n :]], dim=1)

    handle = emb.register_forward_hook(put)
    try:
        yield
    finally:
        handle.remove()


@dataclass
class PromptOptions(Options):
    """CoOp's and CoCoOp's own options (Dassl's ``TRAINER.COOP`` / ``TRAINER.COCOOP``)."""

    n_ctx: int = 16  # context vectors
    ctx_init: str = ""  # words whose embeddings initialise the context ("" = N(0, 0.02))

    def checks(self) -> list[tuple[str, bool, str]]:
        return [("n_ctx", self.n_ctx >= 1, "an integer >= 1")]


class _PromptLearner(MethodBase):
    """Context vectors in the prompt (CoOp); CoCoOp adds its meta-network."""

    Options: ClassVar[type[Options]] = PromptOptions
    reads_template: ClassVar[bool] = False  # it learns its context (from ctx_init), whatever --template says

    def __init__(
        self, *, width: int, embed_dim: int, n_ctx: int, ctx_init: str = "", init: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 1:
            raise MmaError(f"n_ctx={n_ctx!r} is out of range (valid: an integer >= 1; CoOp: 16, CoCoOp: 4).")
        self.width, self.embed_dim, self.n_ctx, self.ctx_init = width, embed_dim, n_ctx, ctx_init
        ctx = torch.empty(n_ctx, width)
        if init is None:
            nn.init.normal_(ctx, std=0.02)
        else:
            ctx.copy_(init)
        self.ctx = nn.Parameter(ctx)

    @property
    def prefix(self) -> str:
        return self.ctx_init or " ".join([_PLACEHOLDER] * self.n_ctx)

    def config(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "n_ctx": self.n_ctx,
            "ctx_init": self.ctx_init,
            "width": self.width,
            "embed_dim": self.embed_dim,
        }

    @classmethod
    def _sizes(cls, loaded) -> tuple[int, int]:
        emb = token_embedding(loaded.model, str(loaded.spec))
        return emb.weight.shape[1], feature_width(loaded)

    @classmethod
    def build(cls, loaded, cfg, classnames: Sequence[str] = ()) -> _PromptLearner:
        """A fresh learner for *loaded*'s model (frozen) from its ``n_ctx`` / ``ctx_init`` options, on its device."""
        model, n_ctx, ctx_init = loaded.model, cfg.options.n_ctx, cfg.options.ctx_init
        width, embed_dim = cls._sizes(loaded)
        init = None
        if ctx_init:  # the init words' own embeddings, and as many context vectors as they have tokens
            tokens = loaded.tokenizer([ctx_init])[0]
            ids = tokens[1 : int(tokens.argmax()) if tokens.argmax() > 0 else len(tokens)]
            if len(ids) != n_ctx:
                raise MmaError(
                    f"ctx_init={ctx_init!r} has {len(ids)} tokens but n_ctx={n_ctx}; give n_ctx={len(ids)} "
                    "or other init words."
                )
            with torch.no_grad():
                init = token_embedding(model)(ids.to(model_device_dtype(model)[0])).float().cpu()
        freeze(model)
        method = cls._new(width=width, embed_dim=embed_dim, n_ctx=n_ctx, ctx_init=ctx_init, init=init)
        return method.to(*model_device_dtype(model))

    @classmethod
    def _new(cls, **kw) -> _PromptLearner:
        return cls(**kw)

    @classmethod
    def restore(cls, config: Mapping[str, Any], loaded) -> _PromptLearner:
        width, embed_dim = cls._sizes(loaded)
        if (config["width"], config["embed_dim"]) != (width, embed_dim):
            raise MmaError(
                f"The {cls.name} checkpoint was trained on a text width {config['width']} and embedding "
                f"{config['embed_dim']}, but this model has {width} and {embed_dim} (valid: the model it was built "
                "for)."
            )
        freeze(loaded.model)
        method = cls._new(width=width, embed_dim=embed_dim, n_ctx=config["n_ctx"], ctx_init=config["ctx_init"])
        return method.to(*model_device_dtype(loaded.model))

    def image_start(self, loaded) -> int:
        return whole_image_tower(loaded)  # the image tower is frozen and nothing of it is in the prompt

    def tokens(self, loaded, classnames: Sequence[str], device) -> torch.Tensor:
        return loaded.tokenizer(prompt_texts(self.prefix, classnames)).to(device)

    def prompts(self, loaded, classnames: Sequence[str], device) -> dict:
        """The prompts' tokens and their live length, found once (not in every training step)."""
        tokens = self.tokens(loaded, classnames, device)
        return {"tokens": tokens, "length": live_length(layer_maps(loaded.model)["text"], tokens)}

    def encode_prompts(
        self, model: nn.Module, tokens: torch.Tensor, ctx: torch.Tensor, length: int | None = None
    ) -> torch.Tensor:
        """Text features (unnormalised) of *tokens* with *ctx* at positions 1..n_ctx, on the live positions only
        (the first *length*, when the caller found it already)."""
        with _context_in(model, ctx), cut_text(model, layer_maps(model)["text"], tokens, length) as live:
            return model.encode_text(live)


def _scale(model: nn.Module) -> float:
    return float(model.logit_scale.exp())


class CoOp(_PromptLearner):
    """CoOp: ``n_ctx`` context vectors shared by every class, class token at the end (ViT-B/16: 4 x 512 = 2,048 as
    published for base-to-novel, 16 x 512 = 8,192 for few-shot)."""

    name: ClassVar[str] = "coop"
    title: ClassVar[str] = "CoOp"
    paper: ClassVar[dict] = {
        "lr": 0.002,
        "batch_size": 32,
        "epochs": 200,
        "n_ctx": 16,
        "ctx_init": "",
        **WARMUP,
    }
    paper_protocols: ClassVar[dict[str, dict]] = {"base2novel": _CTXV1, "cross-dataset": _CTXV1, "domain-gen": _CTXV1}
    paper_datasets: ClassVar[dict[str, dict]] = {"imagenet": {"epochs": 50}}
    paper_files: ClassVar[dict[str, str]] = {
        "": "CoOp configs/trainers/CoOp/vit_b16.yaml, scripts/coop/main.sh (16 vectors, class token at the end)",
        "base2novel": _CTXV1_FILE,
        "cross-dataset": _CTXV1_FILE,
        "domain-gen": _CTXV1_FILE,
        "imagenet": "CoOp configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml",
    }
    search_space: ClassVar[dict[str, list]] = {
        "lr": _PROMPT_LRS,
        "epochs": [25, 50, 100, 200],
        "context": [_CTXV1, {"n_ctx": 8, "ctx_init": ""}, {"n_ctx": 16, "ctx_init": ""}],
    }

    def head(self, loaded, classnames, template, device, *, train: bool):
        prompts = self.prompts(loaded, classnames, device)
        if train:
            return prompts
        text = self.encode_prompts(loaded.model, prompts["tokens"], self.ctx, prompts["length"])
        return {"text": F.normalize(text.float(), dim=-1)}

    def logits(self, model, features, head, *, train: bool) -> torch.Tensor:
        img = F.normalize(features.float(), dim=-1)
        text = head.get("text")
        if text is None:
            text = F.normalize(self.encode_prompts(model, head["tokens"], self.ctx, head["length"]).float(), dim=-1)
        return _scale(model) * img @ text.T


class CoCoOp(_PromptLearner):
    """CoCoOp: CoOp's context plus ``meta(f) = W2 relu(W1 f)`` added to it per image (ViT-B/16: 35,360)."""

    name: ClassVar[str] = "cocoop"
    title: ClassVar[str] = "CoCoOp"
    paper: ClassVar[dict] = {
        "lr": 0.002,
        "batch_size": 1,
        "epochs": 10,
        "n_ctx": 4,
        "ctx_init": "a photo of a",
        **WARMUP,
    }
    paper_files: ClassVar[dict[str, str]] = {"": "CoOp configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml"}
    search_space: ClassVar[dict[str, list]] = {"lr": _PROMPT_LRS, "epochs": [2, 5, 10, 20]}
    meta_reduction: ClassVar[int] = 16  # the official hidden width: embedding width // 16

    def __init__(self, *, width: int, embed_dim: int, n_ctx: int, ctx_init: str = "", init=None) -> None:
        super().__init__(width=width, embed_dim=embed_dim, n_ctx=n_ctx, ctx_init=ctx_init, init=init)
        hidden = max(1, embed_dim // self.meta_reduction)
        self.meta_net = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU(), nn.Linear(hidden, width))

    def context(self, img_n: torch.Tensor) -> torch.Tensor:
        """Per-image context ``[B, n_ctx, width]`` from normalised image features ``[B, embed_dim]``."""
        return self.ctx.unsqueeze(0) + self.meta_net(img_n.to(self.ctx.dtype)).unsqueeze(1)

    def head(self, loaded, classnames, template, device, *, train: bool):
        return self.prompts(loaded, classnames, device)

    def logits(self, model, features, head, *, train: bool) -> torch.Tensor:
        img = F.normalize(features.float(), dim=-1)
        tokens = head["tokens"]
        n_cls = tokens.shape[0]
        chunk = len(img) if train else max(1, _PROMPTS_PER_CHUNK // n_cls)
        out = []
        for i in range(0, len(img), chunk):
            f = img[i : i + chunk]
            ctx = self.context(f).repeat_interleave(n_cls, dim=0)  # [b * n_cls, n_ctx, w]
            text = self.encode_prompts(model, tokens.repeat(len(f), 1), ctx, head["length"]).float()
            text = F.normalize(text, dim=-1).view(len(f), n_cls, -1)
            out.append(_scale(model) * torch.einsum("bd,bcd->bc", f, text))
        return torch.cat(out)
