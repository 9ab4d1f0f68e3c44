"""Fuzz the command line: random option values end in a clean exit, never in a traceback.

Each command is invoked (typer's CliRunner on ``mma.app.cli.app``) with hypothesis-drawn option values: random
text, empty strings, negative and huge integers, nan and inf, paths that do not exist, paths that are files
or folders, malformed config files. The invariants:

* the exit code is 0 (it worked), 2 (a usage error or an MmaError) or 130 (Ctrl-C); an error is one clean
  message on stderr (``Error: ...`` on one line, or click's ``Usage:`` block) and never a traceback;
* a value the command documents as invalid is refused with exit code 2 *before* any heavy work starts.

No example may start real work. The heavy steps (layer extraction, zero-shot evaluation, adapter training,
pretraining) are replaced by a tripwire that raises :class:`HeavyWorkStarted`, and the long commands always
get at least one value their validation must refuse. Everything up to the tripwire - option parsing, spec
parsing, config files, data and output-folder checks - is the real code.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import patch_everywhere
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from typer.testing import CliRunner

from mma.adapters.protocols import PROTOCOLS
from mma.analysis.select_k import DEFAULT_THRESHOLDS, RULES
from mma.analysis.separability import TEXT_SPLITS
from mma.app.cli import app
from mma.errors import MmaError
from mma.probe.capture import POOLINGS
from mma.probe.data import parse_data_spec
from mma.probe.extract import PRECISIONS
from mma.probe.specs import parse_model_spec

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
OK, BAD, ANY = "ok", "bad", "any"  # a value this option accepts / must refuse / may do either
TRIPWIRES = [  # (module, function): where the real work of each command starts
    ("mma.probe.extract", "extract_images"),
    ("mma.adapters.protocols", "evaluate_task"),
    ("mma.adapters.train", "fit_method"),
    ("mma.probe.embedded.pretrain", "pretrain_tiny"),
]


class HeavyWorkStarted(Exception):
    """Raised by the tripwires: every check before the real work passed."""


# ------------------------------------------------------------------------------------------------ sandbox


@dataclass(frozen=True)
class Place:
    """A path in the sandbox folder, resolved when the command runs: ``prefix + sandbox/name + suffix``."""

    name: str
    prefix: str = ""
    suffix: str = ""

    def resolve(self, root: Path) -> str:
        return f"{self.prefix}{root / self.name}{self.suffix}"


def _probe_run(folder: Path) -> None:
    """A finished probe run as 'mma probe layers' leaves it: layers_summary.csv and selection.json."""
    folder.mkdir()
    names = ["XEmbed", "1", "2", "3", "4", "5", "6", "XProj"]
    rows = [
        {"model": "mma-tiny", "tower": t, "layer_index": i, "layer_name": n, "metric": "probe_accuracy"}
        | {"mean": b + 0.08 * i, "std": 0.01, "n_seeds": 2}
        for t, b in (("image", 0.3), ("text", 0.4))
        for i, n in enumerate(names)
    ]
    pd.DataFrame(rows).to_csv(folder / "layers_summary.csv", index=False)
    (folder / "selection.json").write_text(json.dumps({"selections": [{"model": "mma-tiny", "k": 3}]}))


def _make_sandbox(root: Path) -> None:
    from safetensors.torch import save_file

    (root / "file").write_text("not JSON, not CSV {\n")
    (root / "dir").mkdir()
    (root / "dir.safetensors").mkdir()
    (root / "out").mkdir()
    _probe_run(root / "probe-run")
    (root / "config.json").write_text('{"epochs": 1}')
    (root / "config.toml").write_text("epochs = 1\n")
    (root / "list.json").write_text("[1, 2]")
    (root / "string.json").write_text('"epochs"')
    (root / "binary.json").write_bytes(b"\xff\xfe\x00 not utf-8")
    (root / "unknown-key.json").write_text('{"no_such_option": 1}')
    (root / "bad-momentum.json").write_text('{"momentum": 2}')  # not a CLI option, so no flag overrides it
    (root / "broken.toml").write_text("epochs = = 1\n")
    (root / "empty.safetensors").write_bytes(b"")
    save_file({"w": torch.zeros(2)}, str(root / "plain.safetensors"))  # a safetensors file mma did not write


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A folder with the files the fuzz points at, the working directory, and the tripwires armed."""
    root = tmp_path_factory.mktemp("cli-fuzz")
    _make_sandbox(root)

    def tripwire(*args, **kwargs):
        raise HeavyWorkStarted

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # default run folders (runs/probe...) resolve inside the sandbox
        for module, name in TRIPWIRES:
            patch_everywhere(mp, f"{module}.{name}", tripwire)
        yield root


