"""CLIP-LoRA: the merged weights and the dropout path written out, exact start and detach, counts, training, I/O."""

from __future__ import annotations

import copy
import dataclasses
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mma.adapters.checkpoint import load_adapter, save_adapter
from mma.adapters.clip_lora import ClipLoRA
from mma.adapters.protocols import make_tasks
from mma.adapters.recipes import RECIPES
from mma.adapters.train import ADAMW_BETAS, ADAMW_EPS, TrainConfig, fit_method, optimiser_for
from mma.errors import MmaError
from mma.probe.data import load_datasets
from mma.probe.layers import layer_maps


@pytest.fixture()
def tiny(tiny_random):
    """A private copy of the embedded architecture (random weights, frozen as build() leaves it) and a batch."""
    loaded = dataclasses.replace(tiny_random, model=copy.deepcopy(tiny_random.model).requires_grad_(False))
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = loaded.tokenizer(["a photo of a cat.", "a photo of a dog."])
    return loaded, images, tokens


def _encode(model, images, tokens):
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(tokens)


def _randomise(method: ClipLoRA, scale: float = 0.05, seed: int = 3) -> None:
    """Every A and B drawn afresh (B = 0 would hide the branch)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in method.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def _blocks(model, tower):
    return layer_maps(model)[tower].blocks(model)


class _Taps:
    """Every block's input (and attention mask) and output while the model encodes."""

    def __init__(self, model) -> None:
        self.seen, self.handles = {}, []
        for t in ("image", "text"):
            for j, block in enumerate(_blocks(model, t), 1):
                self.handles.append(block.register_forward_hook(self._grab(t, j), with_kwargs=True))

    def _grab(self, tower, j):
        def hook(_module, args, kwargs, output):
            self.seen[tower, j] = (args[0], kwargs.get("attn_mask"), output)

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


# -- the formula written out ------------------------------------------------------------------------------


def _attention_by_hand(attn, h, weights, biases, mask):
    """Multi-head self-attention in plain tensor code: ``softmax(q k^T / sqrt(d_h) + mask) v``, then the output
    projection. *h*: ``[B, L, D]``; *weights*: the q, k, v and o matrices; *biases*: theirs."""
    batch, length, width = h.shape
    heads = attn.num_heads
    q, k, v = (
        (h @ w.T + b).reshape(batch, length, heads, width // heads).transpose(1, 2)
        for w, b in zip(weights[:3], biases[:3])
    )
    scores = q @ k.transpose(-1, -2) / math.sqrt(width // heads)
    if mask is not None:
        scores = scores + mask
    o = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, length, width)
    return o @ weights[3].T + biases[3]


def _frozen_matrices(attn):
    """The frozen q, k, v, o matrices and biases of *attn* (beneath the parametrization, when there is one)."""
    packed = attn.parametrizations.in_proj_weight.original if hasattr(attn, "parametrizations") else attn.in_proj_weight
    out = attn.out_proj
    out_w = out.parametrizations.weight.original if hasattr(out, "parametrizations") else out.weight
    return [*packed.chunk(3), out_w], [*attn.in_proj_bias.chunk(3), out.bias]


def _block_by_hand(block, x, mask, attention):
    """open_clip's residual block written out around *attention* (``h -> attention output``): pre-norm, residual,
    MLP on its own pre-norm (the MLP is frozen and untouched, so its module is used as it is)."""
    assert isinstance(block.ls_1, nn.Identity) and isinstance(block.ls_2, nn.Identity)
    width = x.shape[-1]
    h = F.layer_norm(x, (width,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
    x = x + attention(h)
    return x + block.mlp(F.layer_norm(x, (width,), block.ln_2.weight, block.ln_2.bias, block.ln_2.eps))


def test_a_fresh_method_is_the_frozen_model_exactly(tiny):
    loaded, images, tokens = tiny
    ref = _encode(loaded.model, images, tokens)
    method = ClipLoRA.build(loaded, ClipLoRA.make_config(params="qkvo"))
    pair = method.lora["image"]["1"]["q"]
    assert pair.B.abs().sum() == 0 and pair.A.abs().sum() > 0  # the official init: A as nn.Linear's, B zero
    bound = 1 / math.sqrt(pair.A.shape[1])  # kaiming_uniform_(a=sqrt(5)) on [r, d]: U(-1/sqrt(d), 1/sqrt(d))
    assert pair.A.abs().max() <= bound and pair.A.abs().max() > 0.5 * bound
    with method.attached(loaded.model):
        out = _encode(loaded.model, images, tokens)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])


def test_every_block_equals_attention_written_out_with_the_merged_weights(tiny):
    """W + (alpha / sqrt(r)) B A on q, k, v and o of the adapted blocks (image 3..12, text 5..12); the blocks below
    each start are the frozen model's."""
    loaded, images, tokens = tiny
    model = loaded.model
    method = ClipLoRA.build(loaded, ClipLoRA.make_config(k=3, k_text=5, r=4, lora_alpha=2.0, params="qkvo"))
    _randomise(method)
    scale = 2.0 / math.sqrt(4)  # the official LoRALayer: lora_alpha / sqrt(r)
    with method.attached(model):
        taps = _Taps(model)
        _encode(model, images, tokens)
        taps.remove()
    starts = {"image": 3, "text": 5}
    for (tower, j), (x, mask, out) in taps.seen.items():
        block = _blocks(model, tower)[j - 1]
        weights, biases = _frozen_matrices(block.attn)
        if j >= starts[tower]:
            pairs = method.lora[tower][str(j)]
            weights = [w + scale * pairs[m].B @ pairs[m].A for w, m in zip(weights, "qkvo")]
        attention = functools.partial(_attention_by_hand, block.attn, weights=weights, biases=biases, mask=mask)
        with torch.no_grad():
            want = _block_by_hand(block, x, mask, attention)
        torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5, msg=f"{tower} block {j}")
    assert len(taps.seen) == 24 and taps.seen["text", 5][1] is not None  # the text tower's causal mask took part


