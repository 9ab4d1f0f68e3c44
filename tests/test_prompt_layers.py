"""Deep prompts through hooks (mma.adapters.prompt_layers): each place against a plain re-statement of the open_clip
towers written here, identity values against the model's own outputs, both layouts, exact detach and the errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mma.adapters.prompt_layers import TowerPrompts, prompted
from mma.errors import MmaError
from mma.probe.layers import layer_maps
from mma.probe.textcut import encode_text as encode_live

TEXTS = ["a photo of a cat.", "a photo of a big red dog.", "a photo of a x."]


@pytest.fixture(scope="module")
def tiny(tiny_random):
    return tiny_random


@pytest.fixture(scope="module")
def lnd(tiny):
    """The tiny model run sequence-first (LND): the same weights, every block and attention flipped."""
    model = copy.deepcopy(tiny.model)
    for tr in (model.transformer, model.visual.transformer):
        tr.batch_first = False
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention):
            m.batch_first = False
    return model


def _images(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _tokens(tiny) -> torch.Tensor:
    return tiny.tokenizer(TEXTS)


def _rand(*shape, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.5


# -- the re-statements: open_clip's ViT and text transformer written out, with the prompts put in by hand ------


def image_restated(model, images, tokens: dict[int, torch.Tensor]) -> torch.Tensor:
    """encode_image with tokens appended after the positions (place 0) or at block j, replaced later, cut at the end."""
    v = model.visual
    x = v.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([v.class_embedding.expand(len(x), 1, -1), x], dim=1) + v.positional_embedding
    t = x.shape[1]
    places = sorted(tokens)

    def put(x, j):
        c = tokens[j].expand(len(x), -1, -1) if tokens[j].dim() == 2 else tokens[j]
        return torch.cat([x if j == places[0] else x[:, :t], c], dim=1)

    if 0 in tokens:
        x = put(x, 0)
    x = v.ln_pre(x)
    for j, blk in enumerate(v.transformer.resblocks, start=1):
        if j in tokens and j > 0:
            x = put(x, j)
        x = blk(x)
    x = v.ln_post(x[:, :t])
    return x[:, 0] @ v.proj


def text_restated(model, ids, tokens: dict[int, torch.Tensor], insert: bool = False) -> torch.Tensor:
    """encode_text with positions 1..n replaced (or, *insert*, tokens inserted after SOT at the first block place)."""
    n = next(iter(tokens.values())).shape[-2]
    places = sorted(tokens)
    x = model.token_embedding(ids)

    def put(x, j, grow):
        c = tokens[j].expand(len(x), -1, -1) if tokens[j].dim() == 2 else tokens[j]
        return torch.cat([x[:, :1], c, x[:, 1 if grow else 1 + n :]], dim=1)

    if 0 in tokens:
        x = put(x, 0, False)
    x = x + model.positional_embedding
    mask = model.attn_mask
    for j, blk in enumerate(model.transformer.resblocks, start=1):
        if j in tokens:
            x = put(x, j, insert and j == places[0])
        length = x.shape[1]
        if length != mask.shape[0]:
            mask = torch.full((length, length), float("-inf")).triu(1)
        x = blk(x, attn_mask=mask)
    if insert:
        x = torch.cat([x[:, :1], x[:, 1 + n :]], dim=1)
    x = model.ln_final(x)
    return x[torch.arange(len(x)), ids.argmax(-1)] @ model.text_projection


# -- identity values: the tokens the layer holds anyway leave the model's own output ---------------------------


def _block_inputs(model, tower: str, inputs: torch.Tensor) -> list[torch.Tensor]:
    """Every block's input of one forward, batch-first."""
    lmap = layer_maps(model)[tower]
    seen = []
    hooks = [
        b.register_forward_pre_hook(
            lambda _m, a, kw: seen.append(lmap.tokens(lmap.block_input(a, kw))), with_kwargs=True
        )
        for b in lmap.blocks(model)
    ]
    try:
        with torch.no_grad():
            (model.encode_text if tower == "text" else model.encode_image)(inputs)
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_text_tokens_it_holds_anyway_change_nothing(tiny):
    model, ids = tiny.model, _tokens(tiny)
    n = 3
    held = _block_inputs(model, "text", ids)
    with torch.no_grad():
        ref = model.encode_text(ids)
        emb = model.token_embedding(ids)[:, 1 : 1 + n]
        with TowerPrompts(model, "text", {0: emb, 4: held[3][:, 1 : 1 + n], 9: held[8][:, 1 : 1 + n]}):
            out = model.encode_text(ids)
        with TowerPrompts(model, "text", {4: held[3][:, 1 : 1 + n] + _rand(n, 96)}):
            moved = model.encode_text(ids)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    assert (moved - ref).abs().max() > 1e-3  # a different value does reach the feature


