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
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from mma.errors import MmaError, closest
from mma.io import sha256_file

from .embedded import EMBEDDED_NAME, WEIGHTS_PATH, load_embedded_state, register_config
from .hub import hub_or_cache
from .openclip import import_open_clip
from .towers import architecture_support

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
    # lazy, here and below: open_clip (with torchvision and timm) takes ~2.5 s to import on top of torch, and
    # mma.probe is also loaded where it is not needed (mma datasets, the spawned image workers)
    open_clip = import_open_clip()

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
        if _looks_like_path(name):
            raise MmaError(
                f"Unknown model {name!r}: it looks like a checkpoint file, not an architecture; write NAME:PATH "
                f"with the architecture the weights belong to, e.g. {'ViT-B-16:' + text!r} (see 'mma models')."
            )
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
    if pretrained == RANDOM:
        return ModelSpec(name, RANDOM)
    if os.path.isfile(os.path.expanduser(pretrained)):
        path = os.path.expanduser(pretrained)
        _check_weights_file(path, name)
        return ModelSpec(name, path)
    open_clip = import_open_clip()  # lazy: heavy, see _known_models

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


_WEIGHT_EXTENSIONS = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".npz", ".npy", ".tar")
# The safetensors metadata key under which an adapter checkpoint (mma.adapters.checkpoint) keeps its JSON record;
# here so that a model's weights check can tell such a file from a model's weights.
CHECKPOINT_METADATA_KEY = "mma"  # not a method: the toolkit


def _looks_like_path(name: str) -> bool:
    return (
        any(c in name for c in "/\\")
        or name.startswith("~")
        or name.lower().endswith(_WEIGHT_EXTENSIONS)
        or os.path.exists(os.path.expanduser(name))
    )