# ------------------------------------------------------------------------------------------------- values

# argv cannot carry NUL bytes (the OS ends the string there), so neither does the fuzz
TEXT = st.text(st.characters(exclude_characters="\x00"), max_size=16)
NUMBERS = st.one_of(
    st.integers(-5, 5).map(str),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["nan", "-inf", "1e309", "0x10", "1_000", "١٢", "9" * 40, "1,5", "1e3", "+3", " 7 "]),
)
SPECIAL = st.sampled_from(["", " ", "-", "--", "--help", "=", ":", ",", "~", "~nosuchuser/x"])
PLACES = st.sampled_from(["missing", "file", "dir", "probe-run", "config.json", "binary.json"]).map(Place)
JUNK = st.one_of(TEXT, NUMBERS, SPECIAL, PLACES)


# --out creates folders: random text only as a relative path that stays inside the sandbox
OUT_JUNK = st.one_of(TEXT.map(lambda t: "x" + t.replace("..", "_")), PLACES)
NOT_INT = st.sampled_from(["", "abc", "1.5", "nan", "inf", "1e3", "0x10", "one"])
NOT_FLOAT = st.sampled_from(["", "abc", "1,5", "0.5.1", "one", "0x1p-2"])


def _refused_by(parser):
    def refused(text: str) -> bool:
        try:
            parser(text)
        except MmaError:
            return True
        return False

    return refused


def _not_in(valid, *extra):
    return st.one_of(TEXT.filter(lambda t: t not in valid), st.sampled_from(extra))


def _ints(lo=None, hi=None):
    return st.integers(lo, hi).map(str)


@dataclass
class Opt:
    """One option: values it accepts, values it must refuse before heavy work, values it refuses later."""

    good: st.SearchStrategy
    bad: st.SearchStrategy | None = None  # refused before any heavy work (may be the forced bad value)
    late: st.SearchStrategy | None = None  # refused, but only after data and model loading (never forced)
    junk: st.SearchStrategy = JUNK
    always: bool = False  # never left at its default (--out)

    def any_value(self) -> st.SearchStrategy:
        good = self.good.map(lambda v: (v, OK))
        parts = [good, good, self.junk.map(lambda v: (v, ANY))]  # valid values twice as often as the rest
        parts += [s.map(lambda v: (v, BAD)) for s in (self.bad, self.late) if s is not None]
        return st.one_of(parts)