def test_image_tokens_replaced_by_what_the_block_holds_change_nothing(tiny):
    """Appended at block 3, replaced at block 7 by exactly what block 7 would have received: the same output."""
    model, images = tiny.model, _images()
    c = _rand(2, 96)
    with torch.no_grad():
        with TowerPrompts(model, "image", {3: c}):
            ref = model.encode_image(images)
            held = _block_inputs(model, "image", images)
        t = held[6].shape[1]
        with TowerPrompts(model, "image", {3: c, 7: held[6][:, t - 2 :]}):
            out = model.encode_image(images)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


# -- each place against the re-statement ---------------------------------------------------------------------


def test_image_places_equal_the_restatement(tiny):
    model, images = tiny.model, _images()
    tokens = {0: _rand(2, 96, seed=1), 2: _rand(2, 96, seed=2), 5: _rand(3, 2, 96, seed=3)}  # per image at 5
    with torch.no_grad():
        with TowerPrompts(model, "image", tokens):
            out = model.encode_image(images)
        ref = image_restated(model, images, tokens)
        later = {4: _rand(2, 96, seed=4), 12: _rand(2, 96, seed=5)}
        with TowerPrompts(model, "image", later):
            out_later = model.encode_image(images)
        ref_later = image_restated(model, images, later)
        plain = model.encode_image(images)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_later, ref_later, rtol=1e-5, atol=1e-5)
    assert (out - plain).abs().max() > 1e-3 and (out_later - plain).abs().max() > 1e-3


def test_image_tokens_are_removed_before_the_pooling(tiny):
    """ln_post and the pooling see exactly the original tokens, whatever the pooling (average here)."""
    model, images = tiny.model, _images()
    seen = []
    handle = model.visual.ln_post.register_forward_pre_hook(lambda _m, a: seen.append(a[0].shape))
    visual = model.visual
    pool = visual.pool_type
    try:
        with torch.no_grad():
            plain = model.encode_image(images)
            with TowerPrompts(model, "image", {0: _rand(4, 96)}):
                model.encode_image(images)
            visual.pool_type = "avg"
            with TowerPrompts(model, "image", {0: _rand(4, 96)}):
                out = model.encode_image(images)
            tokens = {0: _rand(4, 96)}
            x = visual.conv1(images).flatten(2).transpose(1, 2)
            x = torch.cat([visual.class_embedding.expand(len(x), 1, -1), x], dim=1) + visual.positional_embedding
            x = visual.ln_pre(torch.cat([x, tokens[0].expand(len(x), -1, -1)], dim=1))
            x = visual.ln_post(visual.transformer(x)[:, : x.shape[1] - 4])
            ref = x[:, 1:].mean(dim=1) @ visual.proj
    finally:
        visual.pool_type = pool
        handle.remove()
    assert seen[0] == seen[1] == seen[2]  # 1 + 16 patches, with or without the 4 tokens
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert plain.shape == out.shape


def test_text_places_equal_the_restatement(tiny):
    model, ids = tiny.model, _tokens(tiny)
    tokens = {0: _rand(2, 96, seed=6), 3: _rand(3, 2, 96, seed=7), 8: _rand(2, 96, seed=8)}  # per prompt at 3
    with torch.no_grad():
        with TowerPrompts(model, "text", tokens):
            out = model.encode_text(ids)
            live = encode_live(model, layer_maps(model)["text"], ids)  # the live-length cut is unaffected
        ref = text_restated(model, ids, tokens)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(live, ref, rtol=1e-5, atol=1e-5)