def _check_weights_file(path: str, name: str) -> None:
    """One sentence, before anything is built, if *path* is not a file open_clip can read weights from.

    open_clip reads ``torch.save`` files (a zip archive, or a pickle for the legacy format), safetensors
    (an 8-byte header length, then a JSON header) and big_vision NumPy files (``.npz`` zip, ``.npy``).
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise MmaError(f"The checkpoint file {path!r} cannot be read ({exc.strerror or exc}).") from None
    zipped = head.startswith(b"PK\x03\x04")
    pickled = head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5
    numpy = head.startswith(b"\x93NUMPY")
    safetensors = len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1
    if safetensors:
        _refuse_adapter_checkpoint(path, name)
    if zipped or pickled or numpy or safetensors:
        return
    what = "an empty file" if not head else ("a text file" if _is_text(head) else "not a weights file")
    raise MmaError(
        f"The checkpoint file {path!r} for model {name!r} is {what}: open_clip reads weights saved by "
        "torch.save, safetensors or NumPy; pass the model's weights file."
    )


def adapter_checkpoint_record(path: str | os.PathLike) -> dict | None:
    """The JSON record of an adapter checkpoint at *path* (a dict with an ``adapter`` entry), else None."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            record = json.loads((fh.metadata() or {}).get(CHECKPOINT_METADATA_KEY, "null"))
    except (SafetensorError, OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "adapter" in record else None


def _refuse_adapter_checkpoint(path: str, name: str) -> None:
    """One sentence if *path* is an adapter checkpoint (written by train-selected), not a model's weights."""
    record = adapter_checkpoint_record(path)
    if record is None:
        return
    base = f"the model it adapts ({str(record['model'])!r})" if record.get("model") else "the model it adapts"
    raise MmaError(
        f"The checkpoint file {path!r} given as the weights of model {name!r} looks like an adapter checkpoint "
        f"written by 'mma train-selected', not a model's weights; 'mma evaluate --checkpoint' reads it, and "
        f"--model takes {base}."
    )


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\r\n" for c in text)


def list_model_specs() -> list[dict]:
    """The embedded default first, then every open_clip architecture with its pretrained tags.

    Each row also says, from the architecture's config alone, its tower families (``towers``) and whether
    mma can probe it (``probe``) and fit the adapter to it (``mma``; convolutional towers: probe only).
    """
    open_clip = import_open_clip()  # lazy: heavy, see _known_models

    register_config()

    def support(name: str) -> dict:
        s = architecture_support(name)
        if s is None:
            return dict(towers="unknown", probe=False, mma=False)
        return dict(towers=s.label, probe=s.probe, mma=s.mma)

    rows = [dict(model=EMBEDDED_NAME, pretrained="(shipped weights), random", default=True, **support(EMBEDDED_NAME))]
    tags: dict[str, list[str]] = {}
    for name, tag in open_clip.list_pretrained():
        tags.setdefault(name, []).append(tag)
    for name in _known_models():
        if name != EMBEDDED_NAME:
            rows.append(
                dict(model=name, pretrained=", ".join(tags.get(name, [])) or "-", default=False, **support(name))
            )
    return rows


def _quick_gelu_note(spec: ModelSpec) -> tuple[bool, str | None]:
    """Whether to force QuickGELU: the tag was trained with it but the architecture's config lacks it."""
    open_clip = import_open_clip()  # lazy: heavy, see _known_models

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
    open_clip = import_open_clip()  # lazy: heavy, see _known_models

    cfg = open_clip.get_pretrained_cfg(spec.name, spec.pretrained)
    try:
        with hub_or_cache() as online:
            path = open_clip.download_pretrained(cfg)
    except Exception as exc:  # network stacks raise many types (OSError, httpx/requests errors...)
        why = (
            "the Hugging Face hub cannot be reached and they are not in the local cache"
            if not online
            else (type(exc).__name__)
        )
        raise MmaError(
            f"Could not download the weights for {str(spec)!r} ({why}). Offline? Download them once "
            f"elsewhere and pass the file as {spec.name + ':/path/to/weights'!r}, or fill the Hugging Face cache "
            "(HF_HOME) on this machine."
        ) from exc
    if not path:
        raise MmaError(f"open_clip has no download location for {str(spec)!r}; pass a local checkpoint file instead.")
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
    open_clip = import_open_clip()  # lazy: heavy, see _known_models

    if not isinstance(spec, ModelSpec):
        spec = parse_model_spec(spec)
    register_config()
    notes: list[str] = []
    force_quick_gelu, note = _quick_gelu_note(spec)
    if note:
        notes.append(note)

    torch.manual_seed(seed)
    if spec.has_schema:
        tokenizer = _open_clip_tokenizer(spec)  # cheap, and the first thing that needs the hub: fail fast
        torch.manual_seed(seed)
        with _hub_errors(spec, "the model"):
            model, pre_train, pre_val = open_clip.create_model_and_transforms(
                spec.name, device=device, precision=precision
            )
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
        try:
            model.load_state_dict(load_embedded_state(path))
        except Exception as exc:  # safetensors / load_state_dict raise many types on a file of other weights
            raise MmaError(
                f"The checkpoint {str(path)!r} does not fit model {EMBEDDED_NAME!r} "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]!r})."
            ) from exc
        model.to(device=device)
        tokenizer = open_clip.get_tokenizer(EMBEDDED_NAME)
        weights_id = _weights_id(path)
    else:
        tokenizer = _open_clip_tokenizer(spec)
        torch.manual_seed(seed)
        pretrained = None if spec.is_random else spec.pretrained
        if pretrained is not None and not os.path.isfile(pretrained):
            pretrained = _download(spec)
        # open_clip logs "No pretrained weights loaded" for a deliberate random init; we say it ourselves.
        quiet = _quiet_root_logger() if pretrained is None else contextlib.nullcontext()
        try:
            with quiet, _hub_errors(spec, "the model"):
                model, pre_train, pre_val = open_clip.create_model_and_transforms(
                    spec.name,
                    pretrained=pretrained,
                    device=device,
                    precision=precision,
                    force_quick_gelu=force_quick_gelu,
                    # random means random: no base weights for a Hugging Face text tower either
                    pretrained_text=pretrained is not None,
                )
        except MmaError:
            raise
        except Exception as exc:  # torch.load / safetensors / load_state_dict raise many types on a bad file
            if pretrained is None:
                raise
            raise MmaError(
                f"The checkpoint {pretrained!r} does not fit model {spec.name!r} "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]!r})."
            ) from exc
        weights_id = f"random-seed{seed}" if pretrained is None else _weights_id(pretrained)
    if precision != "fp32" and spec.is_embedded:
        model.to(dtype={"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32))
    model.eval()
    random_weights = spec.is_random
    if random_weights:
        notes.append(f"{spec}: random weights (seed {seed}), not pretrained.")
    return LoadedModel(spec, model, pre_val, pre_train, tokenizer, weights_id, random_weights, notes)


def _open_clip_tokenizer(spec: ModelSpec) -> Callable:
    """open_clip's tokenizer for *spec* (SigLIP's and Hugging Face text towers' come from the hub)."""
    open_clip = import_open_clip()  # lazy: heavy, see _known_models

    with _hub_errors(spec, "the tokenizer"), _quiet_root_logger():  # open_clip logs its own hub fallbacks
        return open_clip.get_tokenizer(spec.name)


@contextlib.contextmanager
def _hub_errors(spec: ModelSpec, what: str):
    """Hub access from the local cache alone when the hub cannot be reached; its failures as one sentence."""
    online = True
    try:
        with hub_or_cache() as online:
            yield
    except ImportError as exc:
        raise MmaError(
            f"{str(spec)!r} needs the Python package {exc.name or 'transformers'!r} for {what}; "
            f"pip install {exc.name or 'transformers'}."
        ) from exc
    except (OSError, RuntimeError, ValueError) as exc:
        if "pip install transformers" in str(exc):  # open_clip's own hint
            raise MmaError(f"{str(spec)!r} needs the Python package 'transformers'; pip install transformers.") from exc
        if not _mentions_hub(exc):
            raise
        where = (
            "the Hugging Face hub cannot be reached and it is not in the local cache (HF_HOME)"
            if not online
            else f"the Hugging Face hub refused it ({type(exc).__name__})"
        )
        raise MmaError(
            f"Could not load {what} of {str(spec)!r}: {where}. Download it once where the hub can be reached "
            "(it is cached), or pass local files (local-dir:PATH, or NAME:/path/to/weights)."
        ) from exc


def _mentions_hub(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(w in text for w in ("hub", "huggingface", "hugging face", "connection", "offline", "local cache"))


@contextlib.contextmanager
def _quiet_root_logger():
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