HAS_CUDA = torch.cuda.is_available()
_BAD_MODEL = st.one_of(
    st.sampled_from(["ViT-B-61", "vit-b-16", "ViT-B-16:opanai", "ViT-B-16:", "mma-tiny:openai", "ViT-B-16:/no.pt"]),
    st.text(min_size=1, max_size=16).filter(_refused_by(parse_model_spec)),
)
_MODEL_JUNK = JUNK.filter(lambda v: not str(v).startswith(("hf-hub:", "local-dir:")))  # never reach the network
MODEL = Opt(good=st.sampled_from(["mma-tiny", "mma-tiny:random", ""]), bad=_BAD_MODEL, junk=_MODEL_JUNK)
MODEL_TRAIN = Opt(good=st.just("mma-tiny"), bad=_BAD_MODEL, junk=_MODEL_JUNK)  # the probe run selected mma-tiny
_BAD_DATA = st.one_of(
    st.sampled_from(
        ["builtin:nosuch", "nosuch:x", "", "builtin:,", "builtin:", "coop:/no/such/root", "folder:", "csv:"]
    ),
    st.sampled_from(
        [
            Place("missing", "folder:"),
            Place("file", "folder:"),
            Place("dir", "folder:"),
            Place("dir", "csv:"),
            Place("file", "csv:"),
            Place("binary.json", "csv:"),
            Place("file", "coop:"),
            Place("dir", "coop:"),
            Place("dir", "coop:", ":eurosat"),
        ]
    ),
    st.sampled_from(["folder:~nosuchuser/x", "csv:~nosuchuser/x.csv", "coop:~nosuchuser"]),
    TEXT.filter(_refused_by(parse_data_spec)),
)
DATA_TRAIN = Opt(good=st.sampled_from(["builtin", "builtin:colors", "BUILTIN: Colors ,shapes"]), bad=_BAD_DATA)
DATA_PROBE = Opt(
    good=st.sampled_from(["builtin", "builtin:colors,shapes"]), bad=st.one_of(_BAD_DATA, st.just("builtin:colors"))
)
_BAD_SEEDS = ["", ",", " ", "x", "1,x", "1.5", "1;2", "-1", "2,-3", str(2**64), "1e3"]
SEEDS_PROBE = Opt(
    good=st.sampled_from(["1", "1,2", "3, 4", "7,", "0", str(2**64 - 1)]), bad=st.sampled_from([*_BAD_SEEDS, "1,1"])
)
SEEDS_TRAIN = Opt(good=st.sampled_from(["1", "1,2", "3, 4"]), bad=st.sampled_from([*_BAD_SEEDS, "1,1", "2, 2"]))
DEVICE = Opt(
    good=st.sampled_from(["auto", "cpu"]),
    bad=st.one_of(
        TEXT.filter(lambda t: t not in ("auto", "cpu") and not t.startswith("cuda")),
        st.sampled_from(["gpu", "CPU", "", "mps", "cuda:x", "cuda:", "cuda:999", *([] if HAS_CUDA else ["cuda"])]),
    ),
    junk=JUNK.filter(lambda v: not str(v).startswith("cuda")),
)
OUT = Opt(
    good=st.from_regex(r"[a-z0-9_-]{1,8}", fullmatch=True).map(lambda n: Place("out", suffix=f"/{n}")),
    bad=st.sampled_from([Place("file"), Place("file", suffix="/sub"), Place("config.json")]),
    junk=OUT_JUNK,
    always=True,
)
PRECISION = Opt(good=st.sampled_from(PRECISIONS), bad=_not_in(PRECISIONS, "FP32", "fp64", ""))
THRESHOLD_LATE = st.sampled_from(["nan", "inf", "-inf", "0", "-0.5", "1.5", "1e309", "-0.0"])
THRESHOLD_GOOD = st.floats(0, 1, exclude_min=True).map(str)
# knee takes no threshold (a --threshold with it is refused), so only the rules with one count as "good"
RULE = Opt(
    good=st.sampled_from([r for r in RULES if DEFAULT_THRESHOLDS[r] is not None]),
    bad=_not_in(RULES, "SATURATION", ""),
)
BATCH = Opt(good=_ints(1, 512), bad=st.one_of(_ints(hi=0), NOT_INT))
POS_FLOAT = Opt(
    good=st.floats(1e-6, 10).map(str),
    bad=st.one_of(st.floats(max_value=0).map(str), st.sampled_from(["nan", "-inf"]), NOT_FLOAT),
)
NON_NEGATIVE_FLOAT = Opt(
    good=st.one_of(st.just("0"), st.floats(0, 10).map(str)),
    bad=st.one_of(st.floats(max_value=0, exclude_max=True).map(str), st.sampled_from(["nan", "-inf"]), NOT_FLOAT),
)
CONFIG = Opt(
    good=st.sampled_from([Place("config.json"), Place("config.toml")]),
    bad=st.sampled_from(
        [
            Place(name)
            for name in (
                "missing",
                "dir",
                "file",
                "list.json",
                "string.json",
                "binary.json",
                "unknown-key.json",
                "bad-momentum.json",
                "broken.toml",
            )
        ]
    ),
)
RUN_WITH_SELECTION = Opt(
    good=st.just(Place("probe-run")), bad=st.sampled_from([Place("missing"), Place("file"), Place("dir")])
)
RECIPE = Opt(
    good=st.sampled_from(["auto", "paper", "released", "mma-tiny"]),
    bad=_not_in(("auto", "paper", "released", "mma-tiny"), "PAPER", ""),
)

