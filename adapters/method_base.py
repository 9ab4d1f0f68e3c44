"""The interface every method shares: what it trains, how it is configured, and what the jobs ask of it.

Every method (the zero-shot model, MMA, MMA++, MaPLe, PromptSRC, MMRL, CLIP-LoRA, CoOp, CoCoOp, CLIP-Adapter, the
linear probe, and any plugin) is a :class:`MethodBase` subclass registered in :mod:`mma.adapters.methods` (built-ins
there, others through the ``mma.methods`` entry-point group). The jobs, the CLI, the tables and the benchmarks never
compare a method's name: they ask the class. Adding a method is one module and its registration (see
``examples/plugin_method``).

=================  ==============================================================================================
method             what it learns (ViT-B/16 trainable parameters)
=================  ==============================================================================================
``zeroshot``       nothing: the frozen model with the dataset's prompt (:mod:`.zeroshot`; 0)
``mma``            the Multi-Modal Adapter from block k (:mod:`mma.adapters.mma`; 674,560 at k = 5)
``mma++``          MMA with MMA++'s alpha-consistency training, dropout and test-time alpha (:mod:`.mma_pp`; 674,560)
``maple``          deep multi-modal prompts, vision prompts projected from the text prompts (:mod:`.maple`;
                   3,555,072 at prompt depth 9)
``promptsrc``      deep prompts in both towers, regularised toward the frozen model, prompt averaging over epochs
                   (:mod:`.promptsrc`; 46,080 at depth 9)
``mmrl``           a shared representation space projected into both towers from a start layer, decoupled
                   inference (:mod:`.mmrl`; 4,992,256 from layer 6)
``clip-lora``      low-rank adapters on the attention projections of both towers (:mod:`.clip_lora`; 184,320 on
                   q, k, v of every block at rank 2)
``coop``           context vectors shared by all classes, class token at the end (:mod:`.coop`; 2,048 at the 4 of
                   base-to-novel, 8,192 at the 16 of few-shot)
``cocoop``         CoOp's 4 context vectors plus an image-conditioned meta-network (:mod:`.coop`; 35,360)
``clip-adapter``   a residual bottleneck MLP on the image feature (:mod:`.clip_adapter`; 131,072)
``linear-probe``   logistic regression on the image feature, C chosen on the few-shot val split
                   (:mod:`.linear_probe`; 512 x classes + classes); it cannot name unseen classes
=================  ==============================================================================================

What a method answers (class attributes and class methods), instead of the jobs deciding by its name:

* ``name``; ``Options`` (a dataclass of its own options, :class:`~mma.adapters.config.Options`) and ``uses``
  (every training value it reads, shared ones and its own, in the order lines print them);
* ``paper`` (its published values over the shared defaults), ``paper_protocols`` / ``paper_datasets`` (published
  values for one protocol or one training dataset: MMA's k 5 for base-to-novel, batch 128 on ImageNet) and
  ``paper_files`` (the official file each of those came from, printed with the values' source);
* ``published_prompts`` (it reads each dataset's published zero-shot prompt, :meth:`prompt_template`) and
  ``search_space`` (what ``mma tune`` may try, :mod:`mma.adapters.search`);
* ``trains`` (False: the zero-shot model, evaluated once per task, without a seed), ``depth_indexed`` (it takes
  its start blocks k / k_image / k_text from the probe selection, :mod:`mma.adapters.depth`, and its results are
  keyed by them), ``per_tower`` (its towers may start apart), ``depth_knob`` and :meth:`depth_label` (its own
  depth, in its own words), :meth:`starts` (each tower's start block) and :meth:`published_k`;
* :meth:`check_spec` / :meth:`check_model`: what it needs of a model, before and after the weights load;
* :meth:`run_key`, :meth:`file_key`, :meth:`record_name`: the names of its result, checkpoint, training state
  and configuration record; :meth:`qualify`: how a value source names it (``paper default (coop)``);
* ``title``, ``published_as`` and ``colour``: its name in figures, in the published tables, and its colour.

And an instance (an ``nn.Module`` whose parameters are the trainable ones):

* ``build(loaded, cfg, classnames)`` / ``restore(config, loaded)`` / ``config()``: a fresh method for the
  loaded model (its trunk frozen, on its device), or one rebuilt from a checkpoint's JSON-able values;
* ``attach(model)`` / ``detach()``: whatever it changes in the model (forward hooks), undone exactly;
* ``image_start(loaded)``: where its image tower starts to change: a block (MMA: its first adapted image block),
  :func:`whole_image_tower` (nothing of it changes: it reads the final feature) or None (it reads the images;
  the default). What lies below is computed once per image where the preprocessing allows it
  (:mod:`mma.adapters.frozen`), and the method's *inputs* below are what lies there;
* ``objective(loaded, classnames, template, cfg)``: an ``nn.Module`` whose only parameters are the method's,
  mapping ``(inputs, labels)`` to the training loss (what DDP wraps);
* ``can_classify(classnames)``: whether it can name these classes (the linear probe only those it was fitted on:
  novel classes and other datasets' are "not applicable");
* ``classifier(loaded, classnames, template, device)``: ``inputs -> logits`` for evaluation, or None when
  the model as it is (hooks attached) is evaluated by the zero-shot code (MMA, the zero-shot model);
* ``after_epoch(epoch, epochs)``: what changes at each epoch's end, before its state is saved (PromptSRC's prompt
  averaging; kept in the method's state_dict, so a resumed run ends as an uninterrupted one);
* ``after_training(cfg)``: what changes once training is over (MMA: ``alpha_eval``); ``fitted_values()``: what
  it chose while fitting, recorded with its result (the linear probe's C);
* ``fit`` (optional): a training procedure of its own instead of the SGD loop (the linear probe).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mma.errors import MmaError
from mma.probe.layers import layer_maps

from .config import COMMON_FIELDS, Options, TrainConfig
from .depth import check_starts

__all__ = [
    "MethodBase",
    "ClassifierObjective",
    "TrainResult",
    "COMMON_FIELDS",
    "WARMUP",
    "freeze",
    "model_device_dtype",
    "feature_width",
    "check_feature_width",
    "whole_image_tower",
]

#: the constant warm-up epoch of CoOp's Dassl configs, which CoCoOp and CLIP-Adapter's trainer share
WARMUP = {"warmup_epochs": 1, "warmup_lr": 1e-5}


@dataclass
class TrainResult:
    adapter: nn.Module  # the trained method
    steps: int
    seconds: float
    final_loss: float
    losses: list[float]  # every step's loss
    batch_size: int = 0  # the global batch that ran (smaller than the config's for a small training set)
    # one row per epoch: epoch (1-based), steps, loss (the mean of its steps), lr (the one it ran at), seconds;
    # empty for a method with its own fit (the linear probe has no epochs)
    history: list[dict] = field(default_factory=list)


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


def whole_image_tower(loaded) -> int:
    """The :meth:`MethodBase.image_start` of a method that changes nothing of the image tower (``depth + 1``)."""
    return layer_maps(loaded.model)["image"].depth + 1


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
    """What every method shares (module docstring): by default no hooks, a CLIP-style loss, a classifier."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[Options]] = Options
    uses: ClassVar[tuple[str, ...] | None] = None  # None: the shared fields, then its own options
    paper: ClassVar[dict] = {}
    paper_protocols: ClassVar[dict[str, dict]] = {}
    paper_datasets: ClassVar[dict[str, dict]] = {}
    paper_files: ClassVar[dict[str, str]] = {}  # "" / protocol / dataset -> the official file its values come from
    published_prompts: ClassVar[bool] = False  # it was published with each dataset's own zero-shot prompt
    reads_template: ClassVar[bool] = True  # --template is its text (CoOp / CoCoOp learn theirs; a probe reads none)
    search_space: ClassVar[dict[str, list]] = {}  # what mma tune may try (mma.adapters.search); {}: nothing
    trains: ClassVar[bool] = True
    depth_indexed: ClassVar[bool] = False  # it reads the start blocks k / k_image / k_text (mma.adapters.depth)
    per_tower: ClassVar[bool] = True  # (depth-indexed) its towers may start at different blocks
    depth_knob: ClassVar[str] = "start block"  # (depth-indexed) what its own depth is called, for lines and tables
    title: ClassVar[str] = ""  # how figures and lines name it ("" = its name)
    published_as: ClassVar[str | None] = None  # None: its name, matched loosely against the published tables
    colour: ClassVar[str | None] = None  # None: the next colour of the figures' palette
    fit = None  # a method with its own training procedure sets a function here (see linear_probe)

    # -- configuration ------------------------------------------------------------------------------

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The names of its own options (the fields of ``Options``)."""
        return tuple(f.name for f in fields(cls.Options))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Every training value it reads, in the order the recipe line names them."""
        return (*COMMON_FIELDS, *cls.option_names()) if cls.uses is None else tuple(cls.uses)

    @classmethod
    def make_config(cls, values: Mapping | None = None, **more) -> TrainConfig:
        """A :class:`TrainConfig` from flat values (``{"lr": 0.1, "n_ctx": 4}``): the shared ones and its own options.

        Not validated (:meth:`TrainConfig.validate`); a name neither shared nor its own is an error.
        """
        values = {**(values or {}), **more}
        own = cls.option_names()
        unknown = sorted(set(values) - set(COMMON_FIELDS) - set(own))
        if unknown:
            valid = sorted((*COMMON_FIELDS, *own))
            raise MmaError(f"Unknown training option(s) {unknown} for method {cls.name!r}; valid: {valid}.")
        shared = {k: v for k, v in values.items() if k in COMMON_FIELDS}
        return TrainConfig(**shared, options=cls.Options(**{k: v for k, v in values.items() if k in own}))

    @classmethod
    def prompt_template(cls, dataset, template: str | None = None) -> str:
        """The prompt it reads for *dataset*'s classes: the user's *template* (a method that reads one,
        :attr:`reads_template`); else the dataset's published zero-shot prompt if it was published with one (CoOp's
        per-dataset templates on ``coop:`` data); else the dataset's."""
        if template and cls.reads_template:
            return template
        published = getattr(dataset, "published_template", None)
        return published if cls.published_prompts and published else dataset.template

    @classmethod
    def paper_file(cls, where: str = "") -> str:
        """The official file its published values for *where* ("" / a protocol / a dataset) come from ("" if none)."""
        return cls.paper_files.get(where, "")

    @classmethod
    def published_k(cls, protocol: str) -> int | None:
        """(depth-indexed) the k its published runs of *protocol* used (:mod:`mma.adapters.depth`), or None."""
        k = {**cls.paper, **cls.paper_protocols.get(protocol, {})}.get("k")
        return int(k) if k is not None else None

    @classmethod
    def published_values(cls) -> dict:
        """Every value it reads at its published recipe: the defaults, then its ``paper`` values (flat)."""
        return {**cls.make_config().values(), **cls.paper}

    # -- what it needs of a model -------------------------------------------------------------------

    @classmethod
    def check_spec(cls, spec) -> None:
        """Refuse a model spec it cannot adapt, from the model's config (before any weights load)."""

    @classmethod
    def check_model(cls, loaded, cfg: TrainConfig) -> None:
        """Refuse the loaded model (or a value of *cfg* out of range for it) with one sentence."""

    @classmethod
    def starts(cls, loaded, cfg: TrainConfig) -> dict[str, int]:
        """(depth-indexed) each tower's start block for *cfg*'s ``k`` / ``k_image`` / ``k_text``
        (:mod:`mma.adapters.depth`), or one sentence when one is out of the tower's blocks or the towers must start
        together (``per_tower`` False)."""
        maps = layer_maps(loaded.model)
        depths = {t: m.depth for t, m in maps.items()}
        return check_starts(cls.title or cls.name, asdict(cfg.options), depths, str(loaded.spec), cls.per_tower)

    # -- names ----------------------------------------------------------------------------------------

    @classmethod
    def run_key(cls, seed: int | None, depth: str | None) -> str:
        """The stem of its result JSON for one seed (and depth, :func:`~mma.adapters.depth.depth_key`: ``k5``)."""
        return f"seed{seed}-{depth}-{cls.name}" if cls.depth_indexed else f"seed{seed}-{cls.name}"

    @classmethod
    def file_key(cls, seed: int | None, depth: str | None) -> str:
        """The stem of its checkpoint and training state, after ``<protocol>-<dataset>-``."""
        return cls.run_key(seed, depth)

    @classmethod
    def record_name(cls, depth: str | None) -> str:
        """The file that records the configuration it ran with."""
        return f"train-{depth}-{cls.name}.json" if cls.depth_indexed else f"train-{cls.name}.json"

    @classmethod
    def depth_label(cls, starts: Mapping[str, int], depths: Mapping[str, int]) -> str:
        """Its own depth at these start blocks (``{"image": 3, "text": 7}``), in its own words (``blocks 5..12``)."""
        if starts["image"] == starts["text"] and depths["image"] == depths["text"]:
            return f"blocks {starts['image']}..{depths['image']}"
        return ", ".join(f"{t} blocks {starts[t]}..{depths[t]}" for t in ("image", "text"))

    @classmethod
    def qualify(cls, source: str) -> str:
        """A value source as it names this method (``paper default (coop)``)."""
        return f"{source} ({cls.name})"

    # -- an instance ----------------------------------------------------------------------------------

    def after_training(self, cfg: TrainConfig) -> None:
        """What changes once training is over (nothing here)."""

    def after_epoch(self, epoch: int, epochs: int) -> None:
        """What changes at the end of epoch *epoch* (1-based) of *epochs*, before the epoch's training state is saved
        (nothing here; PromptSRC folds its prompts into their running Gaussian-weighted average)."""

    def fitted_values(self) -> dict[str, float]:
        """What it chose while fitting, recorded with its result (the linear probe's C); nothing here."""
        return {}

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

    def image_start(self, loaded) -> int | None:
        """The first image block it changes (1-based), :func:`whole_image_tower` if none, or None: it reads images."""
        return None

    def num_parameters(self) -> int:
        """Number of trainable parameters of the method (the frozen trunk not counted)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # the training loss and the evaluation logits, from one function: the tapped path cannot drift
    def logits(self, model: nn.Module, inputs: torch.Tensor, head: Any, *, train: bool) -> torch.Tensor:
        """Logits of a batch of its inputs (:meth:`image_start`: images, or the final image features)."""
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
