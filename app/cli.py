"""The ``mma`` command line: a thin typer layer over the Python API (``import mma``).

Each command parses its options, calls one public function and prints where the output went. Problems a
user can fix arrive as :class:`mma.errors.MmaError`; the CLI prints that one sentence and exits with 2.
Heavy imports (torch, open_clip) happen inside the commands, so ``mma --help`` stays fast.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperCommand, TyperGroup

from mma import __version__
from mma.coop_layout import coop_folder_names, coop_spec
from mma.errors import MmaError


class _NoFlagTypes:
    """Flags take no value, so their help shows none (typer would print ``--help <bool>``, ``--strict <bool>``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if getattr(param, "is_flag", False):
                param.metavar = ""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class _Command(_NoFlagTypes, TyperCommand):
    pass


class _Group(_NoFlagTypes, TyperGroup):
    pass


app = typer.Typer(
    name="mma",
    cls=_Group,
    help="Layer probes, adapter-depth selection and the Multi-Modal Adapter for open_clip models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
command = functools.partial(app.command, cls=_Command)

__all__ = ["app", "main"]


def friendly(fn):
    """Turn an :class:`MmaError` (or an OSError) into one line on stderr and exit code 2; Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            result = fn(*args, **kwargs)
            sys.stdout.flush()  # a closed pipe shows here, where it can be answered, not in click's exit handler
            return result
        except BrokenPipeError:  # the reader went away (mma models | head): nothing more to say, not an error
            _silence_stdout()
            raise typer.Exit(0) from None
        except MmaError as exc:
            typer.secho(f"Error: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.secho("Interrupted; rerun the same command to resume.", err=True, fg=typer.colors.YELLOW)
            raise typer.Exit(130) from None
        except OSError as exc:  # the file system refused a path the user gave (too long, no permission, ...)
            where = f" ({exc.filename})" if exc.filename else ""
            typer.secho(f"Error: {exc.strerror or exc}{where}.", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from None

    return wrapper


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's own flush at exit does not hit the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (e.g. captured output in tests)
        pass


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mma {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Layer probes, adapter-depth selection and the Multi-Modal Adapter for open_clip models."""


def _table(rows: list[dict], columns: list[str], title: str) -> None:
    """A rich table as wide as the terminal; written to a pipe or file, at least 120 columns (no wrapping)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*["" if r.get(c) is None else str(r.get(c)) for c in columns])

    class _Console(Console):
        def on_broken_pipe(self) -> None:  # rich would exit with 1; a closed pipe is no error here
            self.quiet = True
            raise BrokenPipeError

    console = _Console()
    if not console.is_terminal:
        console = _Console(width=max(120, console.width))
    console.print(table)


@command()
@friendly
def models(
    all_tags: Annotated[
        bool, typer.Option("--all", help="List every open_clip architecture, not just those with tags.")
    ] = False,
) -> None:
    """The embedded default model, then open_clip's architectures, pretrained tags and what mma supports."""
    from mma.probe.specs import list_model_specs

    rows = list_model_specs()
    rows = [rows[0]] + [r for r in rows[1:] if all_tags or r["pretrained"] != "-"]
    for r in rows:
        r["model"] = r["model"] + ("  (default)" if r["default"] else "")
        r["probe"] = "yes" if r["probe"] else "no"
        attaches = r["mma"]  # not a method: the architecture table's "the adapter can attach" column
        r["MMA"] = "yes" if attaches else "no (stages)" if r["probe"] else "no"  # probe-only: convolutional
    _table(
        rows,
        ["model", "pretrained", "towers", "probe", "MMA"],
        "Models (spec: NAME or NAME:PRETRAINED; PRETRAINED = tag, file, or 'random')",
    )
    typer.echo("Note: ViT-B-16 with the 'openai' tag is built with QuickGELU (ViT-B-16-quickgelu), as trained.")
    typer.echo(
        "probe: 'mma probe layers' (convolutional towers stage by stage); MMA: the adapter, which needs transformer "
        "blocks. Hugging Face text towers and SigLIP tokenizers need 'pip install transformers'."
    )


@command()
@friendly
def datasets() -> None:
    """Every dataset source: the built-in offline suite (with sizes) and the CoOp datasets."""
    from mma.probe.data import list_dataset_sources

    rows = list_dataset_sources()
    _table(
        rows,
        ["kind", "name", "classes", "train", "val", "test", "source", "licence"],
        "Datasets (spec: builtin[:A,B] | coop:ROOT[:A,B] | folder:PATH | csv:PATH)",
    )


@command()
@friendly
def methods(
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="The model the methods are sized on (e.g. ViT-B-16:random, random weights offline)."
        ),
    ] = "mma-tiny",
) -> None:
    """Every method, built in or from an installed plugin: what it trains, its options and its size on a model."""
    from mma.app.jobs.methods import SIZE_CLASSES, list_methods

    rows = list_methods(model)
    _table(
        rows,
        ["method", "from", "trains", "depth (k)", "options (published values)", "parameters"],
        "Methods (--method NAME; plugins register in the 'mma.methods' entry-point group)",
    )
    typer.echo(
        f"parameters: trainable, on {model} at each method's published values (a method with a depth at its "
        f"published base-to-novel k), {SIZE_CLASSES} classes."
    )


