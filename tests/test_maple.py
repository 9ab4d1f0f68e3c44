"""MaPLe (mma.adapters.maple): its logits against the towers written out with the coupled prompts put in by hand,
its init, depth mapping and parameter count at ViT-B/16, exact detach, training and the checkpoint round trip."""

from __future__ import annotations

import copy
import dataclasses

import open_clip
import pytest
import torch
import torch.nn.functional as F
from test_prompt_layers import image_restated, text_restated

from mma.adapters.checkpoint import load_adapter, save_adapter
from mma.adapters.evaluate import method_accuracy
from mma.adapters.maple import MaPLe
from mma.adapters.protocols import make_tasks
from mma.adapters.train import fit_method
from mma.errors import MmaError
from mma.probe.data import load_datasets

CLASSES = ["red circle", "green_square", "blue"]
FAST = {"epochs": 2, "shots": 2, "batch_size": 6}  # 2 steps per epoch


def _images(n: int = 3, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _build(loaded, **values) -> MaPLe:
    """MaPLe at its published values (and *values*), every parameter drawn anew so that each one matters."""
    method = MaPLe.build(loaded, MaPLe.make_config({**MaPLe.paper, **values}), CLASSES)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in method.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return method


def _maple_by_hand(model, tokens, images, method: MaPLe, image_block) -> torch.Tensor:
    """The paper's equations: text prompts P_1 = ctx, P_j; vision prompts V_j = P_j W_j^T + b_j at the image block
    *image_block(j)* (V_1 before ln_pre); cosine logits times exp(logit_scale)."""
    p = {0: method.ctx, **{j: method.deep_text[j - 2] for j in range(2, method.depth + 1)}}
    v = {0: method.ctx @ method.proj.weight.T + method.proj.bias}
    for j in range(2, method.depth + 1):
        f = method.deep_proj[j - 2]
        v[image_block(j)] = p[j] @ f.weight.T + f.bias
    text = F.normalize(text_restated(model, tokens, p), dim=-1)
    img = F.normalize(image_restated(model, images, v), dim=-1)
    return model.logit_scale.exp() * img @ text.T


def test_logits_equal_the_coupled_prompts_written_out(tiny_random):
    model = tiny_random.model
    method = _build(tiny_random)  # k 4: prompt depth 9
    assert method.depth == 9 and len(method.deep_text) == len(method.deep_proj) == 8
    tokens = tiny_random.tokenizer([f"a photo of a {c.replace('_', ' ')}." for c in CLASSES])
    images = _images()
    with torch.no_grad():
        want = _maple_by_hand(model, tokens, images, method, lambda j: j)
        head = method.head(tiny_random, CLASSES, "", "cpu", train=True)
        got_train = method.logits(model, images, head, train=True)
    got_eval = method.classifier(tiny_random, CLASSES, "ignored {}", torch.device("cpu"))(images)
    torch.testing.assert_close(got_train, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_eval, want, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def deeper_image(tiny_random):
    """A small CLIP whose image tower (4 blocks, width 64) is deeper and wider than its text tower (2, width 32)."""
    torch.manual_seed(0)
    model = open_clip.model.CLIP(
        embed_dim=24,
        vision_cfg=dict(image_size=16, patch_size=4, layers=4, width=64, head_width=16),
        text_cfg=dict(context_length=24, vocab_size=49408, width=32, heads=2, layers=2),
    ).eval()
    return dataclasses.replace(tiny_random, model=model)


def test_an_image_tower_deeper_than_the_text_tower_takes_each_depth_at_its_relative_block(deeper_image):
    """Text depth 2 of 2 text blocks enters image block 3 of 4 (the one starting at the same relative depth)."""
    method = _build(deeper_image, k=1)  # prompt depth 2
    assert method.depth == 2 and method.image_block(2) == 3
    assert set(method.image_prompts()) == {0, 3} and set(method.text_prompts()) == {0, 2}
    tokens = deeper_image.tokenizer([f"a photo of a {c.replace('_', ' ')}." for c in CLASSES])
    images = _images(size=16)
    with torch.no_grad():
        want = _maple_by_hand(deeper_image.model, tokens, images, method, lambda j: 3)
        got = method.classifier(deeper_image, CLASSES, "", torch.device("cpu"))(images)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_an_image_tower_shallower_than_the_text_tower_is_refused(tiny_random):
    with pytest.raises(MmaError, match="at least as deep as its text tower"):
        MaPLe(widths={"image": 64, "text": 32}, depths={"image": 2, "text": 4}, embed_dim=8, depth=2)


def test_context_starts_from_its_init_words_and_the_depth_follows_k(tiny_random):
    method = MaPLe.build(tiny_random, MaPLe.make_config(MaPLe.paper), CLASSES)
    ids = tiny_random.tokenizer(["a photo of a"])[0][1:3]  # n_ctx 2: "a", "photo"
    torch.testing.assert_close(method.ctx.detach(), tiny_random.model.token_embedding(ids).detach())
    assert method.prefix == "a photo of a"  # "of a" stays as frozen words after the two context tokens
    xd = MaPLe.make_config({**MaPLe.paper, **MaPLe.paper_protocols["cross-dataset"]})
    assert MaPLe.build(tiny_random, xd, CLASSES).depth == 3  # published cross-dataset depth 3 = k 10
    assert MaPLe.depth_label(MaPLe.starts(tiny_random, xd), {"image": 12, "text": 12}) == "prompt depth 3"
    random_ctx = MaPLe.build(tiny_random, MaPLe.make_config({**MaPLe.paper, "ctx_init": ""}), CLASSES)
    assert random_ctx.prefix == "X X" and random_ctx.ctx.std() < 0.05
    with pytest.raises(MmaError, match="fewer than the 6 context tokens"):
        MaPLe.build(tiny_random, MaPLe.make_config({**MaPLe.paper, "n_ctx": 6}), CLASSES)
    with pytest.raises(MmaError, match="starts both towers at one depth"):
        MaPLe.starts(tiny_random, MaPLe.make_config({**MaPLe.paper, "k_image": 2, "k_text": 5}))


def test_trainable_parameters_at_vit_b16(tiny_random):
    """The paper's ~3.55M at prompt depth 9 with 2 tokens: text width 512, image width 768."""
    ctx = 2 * 512  # the first depth's text context
    proj = 512 * 768 + 768  # its map to the vision prompts
    deep_text = 8 * 2 * 512  # depths 2..9
    deep_proj = 8 * (512 * 768 + 768)  # one map per deeper depth
    assert ctx + proj + deep_text + deep_proj == 3_555_072
    b16 = dataclasses.replace(
        tiny_random, model=open_clip.create_model("ViT-B-16"), tokenizer=open_clip.get_tokenizer("ViT-B-16")
    )
    method = MaPLe.build(b16, MaPLe.make_config(MaPLe.paper), CLASSES)  # k 4 on 12-block towers: depth 9
    assert method.depth == 9 and method.num_parameters() == 3_555_072


# -- training, exact detach, checkpoint --------------------------------------------------------------------


@pytest.fixture(scope="module")
def colors_task():
    (d,) = load_datasets("builtin:colors")
    return make_tasks("base2novel", [d], shots=2, seed=1)[0]  # 6 base classes x 2 shots


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_training_moves_the_prompts_and_leaves_the_model_exactly_as_it_was(tiny_random, colors_task, tmp_path):
    loaded = dataclasses.replace(tiny_random, model=copy.deepcopy(tiny_random.model))
    model, t = loaded.model, colors_task
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, tokens = _images(2), loaded.tokenizer(["a photo of a red.", "a photo of a blue."])
    with torch.no_grad():
        ref = (model.encode_image(images), model.encode_text(tokens))
    cfg = MaPLe.make_config({**MaPLe.paper, **FAST})
    torch.manual_seed(1)
    start = MaPLe.build(loaded, cfg, t.classnames).state_dict()
    result = fit_method(loaded, "maple", t.dataset, t.train, t.classnames, cfg, seed=1)
    method = result.adapter
    assert result.steps == 4 and all(torch.isfinite(torch.tensor(result.losses)))
    assert all(not torch.equal(v, start[k]) for k, v in method.state_dict().items())  # every part trained
    assert all(not p.requires_grad for p in model.parameters())
    method.detach()
    assert _hooks(model) == 0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        after = (model.encode_image(images), model.encode_text(tokens))
    assert torch.equal(after[0], ref[0]) and torch.equal(after[1], ref[1])
    # the checkpoint round trip gives the same logits and the same accuracy through the evaluation code
    path = save_adapter(method, tmp_path / "maple.safetensors", {"weights": loaded.weights_id})
    again, _ = load_adapter(path, loaded)
    assert isinstance(again, MaPLe) and again.config() == method.config()
    test = t.evals[0]
    with torch.no_grad():
        want = method.classifier(loaded, test.classnames, "", torch.device("cpu"))(images)
        got = again.classifier(loaded, test.classnames, "", torch.device("cpu"))(images)
    assert torch.equal(got, want)
    accs = [
        method_accuracy(loaded, m, t.dataset, test.samples, test.classnames, "", cache=False) for m in (method, again)
    ]
    assert accs[0] == accs[1] and 0 <= accs[0] <= 100


def test_a_checkpoint_of_other_towers_is_refused(tiny_random, deeper_image, tmp_path):
    method = MaPLe.build(deeper_image, MaPLe.make_config({**MaPLe.paper, "k": 1}), CLASSES)
    with pytest.raises(MmaError, match="valid: the model it was built for"):
        MaPLe.restore(method.config(), tiny_random)


def test_the_published_values_are_the_official_configs():
    """Typed from configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml (OPTIM: SGD, LR 0.0035, MAX_EPOCH 5,
    WARMUP_EPOCH 1 at a constant 1e-5; DATALOADER batch 4; TRAINER.MAPLE N_CTX 2, CTX_INIT "a photo of a",
    PROMPT_DEPTH 9) and its _cross_datasets.yaml (LR 0.0026, MAX_EPOCH 2, PROMPT_DEPTH 3)."""
    values = MaPLe.published_values()
    assert (values["optimizer"], values["lr"], values["epochs"], values["batch_size"]) == ("sgd", 0.0035, 5, 4)
    assert (values["warmup_epochs"], values["warmup_lr"], values["n_ctx"]) == (1, 1e-5, 2)
    assert values["ctx_init"] == "a photo of a" and MaPLe.published_k("base2novel") == 4  # depth 12 - 4 + 1 = 9
    xd = MaPLe.paper_protocols["cross-dataset"]
    assert (xd["lr"], xd["epochs"], xd["k"]) == (0.0026, 2, 10) and MaPLe.paper_protocols["domain-gen"] == xd
