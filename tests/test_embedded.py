"""The embedded default model: shipped weights, zero-shot floor, tokenizer, and the pretraining command."""

from __future__ import annotations

import json

import pytest
import torch

from mma.probe import load_model
from mma.probe.data import load_datasets
from mma.probe.embedded import RECORD_PATH, WEIGHTS_PATH, RemappedTokenizer
from mma.probe.embedded.pretrain import PretrainConfig, pretrain_tiny
from mma.probe.zeroshot import zero_shot_accuracy

# Floors set well below the values measured for the shipped checkpoint (see its JSON record and the README).
ZERO_SHOT_FLOORS = {"colors": 0.6, "scenes": 0.6, "objects": 0.3}


def test_shipped_weights_are_the_default(tiny_trained):
    assert WEIGHTS_PATH.is_file() and RECORD_PATH.is_file()
    assert str(tiny_trained.spec) == "mma-tiny" and not tiny_trained.random_weights
    by_name = load_model("mma-tiny")
    assert by_name.weights_id == tiny_trained.weights_id
    record = json.loads(RECORD_PATH.read_text())
    assert record["model"] == "mma-tiny" and record["checkpoint_bytes"] == WEIGHTS_PATH.stat().st_size


@pytest.mark.parametrize("name,floor", sorted(ZERO_SHOT_FLOORS.items()))
def test_zero_shot_floor_on_a_fixed_subset(tiny_trained, name, floor):
    (d,) = load_datasets(f"builtin:{name}")
    samples = d.test[::4]  # fixed, deterministic subset
    acc = zero_shot_accuracy(tiny_trained, d, samples=samples)
    assert acc > floor, f"{name}: zero-shot {acc:.3f} fell below its floor {floor}"
    random = zero_shot_accuracy(load_model("mma-tiny:random"), d, samples=samples)
    assert random < acc


def test_tokenizer_handles_unseen_words(tiny_trained):
    tok = tiny_trained.tokenizer
    assert isinstance(tok, RemappedTokenizer)
    ids = tok(["a photo of a quokka wearing a xylophone.", "a photo of a red."])
    assert ids.shape == (2, tok.context_length) and ids.dtype == torch.long
    assert int(ids.min()) >= 0 and int(ids.max()) < tok.vocab_size
    # EOT stays the largest id, so CLIP's argmax readout still finds it
    assert all(int(row.argmax()) == int((row == tok.eot_token_id).nonzero()[0]) for row in ids)
    seen = tok(["a photo of a red."])[0]
    assert (seen != 1).all()  # every word of a suite prompt has its own id
    assert (ids[0] == 1).any()  # unseen words share the unknown id


def test_pretraining_runs_end_to_end_and_is_deterministic(tmp_path):
    cfg = PretrainConfig(steps=12, batch_size=32, warmup_steps=2, datasets=("colors", "scenes"), eval_samples=16)
    record = pretrain_tiny(tmp_path / "a.safetensors", cfg, progress=False)
    pretrain_tiny(tmp_path / "b.safetensors", cfg, progress=False)
    assert record["data"]["datasets"] == ["colors", "scenes"] and record["config"]["steps"] == 12
    assert set(record["zero_shot"]["trained"]) == {"colors", "scenes"}
    assert json.loads((tmp_path / "a.json").read_text())["seed"] == 0
    a, b = load_model(f"mma-tiny:{tmp_path / 'a.safetensors'}"), load_model(f"mma-tiny:{tmp_path / 'b.safetensors'}")
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), name
    assert a.tokenizer(["a photo of a red."]).tolist() == b.tokenizer(["a photo of a red."]).tolist()