COMMANDS: dict[str, tuple[list[str], dict[str, Opt]]] = {
    "probe layers": (
        ["probe", "layers"],
        {
            "--model": MODEL,
            "--data": DATA_PROBE,
            # more samples than a dataset has is fine: it uses all of them (said once)
            "--samples": Opt(good=st.one_of(_ints(1, 100), _ints(10**6)), bad=st.one_of(_ints(hi=0), NOT_INT)),
            "--seeds": SEEDS_PROBE,
            "--pooling": Opt(good=st.sampled_from(POOLINGS), bad=_not_in(POOLINGS, "MEAN", "max", "")),
            "--text-split": Opt(good=st.sampled_from(TEXT_SPLITS), bad=_not_in(TEXT_SPLITS, "by_sample", "")),
            "--batch-size": BATCH,
            "--precision": PRECISION,
            "--device": DEVICE,
            "--rule": RULE,
            "--threshold": Opt(good=THRESHOLD_GOOD, bad=st.one_of(NOT_FLOAT, THRESHOLD_LATE)),
            "--out": OUT,
        },
    ),
    "train-selected": (
        ["train-selected"],
        {
            "--run": RUN_WITH_SELECTION,
            "--k": Opt(good=_ints(1, 6), bad=NOT_INT, late=st.one_of(_ints(hi=0), _ints(7)), always=True),
            "--model": MODEL_TRAIN,
            "--data": DATA_TRAIN,
            "--protocol": Opt(good=st.sampled_from(tuple(PROTOCOLS)), late=_not_in(PROTOCOLS, "base-to-novel", "")),
            # more shots than a class has: all its images (CoOp / Dassl), so a huge value is fine
            "--shots": Opt(good=st.one_of(_ints(1, 16), _ints(10**6)), bad=st.one_of(_ints(hi=0), NOT_INT)),
            "--seeds": SEEDS_TRAIN,
            "--epochs": Opt(good=_ints(1, 5), bad=st.one_of(_ints(hi=0), NOT_INT)),
            "--alpha": POS_FLOAT,
            "--lr": POS_FLOAT,
            "--batch-size": BATCH,
            "--precision": PRECISION,
            "--config": CONFIG,
            "--recipe": RECIPE,
            "--device": DEVICE,
            "--out": OUT,
        },
    ),
    "sweep-k": (
        ["sweep-k"],
        {
            "--ks": Opt(
                good=st.sampled_from(["1", "1,2", "2, 3"]),
                bad=st.sampled_from(["", ",", "x", "1,x", "1.5"]),
                late=st.sampled_from(["0", "-1", "7", "2,99"]),
            ),
            "--run": Opt(good=st.just(Place("probe-run")), late=RUN_WITH_SELECTION.bad),  # see test_sweep_k_checks_run
            "--model": MODEL_TRAIN,
            "--data": DATA_TRAIN,
            "--seeds": SEEDS_TRAIN,
            "--epochs": Opt(good=_ints(1, 5), bad=st.one_of(_ints(hi=0), NOT_INT)),
            "--alpha": POS_FLOAT,
            "--config": CONFIG,
            "--recipe": RECIPE,
            "--device": DEVICE,
            "--out": OUT,
        },
    ),
}


@st.composite
def forced_invocations(draw, command: str):
    """Option values for *command*, at least one of them one that must be refused before heavy work.

    In "alone" mode every other option given is valid, so the refusal of the forced value itself is
    checked (whatever order the checks run in); in "mixed" mode the others are anything.
    """
    prefix, opts = COMMANDS[command]
    forced = draw(st.sampled_from([flag for flag, opt in opts.items() if opt.bad is not None]))
    alone = draw(st.booleans())
    args = []
    for flag, opt in opts.items():
        if flag == forced:
            args.append((flag, draw(opt.bad)))
        elif opt.always or draw(st.booleans()):
            args.append((flag, draw(opt.good if alone else opt.any_value().map(lambda v: v[0]))))
    return prefix, args