def _dropped_by_hand(attn, h, weights, biases, pairs, keep):
    """Self-attention (no mask) with each matrix as ``W x + s B A (x * keep / (1 - p))``, s = 1 / sqrt(2), p = 0.25."""
    batch, length, width = h.shape
    heads = attn.num_heads

    def branch(m, inputs, mask):
        return 1 / math.sqrt(2) * (inputs * mask / 0.75) @ (pairs[m].B @ pairs[m].A).T

    q, k, v = (h @ w.T + b + branch(m, h, mask) for w, b, m, mask in zip(weights, biases, "qkv", keep))
    q, k, v = (p.reshape(batch, length, heads, -1).transpose(1, 2) for p in (q, k, v))
    o = ((q @ k.transpose(-1, -2) / math.sqrt(width // heads)).softmax(-1) @ v).transpose(1, 2)
    o = o.reshape(batch, length, width)
    return o @ weights[3].T + biases[3] + branch("o", o, keep[3])


def test_training_drops_the_input_of_each_adapted_matrix_with_its_own_mask(tiny, monkeypatch):
    """``W x + s B A drop(x)``: the frozen path reads x, each of q, k, v, o its own mask (scaled by 1 / (1 - p))."""
    loaded, images, _ = tiny
    model = loaded.model
    method = ClipLoRA.build(loaded, ClipLoRA.make_config(k=11, params="qkvo", dropout_rate=0.25))
    _randomise(method, scale=0.2)
    masks = []
    draw = method.keep
    monkeypatch.setattr(method, "keep", lambda x: masks.append(draw(x)) or masks[-1])
    torch.manual_seed(0)
    with method.attached(model), method.dropping():
        taps = _Taps(model)
        with torch.no_grad():
            model.encode_image(images)
        taps.remove()
    assert len(masks) == 8  # blocks 11 and 12: q, k, v, o each
    kept = torch.cat([m.flatten().float() for m in masks]).mean()
    assert 0.72 < kept < 0.78 and not torch.equal(masks[0], masks[1])
    for i, j in enumerate((11, 12)):
        block, (x, mask, out) = _blocks(model, "image")[j - 1], taps.seen["image", j]
        assert mask is None  # the image tower attends without a mask
        weights, biases = _frozen_matrices(block.attn)
        pairs = method.lora["image"][str(j)]
        keep = masks[4 * i : 4 * i + 4]  # q, k, v, o
        attention = functools.partial(_dropped_by_hand, block.attn, weights=weights, biases=biases, pairs=pairs,
                                      keep=keep)  # fmt: skip
        with torch.no_grad():
            want = _block_by_hand(block, x, mask, attention)
        torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5, msg=f"image block {j}")


def test_the_dropout_path_computes_torchs_attention(tiny, monkeypatch):
    """With the dropout made the identity, the training path (attention re-stated) equals torch's own attention on
    the merged weights, in both towers (the text tower with its causal mask)."""
    loaded, images, tokens = tiny
    method = ClipLoRA.build(loaded, ClipLoRA.make_config(params="qkvo"))
    _randomise(method)
    with method.attached(loaded.model):
        merged = _encode(loaded.model, images, tokens)
        monkeypatch.setattr(method, "drop", lambda x: x)
        with method.dropping():
            assert all("forward" in a.__dict__ for a in method._attns.values())
            restated = _encode(loaded.model, images, tokens)
        assert not any("forward" in a.__dict__ for a in method._attns.values())
    for a, b in zip(restated, merged):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_detach_puts_the_very_parameters_back(tiny):
    loaded, images, tokens = tiny
    model = loaded.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attns = [b.attn for t in ("image", "text") for b in _blocks(model, t)]
    params = [(a.in_proj_weight, a.out_proj.weight) for a in attns]
    ref = _encode(model, images, tokens)
    method = ClipLoRA.build(loaded, ClipLoRA.make_config(params="qkvo", k=2))
    _randomise(method)
    method.attach(model)
    assert type(attns[-1]).__name__ == "ParametrizedMultiheadAttention"
    assert not any(p.requires_grad for p in model.parameters())  # the LoRA weights are not the model's
    assert not torch.equal(_encode(model, images, tokens)[0], ref[0])
    with pytest.raises(MmaError, match="already attached"):
        method.attach(model)
    method.detach()
    for a, (w_in, w_out) in zip(attns, params):
        assert type(a) is nn.MultiheadAttention and a.in_proj_weight is w_in and a.out_proj.weight is w_out
        assert "parametrizations" not in a._modules and "parametrizations" not in a.out_proj._modules
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], v) for k, v in before.items())
    out = _encode(model, images, tokens)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])
    method.detach()  # a no-op when not attached


