"""Model specs: ``NAME`` or ``NAME:PRETRAINED``, validated against open_clip, and loading them.

=================================  ======================================================================
spec                               meaning
=================================  ======================================================================
(none)                             the embedded default, ``mma-tiny`` with its shipped weights
``mma-tiny:random``                any model with seeded random weights (every output says so)
``ViT-B-16-quickgelu:openai``      an open_clip architecture and pretrained tag (downloaded on first use)
``ViT-B-16:/path/to/ckpt.pt``      an open_clip architecture and a local checkpoint file
``hf-hub:ORG/REPO``                open_clip's Hugging Face hub form
``local-dir:/path``                open_clip's local folder form (config + weights)
=================================  ======================================================================

The QuickGELU trap: OpenAI's weights were trained with QuickGELU, but e.g. ``ViT-B-16``'s config uses
GELU. Such a pair is built with QuickGELU and the user is told so (:attr:`LoadedModel.notes`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mma.errors import MmaError, closest
from mma.io import sha256_file

from .embedded import EMBEDDED_NAME, WEIGHTS_PATH, load_embedded_state, register_config

__all__ = ["ModelSpec", "LoadedModel", "parse_model_spec", "load_model", "list_model_specs", "DEFAULT_MODEL"]

DEFAULT_MODEL = EMBEDDED_NAME
RANDOM = "random"
SCHEMAS = ("hf-hub:", "local-dir:")
_HASH_CACHE: dict[tuple[str, int, float], str] = {}


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec. ``pretrained`` is a tag, a file path, ``"random"`` or None."""

    name: str
    pretrained: str | None = None

    def __str__(self) -> str:
        return self.name if self.pretrained is None else f"{self.name}:{self.pretrained}"

    @property
    def is_embedded(self) -> bool:
        return self.name == EMBEDDED_NAME

    @property
    def has_schema(self) -> bool:
        return self.name.startswith(SCHEMAS)

    @property
    def is_random(self) -> bool:
        if self.has_schema:
            return False
        if self.is_embedded:
            return self.pretrained == RANDOM
        return self.pretrained in (None, RANDOM)


@dataclass
class LoadedModel:
    """A model ready to use: the module (eval mode), its image transforms, tokenizer and provenance."""

    spec: ModelSpec
    model: torch.nn.Module
    preprocess: Callable
    preprocess_train: Callable
    tokenizer: Callable
    weights_id: str
    random_weights: bool
    notes: list[str] = field(default_factory=list)

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    def describe(self) -> str:
        return f"{self.spec} ({'random weights' if self.random_weights else 'weights ' + self.weights_id[:12]})"


def _known_models() -> list[str]:
    import open_clip

    register_config()
    return list(open_clip.list_models())


def parse_model_spec(text: str | None) -> ModelSpec:
    """Parse and validate a model spec; ``None`` or ``""`` gives the embedded default."""
    if text is None or not str(text).strip():
        return ModelSpec(DEFAULT_MODEL)
    text = str(text).strip()
    if text.startswith(SCHEMAS):
        return ModelSpec(text)
    name, sep, pretrained = text.partition(":")
    known = _known_models()
    if name not in known:
        # A wrong-case name ('vit-b-16') must point at its exact match, which difflib may rank below others.
        same = [k for k in known if k.lower() == name.lower()]
        hint = f"did you mean {same[0]!r}? Names are case-sensitive." if same else closest(name, known)
        raise MmaError(
            f"Unknown model {name!r}"
            + (f"; {hint}" if hint else "")
            + " Run 'mma models' for the list, or use hf-hub:ORG/REPO / local-dir:PATH."
        )
    if not sep:
        return ModelSpec(name)
    if not pretrained:
        raise MmaError(f"The model spec {text!r} ends with ':'; give a pretrained tag or a checkpoint path after it.")
    if pretrained == RANDOM or os.path.isfile(os.path.expanduser(pretrained)):
        return ModelSpec(name, pretrained if pretrained == RANDOM else os.path.expanduser(pretrained))
    import open_clip

    tags = [] if name == EMBEDDED_NAME else list(open_clip.list_pretrained_tags_by_model(name))
    if pretrained not in tags:
        looks_like_path = any(c in pretrained for c in "/\\.") or pretrained.startswith("~")
        if looks_like_path:
            raise MmaError(f"The checkpoint file {pretrained!r} for model {name!r} does not exist.")
        hint = closest(pretrained, tags)
        valid = ", ".join(tags) if tags else "none"
        raise MmaError(
            f"Unknown pretrained tag {pretrained!r} for model {name!r}"
            + (f" ({hint})" if hint else "")
            + f"; valid tags: {valid}; or give a checkpoint file path, or 'random'."
        )
    return ModelSpec(name, pretrained)


def list_model_specs() -> list[dict]:
    """The embedded default first, then every open_clip architecture with its pretrained tags."""
    import open_clip

    rows = [dict(model=EMBEDDED_NAME, pretrained="(shipped weights), random", default=True)]
    tags: dict[str, list[str]] = {}
    for name, tag in open_clip.list_pretrained():
        tags.setdefault(name, []).append(tag)
    for name in _known_models():
        if name != EMBEDDED_NAME:
            rows.append(dict(model=name, pretrained=", ".join(tags.get(name, [])) or "-", default=False))
    return rows