# ---------------------------------------------------------------------------------------------- the checks

runner = CliRunner()


def _invoke(root: Path, prefix: list[str], args: list[tuple[str, object]]):
    argv = [*prefix, *(f"{flag}={v.resolve(root) if isinstance(v, Place) else v}" for flag, v in args)]
    return argv, runner.invoke(app, argv)


def _note(text: str) -> None:
    """What each example ended in, for ``pytest --hypothesis-show-statistics``."""
    if currently_in_test_context():
        event(text)


def _outcome(argv, result) -> int | str:
    """The exit code (0, 2 or 130) or "work" (a tripwire fired), after checking the error is clean."""
    where = f"\nargv: {argv!r}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}"
    exc = result.exception
    if isinstance(exc, HeavyWorkStarted):
        _note("reached the heavy work")
        return "work"
    if exc is not None and not isinstance(exc, SystemExit):
        raise AssertionError("".join(traceback.format_exception(*result.exc_info)) + where)
    assert "Traceback" not in result.output, where
    assert result.exit_code in (0, 2, 130), where
    if result.exit_code == 2:
        err = result.stderr
        assert result.stdout == "", where
        one_line_error = err.startswith("Error: ") and err.count("\n") == 1
        assert one_line_error or err.startswith("Usage: "), where
        _note(" ".join(err.split()[:4]) if one_line_error else "usage error")
    else:
        _note(f"exit {result.exit_code}")
    return result.exit_code


def _expected(verdicts: list[str], success) -> set:
    if BAD in verdicts:
        return {2}
    if all(v == OK for v in verdicts):
        return {success}
    return {2, success}


@FUZZ
@given(call=forced_invocations("probe layers"))
@example(call=(["probe", "layers"], [("--seeds", "-1"), ("--out", Place("out", suffix="/neg-seed"))]))
@example(call=(["probe", "layers"], [("--data", "folder:~nosuchuser/x"), ("--out", Place("out", suffix="/tilde"))]))
def test_probe_layers_refuses_bad_values_cleanly(sandbox, call):
    """probe layers with a bad value: exit 2 with one clean message, before any layer is extracted."""
    argv, result = _invoke(sandbox, *call)
    assert _outcome(argv, result) == 2


@FUZZ
@given(call=forced_invocations("train-selected"))
@example(call=(["train-selected"], [("--k", "2"), ("--config", Place("list.json")), ("--out", Place("out"))]))
@example(call=(["train-selected"], [("--k", "2"), ("--config", Place("binary.json")), ("--out", Place("out"))]))
def test_train_selected_refuses_bad_values_cleanly(sandbox, call):
    """train-selected with a bad value: exit 2 with one clean message, before any evaluation or training."""
    argv, result = _invoke(sandbox, *call)
    assert _outcome(argv, result) == 2


@settings(FUZZ, max_examples=25)
@given(call=forced_invocations("sweep-k"))
@example(call=(["sweep-k"], [("--ks", ""), ("--out", Place("out"))]))
def test_sweep_k_refuses_bad_values_cleanly(sandbox, call):
    """sweep-k with a bad value (--ks included): exit 2 with one clean message, before any training."""
    argv, result = _invoke(sandbox, *call)
    assert _outcome(argv, result) == 2


def _values(strategies: dict[str, Opt]):
    """For the cheap commands: each option left at its default or given any value, with that value's verdict."""
    return st.fixed_dictionaries(
        {flag: opt.any_value() if opt.always else st.none() | opt.any_value() for flag, opt in strategies.items()}
    )


SELECT = {
    "--run": Opt(
        good=st.just(Place("probe-run")), bad=st.sampled_from([Place("missing"), Place("file"), Place("dir")])
    ),
    "--rule": RULE,
    "--threshold": Opt(good=THRESHOLD_GOOD, bad=st.one_of(NOT_FLOAT, THRESHOLD_LATE)),
}