# -- counts, depth, options ------------------------------------------------------------------------------------


def test_trainable_parameters_at_vit_b16_are_the_hand_count():
    import open_clip

    model = open_clip.create_model("ViT-B-16")
    # one matrix: A (r x d) + B (d x r) = 2 r d; r = 2; q, k, v of each of the 12 blocks of each tower
    image = 12 * 3 * (2 * 2 * 768)  # 110,592
    text = 12 * 3 * (2 * 2 * 512)  # 73,728
    assert image + text == 184_320  # the paper's "184k"
    assert ClipLoRA.for_model(model, k=1, r=2, params="qkv").num_parameters() == 184_320
    assert ClipLoRA.for_model(model, params="qkvo").num_parameters() == 12 * 4 * (2 * 2 * (768 + 512))
    assert ClipLoRA.for_model(model, k=10).num_parameters() == 3 * 3 * (2 * 2 * (768 + 512))  # --position top3


def test_depth_is_the_blocks_from_each_towers_start(tiny):
    loaded, _, _ = tiny
    method = ClipLoRA.build(loaded, ClipLoRA.make_config(k=4, k_text=9))
    assert list(method.blocks("image")) == list(range(4, 13)) and list(method.blocks("text")) == list(range(9, 13))
    assert list(method.lora["text"]) == [str(j) for j in range(9, 13)] and method.image_start(loaded) == 4
    assert ClipLoRA.depth_label({"image": 1, "text": 1}, {"image": 12, "text": 12}) == "LoRA on blocks 1..12"
    assert ClipLoRA.depth_label({"image": 4, "text": 9}, {"image": 12, "text": 12}) == (
        "LoRA on image blocks 4..12, text blocks 9..12"
    )
    assert ClipLoRA.depth_indexed and ClipLoRA.per_tower and ClipLoRA.depth_knob == "LoRA layers"


