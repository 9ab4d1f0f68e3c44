"""The Multi-Modal Adapter: exact no-op, parameter counts, gradient scaling, the formula, tower depths, I/O."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mma.adapters.mma import MultiModalAdapter, _block_plan, add_adapter
from mma.errors import MmaError
from mma.probe.layers import layer_maps


def _small_clip(image_layers: int, text_layers: int, *, seed: int = 0) -> nn.Module:
    """A tiny open_clip CLIP (16 px images, widths 64 / 32) with the given tower depths."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.model.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=16, patch_size=4, layers=image_layers, width=64, head_width=16),
        text_cfg=dict(context_length=12, vocab_size=100, width=32, heads=2, layers=text_layers),
    )
    return model.eval()


def _inputs(model: nn.Module, *, seed: int = 1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    size = model.visual.image_size
    images = torch.randn(3, 3, *size, generator=g, dtype=dtype)
    tokens = torch.randint(1, 90, (3, model.context_length), generator=g)
    tokens[:, -1] = 99  # the argmax readout (EOT) token
    return images, tokens


def _encode(model, images, tokens):
    return model.encode_image(images), model.encode_text(tokens)


@pytest.fixture(scope="module")
def tiny(tiny_random):
    """The embedded 12-block architecture (random weights) and a batch of its inputs."""
    model = copy.deepcopy(tiny_random.model)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 32, 32, generator=g)
    tokens = tiny_random.tokenizer(["a photo of a cat.", "a photo of a dog."])
    return model, images, tokens


@pytest.fixture(scope="module")
def vit_b16():
    """open_clip's own ViT-B-16 config, random init (built once: about 4 s)."""
    import open_clip

    return open_clip.create_model("ViT-B-16")


# 1. no-op and detach ----------------------------------------------------------------------------------


def test_zero_branch_is_the_frozen_model_exactly_and_detach_restores_it(tiny):
    model, images, tokens = tiny
    with torch.no_grad():
        ref = _encode(model, images, tokens)
        adapter = MultiModalAdapter(layer_maps(model), k=3, alpha=0.5)
        with adapter.attached(model):
            changed = _encode(model, images, tokens)
            for tower in ("image", "text"):
                for up in adapter.up[tower].values():
                    up.weight.zero_()
                    up.bias.zero_()
            zeroed = _encode(model, images, tokens)
        after = _encode(model, images, tokens)
    assert not torch.allclose(changed[0], ref[0]) and not torch.allclose(changed[1], ref[1])
    for got in (zeroed, after):
        assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    assert not adapter.is_attached


def test_tiny_alpha_is_the_frozen_model_and_detach_gives_exact_outputs(tiny):
    model, images, tokens = tiny
    model = copy.deepcopy(model)
    # Freeze first: torch's attention with a mask can round differently once no weight requires grad,
    # even under no_grad, so the reference is the frozen model that add_adapter leaves behind.
    model.requires_grad_(False)
    with torch.no_grad():
        ref = _encode(model, images, tokens)
        adapter = add_adapter(model, k=1, alpha=1e-12)
        tiny_alpha = _encode(model, images, tokens)
        adapter.alpha = 1.0
        big_alpha = _encode(model, images, tokens)
        adapter.detach()
        after = _encode(model, images, tokens)
    for r, t, b, a in zip(ref, tiny_alpha, big_alpha, after, strict=True):
        torch.testing.assert_close(t, r, rtol=1e-5, atol=1e-5)  # float32 rounding only
        assert not torch.allclose(b, r, atol=1e-3)
        assert torch.equal(a, r)
    assert all(not m._forward_hooks for m in model.modules())


def test_attach_twice_is_an_error_and_the_context_manager_detaches_on_error(tiny):
    model, images, _ = tiny
    adapter = MultiModalAdapter(layer_maps(model), k=5)
    adapter.attach(model)
    with pytest.raises(MmaError, match="already attached"):
        adapter.attach(model)
    adapter.detach()
    adapter.detach()  # idempotent
    with pytest.raises(RuntimeError, match="boom"), adapter.attached(model):
        assert adapter.is_attached
        raise RuntimeError("boom")
    assert not adapter.is_attached and all(not m._forward_hooks for m in model.modules())


def test_attach_to_a_model_with_other_towers_is_an_error(tiny):
    adapter = MultiModalAdapter(layer_maps(tiny[0]), k=2)
    with pytest.raises(MmaError, match="built for towers with depths"):
        adapter.attach(_small_clip(4, 4))


# 2. parameter counts ----------------------------------------------------------------------------------


def test_vit_b16_parameter_counts_match_the_paper(vit_b16):
    model = vit_b16
    adapter = add_adapter(model, k=5, dim=32)
    assert (adapter.k_image, adapter.k_text) == (5, 5)
    assert adapter.image_blocks == adapter.text_blocks == list(range(5, 13))

    def count(*layers):
        return sum(p.numel() for layer in layers for p in layer.parameters())

    per_depth = {
        "text": count(adapter.down["text"]["5"], adapter.up["text"]["5"]),
        "image": count(adapter.down["image"]["5"], adapter.up["image"]["5"]),
        "shared": count(adapter.shared["5"]),
    }
    assert per_depth == {"text": 33_312, "image": 49_952, "shared": 1_056}
    assert adapter.num_parameters() == 674_560
    assert sum(p.numel() for p in adapter.parameters() if p.requires_grad) == 674_560
    assert not any(p.requires_grad for p in model.parameters())
    assert MultiModalAdapter(layer_maps(model), k=9).num_parameters() == 337_280
    adapter.detach()


