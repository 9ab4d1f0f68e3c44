"""PromptSRC (mma.adapters.promptsrc): its logits and its self-regularised loss against the towers and the paper's
terms written out by hand, GPA's weights and average, a resumed run ending as an uninterrupted one, the parameter
count at ViT-B/16, exact detach and the checkpoint round trip."""

from __future__ import annotations

import copy
import dataclasses
import math

import open_clip
import pytest
import torch
import torch.nn.functional as F
from test_prompt_layers import image_restated, text_restated

from mma.adapters.checkpoint import load_adapter, save_adapter
from mma.adapters.promptsrc import TEMPLATES, PromptSRC, gpa_weights
from mma.adapters.protocols import make_tasks
from mma.adapters.train import fit_method
from mma.errors import MmaError
from mma.probe.data import load_datasets

CLASSES = ["red circle", "green_square", "blue"]


def _images(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _build(loaded, **values) -> PromptSRC:
    """PromptSRC at its published values (and *values*), every prompt drawn anew so that each one matters."""
    method = PromptSRC.build(loaded, PromptSRC.make_config({**PromptSRC.paper, **values}), CLASSES)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in method.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return method


def _tokens(loaded, template: str = "a photo of a {}.") -> torch.Tensor:
    return loaded.tokenizer([template.format(c.replace("_", " ")) for c in CLASSES])


def _features_by_hand(model, tokens, images, method: PromptSRC):
    """Normalised prompted text and image features: text P_1 = ctx, P_j at block j; vision V_1 before ln_pre, V_j."""
    p = {0: method.ctx, **{j: method.deep_text[j - 2] for j in range(2, method.prompt_depths["text"] + 1)}}
    v = {0: method.vpt, **{j: method.deep_image[j - 2] for j in range(2, method.prompt_depths["image"] + 1)}}
    return F.normalize(text_restated(model, tokens, p), dim=-1), F.normalize(image_restated(model, images, v), dim=-1)


def test_logits_equal_the_independent_prompts_written_out(tiny_random):
    model = tiny_random.model
    method = _build(tiny_random, k_image=6)  # vision depth 7, language depth 9: the towers apart
    assert method.prompt_depths == {"image": 7, "text": 9}
    images = _images()
    with torch.no_grad():
        text, img = _features_by_hand(model, _tokens(tiny_random), images, method)
        want = model.logit_scale.exp() * img @ text.T
    got = method.classifier(tiny_random, CLASSES, "ignored {}", torch.device("cpu"))(images)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_loss_is_ce_plus_the_three_self_regularising_terms(tiny_random):
    """CE + 25 |t - t~|_1 mean + 10 |f - f~|_1 mean + sum KL(p~ || p) / (B C), t~ averaged over the templates."""
    model = tiny_random.model
    method = _build(tiny_random)
    images, labels = _images(), torch.tensor([2, 0, 1])
    objective = method.objective(tiny_random, CLASSES, "ignored {}", PromptSRC.make_config(PromptSRC.paper))
    assert list(objective.parameters()) == list(method.parameters())  # the trunk is not registered
    with torch.no_grad():
        got = objective(images, labels)
        text, img = _features_by_hand(model, _tokens(tiny_random), images, method)
        frozen_text = torch.stack([model.encode_text(_tokens(tiny_random, t)) for t in TEMPLATES]).mean(dim=0)
        frozen_text = frozen_text / frozen_text.norm(dim=-1, keepdim=True)
        frozen_img = model.encode_image(images)
        frozen_img = frozen_img / frozen_img.norm(dim=-1, keepdim=True)
        s = model.logit_scale.exp()
        logits, frozen_logits = s * img @ text.T, s * frozen_img @ frozen_text.T
        p_frozen = frozen_logits.softmax(dim=1)
        kl = (p_frozen * (p_frozen.log() - logits.log_softmax(dim=1))).sum() / logits.numel()
        want = (
            F.cross_entropy(logits, labels)
            + 25 * (text - frozen_text).abs().mean()
            + 10 * (img - frozen_img).abs().mean()
            + kl
        )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# -- GPA ----------------------------------------------------------------------------------------------------


def test_gpa_weights_are_the_normalised_gaussian_density():
    density = [math.exp(-0.5 * ((e - 15) / 1) ** 2) / math.sqrt(2 * math.pi) for e in range(1, 21)]
    want = [d / sum(density) for d in density]
    got = gpa_weights(20, 15.0, 1.0)
    assert all(math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-300) for a, b in zip(got, want, strict=True))
    far = gpa_weights(3, 1000.0, 1.0)  # densities underflow, the weights do not
    assert math.isclose(sum(far), 1.0) and far[-1] == pytest.approx(1.0)