def test_text_insert_equals_the_restatement(tiny):
    """MMRL's layout: inserted after SOT at block 4 (the causal mask lengthened), replaced at 6, removed at the end."""
    model, ids = tiny.model, _tokens(tiny)
    tokens = {4: _rand(3, 96, seed=9), 6: _rand(3, 96, seed=10)}
    with torch.no_grad():
        with TowerPrompts(model, "text", tokens, insert=True):
            out = model.encode_text(ids)
            live = encode_live(model, layer_maps(model)["text"], ids)
        ref = text_restated(model, ids, tokens, insert=True)
        plain = model.encode_text(ids)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(live, ref, rtol=1e-5, atol=1e-5)
    assert (out - plain).abs().max() > 1e-3


# -- layouts, detach, gradients, errors -------------------------------------------------------------------------


def test_lnd_layout_equals_nld(tiny, lnd):
    assert layer_maps(lnd)["image"].layout == layer_maps(lnd)["text"].layout == "LND"
    images, ids = _images(), _tokens(tiny)
    image = {0: _rand(2, 96, seed=11), 6: _rand(3, 2, 96, seed=12)}
    text = {0: _rand(2, 96, seed=13), 5: _rand(2, 96, seed=14)}
    inserted = {2: _rand(2, 96, seed=15), 5: _rand(2, 96, seed=16)}
    outs = []
    with torch.no_grad():
        for model in (tiny.model, lnd):
            with prompted(model, image=image, text=text):
                outs.append((model.encode_image(images), model.encode_text(ids)))
            with TowerPrompts(model, "text", inserted, insert=True):
                outs.append(model.encode_text(ids))
    torch.testing.assert_close(outs[2], outs[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[3], outs[1], rtol=1e-5, atol=1e-5)


def _hook_counts(model) -> list[int]:
    return [len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules()]


def test_detach_is_exact(tiny):
    model, images, ids = tiny.model, _images(), _tokens(tiny)
    with torch.no_grad():
        before = (model.encode_image(images), model.encode_text(ids))
        counts = _hook_counts(model)
        prompts = TowerPrompts(model, "text", {2: _rand(2, 96)}, insert=True).attach()
        with pytest.raises(MmaError, match="already attached"):
            prompts.attach()
        with prompted(model, image={0: _rand(2, 96), 3: _rand(2, 96)}, text=None):
            model.encode_image(images)
        prompts.detach()
        prompts.detach()  # a no-op
        after = (model.encode_image(images), model.encode_text(ids))
    assert _hook_counts(model) == counts
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


def test_gradient_reaches_a_callable_source(tiny):
    model, images, ids = tiny.model, _images(), _tokens(tiny)
    p = nn.Parameter(_rand(2, 96))
    proj = nn.Linear(96, 96)
    with prompted(model, image={0: lambda: proj(p), 4: p}, text={0: p, 7: lambda: 2 * p}):
        loss = model.encode_image(images).sum() + model.encode_text(ids).sum()
    loss.backward()
    assert p.grad is not None and p.grad.abs().sum() > 0 and proj.weight.grad.abs().sum() > 0


def test_errors(tiny):
    model, images = tiny.model, _images()
    counts = _hook_counts(model)
    with pytest.raises(MmaError, match="out of range"):
        TowerPrompts(model, "image", {13: _rand(2, 96)})
    with pytest.raises(MmaError, match="insert=True"):
        TowerPrompts(model, "text", {0: _rand(2, 96)}, insert=True)
    with pytest.raises(MmaError, match=r"valid: \[n, 96\]"):
        with TowerPrompts(model, "image", {0: _rand(2, 95)}):
            model.encode_image(images)
    with pytest.raises(MmaError, match="same number"):
        with TowerPrompts(model, "image", {0: _rand(2, 96), 3: _rand(3, 96)}):
            model.encode_image(images)
    with pytest.raises(MmaError, match=r"\[3, n, 96\]"):
        with TowerPrompts(model, "image", {0: _rand(2, 2, 96)}):
            model.encode_image(images)
    assert _hook_counts(model) == counts  # a failing forward still removes every hook
