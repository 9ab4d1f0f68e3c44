"""MMRL: the representation tokens in both towers, its loss and decoupled logits against a re-statement, the frozen
parts exact, the ViT-B/16 parameter count by hand, training, checkpoints and resume."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
import torch.nn.functional as F
from conftest import colour_folder

from mma.adapters import train as train_module
from mma.adapters.checkpoint import load_adapter, save_adapter
from mma.adapters.evaluate import method_accuracy
from mma.adapters.frozen import ImagePart, image_part
from mma.adapters.methods import get_method
from mma.adapters.mmrl import MMRL, MMRLOptions
from mma.adapters.protocols import make_tasks
from mma.adapters.text_cache import TextPrefixCache
from mma.adapters.train import fit_method
from mma.errors import MmaError
from mma.probe import load_model
from mma.probe.data import load_datasets
from mma.probe.layers import layer_maps
from mma.probe.textcut import encode_text

CLASSES = ["red", "green", "blue"]
TEMPLATE = "a photo of a {}."
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}
FAST = {"epochs": 2, "batch_size": 4, "shots": 4, "lr": 0.01}


@pytest.fixture(scope="module")
def tiny():
    loaded = load_model("mma-tiny:random")
    loaded.model.requires_grad_(False)  # the frozen model every reference below is computed on
    return loaded


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = colour_folder(
        tmp_path_factory.mktemp("colours"), COLOURS, {"train": 6, "val": 2, "test": 3}, seed=0, noise=40, size=32
    )
    (d,) = load_datasets(f"folder:{root}")
    return d


@pytest.fixture(scope="module")
def task(data):
    return make_tasks("base2novel", [data], shots=4, seed=1)[0]  # 2 base classes x 4 shots


def _images(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _build(loaded, classnames=CLASSES, **values) -> MMRL:
    """An MMRL at its published values (and *values*) with every parameter drawn large enough to matter."""
    method = MMRL.build(loaded, MMRL.make_config({**MMRL.paper, **values}), classnames)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in method.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return method


# -- the method written out: the official CLIP forward with the tokens, in plain tensor code -------------------


def _image_by_hand(model, method: MMRL, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(f_c, f_r)``: the ViT with the K tokens inserted after the class token at block k (official order),
    replaced at every later block; class feature ln_post(x_0) @ proj, representation feature
    mean_K(ln_post(x_1..K)) @ P_r."""
    v, n, k = model.visual, method.n_tokens, method.starts["image"]
    x = v.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([v.class_embedding.expand(len(x), 1, -1), x], dim=1) + v.positional_embedding
    x = v.ln_pre(x)
    for j, block in enumerate(v.transformer.resblocks, start=1):
        if j >= k:
            r = (method.rep @ method.to_image[str(j)].weight.T + method.to_image[str(j)].bias).expand(len(x), -1, -1)
            x = torch.cat([x[:, :1], r, x[:, 1:] if j == k else x[:, 1 + n :]], dim=1)
        x = block(x)
    return v.ln_post(x[:, 0]) @ v.proj, v.ln_post(x[:, 1 : 1 + n]).mean(dim=1) @ method.proj_rep


def _text_by_hand(model, method: MMRL, tokens: torch.Tensor) -> torch.Tensor:
    """The text transformer with the K tokens inserted after the start-of-text token at block k, replaced later, a
    causal mask of the lengthened sequence from block k on, the readout at the end-of-text token (shifted by K)."""
    n, k = method.n_tokens, method.starts["text"]
    x = model.token_embedding(tokens) + model.positional_embedding
    for j, block in enumerate(model.transformer.resblocks, start=1):
        if j >= k:
            r = (method.rep @ method.to_text[str(j)].weight.T + method.to_text[str(j)].bias).expand(len(x), -1, -1)
            x = torch.cat([x[:, :1], r, x[:, 1:] if j == k else x[:, 1 + n :]], dim=1)
        length = x.shape[1]
        x = block(x, attn_mask=torch.full((length, length), float("-inf")).triu(1))
    x = model.ln_final(x)
    eot = tokens.argmax(dim=-1) + n
    return x[torch.arange(len(x)), eot] @ model.text_projection


