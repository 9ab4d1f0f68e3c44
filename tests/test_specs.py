"""Model specs and layer maps, checked against open_clip's own registry and modules."""

from __future__ import annotations

import warnings

import open_clip
import pytest
import torch

from mma.errors import MmaError
from mma.probe import layer_maps, load_model, parse_model_spec
from mma.probe.specs import DEFAULT_MODEL, ModelSpec, list_model_specs


def test_default_spec_is_the_embedded_model():
    assert parse_model_spec(None) == ModelSpec(DEFAULT_MODEL)
    assert parse_model_spec("") == ModelSpec(DEFAULT_MODEL)
    assert list_model_specs()[0]["model"] == DEFAULT_MODEL


@pytest.mark.parametrize(
    "text,name,pretrained",
    [
        ("ViT-B-16-quickgelu:openai", "ViT-B-16-quickgelu", "openai"),
        ("ViT-B-32", "ViT-B-32", None),
        ("mma-tiny:random", "mma-tiny", "random"),
        ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", None),
        ("local-dir:/some/folder", "local-dir:/some/folder", None),
    ],
)
def test_parse_valid_specs(text, name, pretrained):
    spec = parse_model_spec(text)
    assert (spec.name, spec.pretrained) == (name, pretrained)
    assert str(spec) == text


def test_every_validated_name_comes_from_open_clip():
    known = set(open_clip.list_models())
    for name, tag in open_clip.list_pretrained()[:20]:
        assert parse_model_spec(f"{name}:{tag}").name in known


@pytest.mark.parametrize(
    "text,match",
    [
        ("ViT-B-61", r"Unknown model 'ViT-B-61'; did you mean 'ViT-B-16'"),
        ("ViT-B-16:opanai", r"Unknown pretrained tag 'opanai' for model 'ViT-B-16' \(did you mean 'openai'\?\)"),
        ("ViT-B-16:/no/such/file.pt", r"checkpoint file '/no/such/file.pt' .* does not exist"),
        ("ViT-B-16:", r"ends with ':'"),
    ],
)
def test_bad_specs_give_one_clear_sentence(text, match):
    with pytest.raises(MmaError, match=match):
        parse_model_spec(text)


def test_quickgelu_trap_is_fixed_and_told(monkeypatch, tmp_path):
    """ViT-B-16 + openai is built with QuickGELU; the download is faked with a local random checkpoint."""
    from mma.probe import specs

    ckpt = tmp_path / "vit-b-16-openai.pt"
    reference = open_clip.create_model("ViT-B-16-quickgelu")
    torch.save(reference.state_dict(), ckpt)
    monkeypatch.setattr(specs, "_download", lambda spec: str(ckpt))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_model("ViT-B-16:openai")
    acts = {type(m).__name__ for m in loaded.model.modules()}
    assert "QuickGELU" in acts and "GELU" not in acts
    assert any("QuickGELU" in n for n in loaded.notes)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(loaded.model.encode_image(x), reference.eval().encode_image(x), atol=1e-5)


def test_offline_download_failure_is_one_sentence(monkeypatch):
    def boom(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(open_clip, "download_pretrained", boom)
    with pytest.raises(MmaError, match=r"Could not download the weights for ViT-B-32:openai .*local file|Offline"):
        load_model("ViT-B-32:openai")


def test_local_checkpoint_round_trip(tmp_path, tiny_random):
    path = tmp_path / "tiny.pt"
    torch.save(tiny_random.model.state_dict(), path)
    again = load_model(f"mma-tiny:{path}")
    assert not again.random_weights and again.weights_id != tiny_random.weights_id
    for (k, a), (_, b) in zip(tiny_random.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), k


def test_random_init_is_seeded_and_says_so():
    a, b = load_model("mma-tiny:random", seed=3), load_model("mma-tiny:random", seed=3)
    assert a.random_weights and any("random weights" in n for n in a.notes)
    assert all(torch.equal(x, y) for x, y in zip(a.model.parameters(), b.model.parameters()))


@pytest.mark.parametrize("fixture,depth,widths", [("vit_b32", 12, (768, 512, 512)), ("tiny_random", 12, (96, 96, 96))])
def test_layer_maps(request, fixture, depth, widths):
    loaded = request.getfixturevalue(fixture)
    maps = layer_maps(loaded.model)
    image, text = maps["image"], maps["text"]
    assert image.names == ["XEmbed", *map(str, range(1, depth + 1)), "XProj"] == text.names
    assert image.depth == text.depth == depth
    assert [layer.index for layer in image] == list(range(depth + 2))
    assert image.layers[1].width == widths[0] and text.layers[1].width == widths[1]
    assert image.layers[-1].width == text.layers[-1].width == loaded.model.visual.output_dim == widths[2]
    assert len(image.blocks(loaded.model)) == depth
    assert image.resolve("XProj") is image.resolve(-1) is image.resolve(depth + 1)
    assert image.resolve("3") is image.resolve(3)
    with pytest.raises(
        MmaError, match=rf"Layer index {depth + 2} is out of range for the image tower \(0 to {depth + 1}"
    ):
        image.resolve(depth + 2)
    with pytest.raises(MmaError, match="Layer 'XFoo' does not exist"):
        image.resolve("XFoo")


def test_unknown_towers_are_named():
    model = open_clip.create_model("ViT-S-32")
    model.visual = torch.nn.Linear(2, 2)  # a tower no family knows
    with pytest.raises(MmaError, match="image tower Linear is not supported"):
        layer_maps(model)