@pytest.mark.parametrize(
    "values, message",
    [
        ({"params": "qz"}, "params='qz' is not valid"),
        ({"params": "qq"}, "params='qq' is not valid"),
        ({"r": 0}, "r=0 is not valid"),
        ({"dropout_rate": 1.0}, "dropout_rate=1.0 is not valid"),
        ({"k": 13}, "k=13 is out of range"),
        ({"k_text": 13}, "k_text=13 is out of range"),
    ],
)
def test_a_bad_option_is_one_sentence(tiny, values, message):
    loaded, _, _ = tiny
    with pytest.raises(MmaError, match=message):
        ClipLoRA.check_model(loaded, ClipLoRA.make_config(values))


def test_a_model_without_torchs_attention_is_refused(tiny):
    loaded, _, _ = tiny
    model = copy.deepcopy(loaded.model)
    _blocks(model, "text")[6].attn = nn.Identity()
    with pytest.raises(MmaError, match="attention of text block 7 .* is Identity"):
        ClipLoRA.for_model(model)
    shallow = copy.deepcopy(loaded.model)  # another model: its text tower cut to 6 blocks
    shallow.transformer.resblocks = nn.ModuleList(list(shallow.transformer.resblocks)[:6])
    with pytest.raises(MmaError, match="built for towers"):
        ClipLoRA.for_model(loaded.model).attach(shallow)


# -- the recipe: AdamW, the iteration budget as epochs ----------------------------------------------------


def test_the_published_values_and_adamw():
    p = ClipLoRA.paper  # run_utils.py defaults, lora.py's AdamW
    assert (p["lr"], p["batch_size"], p["r"], p["lora_alpha"], p["dropout_rate"], p["params"], p["k"]) == (
        2e-4, 32, 2, 1.0, 0.25, "qkv", 1,
    )  # fmt: skip
    assert (p["optimizer"], p["weight_decay"], p["crop_scale_min"], p["flip"]) == ("adamw", 1e-2, 0.08, True)
    cfg = ClipLoRA.make_config(p)
    cfg.validate()
    opt, _ = optimiser_for(nn.Linear(2, 2), cfg, torch.device("cpu"))
    group = opt.param_groups[0]
    assert type(opt) is torch.optim.AdamW and ADAMW_BETAS == (0.9, 0.999) and ADAMW_EPS == 1e-8
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (2e-4, (0.9, 0.999), 1e-8, 1e-2)
    sgd, _ = optimiser_for(nn.Linear(2, 2), TrainConfig(), torch.device("cpu"))  # every other recipe: unchanged
    assert type(sgd) is torch.optim.SGD and sgd.param_groups[0]["momentum"] == 0.9
    with pytest.raises(MmaError, match="optimizer='adam' is not valid; it must be one of sgd, adamw"):
        dataclasses.replace(cfg, optimizer="adam").validate()
    assert "momentum" not in ClipLoRA.field_names() and "optimizer" in ClipLoRA.field_names()


def test_the_iteration_budget_is_epochs_over_each_datasets_base_classes():
    """500 x 16 iterations at batch 32; mma's loop runs floor(16 x base classes / 32) steps per epoch."""
    epochs = {d: v["epochs"] for d, v in ClipLoRA.paper_datasets.items()}
    assert epochs["imagenet"] == 32  # 500 base classes x 16 = 8000 images = 250 steps; 8000 / 250
    assert epochs["dtd"] == 667  # 24 base classes x 16 = 384 images = 12 steps; 8000 / 12 = 666.7
    assert epochs["eurosat"] == 4000  # 5 x 16 = 80 images = 2 steps (16 dropped); 8000 / 2
    assert len(epochs) == 11 and ClipLoRA.paper["epochs"] == 320  # others: a base split of about 50 classes
    classes = {"imagenet": 1000, "caltech101": 100, "oxford_pets": 37, "stanford_cars": 196, "oxford_flowers": 102,
               "food101": 101, "fgvc_aircraft": 100, "sun397": 397, "dtd": 47, "eurosat": 10,
               "ucf101": 101}  # fmt: skip
    for name, n in classes.items():
        steps = math.ceil(n / 2) * 16 // 32
        assert abs(epochs[name] * steps - 8000) <= steps / 2, name
    layers = dict(RECIPES["paper"].layers("base2novel", "dtd", ClipLoRA))
    assert layers["dataset default (paper, dtd) (clip-lora)"] == {"epochs": 667}
    assert "run_utils.py" in ClipLoRA.paper_file("dtd") and "lora.py" in ClipLoRA.paper_file("")