def _call(prefix, values, required=()):
    args = [(flag, v[0]) for flag, v in values.items() if v is not None]
    verdicts = [v[1] for v in values.values() if v is not None]
    verdicts += [BAD for flag in required if values.get(flag) is None]
    return (prefix, args), verdicts


@settings(FUZZ, max_examples=25)
@given(values=_values(SELECT))
def test_probe_select_exits_0_or_2(sandbox, values):
    """probe select: valid run, rule and threshold give exit 0; any bad one gives exit 2 and one clean line."""
    if values["--run"] is None:  # the default run folder runs/probe does not exist in the sandbox
        values["--run"] = (Place("missing"), BAD)
    call, verdicts = _call(["probe", "select"], values)
    argv, result = _invoke(sandbox, *call)
    assert _outcome(argv, result) in _expected(verdicts, 0)


@settings(FUZZ, max_examples=15)
@given(run=SELECT["--run"].any_value())
def test_plot_exits_0_or_2(sandbox, run):
    """plot --run: a finished probe run is redrawn (exit 0); anything else is exit 2 with one clean line."""
    argv, result = _invoke(sandbox, ["plot"], [("--run", run[0])])
    assert _outcome(argv, result) in _expected([run[1]], 0)


EVALUATE = {
    "--checkpoint": Opt(
        good=st.nothing(),
        bad=st.sampled_from(
            [
                Place(name)
                for name in ("missing", "dir", "file", "empty.safetensors", "plain.safetensors", "binary.json")
            ]
        ),
        always=True,
    ),
    "--data": Opt(good=st.sampled_from(["builtin:colors", "builtin"]), bad=_BAD_DATA),
    "--device": DEVICE,
    "--alpha-eval": NON_NEGATIVE_FLOAT,  # 0 is the frozen model
}


@settings(FUZZ, max_examples=25)
@given(values=_values(EVALUATE))
def test_evaluate_refuses_what_is_not_an_adapter_checkpoint(sandbox, values):
    """evaluate --checkpoint with a missing path, a folder or a file mma did not write: exit 2, one clean line."""
    call, _ = _call(["evaluate"], values, required=["--checkpoint"])
    argv, result = _invoke(sandbox, *call)
    assert _outcome(argv, result) == 2


PRETRAIN = {
    "--out": Opt(
        good=st.from_regex(r"[a-z0-9_-]{1,8}", fullmatch=True).map(lambda n: Place("out", suffix=f"/{n}.safetensors")),
        bad=st.one_of(
            st.sampled_from(
                [
                    Place("dir.safetensors"),  # a folder
                    Place("file", suffix="/x.safetensors"),  # inside a file
                    Place("file"),
                    Place("missing", suffix=".pt"),
                    "model.SAFETENSORS",
                    "",
                ]
            ),
            TEXT.filter(lambda t: Path(t).suffix != ".safetensors"),
        ),
        junk=OUT_JUNK,
        always=True,
    ),
    "--steps": Opt(good=_ints(1, 10**9), bad=st.one_of(_ints(hi=0), NOT_INT)),
    "--seed": Opt(good=_ints(0, 2**64 - 1), bad=st.one_of(_ints(hi=-1), _ints(2**64), NOT_INT)),
}


@settings(FUZZ, max_examples=40)
@given(values=_values(PRETRAIN))
@example(values={"--out": None, "--steps": None, "--seed": None})  # a required option left out
@example(values={"--out": (Place("dir.safetensors"), BAD), "--steps": None, "--seed": None})
@example(values={"--out": (Place("file", suffix="/x.safetensors"), BAD), "--steps": None, "--seed": None})
@example(values={"--out": (Place("out", suffix="/s.safetensors"), OK), "--steps": None, "--seed": (str(2**64), BAD)})
def test_pretrain_tiny_checks_everything_before_training(sandbox, values):
    """pretrain-tiny: a bad --out, --steps or --seed is exit 2 before training; all valid reaches the training."""
    call, verdicts = _call(["pretrain-tiny"], values, required=["--out"])
    argv, result = _invoke(sandbox, *call)
    assert _outcome(argv, result) in _expected(verdicts, "work")


# ------------------------------------------------------------------------------------- single regressions