def test_after_the_last_epoch_the_prompts_are_their_gaussian_weighted_average(tiny_random):
    method = PromptSRC.build(
        tiny_random, PromptSRC.make_config({**PromptSRC.paper, "k": 10, "gpa_mean": 2.0, "gpa_std": 1.5}), CLASSES
    )
    g = torch.Generator().manual_seed(0)
    weights, seen = gpa_weights(4, 2.0, 1.5), []
    for epoch in range(1, 5):
        with torch.no_grad():
            for p in method.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        seen.append([p.detach().clone() for p in method.parameters()])
        method.after_epoch(epoch, 4)
    for i, p in enumerate(method.parameters()):
        want = sum(w * s[i] for w, s in zip(weights, seen, strict=True))
        torch.testing.assert_close(p.detach(), want, rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def colors_task():
    (d,) = load_datasets("builtin:colors")
    return make_tasks("base2novel", [d], shots=2, seed=1)[0]  # 6 base classes x 2 shots


# 2 steps per epoch (12 images, batch 6), 3 epochs; GPA weights all three; augmentation on (RNG states restored)
FAST = {"k": 10, "epochs": 3, "batch_size": 6, "shots": 2, "gpa_mean": 2.0, "gpa_std": 1.0}


def _fit(loaded, task, **kw):
    cfg = PromptSRC.make_config({**PromptSRC.paper, **FAST})
    result = fit_method(loaded, "promptsrc", task.dataset, task.train, task.classnames, cfg, seed=1, **kw)
    result.adapter.detach()
    return result


@pytest.fixture(scope="module")
def trained(tiny_random, colors_task):
    """One uninterrupted training on a copy of the tiny model, with the copy's state and outputs before it."""
    loaded = dataclasses.replace(tiny_random, model=copy.deepcopy(tiny_random.model))
    images, tokens = _images(2), loaded.tokenizer(["a photo of a red.", "a photo of a blue."])
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    with torch.no_grad():
        ref = (loaded.model.encode_image(images), loaded.model.encode_text(tokens))
    return loaded, before, (images, tokens, ref), _fit(loaded, colors_task)


def test_an_interrupted_run_resumes_to_the_same_gpa_weights(tiny_random, colors_task, trained, tmp_path, monkeypatch):
    full = trained[-1]
    state = full.adapter.state_dict()
    params = torch.cat([p.detach().flatten() for p in full.adapter.parameters()])
    assert torch.equal(params, state["gpa_sum"])  # the evaluated prompts are GPA's average
    original, calls = torch.optim.SGD.step, [0]

    def step(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 4:  # in epoch 2: the state after epoch 1 (and its GPA sum) is on disk
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    path = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        _fit(tiny_random, colors_task, state_path=path)
    monkeypatch.undo()
    saved = torch.load(path, weights_only=True)
    assert saved["epoch"] == 1 and saved["adapter"]["gpa_sum"].abs().sum() > 0
    resumed = _fit(tiny_random, colors_task, state_path=path)
    assert resumed.losses == full.losses
    for name, value in state.items():
        assert torch.equal(resumed.adapter.state_dict()[name], value), name


# -- sizes, depth, detach, checkpoint -----------------------------------------------------------------------


def test_trainable_parameters_at_vit_b16(tiny_random):
    """Depth 9 in both towers, 4 + 4 tokens: text width 512, image width 768 (the paper's 46K)."""
    text = 9 * 4 * 512  # ctx at the embedding and 8 deeper depths
    image = 9 * 4 * 768  # V_1 before ln_pre and 8 deeper depths
    assert text + image == 46_080
    b16 = dataclasses.replace(
        tiny_random, model=open_clip.create_model("ViT-B-16"), tokenizer=open_clip.get_tokenizer("ViT-B-16")
    )
    assert PromptSRC.build(b16, PromptSRC.make_config(PromptSRC.paper), CLASSES).num_parameters() == 46_080
    apart = PromptSRC.make_config({**PromptSRC.paper, "k_image": 6})  # vision depth 7: 7 x 4 x 768
    assert PromptSRC.build(b16, apart, CLASSES).num_parameters() == 9 * 4 * 512 + 7 * 4 * 768
    starts = PromptSRC.starts(b16, apart)
    assert PromptSRC.depth_label(starts, {"image": 12, "text": 12}) == "vision prompt depth 7, language prompt depth 9"
    xd = PromptSRC.make_config({**PromptSRC.paper, **PromptSRC.paper_protocols["cross-dataset"]})
    assert PromptSRC.build(b16, xd, CLASSES).prompt_depths == {"image": 3, "text": 3}


def test_training_leaves_the_model_exactly_as_it_was_and_the_checkpoint_round_trips(trained, tmp_path):
    loaded, before, (images, tokens, ref), result = trained
    model, method = loaded.model, result.adapter
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(not p.requires_grad for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        after = (model.encode_image(images), model.encode_text(tokens))
    assert torch.equal(after[0], ref[0]) and torch.equal(after[1], ref[1])
    path = save_adapter(method, tmp_path / "promptsrc.safetensors", {"weights": loaded.weights_id})
    again, _ = load_adapter(path, loaded)
    assert isinstance(again, PromptSRC) and again.config() == method.config()
    assert all(torch.equal(v, method.state_dict()[k]) for k, v in again.state_dict().items())
    with torch.no_grad():
        want = method.classifier(loaded, CLASSES, "", torch.device("cpu"))(images)
        got = again.classifier(loaded, CLASSES, "", torch.device("cpu"))(images)
    assert torch.equal(got, want)


def test_bad_values_are_one_sentence(tiny_random):
    with pytest.raises(MmaError, match="gpa_std=0"):
        PromptSRC.make_config({**PromptSRC.paper, "gpa_std": 0.0}).validate()
    with pytest.raises(MmaError, match="k_image=13 is out of range"):
        PromptSRC.build(tiny_random, PromptSRC.make_config({**PromptSRC.paper, "k_image": 13}), CLASSES)


def test_the_published_values_are_the_official_config_and_clips_templates():
    """Typed from configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml (SGD, LR 0.0025, MAX_EPOCH 20,
    WARMUP_EPOCH 1 at 1e-5, batch 4, N_CTX_TEXT 4, N_CTX_VISION 4, PROMPT_DEPTH 9 in both towers, TEXT_LOSS_WEIGHT
    25, IMAGE_LOSS_WEIGHT 10, GPA_MEAN 15, GPA_STD 1); the teacher's templates: CLIP's 80 ImageNet ones."""
    values = PromptSRC.published_values()
    assert (values["optimizer"], values["lr"], values["epochs"], values["batch_size"]) == ("sgd", 0.0025, 20, 4)
    assert (values["warmup_epochs"], values["warmup_lr"]) == (1, 1e-5)
    assert (values["n_ctx_text"], values["n_ctx_image"], values["text_weight"], values["image_weight"]) == (
        4,
        4,
        25,
        10,
    )
    assert (values["gpa_mean"], values["gpa_std"]) == (15, 1) and PromptSRC.published_k("base2novel") == 4
    assert len(TEMPLATES) == 80 and TEMPLATES[0] == "a bad photo of a {}." and "itap of a {}." in TEMPLATES