probe_app = typer.Typer(
    cls=_Group, help="Per-layer embeddings, dataset-separability probes and the adapter depth k.", no_args_is_help=True
)
app.add_typer(probe_app, name="probe")


def _split_ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise MmaError(f"{option} {text!r} is not a comma-separated list of integers (e.g. 1,2,3).") from None
    if not values:
        raise MmaError(f"{option} is empty; give at least one integer.")
    return values


SEED_RANGE = range(2**64)  # what NumPy (no negatives) and torch (64 bits) both accept


def _split_seeds(text: str) -> list[int]:
    seeds = _split_ints(text, "--seeds")
    bad = [s for s in seeds if s not in SEED_RANGE]
    if bad:
        raise MmaError(f"--seeds {bad} are out of range; a seed is a whole number from 0 to 2**64 - 1.")
    return seeds


@probe_app.command("layers", cls=_Command)
@friendly
def probe_layers_cmd(
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Model spec NAME[:PRETRAINED]; repeatable. Default: the embedded mma-tiny."),
    ] = None,
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data", "-d", help="Data spec (builtin[:A,B], coop:ROOT[:A,B], folder:PATH, csv:PATH); repeatable."
        ),
    ] = None,
    samples: Annotated[
        int, typer.Option(help="Training samples drawn per dataset and seed (all of a smaller dataset's).")
    ] = 150,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds; each draws its own samples and split.")] = "1,2,3",
    pooling: Annotated[str, typer.Option(help="Token pooling for XEmbed and blocks: mean or cls.")] = "mean",
    xembed: Annotated[
        str,
        typer.Option(
            help="Which side of the image tower's ln_pre (timm: norm_pre) XEmbed is read: after-ln-pre (our default: "
            "the input of block 1) or before-ln-pre (patch + class + positional embedding)."
        ),
    ] = "after-ln-pre",
    template: Annotated[str | None, typer.Option(help="Prompt template with {} for the class name.")] = None,
    text_split: Annotated[
        str,
        typer.Option(
            help="How the text probe splits: by-class (test class names unseen in probe training) or by-sample "
            "(every prompt in every part: text near 100%). The image probe always splits by sample."
        ),
    ] = "by-class",
    out: Annotated[Path, typer.Option(help="Run folder (store, CSVs, figure, selection.json).")] = Path("runs/probe"),
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 128,
    precision: Annotated[str, typer.Option(help="fp32, fp16 or bf16 (autocast on CUDA).")] = "fp32",
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    strict: Annotated[bool, typer.Option(help="Fail on an unreadable image instead of skipping it.")] = False,
    rule: Annotated[
        str, typer.Option(help="Rule that turns the curves into k: saturation, gap or knee.")
    ] = "saturation",
    threshold: Annotated[float | None, typer.Option(help="The rule's threshold (default: the rule's own).")] = None,
) -> None:
    """Dump every layer of each model over the datasets, probe dataset separability, plot it, select k."""
    from mma.app.jobs.probe_layers import ProbeLayersConfig, per_layer_table, probe_layers

    cfg = ProbeLayersConfig(
        models=list(model) if model else [None],
        data=list(data) if data else ["builtin"],
        samples=samples,
        seeds=_split_seeds(seeds),
        pooling=pooling,
        xembed=xembed,
        template=template,
        text_split=text_split,
        out=out,
        device=device,
        batch_size=batch_size,
        precision=precision,
        workers=workers,
        strict=strict,
        rule=rule,
        threshold=threshold,
    )
    run = probe_layers(cfg)
    if run is None:  # a torchrun rank other than 0: rank 0 reports
        return
    for note in run.notes:
        typer.secho(note, fg=typer.colors.YELLOW)
    for sel in run.selection["selections"]:
        table = per_layer_table(run.summary, sel["model"])
        spread = f"mean ± std over seeds {cfg.seeds}" if len(cfg.seeds) > 1 else f"seed {cfg.seeds[0]}"
        typer.echo(f"\n{sel['model']}: dataset-probe test accuracy (%), {spread}")
        typer.echo(table.to_string(index=False))
        if sel.get("k") is None:
            typer.secho(f"No k selected for {sel['model']}: {sel.get('reason', 'no rule applied')}.", bold=True)
            continue
        others = ", ".join(f"{r}={v['k']}" for r, v in sel["rules"].items())
        typer.secho(
            f"Selected k = {sel['k']} (rule {sel['rule']}; all rules: {others}{_per_tower(sel)}): adapters on "
            f"blocks {sel['k']}..{sel['depth']}.",
            bold=True,
        )
    typer.echo(
        f"Wrote {run.out}/ (figure1.png, layers.csv, layers_summary.csv, selection.json) in {run.seconds:.0f} s."
    )