def test_ctrl_c_exits_130_with_a_resume_hint(sandbox, monkeypatch):
    """A KeyboardInterrupt inside a command is exit code 130 and one line saying how to resume."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module("mma.probe.embedded.pretrain"), "pretrain_tiny", interrupted)
    argv, result = _invoke(sandbox, ["pretrain-tiny"], [("--out", Place("out", suffix="/c.safetensors"))])
    assert _outcome(argv, result) == 130
    assert result.stderr.startswith("Interrupted") and result.stdout == ""


@pytest.mark.parametrize("option", [("--rule", "bogus"), ("--threshold", "7")])
def test_probe_layers_checks_rule_and_threshold_before_extracting(sandbox, option):
    """probe layers with only --rule or --threshold invalid is refused before any layer is extracted."""
    args = [("--data", "builtin:colors,shapes"), ("--samples", "10"), ("--seeds", "1"), option]
    argv, result = _invoke(sandbox, ["probe", "layers"], [*args, ("--out", Place("out", suffix="/rule"))])
    assert _outcome(argv, result) == 2


def test_sweep_k_checks_run(sandbox):
    """sweep-k --run with a folder that has no selection.json is refused, as train-selected refuses it."""
    args = [("--run", Place("missing")), ("--ks", "1"), ("--data", "builtin:colors"), ("--out", Place("out"))]
    argv, result = _invoke(sandbox, ["sweep-k"], args)
    assert _outcome(argv, result) == 2


@pytest.mark.parametrize("content", ['{"alpha": "x"}', '{"epochs": null}'])
def test_train_selected_refuses_a_config_value_of_the_wrong_type(sandbox, tmp_path, content):
    """--config with a value of the wrong type is exit 2 with one clean line, not a TypeError."""
    (tmp_path / "typed.json").write_text(content)
    args = [("--k", "2"), ("--config", str(tmp_path / "typed.json")), ("--out", Place("out"))]
    argv, result = _invoke(sandbox, ["train-selected"], args)
    assert _outcome(argv, result) == 2


@pytest.mark.parametrize("content", ["", "a,b\n1,2\n"])
@pytest.mark.parametrize("command", [["plot"], ["probe", "select"]])
def test_a_damaged_layers_summary_is_one_clean_error(sandbox, tmp_path, command, content):
    """A run folder whose layers_summary.csv is empty or lacks columns is exit 2, not a pandas traceback."""
    (tmp_path / "layers_summary.csv").write_text(content)
    argv, result = _invoke(sandbox, command, [("--run", str(tmp_path))])
    assert _outcome(argv, result) == 2


def test_an_out_folder_under_an_unknown_home_is_one_clean_error(sandbox):
    """--out ~nosuchuser/run (a mistyped user name) is exit 2 with one clean line."""
    argv, result = _invoke(sandbox, ["probe", "layers"], [("--out", "~nosuchuser/run")])
    assert _outcome(argv, result) == 2


@pytest.mark.parametrize(
    "option", [("--alpha", "inf"), ("--lr", "inf"), ("--config", "x" * 300 + ".json"), ("--out", "y" * 300)]
)
def test_infinite_values_and_overlong_paths_are_one_clean_error(sandbox, option):
    """An infinite alpha or lr, or a path component longer than the file system allows, is exit 2."""
    argv, result = _invoke(sandbox, ["train-selected"], [("--k", "2"), option])
    assert _outcome(argv, result) == 2


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mma.app.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_a_real_process_reports_a_bad_value_on_stderr(tmp_path):
    """End to end in a fresh interpreter: a bad value is exit 2, one 'Error:' line on stderr, nothing on stdout."""
    proc = _run_cli("probe", "layers", "--pooling", "max", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == "Error: --pooling 'max' is not valid (valid: mean, cls).\n"


def test_a_real_process_reports_a_usage_error_without_a_traceback(tmp_path):
    """End to end: a value click cannot convert (--epochs abc) is click's usage error, exit 2, no traceback."""
    proc = _run_cli("train-selected", "--epochs", "abc", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == "" and proc.stderr.startswith("Usage: ") and "--epochs" in proc.stderr
    assert "Traceback" not in proc.stderr