def _logits_by_hand(model, method, images, tokens) -> tuple[torch.Tensor, torch.Tensor]:
    """``(class-token logits, representation logits)``, exp(logit_scale) times the cosines."""
    f_c, f_r = _image_by_hand(model, method, images)
    t = F.normalize(_text_by_hand(model, method, tokens), dim=-1)
    s = model.logit_scale.exp()
    return s * F.normalize(f_c, dim=-1) @ t.T, s * F.normalize(f_r, dim=-1) @ t.T


def _inputs(method, loaded, images):
    part = image_part(loaded, method.image_start(loaded))
    return part.prefix(images) if part is not None else images


@pytest.mark.parametrize("starts", [{}, {"k_image": 3, "k_text": 8}])
def test_logits_and_loss_equal_the_method_written_out(tiny, starts):
    model = tiny.model
    method = _build(tiny, **starts)  # not attached yet: the blocks run as open_clip wrote them
    images, labels = _images(), torch.tensor([0, 2, 1])
    base, union = tiny.tokenizer([TEMPLATE.format(c) for c in CLASSES]), [*CLASSES, "yellow"]
    with torch.no_grad():
        cls, rep = _logits_by_hand(model, method, images, base)
        fused = 0.7 * cls + 0.3 * rep
        class_token_only, _ = _logits_by_hand(
            model, method, images, tiny.tokenizer([TEMPLATE.format(c) for c in union])
        )
        f_c, _ = _image_by_hand(model, method, images)
        t = _text_by_hand(model, method, base)
        reg = (1 - F.cosine_similarity(f_c, model.encode_image(images)).mean()) + (
            1 - F.cosine_similarity(t, model.encode_text(base)).mean()
        )  # toward the frozen model's own features
        loss = 0.7 * F.cross_entropy(cls, labels) + 0.3 * F.cross_entropy(rep, labels) + 1.0 * reg
    method.attach(model)
    try:
        cases = [(CLASSES, fused), (CLASSES[::-1], fused.flip(1)), (union, class_token_only)]
        for names, want in cases:  # the trained classes, in any order: fused; base and novel together: class token
            got = method.classifier(tiny, names, TEMPLATE, torch.device("cpu"))(_inputs(method, tiny, images))
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        objective = method.objective(tiny, CLASSES, TEMPLATE, MMRL.make_config({**MMRL.paper, **starts}))
        got = objective(_inputs(method, tiny, images), labels)
        torch.testing.assert_close(got, loss, rtol=1e-5, atol=1e-5)
        got.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.parameters())
        assert list(objective.parameters()) == list(method.parameters())  # DDP sees the method's alone
    finally:
        method.detach()


# -- what is exact: below the start blocks, the frozen targets, the split caches, detach ---------------------------


def test_the_frozen_parts_are_exact_and_detach_restores_the_model(tiny):
    model = tiny.model
    images = _images(4)
    tokens = tiny.tokenizer([TEMPLATE.format(c) for c in CLASSES])
    text_map = layer_maps(model)["text"]
    with torch.no_grad():
        ref = (model.encode_image(images), encode_text(model, text_map, tokens))
        below = ImagePart(tiny, 6).prefix(images)
        method = _build(tiny).attach(model)
        changed = (model.encode_image(images), encode_text(model, text_map, tokens))
        part = ImagePart(tiny, 6)
        prefix = part.prefix(images)
        split = (part.rest(prefix), TextPrefixCache(model, text_map, 6, tokens).encode())
        with method.suspended():
            suspended = (model.encode_image(images), encode_text(model, text_map, tokens))
        method.detach()
        after = (model.encode_image(images), encode_text(model, text_map, tokens))
    assert not torch.allclose(changed[0], ref[0], atol=1e-3) and not torch.allclose(changed[1], ref[1], atol=1e-3)
    # block 6's input is the frozen model's (no token yet), and the split towers give the full towers' features
    assert torch.equal(prefix, below) and prefix.shape[1] == below.shape[1]
    torch.testing.assert_close(split[0], changed[0], rtol=0, atol=0)
    torch.testing.assert_close(split[1], changed[1], rtol=1e-6, atol=1e-6)
    for got in (suspended, after):
        assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    assert not method.is_attached
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    method.attach(model)
    with pytest.raises(MmaError, match="already attached"):
        method.attach(model)
    method.detach()
    method.detach()  # idempotent