def _per_tower(sel: dict) -> str:
    """ "; per tower: image 3, text 6" (the rule on each tower's curve alone); "" for a record from before it."""
    if sel.get("k_image") is None:
        return ""
    return f"; per tower: image {sel['k_image']}, text {sel['k_text']}"


@probe_app.command("select", cls=_Command)
@friendly
def probe_select_cmd(
    run: Annotated[Path, typer.Option(help="A probe run folder (from 'mma probe layers').")] = Path("runs/probe"),
    rule: Annotated[str, typer.Option(help="saturation, gap or knee.")] = "saturation",
    threshold: Annotated[float | None, typer.Option(help="The rule's threshold (default: the rule's own).")] = None,
) -> None:
    """Choose the first adapted block k from a probe run's curves by a named rule (rewrites selection.json)."""
    from mma.app.jobs.probe_layers import select_from_run

    selection = select_from_run(run, rule=rule, threshold=threshold)
    for sel in selection["selections"]:
        if sel.get("k") is None:
            typer.echo(f"{sel['model']}: no k ({sel.get('reason', 'no rule applied')})")
            continue
        others = ", ".join(f"{r}={v['k']}" for r, v in sel["rules"].items())
        seeds = ", ".join(f"seed {s}: {k}" for s, k in sel.get("per_seed_k", {}).items())
        typer.echo(
            f"{sel['model']}: k = {sel['k']} (rule {rule}; all rules: {others}{_per_tower(sel)}"
            + (f"; {seeds})" if seeds else ")")
        )
        for warning in sel.get("warnings", []):
            typer.echo(f"Warning: {warning}", err=True)
    typer.echo(f"Wrote {run}/selection.json")


@command("plot")
@friendly
def plot_cmd(
    run: Annotated[Path, typer.Option(help="A probe run folder; Figure 1 is redrawn from its CSVs.")] = Path(
        "runs/probe"
    ),
) -> None:
    """Redraw a run's figures from its CSVs without recomputing anything."""
    from mma.app.jobs.probe_layers import plot_run

    typer.echo(f"Wrote {plot_run(run)}")