def _quick_gelu_note(spec: ModelSpec) -> tuple[bool, str | None]:
    """Whether to force QuickGELU: the tag was trained with it but the architecture's config lacks it."""
    import open_clip

    if spec.has_schema or spec.pretrained is None or spec.is_random or os.path.isfile(spec.pretrained):
        return False, None
    tag_cfg = open_clip.get_pretrained_cfg(spec.name, spec.pretrained) or {}
    model_cfg = open_clip.get_model_config(spec.name) or {}
    if tag_cfg.get("quick_gelu", False) and not model_cfg.get("quick_gelu", False):
        return True, (
            f"{spec}: these weights were trained with QuickGELU but the {spec.name} config uses GELU; "
            f"building it with QuickGELU (same as {spec.name}-quickgelu)."
        )
    return False, None


def _weights_id(path: str | os.PathLike) -> str:
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = sha256_file(path)
    return _HASH_CACHE[key]


def _download(spec: ModelSpec) -> str:
    """Fetch a pretrained tag into open_clip's cache; one clear sentence if that is impossible (offline)."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(spec.name, spec.pretrained)
    try:
        path = open_clip.download_pretrained(cfg)
    except Exception as exc:  # network stacks raise many types (OSError, httpx/requests errors...)
        raise MmaError(
            f"Could not download the weights for {spec} ({type(exc).__name__}). Offline? Download them once "
            f"elsewhere and pass the file as '{spec.name}:/path/to/weights', or fill the Hugging Face cache "
            "(HF_HOME) on this machine."
        ) from exc
    if not path:
        raise MmaError(f"open_clip has no download location for {spec}; pass a local checkpoint file instead.")
    return path


def load_model(
    spec: str | ModelSpec | None = None,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    seed: int = 0,
) -> LoadedModel:
    """Build the model a spec names, in eval mode, with its transforms and tokenizer.

    Random-init models are seeded with *seed* so that two loads are identical.
    """
    import open_clip

    if not isinstance(spec, ModelSpec):
        spec = parse_model_spec(spec)
    register_config()
    notes: list[str] = []
    force_quick_gelu, note = _quick_gelu_note(spec)
    if note:
        notes.append(note)

    torch.manual_seed(seed)
    if spec.has_schema:
        try:
            model, pre_train, pre_val = open_clip.create_model_and_transforms(
                spec.name, device=device, precision=precision
            )
        except Exception as exc:  # hub downloads raise many types
            raise MmaError(
                f"Could not load {spec} ({type(exc).__name__}: {exc}). Offline? Use a local checkpoint file instead."
            ) from exc
        tokenizer = open_clip.get_tokenizer(spec.name)
        weights_id = spec.name
    elif spec.is_embedded and not spec.is_random and str(spec.pretrained or WEIGHTS_PATH).endswith(".safetensors"):
        with _quiet_root_logger():
            model, pre_train, pre_val = open_clip.create_model_and_transforms(EMBEDDED_NAME, precision="fp32")
        path = spec.pretrained or WEIGHTS_PATH
        if not Path(path).is_file():
            raise MmaError(
                f"The embedded weights file {str(path)!r} is missing; reinstall mma or rebuild it with "
                "'mma pretrain-tiny --out PATH'."
            )
        model.load_state_dict(load_embedded_state(path))
        model.to(device=device)
        tokenizer = open_clip.get_tokenizer(EMBEDDED_NAME)
        weights_id = _weights_id(path)
    else:
        pretrained = None if spec.is_random else spec.pretrained
        if pretrained is not None and not os.path.isfile(pretrained):
            pretrained = _download(spec)
        # open_clip logs "No pretrained weights loaded" for a deliberate random init; we say it ourselves.
        quiet = _quiet_root_logger() if pretrained is None else contextlib.nullcontext()
        try:
            with quiet:
                model, pre_train, pre_val = open_clip.create_model_and_transforms(
                    spec.name,
                    pretrained=pretrained,
                    device=device,
                    precision=precision,
                    force_quick_gelu=force_quick_gelu,
                )
        except (RuntimeError, KeyError) as exc:
            raise MmaError(f"The checkpoint {pretrained!r} does not fit model {spec.name!r}: {str(exc)[:200]}") from exc
        tokenizer = open_clip.get_tokenizer(spec.name)
        weights_id = f"random-seed{seed}" if pretrained is None else _weights_id(pretrained)
    if precision != "fp32" and spec.is_embedded:
        model.to(dtype={"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32))
    model.eval()
    random_weights = spec.is_random
    if random_weights:
        notes.append(f"{spec}: random weights (seed {seed}), not pretrained.")
    return LoadedModel(spec, model, pre_val, pre_train, tokenizer, weights_id, random_weights, notes)


@contextlib.contextmanager
def _quiet_root_logger():
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