# -- parameter counts ------------------------------------------------------------------------------------------


def test_vit_b16_trainable_parameters_match_the_hand_count():
    import open_clip

    maps = layer_maps(open_clip.create_model("ViT-B-16"))
    depths = {t: m.depth for t, m in maps.items()}
    widths = {t: m.layers[1].width for t, m in maps.items()}
    assert depths == {"image": 12, "text": 12} and widths == {"image": 768, "text": 512}

    def count(k_image: int, k_text: int, n: int = 5, d_r: int = 512) -> int:
        method = MMRL(starts={"image": k_image, "text": k_text}, depths=depths, widths=widths, embed_dim=512,
                      n_tokens=n, rep_dim=d_r)  # fmt: skip
        return method.num_parameters()

    # k = 6 (REP_LAYERS 6..12: 7 blocks per tower), K = 5, d_r = 512, features 512:
    #   space 5 x 512 = 2,560; image aligners 7 x (512 x 768 + 768) = 2,757,888;
    #   text aligners 7 x (512 x 512 + 512) = 1,838,592; P_r 768 x 512 = 393,216
    assert count(6, 6) == 2_560 + 2_757_888 + 1_838_592 + 393_216 == 4_992_256
    # per tower: image from block 3 (10 aligners), text from block 8 (5 aligners)
    assert count(3, 8) == 2_560 + 10 * 393_984 + 5 * 262_656 + 393_216 == 5_648_896
    # EuroSAT's published REP_DIM 2048: 5 x 2048 + 7 x (2048 x 768 + 768) + 7 x (2048 x 512 + 512) + 768 x 512
    assert count(6, 6, d_r=2048) == 10_240 + 11_015_424 + 7_343_616 + 393_216 == 18_762_496


# -- the published values and the options ------------------------------------------------------------------------


def test_published_values_their_files_and_the_depth_options(tiny):
    own = dataclasses.asdict(MMRLOptions())
    assert own == {**own, **{k: v for k, v in MMRL.paper.items() if k in own}}  # its options' defaults: published
    assert own["k"] == 6 and MMRL.paper["optimizer"] == "adamw" and MMRL.paper["lr"] == 0.001
    cfg = MMRL.make_config(MMRL.paper)
    cfg.validate()
    assert {(p, v["k"]) for p, v in MMRL.paper_protocols.items()} == {
        ("base2novel", 6), ("few-shot", 6), ("cross-dataset", 6), ("domain-gen", 6)
    }  # fmt: skip
    assert MMRL.paper_protocols["cross-dataset"]["epochs"] == 1 and MMRL.paper_protocols["few-shot"]["epochs"] == 50
    for where in ("", *MMRL.paper_protocols, *MMRL.paper_datasets):
        assert MMRL.paper_file(where).startswith("MMRL "), where
    assert all("k" not in v for v in MMRL.paper_datasets.values())
    assert get_method("mmrl") is MMRL and MMRL.depth_indexed and MMRL.per_tower
    method = MMRL.build(tiny, MMRL.make_config({**MMRL.paper, "k_image": 3, "k_text": 8}), CLASSES)
    assert method.starts == {"image": 3, "text": 8} and method.image_start(tiny) == 3
    assert list(method.to_image) == [str(j) for j in range(3, 13)]
    assert list(method.to_text) == [str(j) for j in range(8, 13)]
    assert MMRL.depth_label({"image": 6, "text": 6}, {"image": 12, "text": 12}) == "representation tokens from layer 6"
    with pytest.raises(MmaError, match="n_tokens=0 is not valid"):
        MMRL.make_config(n_tokens=0).validate()
    with pytest.raises(MmaError, match=r"alpha=1\.5 is not valid"):
        MMRL.make_config(alpha=1.5).validate()
    with pytest.raises(MmaError, match="k=13 is out of range"):
        MMRL.build(tiny, MMRL.make_config(k=13), CLASSES)


# -- training, checkpoints, resume -------------------------------------------------------------------------------


def _cfg(**values):
    return MMRL.make_config({**MMRL.paper, **FAST, **values})


