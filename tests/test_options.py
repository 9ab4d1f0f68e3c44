"""Options people expect (issue 24): ``--template`` on train-selected and sweep-k, a warning when a flag or
``--config`` value cuts a method's published recipe, and per-method tables in the ``--config`` file."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import colour_folder, patch_everywhere
from typer.testing import CliRunner

from mma.adapters.method_base import MethodBase
from mma.adapters.methods import get_method
from mma.adapters.recipes import MethodValues, Recipe, get_recipe
from mma.app.cli import app
from mma.app.settings import (
    TEMPLATE_DEFAULT,
    USER_FLAG,
    Selection,
    TrainSelectedConfig,
    check_template,
    resolve_settings,
    settle_method,
)
from mma.errors import MmaError
from mma.probe.data import ImageDataset

runner = CliRunner()
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}
TEMPLATE = "a drawing of a {}."


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """4 classes of 32 px noise around a colour: 2 training, 1 validation and 2 test images each."""
    root = tmp_path_factory.mktemp("colours")
    colour_folder(root, COLOURS, {"train": 2, "val": 1, "test": 2}, seed=0, noise=40, size=32)
    return root


def _resolve(**kw):
    return resolve_settings(TrainSelectedConfig(model="mma-tiny:random", k=3, **kw), device_type="cpu")


def _one_line_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr, result.stderr


# -- --template -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["no braces", "{} and {}", "{name}", "a {", "{{}}", ""])
def test_a_bad_template_is_one_sentence(bad):
    with pytest.raises(MmaError, match=r"^--template .* must contain '\{\}' once, where the class name goes"):
        check_template(bad)
    check_template(TEMPLATE)
    check_template(None)


@pytest.mark.parametrize("command", ["train-selected", "sweep-k"])
def test_a_bad_template_exits_2_before_the_model_loads(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def tripwire(*args, **kwargs):
        raise AssertionError("the model was loaded before the template was checked")

    patch_everywhere(monkeypatch, "mma.probe.specs.load_model", tripwire)
    out = tmp_path / "run"
    args = [command, "--model", "mma-tiny:random", "--template", "no braces", "--out", str(out)]
    result = runner.invoke(app, [*args, *(["--k", "3"] if command == "train-selected" else ["--ks", "3"])])
    _one_line_error(result, "--template 'no braces' must contain '{}' once")
    assert not out.exists()


def test_an_explicit_template_wins_over_the_default_and_the_published_prompts():
    published = ImageDataset("eurosat", ["a", "b"], {}, loader=None, published_template="a satellite photo of {}.")
    zeroshot, coop = get_method("zeroshot"), get_method("coop")
    assert zeroshot.published_prompts and zeroshot.prompt_template(published) == "a satellite photo of {}."
    assert coop.prompt_template(published) == "a photo of a {}."  # published without it: the default
    for method in (zeroshot, get_method("mma"), get_method("clip-adapter")):
        assert method.prompt_template(published, TEMPLATE) == TEMPLATE
    # CoOp and CoCoOp learn their context and the linear probe reads no text: a template changes nothing for them
    for name in ("coop", "cocoop", "linear-probe"):
        assert not get_method(name).reads_template
        assert get_method(name).prompt_template(published, TEMPLATE) == "a photo of a {}."
    given = _resolve(template=TEMPLATE, methods=["mma", "coop", "linear-probe"])
    assert given.method_settings["mma"].record()["template"] == {"value": TEMPLATE, "source": USER_FLAG}
    for name in ("coop", "linear-probe"):
        recorded = given.method_settings[name].record()["template"]
        assert recorded["value"] is None and recorded["source"].startswith("not read")


def test_the_template_is_recorded_with_its_source():
    given = _resolve(template=TEMPLATE, methods=["mma", "clip-adapter"])
    for settings in given.method_settings.values():
        assert settings.record()["template"] == {"value": TEMPLATE, "source": USER_FLAG}
        assert f"template='{TEMPLATE}'" in settings.line().split("; ")[0]  # in the user flag group, first
    default = _resolve(methods=["mma", "clip-adapter"]).method_settings
    assert default["mma"].record()["template"] == {"value": None, "source": TEMPLATE_DEFAULT}
    assert default["clip-adapter"].record()["template"]["source"].startswith(TEMPLATE_DEFAULT + "; on datasets")
    assert "template=" not in default["mma"].line()


def test_template_reaches_the_results_and_a_new_template_starts_afresh(root, tmp_path, monkeypatch):
    """The results record and results.csv show the user's template; the same command resumes, another template
    does not reuse a result of the old one (zero-shot's or MMA's)."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    args = ["train-selected", "--model", "mma-tiny:random", "--k", "11", "--data", f"folder:{root}", "--seeds", "1"]
    args += ["--epochs", "1", "--shots", "1", "--out", str(out)]
    first = runner.invoke(app, [*args, "--template", TEMPLATE])
    assert first.exit_code == 0, first.output
    results = out / "results" / "base2novel" / root.name
    for name in ("seed1-k11-mma.json", "zeroshot.json"):
        record = json.loads((results / name).read_text())
        assert record["template"] == TEMPLATE and set(record["prompts"].values()) == {TEMPLATE}
    assert {r["template"] for r in csv.DictReader((out / "results.csv").open())} == {TEMPLATE}
    settings = json.loads((out / "train-k11.json").read_text())
    assert settings["template"] == TEMPLATE and settings["settings"]["template"]["source"] == USER_FLAG

    again = runner.invoke(app, [*args, "--template", TEMPLATE])
    assert again.exit_code == 0 and "resuming: 1 of 1 runs already done." in again.output

    other = "art of a {}."
    changed = runner.invoke(app, [*args, "--template", other])
    assert changed.exit_code == 0 and "resuming" not in changed.output
    for name in ("seed1-k11-mma.json", "zeroshot.json"):
        assert json.loads((results / name).read_text())["template"] == other
    assert {r["template"] for r in csv.DictReader((out / "results.csv").open())} == {other}


