"""All-layer capture equals open_clip's own forward_intermediates / encode_* outputs."""

from __future__ import annotations

import pytest
import torch

from mma.errors import MmaError
from mma.probe import layer_maps
from mma.probe.capture import LayerCapture, pool_tokens
from mma.probe.layers import text_readout_index

PROMPTS = ["a photo of a dog.", "a photo of a very small red cat sitting on a mat.", "a zebra"]


def _reference(model, images, tokens):
    """open_clip's own intermediates, prefix tokens rejoined, and unnormalised final features."""
    with torch.no_grad():
        ref = model.forward_intermediates(
            image=images, text=tokens, image_output_fmt="NLC", image_output_extra_tokens=True, normalize=False
        )
    image_blocks = [
        torch.cat([p, x], dim=1) for p, x in zip(ref["image_intermediates_prefix"], ref["image_intermediates"])
    ]
    return image_blocks, ref["text_intermediates"], ref["image_features"], ref["text_features"]


@pytest.mark.parametrize("fixture", ["vit_b32", "tiny_random"])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_capture_matches_open_clip(request, fixture, pooling):
    loaded = request.getfixturevalue(fixture)
    model, maps = loaded.model, layer_maps(loaded.model)
    torch.manual_seed(0)
    images = torch.randn(2, 3, loaded.image_size, loaded.image_size)
    tokens = loaded.tokenizer(PROMPTS[:2])
    with torch.no_grad(), LayerCapture(model, maps, pooling=pooling) as cap:
        image_feats = cap.encode_image(images)
        text_feats = cap.encode_text(tokens)
    depth = maps["image"].depth
    assert len(image_feats) == len(text_feats) == depth + 2
    image_blocks, text_blocks, image_final, text_final = _reference(model, images, tokens)
    readout = text_readout_index(model, tokens)
    first = torch.zeros(2, dtype=torch.long) if pooling == "cls" else None  # the class token
    for i in range(depth):
        torch.testing.assert_close(
            image_feats[i + 1], pool_tokens(image_blocks[i], pooling, first), rtol=1e-5, atol=1e-5
        )
        torch.testing.assert_close(
            text_feats[i + 1], pool_tokens(text_blocks[i], pooling, readout), rtol=1e-5, atol=1e-5
        )
    with torch.no_grad():
        torch.testing.assert_close(image_feats[-1], model.encode_image(images, normalize=False))
        torch.testing.assert_close(text_feats[-1], model.encode_text(tokens, normalize=False))
        torch.testing.assert_close(image_feats[-1], image_final, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(text_feats[-1], text_final, rtol=1e-5, atol=1e-5)
        # XEmbed is the input of block 1: patch/class/positional embedding and ln_pre (image),
        # token + positional embedding (text).
        torch.testing.assert_close(image_feats[0], pool_tokens(model.visual._embeds(images), pooling, first))
        text_embed = model.token_embedding(tokens) + model.positional_embedding
        torch.testing.assert_close(text_feats[0], pool_tokens(text_embed, pooling, readout))


def test_text_mean_pool_stops_at_eot(tiny_random):
    tokens = tiny_random.tokenizer(PROMPTS)
    x = torch.arange(tokens.shape[1], dtype=torch.float32)[None, :, None].expand(3, -1, 2)
    readout = text_readout_index(tiny_random.model, tokens)
    pooled = pool_tokens(x, "mean", readout)
    expected = torch.stack([torch.arange(int(r) + 1, dtype=torch.float32).mean() for r in readout])
    torch.testing.assert_close(pooled[:, 0], expected)
    assert int(readout[2]) < int(readout[1])  # shorter prompt, earlier EOT


def test_hooks_change_nothing_and_are_removed(tiny_random):
    model = tiny_random.model
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = model.encode_image(images)
        with LayerCapture(model, layer_maps(model)) as cap:
            during = cap.encode_image(images)[-1]
    after_hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    assert after_hooks == 0
    torch.testing.assert_close(before, during)


def test_hooks_are_removed_on_error(tiny_random):
    model = tiny_random.model
    with pytest.raises(RuntimeError), LayerCapture(model, layer_maps(model)) as cap:
        cap.encode_image(torch.randn(1, 3, 7, 7))  # wrong size: the model itself fails
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0


def test_bad_pooling_is_rejected(tiny_random):
    with pytest.raises(MmaError, match="The pooling 'max' is not valid"):
        LayerCapture(tiny_random.model, layer_maps(tiny_random.model), pooling="max")


def test_xembed_before_ln_pre_is_the_embedding_sum_and_only_xembed_moves(tiny_random):
    model, maps = tiny_random.model, layer_maps(tiny_random.model)
    visual = model.visual
    assert maps["image"].embed_norm == "visual.ln_pre" and maps["text"].embed_norm is None
    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 32)
    tokens = tiny_random.tokenizer(PROMPTS[:2])
    with torch.no_grad():
        with LayerCapture(model, maps, xembed="before-ln-pre") as cap:
            before, before_text = cap.encode_image(images), cap.encode_text(tokens)
        with LayerCapture(model, maps) as cap:  # the default: after ln_pre
            after, after_text = cap.encode_image(images), cap.encode_text(tokens)
        # patch + class + positional embedding, written out by hand
        patches = visual.conv1(images).flatten(2).transpose(1, 2)
        embeds = torch.cat([visual.class_embedding.expand(2, 1, -1), patches], dim=1) + visual.positional_embedding
        torch.testing.assert_close(before[0], embeds.mean(dim=1))
        torch.testing.assert_close(after[0], visual.ln_pre(embeds).mean(dim=1))
    assert not torch.allclose(before[0], after[0], atol=1e-3)  # the two points really differ
    for b, a in zip(before[1:] + before_text, after[1:] + after_text):  # every other layer, and text, is the same
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0
    with pytest.raises(MmaError, match="The XEmbed point 'middle' is not valid"):
        LayerCapture(model, maps, xembed="middle")


def test_the_store_key_changes_with_the_xembed_point_and_the_default_key_does_not(tiny_random, tmp_path):
    from PIL import Image

    from mma.probe.data import load_datasets
    from mma.probe.extract import extract_images

    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (40 * i, 90, 200)).save(tmp_path / "data" / name / f"{i}.png")
    (dataset,) = load_datasets(f"folder:{tmp_path / 'data'}")
    entries = {
        point: extract_images(tiny_random, dataset, dataset.train, tmp_path / "store", xembed=point)
        for point in ("after-ln-pre", "before-ln-pre")
    }
    default, other = entries["after-ln-pre"], entries["before-ln-pre"]
    assert default.folder != other.folder
    assert "xembed" not in default.manifest  # stores written before the option existed stay valid
    assert other.manifest["xembed"] == "before-ln-pre" and other.manifest["key"] != default.manifest["key"]
    assert not (default.layer(0) == other.layer(0)).all()
    assert (default.layer(1) == other.layer(1)).all()