def test_state_dict_keys_are_the_adapter_weights_only(tiny):
    maps = layer_maps(tiny[0])
    depth = maps["image"].depth
    adapter = MultiModalAdapter(maps, k=5, dim=8)
    assert sorted(adapter.state_dict()) == sorted(
        [
            f"{part}.{tower}.{j}.{p}"
            for part in ("down", "up")
            for tower in ("image", "text")
            for j in range(5, depth + 1)
            for p in ("weight", "bias")
        ]
        + [f"shared.{j}.{p}" for j in range(5, depth + 1) for p in ("weight", "bias")]
    )


def test_init_is_kaiming_fan_out_with_zero_biases():
    torch.manual_seed(0)
    maps = layer_maps(_small_clip(2, 2))
    adapter = MultiModalAdapter(maps, k=1, dim=256)
    for layer in adapter.modules():
        if isinstance(layer, nn.Linear):
            assert torch.count_nonzero(layer.bias) == 0
            expected = (2.0 / layer.out_features) ** 0.5  # fan_out, relu gain sqrt(2)
            assert abs(layer.weight.std().item() / expected - 1) < 0.1


# 3. gradient scaling ----------------------------------------------------------------------------------


def _grads(model, adapter_state, *, grad_scale: bool, alpha: float):
    model = copy.deepcopy(model)
    adapter = add_adapter(model, k=2, dim=8, alpha=alpha, grad_scale=grad_scale)
    adapter.load_state_dict(adapter_state)
    model.token_embedding.weight.requires_grad_(True)  # an earlier, trainable trunk parameter
    images, tokens = _inputs(model, dtype=torch.float64)
    images.requires_grad_(True)
    img, txt = _encode(model, images, tokens)
    (img.square().sum() + (img @ txt.T).sum() + txt.sin().sum()).backward()
    adapter_grads = {n: p.grad.clone() for n, p in adapter.named_parameters()}
    return adapter_grads, images.grad.clone(), model.token_embedding.weight.grad.clone()


def test_grad_scaling_scales_adapter_grads_by_one_over_alpha_and_keeps_the_trunk_gradient_exact():
    model = _small_clip(3, 3).double()
    alpha = 1e-3
    state = MultiModalAdapter(layer_maps(model), k=2, dim=8).double().state_dict()
    on, img_on, emb_on = _grads(model, state, grad_scale=True, alpha=alpha)
    off, img_off, emb_off = _grads(model, state, grad_scale=False, alpha=alpha)
    assert on.keys() == off.keys() and len(on) == 2 * 2 * 2 * 2 + 2 * 2
    for name in on:
        assert off[name].abs().max() > 0, name
        torch.testing.assert_close(on[name], off[name] / alpha, rtol=1e-10, atol=0)
    assert img_off.abs().max() > 0 and emb_off.abs().max() > 0
    torch.testing.assert_close(img_on, img_off, rtol=1e-12, atol=1e-18)
    torch.testing.assert_close(emb_on, emb_off, rtol=1e-12, atol=1e-18)