# -- a cut of a published recipe -----------------------------------------------------------------------------------


def test_a_flag_that_cuts_a_published_value_4x_is_one_warning_line_per_method():
    r = _resolve(methods=["mma", "coop", "cocoop", "clip-adapter"], train={"epochs": 3})
    coop = r.method_settings["coop"].warnings
    assert coop == [
        "Warning: --epochs 3 is 1/67 of CoOp's published 200 epochs (CoOp configs/trainers/CoOp/vit_b16_ctxv1.yaml "
        "via scripts/cocoop/base2new_train.sh, xd_train.sh); its numbers will not be comparable to the paper's."
    ]
    assert r.method_settings["clip-adapter"].warnings[0].startswith("Warning: --epochs 3 is 1/67 of CLIP-Adapter's")
    assert r.method_settings["mma"].warnings == []  # 5 / 3 < 4
    assert r.method_settings["cocoop"].warnings == []  # 10 / 3 < 4
    assert r.method_settings["coop"].record()["warnings"] == coop
    one = _resolve(methods=["mma"], train={"epochs": 1, "lr": 0.0001}).method_settings["mma"].warnings
    assert len(one) == 1 and "--epochs 1 is 1/5 of MMA's published 5 epochs and --lr 0.0001 is 1/15" in one[0]


def test_a_config_value_is_warned_about_too_but_a_recipe_or_an_unpublished_method_is_not(tmp_path):
    config = tmp_path / "c.json"
    config.write_text('{"epochs": 1, "coop": {"epochs": 40}}')
    r = _resolve(methods=["mma", "coop"], config=config)
    assert r.method_settings["mma"].warnings[0].startswith(f"Warning: epochs = 1 in the config file ({config}) is 1/5")
    assert (
        r.method_settings["coop"]
        .warnings[0]
        .startswith(f"Warning: epochs = 40 in the config file ({config}) (coop) is 1/5 of CoOp's published 200 epochs")
    )
    # a recipe that cuts CoOp to 10 epochs is the user's --recipe, not a cut by a flag
    cfg = TrainSelectedConfig(model="mma-tiny:random", methods=["coop"])
    short = Recipe("short", {"coop": MethodValues(values={"epochs": 10})})
    settings = settle_method(cfg, short, Selection("mma-tiny:random"), "cpu", get_method("coop"))
    assert settings.values["epochs"] == 10 and settings.warnings == []

    class Unpublished(MethodBase):  # a plugin without published files: nothing to cut
        name = "unpublished"

    cut = TrainSelectedConfig(model="mma-tiny:random", train={"epochs": 1, "lr": 1e-6})
    plain = settle_method(cut, get_recipe("paper", "x"), Selection("mma-tiny:random"), "cpu", Unpublished)
    assert plain.values["epochs"] == 1 and plain.warnings == []


def test_the_warning_is_printed_before_training_and_recorded(root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    args = ["train-selected", "--model", "mma-tiny:random", "--data", f"folder:{root}", "--seeds", "1"]
    args += ["--method", "coop", "--epochs", "2", "--shots", "1", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    line = "Warning: --epochs 2 is 1/100 of CoOp's published 200 epochs"
    assert result.output.count(line) == 1
    assert result.output.index(line) < result.output.index("Recipe mma-tiny, base2novel (coop)")
    record = json.loads((out / "train-coop.json").read_text())
    assert record["settings"]["warnings"][0].startswith(line) and any(n.startswith(line) for n in record["adjustments"])


# -- per-method tables in --config ---------------------------------------------------------------------------------


def test_flag_over_the_methods_table_over_the_flat_values_over_the_recipe(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("epochs = 5\nlr = 0.01\n[coop]\nepochs = 10\nlr = 0.002\n")
    r = _resolve(methods=["mma", "coop"], config=config, train={"lr": 0.003})
    coop, mma = r.method_settings["coop"], r.method_settings["mma"]
    assert (coop.values["epochs"], coop.sources["epochs"]) == (10, f"config file ({config}) (coop)")
    assert (coop.values["lr"], coop.sources["lr"]) == (0.003, USER_FLAG)
    assert (mma.values["epochs"], mma.sources["epochs"]) == (5, f"config file ({config})")
    assert coop.sources["n_ctx"] == "recipe mma-tiny (coop)"  # below the config file
    assert f"config file ({config}) (coop): epochs=10" in coop.line()


@pytest.mark.parametrize(
    "text,message",
    [
        ('{"cop": {"epochs": 1}}', "has a table [cop], which is no method (valid tables: zeroshot, mma, mma++, maple,"),
        ('{"methods": {"coop": {"epochs": 1}}}', 'a method\'s own values go in a table named after it, e.g. {"epochs"'),
        (
            '{"coop": {"alpha": 0.1}}',
            "sets alpha in the [coop] table, which method 'coop' does not read (its options: ",
        ),
    ],
)
def test_a_bad_methods_table_is_one_sentence(text, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.json"
    config.write_text(text)
    out = tmp_path / "run"
    args = ["train-selected", "--model", "mma-tiny:random", "--k", "3", "--config", str(config), "--out", str(out)]
    result = runner.invoke(app, args)
    _one_line_error(result, message)
    assert not out.exists()