# -- training, checkpoint, resume ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def colors_task():
    (d,) = load_datasets("builtin:colors")
    return make_tasks("base2novel", [d], shots=4, seed=1)[0]  # 6 base classes x 4 shots = 24 images


# 3 steps per epoch (24 images, batch 8), the published recipe otherwise (AdamW, dropout 0.25, augmentation)
FAST = {**ClipLoRA.paper, "epochs": 3, "batch_size": 8, "shots": 4, "lr": 1e-3}


def _fit(loaded, task, values, **kw):
    cfg = ClipLoRA.make_config(values)
    return fit_method(loaded, "clip-lora", task.dataset, task.train, task.classnames, cfg, seed=1, **kw)


def test_fit_method_trains_the_adapted_blocks_and_leaves_the_trunk(tiny, colors_task):
    loaded, images, tokens = tiny
    ref = _encode(loaded.model, images, tokens)
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    # per-tower starts, frozen inputs below block 4 read from the cache (augmentation off), text blocks below 6 once
    result = _fit(loaded, colors_task, {**FAST, "k": 4, "k_text": 6, "augment": False})
    method = result.adapter
    assert result.steps == 9 and all(math.isfinite(v) for v in result.losses)
    assert all(
        p.B.abs().sum() > 0 for t in ("image", "text") for pairs in method.lora[t].values() for p in pairs.values()
    )
    assert method.is_attached and not torch.equal(_encode(loaded.model, images, tokens)[0], ref[0])
    method.detach()
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in before.items())
    out = _encode(loaded.model, images, tokens)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])


def test_a_checkpoint_rebuilds_the_same_method(tiny, tmp_path):
    loaded, images, tokens = tiny
    method = ClipLoRA.build(loaded, ClipLoRA.make_config(k=5, k_image=3, r=3, params="qv", dropout_rate=0.1))
    _randomise(method)
    with method.attached(loaded.model):
        want = _encode(loaded.model, images, tokens)
    path = save_adapter(
        method, tmp_path / "lora.safetensors", {"model": str(loaded.spec), "weights": loaded.weights_id}
    )
    restored, meta = load_adapter(path, loaded)
    try:
        assert type(restored) is ClipLoRA and restored.config() == method.config() == meta["adapter"]
        assert restored.config()["params"] == "qv" and restored.start_blocks == {"image": 3, "text": 5}
        assert all(torch.equal(restored.state_dict()[k], v) for k, v in method.state_dict().items())
        got = _encode(loaded.model, images, tokens)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    finally:
        restored.detach()
    other = {**method.config(), "widths": {"image": 64, "text": 96}}
    with pytest.raises(MmaError, match="trained on towers with widths"):
        ClipLoRA.restore(other, loaded)


def test_an_interrupted_run_resumes_to_the_same_weights(tiny, colors_task, tmp_path, monkeypatch):
    """AdamW's state and the dropout masks' RNG come back with the saved epoch."""
    loaded, _, _ = tiny
    values = {**FAST, "k": 9, "epochs": 2}  # 6 steps, LoRA on blocks 9..12
    full = _fit(loaded, colors_task, values)
    full.adapter.detach()
    original, calls = torch.optim.AdamW.step, [0]

    def step(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 4:  # the first step of epoch 2: the state after epoch 1 is on disk
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    state = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        _fit(loaded, colors_task, values, state_path=state)
    monkeypatch.undo()
    assert torch.load(state, weights_only=True)["epoch"] == 1
    assert type(_blocks(loaded.model, "image")[0].attn) is nn.MultiheadAttention  # the failed run detached
    resumed = _fit(loaded, colors_task, values, state_path=state)
    resumed.adapter.detach()
    assert resumed.losses == full.losses and resumed.steps == 6
    for name, value in full.adapter.state_dict().items():
        assert torch.equal(resumed.adapter.state_dict()[name], value), name