@command("pretrain-tiny")
@friendly
def pretrain_tiny_cmd(
    out: Annotated[Path, typer.Option(help="Checkpoint path (.safetensors); a .json record is written beside it.")],
    steps: Annotated[int, typer.Option(help="Optimisation steps (the shipped weights: 1300).")] = 1300,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Rebuild the embedded mma-tiny CLIP from scratch on the pretraining corpus (CPU, deterministic).

    The downstream suite is never trained on; it is only scored (zero-shot) at the end.
    """
    from mma.app.jobs.outdir import check_out_dir
    from mma.probe.embedded.pretrain import PretrainConfig, pretrain_tiny

    if steps < 1:
        raise MmaError(f"--steps must be at least 1; got {steps}.")
    if seed not in SEED_RANGE:
        raise MmaError(f"--seed {seed} is out of range; a seed is a whole number from 0 to 2**64 - 1.")
    if out.suffix != ".safetensors":
        raise MmaError(f"--out {str(out)!r} must end in .safetensors.")
    if out.is_dir():
        raise MmaError(f"--out {str(out)!r} is a folder; give a file path ending in .safetensors.")
    check_out_dir(out.parent)  # the checkpoint's folder must be writable before the training, not after it
    record = pretrain_tiny(out, PretrainConfig(steps=steps, seed=seed))
    zs = record["zero_shot"]
    for name, acc in zs["trained"].items():
        typer.echo(f"{name:>16}: zero-shot {100 * acc:5.1f}% (random init {100 * zs['random_init'][name]:5.1f}%)")
    typer.echo(f"({record['train_seconds']:.0f} s of training)")
    typer.echo(f"Wrote {out} and {out.with_suffix('.json')}")


def _flags(**options) -> dict:
    """The training options given on the command line (a JSON/TOML --config file is read by the job, below them)."""
    return {k: v for k, v in options.items() if v is not None}


_METHOD_HELP = (
    "Methods to train and evaluate beside the zero-shot model: mma, coop, cocoop, clip-adapter, linear-probe, "
    "zeroshot, or a plugin's ('mma methods' lists them); repeatable or comma-separated (default: mma). Each uses "
    "its own published configuration per protocol."
)

_CACHE_HELP = (
    "Compute the frozen part of the image tower once per image when augmentation is off (default: on; the "
    "numbers are the same either way; --no-cache recomputes it every step)."
)

_LOG_HELP = (
    "Also log every trained run to tensorboard or wandb (repeatable or comma-separated; each needs its package, an "
    "extra of the same name): train/loss and train/lr per step, val/<metric>, as open_clip's trainer names them, in "
    "<out>/logs/; W&B offline unless WANDB_MODE is set. Every run also writes its per-epoch history.csv."
)

_CACHE_DIR_HELP = (
    "Folder of frozen inputs and finished trainings (default: <out>/cache); runs that share one reuse each other's, "
    "e.g. cross-dataset and domain-gen train the same adapter once."
)

_CONFIG_HELP = (
    'JSON or TOML file of training options: flat ones for every method ({"epochs": 5}) and a table per method '
    '({"coop": {"epochs": 10}}); flags win over a method\'s table, which wins over the flat values.'
)

_TEMPLATE_HELP = (
    "Prompt template with {} for the class name, read by every method that reads a written prompt (MMA, "
    "CLIP-Adapter, zero-shot; CoOp and CoCoOp learn theirs); it replaces both the default 'a photo of a {}.' and "
    "the per-dataset published prompts."
)

_TRAIN_HELP = {
    "shots": "Training images per class (CoOp few-shot draw).",
    "epochs": "Training epochs (paper recipe: 5; cross-dataset and domain-gen: 1).",
    "alpha": "Adapter scale alpha (paper recipe: 0.001).",
    "dim": "Adapter bottleneck width r (paper recipe: 32).",
}


@command("train-selected")
@friendly
def train_selected_cmd(
    run: Annotated[
        Path | None,
        typer.Option(help="Probe run folder whose selection.json gives model and k (wins over the protocol default)."),
    ] = None,
    k: Annotated[
        int | None, typer.Option(help="First adapted block of both towers; wins over every other source of k.")
    ] = None,
    k_image: Annotated[
        int | None, typer.Option(help="The image tower's own first block (methods whose towers may start apart).")
    ] = None,
    k_text: Annotated[int | None, typer.Option(help="The text tower's own first block (likewise).")] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model spec (default: the selection's model).")
    ] = None,
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            "-d",
            help="Data spec; repeatable. Default: the built-in suite (domain-gen: objects and its 4 shifted variants).",
        ),
    ] = None,
    protocol: Annotated[str, typer.Option(help="base2novel, few-shot, cross-dataset or domain-gen.")] = "base2novel",
    method: Annotated[list[str] | None, typer.Option("--method", help=_METHOD_HELP)] = None,
    shots: Annotated[int | None, typer.Option(help=_TRAIN_HELP["shots"])] = None,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "1,2,3",
    epochs: Annotated[int | None, typer.Option(help=_TRAIN_HELP["epochs"])] = None,
    alpha: Annotated[float | None, typer.Option(help=_TRAIN_HELP["alpha"])] = None,
    alpha_eval: Annotated[
        float | None, typer.Option(help="MMA++: a different alpha at inference (0 = the frozen model).")
    ] = None,
    consistency: Annotated[float | None, typer.Option(help="MMA++: alpha-consistency loss weight lambda.")] = None,
    dim: Annotated[int | None, typer.Option(help=_TRAIN_HELP["dim"])] = None,
    lr: Annotated[float | None, typer.Option(help="SGD learning rate (paper recipe: 0.0015).")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Training batch size (paper recipe: 16, and 128 on ImageNet).")
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="fp32, fp16 or bf16 (AMP on CUDA). Default: fp16 AMP on CUDA (the official setting), fp32 on CPU."
        ),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="DataLoader worker processes for training images.")] = None,
    cache: Annotated[bool | None, typer.Option("--cache/--no-cache", help=_CACHE_HELP)] = None,
    cache_dir: Annotated[Path | None, typer.Option(help=_CACHE_DIR_HELP)] = None,
    recipe: Annotated[
        str, typer.Option(help="auto, paper, released or mma-tiny (auto: mma-tiny for the embedded model).")
    ] = "auto",
    config: Annotated[Path | None, typer.Option(help=_CONFIG_HELP)] = None,
    template: Annotated[str | None, typer.Option(help=_TEMPLATE_HELP)] = None,
    out: Annotated[Path, typer.Option(help="Run folder for results, checkpoints and tables.")] = Path("runs/train"),
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    strict: Annotated[
        bool,
        typer.Option(
            help="A class with fewer than --shots training images, or an unreadable image, is an error (default: "
            "use all a class has; skip and count unreadable images)."
        ),
    ] = False,
    log: Annotated[list[str] | None, typer.Option("--log", help=_LOG_HELP)] = None,
    all_classes: Annotated[
        bool,
        typer.Option(
            help="Base-to-novel: also classify every test image among all the dataset's classes (metric 'all', the "
            "open-world reading beside base and novel)."
        ),
    ] = False,
) -> None:
    """Train the Multi-Modal Adapter from block k (and, with --method, the other methods) and evaluate a protocol.

    k, first to last: --k; the selection of --run; k in --config; the recipe's protocol default
    (paper: 5 for base2novel, 9 with 1 epoch for cross-dataset and domain-gen); the selection in runs/probe.
    Every layer-deep method maps k onto its own depth (MaPLe's prompt depth, MMRL's start layer, CLIP-LoRA's
    layers); those whose towers may start apart also take the selection's per-tower k (--k-image, --k-text).
    One printed line says which won; the recipe line names every training value and its source.
    """
    from mma.app.jobs.train_selected import TrainSelectedConfig, train_selected

    overrides = _flags(
        shots=shots,
        epochs=epochs,
        alpha=alpha,
        alpha_eval=alpha_eval,
        consistency=consistency,
        dim=dim,
        lr=lr,
        batch_size=batch_size,
        precision=precision,
        workers=workers,
        cache=cache,
    )
    cfg = TrainSelectedConfig(
        run=run,
        model=model,
        k=k,
        k_image=k_image,
        k_text=k_text,
        data=list(data) if data else None,
        protocol=protocol,
        seeds=_split_seeds(seeds),
        out=out,
        device=device,
        recipe=recipe,
        train=overrides,
        config=config,
        template=template,
        strict=strict,
        methods=_split_methods(method),
        cache_dir=cache_dir,
        log=_split_list(log),
        all_classes=all_classes,
    )
    result = train_selected(cfg)
    if result is None:  # a torchrun rank other than 0: rank 0 reports
        return
    _print_summary(result.summary, result.results)
    k = f", k={result.depth}" if result.depth else ""
    typer.echo(
        f"{result.model}{k}, recipe {result.recipe}: wrote {result.out}/ (results.csv, results_summary.csv, "
        f"checkpoints/) in {result.seconds:.0f} s."
    )


def _split_methods(values: list[str] | None) -> list[str]:
    """--method A --method B, or --method A,B (checked: one sentence for an unknown name)."""
    from mma.adapters.methods import parse_methods

    return parse_methods(values)


def _print_summary(summary, results=None) -> None:
    from mma.app.results import beside_the_default, methods_table, summary_table

    typer.echo(summary_table(summary).to_string(index=False))
    if results is not None and beside_the_default(results):
        for protocol, table in methods_table(results).items():
            typer.echo(f"\n{protocol}: methods side by side (average over datasets; mean ± std over seeds)")
            typer.echo(table.to_string(index=False))


def _split_list(values: list[str] | None) -> list[str]:
    """--log A --log B, or --log A,B (the job checks the names)."""
    return [v.strip() for value in values or () for v in value.split(",") if v.strip()]


def _split_protocols(values: list[str] | None) -> list[str] | None:
    """--protocol A --protocol B, or --protocol A,B (None: the command's default)."""
    if not values:
        return None
    return [p.strip() for v in values for p in v.split(",") if p.strip()] or None


_REPRODUCE_HELP = f"""The paper's evaluation in one resumable job, printed beside the published numbers.

    Zero-shot and MMA, seeds 1-3, each protocol with its published settings:
    base2novel on the 11 CoOp datasets (k 5, 5 epochs, batch 16; 128 on ImageNet);
    cross-dataset, ImageNet to the 10 others, and domain-gen, ImageNet to V2 / Sketch / A / R (k 9, 1 epoch).
    Writes comparison.md and comparison.csv; rerun the same command to resume.

    ROOT holds one folder per dataset, as CoOp's DATASETS.md lays them out (a missing one is skipped):
    {", ".join(f + "/" for f in coop_folder_names())}; 'mma datasets' lists the files each needs.
    """


@command("reproduce", help=_REPRODUCE_HELP)
@friendly
def reproduce_cmd(
    data: Annotated[
        str,
        typer.Option(
            "--data",
            "-d",
            help="coop:ROOT (CoOp's DATASETS.md layout) or coop:ROOT:A,B for a subset; missing datasets are skipped.",
        ),
    ],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model spec (default: the paper's ViT-B/16 with OpenAI's weights).")
    ] = "ViT-B-16-quickgelu:openai",  # mma.app.jobs.reproduce.PAPER_MODEL (not imported here: --help stays fast)
    protocol: Annotated[
        list[str] | None,
        typer.Option(help="base2novel, cross-dataset or domain-gen; repeatable or comma-separated (default: all)."),
    ] = None,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds (the paper: 1,2,3).")] = "1,2,3",
    method: Annotated[list[str] | None, typer.Option("--method", help=_METHOD_HELP)] = None,
    out: Annotated[Path, typer.Option(help="Run folder: one train-selected folder per protocol, the tables.")] = Path(
        "runs/reproduce"
    ),
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[
        str | None,
        typer.Option(help="Training precision: fp32, fp16 or bf16. Default: fp16 AMP on CUDA (official), fp32 on CPU."),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="DataLoader worker processes for training images.")] = None,
    recipe: Annotated[
        str,
        typer.Option(
            help=(
                "paper (the published settings; cross-dataset and domain-gen at the paper text's k 9, 1 epoch), "
                "released (the released MMA code's config for every protocol), mma-tiny or auto."
            )
        ),
    ] = "paper",
    config: Annotated[
        Path | None, typer.Option(help="JSON or TOML file of training options, over the published settings.")
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            help="A class with fewer than 16 training images, or an unreadable image, is an error (default: use all "
            "a class has; skip and count unreadable images)."
        ),
    ] = False,
    log: Annotated[list[str] | None, typer.Option("--log", help=_LOG_HELP)] = None,
) -> None:
    """The paper's evaluation in one resumable job (the help: ``_REPRODUCE_HELP``, which lists ROOT's folders)."""
    coop_spec(data)  # ROOT before torch is imported: a missing folder is said at once
    from mma.analysis.compare import context_table, side_by_side
    from mma.app.jobs.reproduce import ReproduceConfig, reproduce
    from mma.app.results import beside_the_default, methods_table

    cfg = ReproduceConfig(
        data=data,
        model=model,
        seeds=_split_seeds(seeds),
        out=out,
        device=device,
        recipe=recipe,
        train=_flags(precision=precision, workers=workers),
        config=config,
        strict=strict,
        methods=_split_methods(method),
        log=_split_list(log),
    )
    protocols = _split_protocols(protocol)
    if protocols is not None:
        cfg.protocols = protocols
    run = reproduce(cfg)
    if run is None:  # a torchrun rank other than 0: rank 0 reports
        return
    for p in dict.fromkeys(run.comparison["protocol"]):
        typer.echo(f"\n{p}: measured beside published (Δ = measured - published)")
        typer.echo(side_by_side(run.comparison, p, run.setup).to_string(index=False))
        for v in run.verdicts:
            if v.protocol == p:
                typer.echo(v.text)
        typer.echo("Published context (the check column says how each cell was verified; see comparison.md):")
        typer.echo(context_table(run.comparison, p, run.setup).to_string(index=False))
    for p, protocol_run in run.runs.items():
        if beside_the_default(protocol_run.results):
            for table in methods_table(protocol_run.results).values():
                typer.echo(f"\n{p}: methods side by side, measured here (average over datasets; mean ± std over seeds)")
                typer.echo(table.to_string(index=False))
    for note in run.notes:
        typer.echo(note)
    typer.echo(
        f"Wrote {run.out}/ (comparison.md, comparison.csv, reproduce.json, one folder per protocol) in "
        f"{run.seconds:.0f} s."
    )