@pytest.fixture(scope="module")
def trained(tiny, task):
    """``(result, the model's state before, the method's initial state)`` of one training (seed 1), detached."""
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    random.seed(1)
    torch.manual_seed(1)  # fit_method's seeding: the same fresh method
    init = MMRL.build(tiny, _cfg(), task.classnames).state_dict()
    result = fit_method(tiny, MMRL, task.dataset, task.train, task.classnames, _cfg(), seed=1)
    result.adapter.detach()
    return result, before, init


def test_training_moves_every_parameter_and_keeps_the_trunk_frozen(tiny, trained):
    result, before, init = trained
    assert result.steps == 4 and all(torch.isfinite(torch.tensor(result.losses)))
    assert all(not torch.equal(v, init[k]) for k, v in result.adapter.state_dict().items())
    assert all(torch.equal(v, before[k]) for k, v in tiny.model.state_dict().items())
    assert all(not p.requires_grad for p in tiny.model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in tiny.model.modules())


def test_training_on_cached_frozen_inputs_equals_training_on_images(tiny, task, tmp_path):
    runs = {}
    for cache in (True, False):
        cfg = _cfg(augment=False, cache=cache)
        result = fit_method(tiny, MMRL, task.dataset, task.train, task.classnames, cfg, seed=2, cache_dir=tmp_path)
        acc = method_accuracy(
            tiny, result.adapter, task.dataset, task.evals[0].samples, task.classnames, TEMPLATE, cache=cache,
            cache_dir=tmp_path,
        )  # fmt: skip
        result.adapter.detach()
        runs[cache] = (result.losses, result.adapter.state_dict(), acc)
    (losses_on, state_on, acc_on), (losses_off, state_off, acc_off) = runs[True], runs[False]
    assert losses_on == losses_off and acc_on == acc_off
    assert all(torch.equal(state_on[k], state_off[k]) for k in state_on)
    assert any(tmp_path.iterdir())  # the cached run did write its inputs


def test_a_checkpoint_rebuilds_the_same_classifier(tiny, task, trained, tmp_path):
    method = trained[0].adapter.attach(tiny.model)
    images = _images(2)
    union = [*task.classnames, "yellow"]
    with torch.no_grad():
        want = [method.classifier(tiny, c, TEMPLATE, torch.device("cpu"))(_inputs(method, tiny, images))
                for c in (task.classnames, union)]  # fmt: skip
    meta = {"model": str(tiny.spec), "weights": tiny.weights_id}
    path = save_adapter(method, tmp_path / "mmrl.safetensors", meta)
    method.detach()
    fresh = dataclasses.replace(tiny, model=load_model("mma-tiny:random").model)
    restored, got_meta = load_adapter(path, fresh)
    try:
        assert got_meta["adapter"]["classnames"] == list(task.classnames) and got_meta["adapter"]["method"] == "mmrl"
        assert restored.fuses(task.classnames) and not restored.fuses(union)
        with torch.no_grad():
            got = [restored.classifier(fresh, c, TEMPLATE, torch.device("cpu"))(_inputs(restored, fresh, images))
                   for c in (task.classnames, union)]  # fmt: skip
        for g, w in zip(got, want, strict=True):
            assert torch.equal(g, w)
    finally:
        restored.detach()


def test_an_interrupted_training_resumes_to_the_same_method(tiny, task, trained, tmp_path, monkeypatch):
    full = trained[0]
    state = tmp_path / "state.pt"
    original, calls = train_module.sgd_step, [0]

    def step(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:  # in epoch 2 (2 steps an epoch): the state after epoch 1 is on disk
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module, "sgd_step", step)
    cfg = _cfg()
    with pytest.raises(KeyboardInterrupt):
        fit_method(tiny, MMRL, task.dataset, task.train, task.classnames, cfg, seed=1, state_path=state)
    monkeypatch.undo()
    assert torch.load(state, weights_only=True)["epoch"] == 1
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in tiny.model.modules())
    resumed = fit_method(tiny, MMRL, task.dataset, task.train, task.classnames, cfg, seed=1, state_path=state)
    resumed.adapter.detach()
    assert resumed.losses == full.losses and resumed.steps == full.steps == 4
    for name, value in full.adapter.state_dict().items():
        assert torch.equal(resumed.adapter.state_dict()[name], value), name