# 4. the formula ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("tower", ["image", "text"])
def test_one_adapted_block_equals_the_formula(tiny, tower):
    model = tiny[0]
    maps = layer_maps(model)
    adapter = MultiModalAdapter(maps, k=4, dim=16, alpha=0.3)
    block = maps[tower].blocks(model)[4]  # block 5
    x = torch.randn(2, 7, maps[tower].layers[5].width, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        plain = block(x)
        with adapter.attached(model):
            hooked = block(x)
        down, up, shared = adapter.down[tower]["5"], adapter.up[tower]["5"], adapter.shared["5"]
        expected = plain + 0.3 * up(torch.relu(shared(torch.relu(down(block.ln_1(x))))))
    torch.testing.assert_close(hooked, expected, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(hooked, plain, atol=1e-3)


# 5. tower depths and errors ---------------------------------------------------------------------------


def test_relative_and_block_modes_on_towers_of_different_depth():
    model = _small_clip(8, 4)
    maps = layer_maps(model)
    rel = MultiModalAdapter(maps, k=2)
    assert (rel.k_image, rel.k_text) == (3, 2)
    assert rel.image_blocks == [3, 4, 5, 6, 7, 8] and rel.text_blocks == [2, 3, 4]
    assert rel.shared_of == {"image": {3: 2, 4: 2, 5: 3, 6: 3, 7: 4, 8: 4}, "text": {2: 2, 3: 3, 4: 4}}
    assert sorted(rel.shared, key=int) == ["2", "3", "4"]
    blk = MultiModalAdapter(maps, k=2, depth_mode="block")
    assert blk.image_blocks == blk.text_blocks == [2, 3, 4]
    assert blk.shared_of["image"] == {2: 2, 3: 3, 4: 4}
    assert rel.config() == {
        "k": 2,
        "dim": 32,
        "alpha": 1e-3,
        "grad_scale": True,
        "depth_mode": "relative",
        "model_name": "model",
        "depths": {"image": 8, "text": 4},
        "widths": {"image": 64, "text": 32},
    }
    # both plans run, and change the output
    images, tokens = _inputs(model)
    with torch.no_grad():
        ref = _encode(model, images, tokens)
        for adapter in (rel, blk):
            adapter.alpha = 0.5
            with adapter.attached(model):
                out = _encode(model, images, tokens)
            assert not torch.allclose(out[0], ref[0]) and not torch.allclose(out[1], ref[1])
    with pytest.raises(MmaError, match=r"k=5 is out of range for the text tower of model, which has 4 blocks"):
        MultiModalAdapter(maps, k=5)


def test_relative_mode_with_a_non_integer_depth_ratio():
    adapter = MultiModalAdapter(layer_maps(_small_clip(3, 5)), k=2)
    assert adapter.text_blocks == [3, 4, 5] and adapter.image_blocks == [2, 3]
    assert adapter.shared_of["text"] == {3: 2, 4: 2, 5: 3}


@pytest.mark.parametrize("shallow", [1, 3, 12])
@pytest.mark.parametrize("deep_extra", [0, 1, 4, 12, 13])
def test_relative_plan_invariants(shallow, deep_extra):
    deep = shallow + deep_extra
    for k in range(1, shallow + 1):
        plan = _block_plan(deep, shallow, k, "relative")
        blocks = list(plan)
        assert blocks == list(range(blocks[0], deep + 1))
        # the first adapted block starts at or after block k of the shallower tower; the one before does not
        assert (blocks[0] - 1) * shallow >= (k - 1) * deep > (blocks[0] - 2) * shallow
        shared = list(plan.values())
        assert sorted(set(shared)) == list(range(k, shallow + 1)) and shared == sorted(shared)
        assert _block_plan(shallow, shallow, k, "relative") == {j: j for j in range(k, shallow + 1)}
        if deep == shallow:
            assert plan == _block_plan(deep, shallow, k, "block")


def test_invalid_options_raise_one_sentence_errors(tiny):
    maps = layer_maps(tiny[0])
    depth = maps["image"].depth
    msg = rf"k=0 is out of range for mma-tiny, whose towers have {depth} blocks \(valid: 1\.\.{depth}\)"
    with pytest.raises(MmaError, match=msg):
        MultiModalAdapter(maps, k=0, model_name="mma-tiny")
    with pytest.raises(MmaError, match=rf"k={depth + 1} is out of range .*\(valid: 1\.\.{depth}\)"):
        add_adapter(tiny[0], k=depth + 1)
    with pytest.raises(MmaError, match=r"depth_mode='relativ' is not valid .*did you mean 'relative'"):
        MultiModalAdapter(maps, depth_mode="relativ")
    with pytest.raises(MmaError, match=r"dim=0 is out of range"):
        MultiModalAdapter(maps, dim=0)
    with pytest.raises(MmaError, match=r"alpha=-0.5 is out of range \(valid: a finite number >= 0, 0 meaning"):
        MultiModalAdapter(maps, alpha=-0.5)
    adapter = MultiModalAdapter(maps)
    with pytest.raises(MmaError, match=r"alpha=-1.0 is out of range"):
        adapter.alpha = -1.0
    assert adapter.alpha == 1e-3


def test_k13_on_vit_b16_names_the_model(vit_b16):
    maps = layer_maps(vit_b16)
    msg = r"k=13 is out of range for ViT-B-16, whose towers have 12 blocks \(valid: 1\.\.12\)"
    with pytest.raises(MmaError, match=msg):
        MultiModalAdapter(maps, k=13, model_name="ViT-B-16")


# 6. saving, loading, alpha ----------------------------------------------------------------------------


def test_state_dict_round_trip_and_alpha_change_after_attach(tiny):
    model, images, tokens = tiny
    maps = layer_maps(model)
    torch.manual_seed(5)
    trained = MultiModalAdapter(maps, k=4, dim=8, alpha=0.2)
    with torch.no_grad():
        with trained.attached(model):
            out = _encode(model, images, tokens)
            trained.alpha = 0.05
            out_small = _encode(model, images, tokens)
        fresh = MultiModalAdapter.from_config(trained.config(), maps)
        fresh.load_state_dict(trained.state_dict())
        assert fresh.alpha == 0.05
        fresh.alpha = 0.2
        with fresh.attached(model):
            again = _encode(model, images, tokens)
    for a, b, c in zip(out, again, out_small, strict=True):
        assert torch.equal(a, b)
        assert not torch.allclose(a, c, atol=1e-4)


def test_from_config_refuses_another_model(tiny):
    config = MultiModalAdapter(layer_maps(tiny[0]), k=2).config()
    with pytest.raises(MmaError, match="but the model has"):
        MultiModalAdapter.from_config(config, layer_maps(_small_clip(6, 6)))