@command("sweep-k")
@friendly
def sweep_k_cmd(
    run: Annotated[
        Path | None, typer.Option(help="Probe run folder whose selection.json gives model and the selected k.")
    ] = None,
    ks: Annotated[str | None, typer.Option("--ks", help="Comma-separated k values (default: every block).")] = None,
    tower_ks: Annotated[
        str | None,
        typer.Option(
            "--tower-ks",
            help="Comma-separated start blocks: every (image, text) pair of them that differs is trained too, for "
            "methods whose towers may start apart (e.g. 1,5,9; default: none).",
        ),
    ] = None,
    method: Annotated[
        list[str] | None,
        typer.Option(
            "--method",
            help="Methods with a depth to sweep (default mma; e.g. mma,maple,promptsrc,mmrl,clip-lora), and methods "
            "without one to draw as horizontal lines (e.g. coop).",
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model spec (default: the selection's model).")
    ] = None,
    data: Annotated[
        list[str] | None, typer.Option("--data", "-d", help="Data spec; repeatable. Default: builtin.")
    ] = None,
    shots: Annotated[int | None, typer.Option(help=_TRAIN_HELP["shots"])] = None,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "1,2,3",
    epochs: Annotated[int | None, typer.Option(help=_TRAIN_HELP["epochs"])] = None,
    alpha: Annotated[float | None, typer.Option(help=_TRAIN_HELP["alpha"])] = None,
    recipe: Annotated[
        str, typer.Option(help="auto, paper, released or mma-tiny (auto: mma-tiny for the embedded model).")
    ] = "auto",
    config: Annotated[Path | None, typer.Option(help=_CONFIG_HELP)] = None,
    template: Annotated[str | None, typer.Option(help=_TEMPLATE_HELP)] = None,
    out: Annotated[Path, typer.Option(help="Run folder.")] = Path("runs/sweep"),
    cache_dir: Annotated[Path | None, typer.Option(help=_CACHE_DIR_HELP)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    log: Annotated[list[str] | None, typer.Option("--log", help=_LOG_HELP)] = None,
) -> None:
    """Train and evaluate base-to-novel at every k; plot base, novel and HM against k with the selected k; report
    each method's HM at the probe-chosen, published and best depth (regret.csv, regret.png)."""
    from mma.app.jobs.sweep_k import sweep_k
    from mma.app.settings import TrainSelectedConfig

    overrides = _flags(shots=shots, epochs=epochs, alpha=alpha)
    cfg = TrainSelectedConfig(
        run=run,
        model=model,
        data=list(data) if data else None,
        seeds=_split_seeds(seeds),
        out=out,
        device=device,
        recipe=recipe,
        train=overrides,
        config=config,
        template=template,
        methods=_split_methods(method),
        log=_split_list(log),
        cache_dir=cache_dir,
    )
    record = sweep_k(
        cfg,
        _split_ints(ks, "--ks") if ks is not None else None,
        _split_ints(tower_ks, "--tower-ks") if tower_ks is not None else None,
    )
    if record is None:  # a torchrun rank other than 0: rank 0 reports
        return
    swept = list(record.get("methods_swept", {}))
    if swept:
        typer.echo(f"{swept[0]} against the shared k (each method's curve: k_sweep-<method>.png / .json):")
    for k, hm in record["hm"].items():
        p = record["paired"][k]
        noise = f" ({p['difference']:+.2f} vs the best, band ±{p['band']:.2f})" if p["band"] is not None else ""
        typer.echo(
            f"k={k}: HM {hm:.1f}{noise}"
            + ("  <- selected" if k == record["selected_k"] else "")
            + ("  <- highest mean" if k == record["best_k"] else "")
        )
    typer.echo(record["selected_verdict"])
    if record["selected_over_best"] is not None:
        typer.echo(
            f"Selected k={record['selected_k']} reaches {100 * record['selected_over_best']:.1f}% of the best "
            f"k={record['best_k']}'s HM ({record['selected_below_best']:.1f} points below)."
        )
    for rule, r in record.get("rules", {}).items():
        typer.echo(f"  rule {rule}: k={r['k']}, HM {r['hm']:.1f} ({r['below_best']:.1f} points below the best k)")
    typer.echo("What choosing the depth from the probes costs or gains (HM, mean ± std over seeds):")
    for r in record["regret"]:
        typer.echo("  " + _regret_line(r))
    sweeps = "k_sweep-<method>.png / .csv / .json" if swept else "k_sweep.png, k_sweep.csv, k_sweep.json"
    typer.echo(f"Wrote {out}/{sweeps}, regret.csv, regret.json, regret.png")


def _regret_line(r: dict) -> str:
    """One method's row of the regret table as a line."""

    def at(name: str) -> str:
        if r[name] is None or r[f"{name}_hm"] is None:
            return f"{name}: -"
        std = r[f"{name}_std"]
        words = f" = {r[f'{name}_depth']}" if r.get(f"{name}_depth") else ""
        return f"{name} k={r[name]}{words}: {r[f'{name}_hm']:.1f}" + (f" ± {std:.1f}" if std is not None else "")

    def gap(name: str) -> str:
        if r.get(f"{name}_vs_best") is None:
            return ""
        if r[name] == r["best"]:
            return f"; {name} is the best"
        band = r.get(f"{name}_band")
        noise = f" (noise band ±{band:.1f})" if band is not None else ""
        return f"; {name} vs best {r[f'{name}_vs_best']:+.1f}{noise}"

    return f"{r['method']}: {at('probe')}; {at('published')}; {at('best')}{gap('probe')}{gap('published')}"


@command("tune")
@friendly
def tune_cmd(
    method: Annotated[str, typer.Option("--method", help="The method to tune ('mma methods' lists them).")] = "mma",
    data: Annotated[
        list[str] | None, typer.Option("--data", "-d", help="Data spec; repeatable. Default: the built-in suite.")
    ] = None,
    protocol: Annotated[str, typer.Option(help="base2novel, few-shot, cross-dataset or domain-gen.")] = "base2novel",
    budget: Annotated[int, typer.Option(help="Candidates to try (the published values are the first).")] = 8,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds every candidate trains at.")] = "1",
    model: Annotated[str, typer.Option("--model", "-m", help="Model spec.")] = "mma-tiny",
    k: Annotated[
        int | None, typer.Option(help="The k a method with a depth is tuned at (default: its published k).")
    ] = None,
    recipe: Annotated[str, typer.Option(help="The recipe the candidates are laid over.")] = "paper",
    config: Annotated[Path | None, typer.Option(help="JSON or TOML file of training options over the recipe.")] = None,
    search_seed: Annotated[int, typer.Option(help="Seed of the candidates' draw.")] = 0,
    out: Annotated[Path, typer.Option(help="Search folder (recipe.json, candidates/).")] = Path("runs/tune"),
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Search a method's own space with a fixed budget, scored on validation images of base classes only.

    Base-to-novel splits the base classes again (pseudo-base / pseudo-novel) and scores the HM of their validation
    accuracies; no test image and no novel class is read. Writes OUT/recipe.json for train-selected --config.
    """
    from mma.app.jobs.tune import TuneConfig, tune

    cfg = TuneConfig(
        method=method.strip().lower(), data=list(data) if data else None, protocol=protocol, budget=budget,
        seeds=_split_seeds(seeds), out=out, model=model, k=k, recipe=recipe, config=config, device=device,
        search_seed=search_seed,
    )  # fmt: skip
    recipe_record = tune(cfg)
    record = recipe_record["search"]
    for c in record["candidates"]:
        mark = "  <- chosen" if c["index"] == record["chosen"] else ""
        typer.echo(f"{c['index']}: {record['metric']} {c['score']:.2f} {c['values']}{mark}")
    typer.echo(
        f"Wrote {out}/recipe.json ({len(record['candidates'])} candidates, {record['seconds']:.0f} s of training and "
        "evaluation); give it to train-selected --config."
    )


@command("evaluate")
@friendly
def evaluate_cmd(
    checkpoint: Annotated[Path, typer.Option(help="An adapter checkpoint written by train-selected.")],
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            "-d",
            help="Data spec (repeatable): the checkpoint's own dataset is evaluated by its protocol, any other on "
            "its test split among all its classes. Default: the data the checkpoint was trained on.",
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    alpha_eval: Annotated[
        float | None, typer.Option(help="Evaluate with this alpha instead of the trained one (0 = the frozen model).")
    ] = None,
    strict: Annotated[bool, typer.Option(help="Fail on an unreadable image instead of skipping it.")] = False,
    all_classes: Annotated[
        bool, typer.Option(help="Base-to-novel: also every test image of its dataset among all its classes ('all').")
    ] = False,
) -> None:
    """Evaluate an adapter checkpoint beside the zero-shot model, on its own protocol or on any dataset."""
    from mma.app.jobs.evaluate import evaluate_checkpoint

    table = evaluate_checkpoint(
        checkpoint, data=list(data) if data else None, device=device, alpha_eval=alpha_eval, strict=strict,
        all_classes=all_classes, say=lambda line: typer.echo(line, err=True),
    )  # fmt: skip
    if table is None:  # a torchrun rank other than 0: rank 0 reports
        return
    typer.echo(f"{checkpoint}: accuracy (%) beside the zero-shot model's; images: what each accuracy counted")
    shown = {c: c.replace("_", "-") for c in table.columns}  # zero_shot -> zero-shot
    rows = [{shown[c]: _cell(c, v) for c, v in r.items()} for r in table.to_dict("records")]
    _table(rows, list(shown.values()), "")


def _cell(column: str, value) -> str:
    """A cell of mma evaluate's table: percentages with 2 decimals, counts whole, blank where not applicable."""
    if isinstance(value, str):
        return value
    if value is None or value != value:  # None or NaN
        return ""
    return f"{value:.2f}" if column in ("accuracy", "zero_shot") else str(int(value))


@command("predict")
@friendly
def predict_cmd(
    checkpoint: Annotated[Path, typer.Option(help="An adapter checkpoint written by train-selected.")],
    images: Annotated[
        Path,
        typer.Option(help="A folder of images (searched recursively), one image, or a text file listing images."),
    ],
    out: Annotated[Path, typer.Option(help="The CSV to write: path, class_1, prob_1, ... per readable image.")],
    classes: Annotated[
        str | None,
        typer.Option(help="Class names to choose among, comma-separated (default: the checkpoint's own classes)."),
    ] = None,
    top_k: Annotated[int, typer.Option(help="How many classes per image, best first.")] = 5,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    strict: Annotated[bool, typer.Option(help="Fail on an unreadable image instead of skipping it.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
) -> None:
    """Classify new images with an adapted model: one CSV row per readable image, its top classes and probabilities."""
    from mma.app.jobs.predict import predict_images
    from mma.probe.data.reading import unreadable_line

    run = predict_images(
        checkpoint, images, out, classes=classes, top_k=top_k, device=device, strict=strict, overwrite=overwrite
    )
    if unreadable_line(run.read):
        typer.echo(unreadable_line(run.read), err=True)
    typer.echo(f"Predicted {run.images} image(s) among {len(run.classes)} classes -> {run.out}")


def main() -> None:  # pragma: no cover - console-script entry
    try:
        try:
            app()
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not in Python's exit handler
    except BrokenPipeError:
        _silence_stdout()
        sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
