"""Every tower family open_clip ships: layer maps, capture checked against the libraries' own intermediates
(open_clip's and timm's ``forward_intermediates``, transformers' ``output_hidden_states``), and the adapter
(alpha 0 is the frozen model exactly, detach restores it).

Models are open_clip's own configs with random weights, made small: fewer and narrower blocks (timm trunks
get ``depth`` / ``embed_dim`` ... through ``timm.create_model``), a 2-block text tower. Hugging Face text
towers and SigLIP's tokenizer are built from local files (a tiny config and tokenizer written here), so
nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
from pathlib import Path
from unittest import mock

import open_clip
import pytest
import timm
import torch
from PIL import Image

from mma.adapters.mma import MultiModalAdapter, add_adapter
from mma.errors import MmaError
from mma.probe import load_model
from mma.probe.capture import LayerCapture, pool_tokens
from mma.probe.layers import layer_maps
from mma.probe.towers import FAMILIES, architecture_support, check_mma_support

# -- small models of real architectures ------------------------------------------------------------------


@contextlib.contextmanager
def smaller_timm(**kwargs):
    """Build every timm trunk with these keyword arguments (fewer / narrower blocks)."""
    if not kwargs:
        yield
        return
    with mock.patch.object(timm, "create_model", functools.partial(timm.create_model, **kwargs)):
        yield


def small_config(name: str, *, vision: dict | None = None, text: dict | None = None) -> dict:
    cfg = copy.deepcopy(open_clip.get_model_config(name))
    if not cfg["text_cfg"].get("hf_model_name"):
        cfg["text_cfg"].update(width=32, heads=2, layers=2)
    cfg["text_cfg"].update(text or {})
    cfg["vision_cfg"].update(vision or {})
    if "multimodal_cfg" in cfg:
        cfg["multimodal_cfg"].update(width=32, heads=2, layers=1)
    return cfg


def build(name: str, *, timm_kw: dict | None = None, vision: dict | None = None, text: dict | None = None):
    cfg = small_config(name, vision=vision, text=text)
    custom = cfg.pop("custom_text", False)
    cls = open_clip.CoCa if "multimodal_cfg" in cfg else open_clip.CustomTextCLIP if custom else open_clip.CLIP
    torch.manual_seed(0)
    with smaller_timm(**(timm_kw or {})):
        model = cls(**cfg)
    return model.eval()


NARROW = dict(depth=2, embed_dim=64, num_heads=2)
# one small model per tower family and variant: (architecture, how to shrink it, image family)
REPRESENTATIVES = {
    "EVA02-B-16": (dict(timm_kw=NARROW), "timm-vit"),  # Eva, class token, RoPE
    "EVA02-E-14": (dict(timm_kw=NARROW), "timm-vit"),  # Eva with post-norm blocks
    "PE-Core-T-16-384": (dict(timm_kw=NARROW), "timm-vit"),  # Eva, class token + attention-pool head
    "MobileCLIP-B": (dict(timm_kw=dict(depth=2)), "timm-vit"),  # hybrid (convolutional stem) ViT
    "ViT-B-16-SigLIP": (dict(timm_kw=NARROW), "timm-vit"),  # no class token, attention-pool (MAP) head
    "ViTamin-S": (dict(timm_kw=dict(depth=2)), "timm-vit"),  # MBConv stages, then ViT blocks, GAP
    "vit_relpos_medium_patch16_cls_224": (dict(timm_kw=NARROW), "timm-vit"),
    "vit_medium_patch16_gap_256": (dict(timm_kw=NARROW), "timm-vit"),
    "swin_base_patch4_window7_224": (
        dict(timm_kw=dict(depths=(1, 1, 2, 1), embed_dim=16, num_heads=(1, 1, 2, 2))),
        "timm-swin",
    ),
    "convnext_base": (dict(timm_kw=dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128))), "timm-stages"),
    "MobileCLIP-S1": (dict(timm_kw=dict(layers=(1, 1, 1, 1))), "timm-stages"),
    "RN50": (dict(vision=dict(layers=[1, 1, 1, 1], width=16, image_size=64)), "resnet-stages"),
    "ViT-B-32": (dict(vision=dict(layers=2, width=64, head_width=32, image_size=64)), "open_clip-vit"),
    "coca_ViT-B-32": (dict(vision=dict(layers=2, width=64, head_width=32, image_size=64)), "open_clip-vit"),
}
TRANSFORMER_REPS = [n for n, (_, fam) in REPRESENTATIVES.items() if FAMILIES[fam].transformer]


def _image_size(model) -> int:
    size = model.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _context_length(model) -> int:
    return int(getattr(model, "context_length", None) or model.text.context_length)


def _inputs(model, *, seed: int = 1, size: int | None = None):
    """Two images and two token sequences of different lengths, the EOT token (largest id) at their ends."""
    g = torch.Generator().manual_seed(seed)
    size = size or _image_size(model)
    images = torch.randn(2, 3, size, size, generator=g)
    vocab = model.vocab_size if hasattr(model, "vocab_size") else model.text.vocab_size
    n = _context_length(model)
    tokens = torch.zeros(2, n, dtype=torch.long)
    for row, length in enumerate((5, 9)):
        tokens[row, :length] = torch.randint(1, vocab - 2, (length,), generator=g)
        tokens[row, length] = vocab - 1
    return images, tokens


def _encode(model, images, tokens):
    return model.encode_image(images), model.encode_text(tokens)


# -- references nobody here wrote --------------------------------------------------------------------------


def _timm_embed(trunk, images):
    """timm's own embedding path of a ViT-family trunk (what ``forward_features`` runs before the blocks)."""
    x = trunk.patch_embed(images)
    if hasattr(trunk, "_pos_embed"):
        x = trunk._pos_embed(x)
        x = x[0] if isinstance(x, tuple) else x  # Eva returns (tokens, rope) and drops patches inside
        if getattr(trunk, "patch_drop", None) is not None:
            x = trunk.patch_drop(x)
        return trunk.norm_pre(x)
    if trunk.cls_token is not None:  # ViT-RelPos: class token, no absolute positions
        x = torch.cat((trunk.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
    return x


def _image_reference(model, lmap, images):
    """``{layer index: token map [B, T, D]}`` from the library's own intermediates, and its XProj."""
    visual = model.visual
    ref = {}
    if lmap.family in ("open_clip-vit", "timm-vit"):
        out = visual.forward_intermediates(images, output_fmt="NLC", output_extra_tokens=True)
        prefixes = out.get("image_intermediates_prefix") or [None] * len(out["image_intermediates"])
        for i, (x, p) in enumerate(zip(out["image_intermediates"], prefixes), start=1):
            ref[i] = x if p is None or p.shape[1] == 0 else torch.cat([p, x], dim=1)
        ref[0] = visual._embeds(images) if lmap.family == "open_clip-vit" else _timm_embed(visual.trunk, images)
    else:  # stage outputs, NCHW
        out = visual.forward_intermediates(images, output_fmt="NCHW")
        stages = out["image_intermediates"]
        if lmap.family == "resnet-stages":  # open_clip returns [stem, layer1..layer4]
            stages, ref[0] = stages[1:], stages[0]
        elif lmap.family == "timm-stages":
            ref[0] = visual.trunk.stem(images)
        else:  # Swin: the stage outputs are the outputs of each stage's last block
            ref[0] = visual.trunk.patch_embed(images).permute(0, 3, 1, 2)
        if lmap.family == "timm-swin":
            ends = [i for i, p in enumerate(lmap.block_paths, start=1) if _is_stage_end(lmap.block_paths, i - 1)]
            ref.update(dict(zip(ends, stages)))
        else:
            ref.update({i: s for i, s in enumerate(stages, start=1)})
        ref = {i: x.flatten(2).transpose(1, 2) for i, x in ref.items()}
    return ref, out.get("image_features")


def _is_stage_end(paths, i) -> bool:
    stage = paths[i].split(".blocks.")[0]
    return i == len(paths) - 1 or not paths[i + 1].startswith(stage + ".blocks.")


def _text_reference(model, tokens):
    """``{layer index: token map}`` of a CLIP-style text tower from open_clip's own intermediates."""
    out = model.forward_intermediates(text=tokens, normalize=False, text_output_extra_tokens=True)
    suffix = out.get("text_intermediates_suffix")
    ref = {}
    for i, x in enumerate(out["text_intermediates"], start=1):
        ref[i] = x if not suffix else torch.cat([x, suffix[i - 1]], dim=1)  # CoCa's appended class token
    text = getattr(model, "text", model)
    if not suffix:
        ref[0] = text.token_embedding(tokens) + text.positional_embedding[: tokens.shape[1]]
    return ref, out["text_features"]


# -- 1. every architecture open_clip ships -----------------------------------------------------------------


def _shipped_names() -> list[str]:
    """Every architecture in open_clip's own model_configs (not configs registered by mma or the tests)."""
    shipped = {p.stem for p in (Path(open_clip.__file__).parent / "model_configs").glob("*.json")}
    return [n for n in open_clip.list_models() if n in shipped]


@contextlib.contextmanager
def _no_initialisers():
    """Skip the random initialisers' arithmetic: meta tensors hold no values, and it halves the walk's time."""
    keep = lambda tensor, *args, **kwargs: tensor  # noqa: E731
    with (
        mock.patch("timm.layers.weight_init._trunc_normal_", keep),
        mock.patch("torch.nn.init.trunc_normal_", keep),
        mock.patch("torch.nn.init.normal_", keep),
    ):
        yield


def test_every_open_clip_architecture_has_a_family_and_its_map_agrees(capsys):
    """Classify every name from its config alone, build it on the meta device (no memory, no weights) and
    check the map its built towers get: same family, a pre-norm as wide as the blocks, and XProj."""
    names = _shipped_names()
    assert len(names) >= 100
    counts = {"probe": 0, "mma": 0, "built": 0}
    for name in names:
        support = architecture_support(name)
        assert support is not None and support.probe, name
        counts["probe"] += 1
        counts["mma"] += support.mma
        if support.text == "hf-text":  # its config comes from the hub: covered below with local files
            continue
        with torch.device("meta"), _no_initialisers():
            model = open_clip.create_model(name, device="meta")
        maps = layer_maps(model)
        counts["built"] += 1
        assert (maps["image"].family, maps["text"].family) == (support.image, support.text), name
        for lmap in maps.values():
            assert lmap.names == ["XEmbed", *map(str, range(1, lmap.depth + 1)), "XProj"]
            blocks = lmap.blocks(model)
            assert len(blocks) == lmap.depth >= 1
            if lmap.transformer and lmap.pre_norm is not None:
                for block, layer in zip(blocks, lmap.layers[1:-1]):
                    assert block.get_submodule(lmap.pre_norm).weight.shape[-1] == layer.width, name
    with capsys.disabled():
        print(
            f"\nopen_clip architectures: {len(names)}; probe: {counts['probe']}; MMA: {counts['mma']}; built: "
            f"{counts['built']}"
        )
    convolutional = [n for n in names if not architecture_support(n).mma]
    assert all(FAMILIES[architecture_support(n).image].transformer is False for n in convolutional)
    assert {"RN50", "convnext_base", "MobileCLIP-S1"} <= set(convolutional)
    assert not {"EVA02-B-16", "MobileCLIP-B", "ViT-B-16-SigLIP", "ViTamin-S", "ViT-B-16"} & set(convolutional)


# -- 2. capture against the libraries' intermediates, per family ------------------------------------------


@pytest.mark.parametrize("name", list(REPRESENTATIVES))
def test_capture_matches_the_library_intermediates(name):
    kwargs, family = REPRESENTATIVES[name]
    model = build(name, **kwargs)
    maps = layer_maps(model)
    image_map, text_map = maps["image"], maps["text"]
    assert image_map.family == family and text_map.family == "open_clip-text"
    assert architecture_support(name).image == family
    # convolutional stages take any image size: keep them small; transformers need their own grid
    images, tokens = _inputs(model, size=None if image_map.transformer else 64)
    with torch.no_grad():
        ref, image_final = _image_reference(model, image_map, images)
        text_ref, text_final = _text_reference(model, tokens)
        own_image, own_text = model.encode_image(images, normalize=False), model.encode_text(tokens, normalize=False)
    assert set(ref) >= {0, image_map.depth}
    readout, mask = text_map.readout(tokens)
    for pooling in ("mean", "cls"):
        with torch.no_grad(), LayerCapture(model, maps, pooling=pooling) as cap:
            image_feats = cap.encode_image(images)
            text_feats = cap.encode_text(tokens)
        assert [f.shape[1] for f in image_feats] == [layer.width for layer in image_map]
        assert [f.shape[1] for f in text_feats] == [layer.width for layer in text_map]
        first = torch.zeros(2, dtype=torch.long) if pooling == "cls" and image_map.class_token else None
        for i, tokens_i in ref.items():
            torch.testing.assert_close(image_feats[i], pool_tokens(tokens_i, pooling, first), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(image_feats[-1], own_image)
        if image_final is not None:
            torch.testing.assert_close(image_feats[-1], image_final, rtol=1e-4, atol=1e-4)
        for i, tokens_i in text_ref.items():
            pooled = pool_tokens(tokens_i, pooling, readout, mask)
            torch.testing.assert_close(text_feats[i], pooled, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(text_feats[-1], own_text)
        torch.testing.assert_close(text_feats[-1], text_final, rtol=1e-4, atol=1e-4)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0


def test_xembed_before_ln_pre_reads_the_input_of_timm_norm_pre():
    model = build("ViT-B-16-SigLIP", **REPRESENTATIVES["ViT-B-16-SigLIP"][0])
    trunk = model.visual.trunk
    trunk.norm_pre = torch.nn.LayerNorm(trunk.embed_dim)  # a real norm (SigLIP's is an identity), so the points differ
    maps = layer_maps(model)
    assert maps["image"].embed_norm == "visual.trunk.norm_pre"
    images, _ = _inputs(model)
    with torch.no_grad():
        embeds = trunk.patch_drop(trunk._pos_embed(trunk.patch_embed(images)))
        with LayerCapture(model, {"image": maps["image"]}, xembed="before-ln-pre") as cap:
            before = cap.encode_image(images)
        with LayerCapture(model, {"image": maps["image"]}) as cap:
            after = cap.encode_image(images)
        torch.testing.assert_close(before[0], embeds.mean(dim=1))
        torch.testing.assert_close(after[0], trunk.norm_pre(embeds).mean(dim=1))
    torch.testing.assert_close(before[-1], after[-1], rtol=0, atol=0)


def test_towers_without_a_readout_token_pool_cls_like_mean():
    model = build("ViT-B-16-SigLIP", **REPRESENTATIVES["ViT-B-16-SigLIP"][0])
    maps = layer_maps(model)
    assert not maps["image"].class_token and not maps["image"].has_readout_token
    images, _ = _inputs(model)
    with torch.no_grad():
        with LayerCapture(model, {"image": maps["image"]}, pooling="mean") as cap:
            mean = cap.encode_image(images)
        with LayerCapture(model, {"image": maps["image"]}, pooling="cls") as cap:
            cls = cap.encode_image(images)
    for a, b in zip(mean, cls):
        assert torch.equal(a, b)


# -- 3. the adapter on every transformer family -------------------------------------------------------------


@pytest.mark.parametrize("name", TRANSFORMER_REPS)
def test_adapter_alpha_zero_is_the_frozen_model_and_detach_restores_it(name):
    kwargs, _ = REPRESENTATIVES[name]
    model = build(name, **kwargs)
    model.requires_grad_(False)
    images, tokens = _inputs(model)
    with torch.no_grad():
        ref = _encode(model, images, tokens)
    adapter = add_adapter(model, k=1, dim=4, alpha=0.5, model_name=name)
    maps = layer_maps(model)
    assert adapter.block_widths["image"] == [layer.width for layer in maps["image"].layers[1:-1]]
    on = _encode(model, images, tokens)
    (on[0].sum() + on[1].sum()).backward()  # gradients reach every adapted block of both towers
    assert all(p.grad is not None for p in adapter.parameters())
    assert all(up.bias.grad.abs().sum() > 0 for t in ("image", "text") for up in adapter.up[t].values())
    with torch.no_grad():
        adapter.alpha = 0.0
        off = _encode(model, images, tokens)
        adapter.alpha = 1e-9
        tiny = _encode(model, images, tokens)
        adapter.detach()
        after = _encode(model, images, tokens)
    for r, o, a, t, n in zip(ref, on, after, tiny, off):
        assert (o - r).abs().max() > 1e-3 * r.abs().max()  # the adapter changes the output
        assert torch.equal(n, r) and torch.equal(a, r)
        torch.testing.assert_close(t, r, rtol=1e-5, atol=1e-5)
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


@pytest.mark.parametrize("name", ["RN50", "convnext_base", "MobileCLIP-S1"])
def test_convolutional_towers_refuse_the_adapter_before_loading(name):
    with pytest.raises(MmaError, match=rf"MMA needs transformer blocks, but the image tower of '{name}'"):
        check_mma_support(name)
    kwargs, _ = REPRESENTATIVES[name]
    with pytest.raises(MmaError, match="MMA needs transformer blocks"):
        MultiModalAdapter(layer_maps(build(name, **kwargs)), k=1)
    check_mma_support("EVA02-B-16")  # a transformer tower: no error


def test_swin_adapter_has_per_block_widths_and_records_them():
    model = build("swin_base_patch4_window7_224", **REPRESENTATIVES["swin_base_patch4_window7_224"][0])
    adapter = MultiModalAdapter(layer_maps(model), k=1, dim=4)
    assert adapter.block_widths["image"] == [16, 32, 64, 64, 128]
    assert adapter.down["image"]["5"].in_features == 128 and adapter.up["image"]["1"].out_features == 16
    config = adapter.config()
    assert config["block_widths"] == {"image": [16, 32, 64, 64, 128]}
    assert MultiModalAdapter.from_config(config, layer_maps(model)).block_widths == adapter.block_widths


# -- 4. Hugging Face text towers and SigLIP's tokenizer, from local files ----------------------------------

WORDS = ["a", "photo", "of", "the", ".", "red", "green", "blue", "yellow", "square", "circle", "cat", "dog"]


def _write_tokenizer(folder: Path) -> Path:
    """A tiny word-level Hugging Face tokenizer (pad 0, eos 1, unk 2) saved as local files."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(folder)
    return folder


HF_CONFIGS = {  # model type -> (transformers config, open_clip pooler)
    "roberta": (
        "RobertaConfig",
        dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=40
        ),
        "mean_pooler",
    ),
    "mt5": ("MT5Config", dict(d_model=32, d_kv=16, d_ff=64, num_layers=3, num_heads=2), "mean_pooler"),
    "m2m_100": (
        "M2M100Config",
        dict(
            d_model=32,
            encoder_layers=3,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=40,
        ),
        "cls_pooler",
    ),
}


@pytest.fixture(scope="session")
def local_hf(tmp_path_factory):
    """open_clip configs ``mma-test-hf-<type>`` whose text towers and tokenizers are local folders."""
    import transformers

    root = tmp_path_factory.mktemp("hf")
    tokenizer = _write_tokenizer(root / "tokenizer")
    for model_type, (cls_name, kwargs, pooler) in HF_CONFIGS.items():
        folder = root / model_type
        config = getattr(transformers, cls_name)(vocab_size=len(WORDS) + 3, pad_token_id=0, **kwargs)
        config.save_pretrained(folder)
        tokenizer_folder = folder / "tokenizer"
        _write_tokenizer(tokenizer_folder)
        cfg = {
            "embed_dim": 16,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
            "text_cfg": {
                "hf_model_name": str(folder),
                "hf_tokenizer_name": str(tokenizer_folder),
                "hf_model_pretrained": False,
                "hf_pooler_type": pooler,
                "hf_proj_type": "linear",
                "context_length": 12,
            },
        }
        (root / f"mma-test-hf-{model_type}.json").write_text(json.dumps(cfg))
    siglip = small_config("ViT-B-16-SigLIP", text={"hf_tokenizer_name": str(tokenizer), "vocab_size": len(WORDS) + 3})
    (root / "mma-test-siglip.json").write_text(json.dumps(siglip))
    resnet = small_config("RN50", vision=dict(layers=[1, 1, 1, 1], width=16, image_size=64))
    (root / "mma-test-rn50.json").write_text(json.dumps(resnet))
    (root / "mma-test-eva02.json").write_text(json.dumps(small_config("EVA02-B-16")))  # 2 text blocks
    open_clip.add_model_config(root)
    return root


@pytest.mark.parametrize("model_type", list(HF_CONFIGS))
def test_hf_text_towers_match_transformers_hidden_states(local_hf, model_type):
    loaded = load_model(f"mma-test-hf-{model_type}:random")  # tokenizer and config from local files
    model = loaded.model
    maps = layer_maps(model)
    text_map = maps["text"]
    assert text_map.family == "hf-text" and text_map.depth == (2 if model_type == "roberta" else 3)
    assert (
        text_map.pre_norm
        == {"roberta": None, "mt5": "layer.0.layer_norm", "m2m_100": "self_attn_layer_norm"}[model_type]
    )
    tokens = loaded.tokenizer(["a photo of a red square .", "the dog", "a blue circle"])
    assert (tokens == 0).any() and tokens.shape[1] == 12
    hf = model.text
    with torch.no_grad():
        out = hf.transformer(input_ids=tokens, attention_mask=(tokens != 0).long(), output_hidden_states=True)
        for pooling in ("mean", "cls"):
            with LayerCapture(model, {"text": text_map}, pooling=pooling) as cap:
                feats = cap.encode_text(tokens)
            readout, mask = text_map.readout(tokens)
            assert torch.equal(mask, tokens != 0)  # exactly the pooler's attention mask
            assert (readout is None) == (model_type != "m2m_100")
            # transformers' hidden_states: the embeddings' output, then each layer's input; RoBERTa's last
            # entry is the last layer's output, T5's and M2M100's are after their final norm
            depth = text_map.depth
            usable = depth if model_type == "roberta" else depth - 1
            for i in range(usable + 1):
                torch.testing.assert_close(
                    feats[i], pool_tokens(out.hidden_states[i], pooling, readout, mask), rtol=1e-5, atol=1e-5
                )
            torch.testing.assert_close(feats[-1], model.encode_text(tokens, normalize=False))
        if model_type != "m2m_100":  # the mean pooler's output, projected, is XProj
            pooled = hf.pooler(out, (tokens != 0).long())
            torch.testing.assert_close(feats[-1], hf.proj(pooled), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_type", list(HF_CONFIGS))
def test_adapter_on_hf_text_towers(local_hf, model_type):
    loaded = load_model(f"mma-test-hf-{model_type}:random")
    model = loaded.model
    model.requires_grad_(False)
    tokens = loaded.tokenizer(["a photo of a red square .", "the dog"])
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = _encode(model, images, tokens)
    adapter = add_adapter(model, k=1, dim=4, alpha=0.5)
    assert not layer_maps(model)["text"].prefix_cache  # layers may pass state (T5's position bias) on
    on = _encode(model, images, tokens)
    on[1].sum().backward()
    assert all(p.grad is not None for n, p in adapter.named_parameters() if ".text." in n)
    with torch.no_grad():
        adapter.alpha = 0.0
        off = _encode(model, images, tokens)
        adapter.detach()
        after = _encode(model, images, tokens)
    assert (on[1] - ref[1]).abs().max() > 1e-3 * ref[1].abs().max()
    for r, o, a in zip(ref, off, after):
        assert torch.equal(o, r) and torch.equal(a, r)


def test_siglip_builds_offline_with_a_local_tokenizer(local_hf):
    with smaller_timm(**NARROW):
        loaded = load_model("mma-test-siglip:random")
    tokens = loaded.tokenizer(["a photo of a red square .", "a dog"])
    assert tokens.shape == (2, 64) and int(tokens[0, 6]) == 1  # eos after the six words, then padding
    maps = layer_maps(loaded.model)
    assert maps["image"].family == "timm-vit" and not maps["image"].class_token
    assert maps["text"].text_readout.kind == "last"
    with torch.no_grad(), LayerCapture(loaded.model, maps) as cap:
        feats = cap.encode_text(tokens)
    torch.testing.assert_close(feats[-1], loaded.model.encode_text(tokens, normalize=False))


# -- 5. the jobs on a timm tower and a Hugging Face tower, end to end ------------------------------------


def _folder_dataset(root: Path, colours: dict, seed: int) -> str:
    g = torch.Generator().manual_seed(seed)
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        for name, rgb in colours.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                noise = torch.randint(-20, 20, (16, 16, 3), generator=g)
                arr = (torch.tensor(rgb).view(1, 1, 3) + noise).clamp(0, 255).to(torch.uint8).numpy()
                Image.fromarray(arr).save(root / split / name / f"{i}.png")
    return f"folder:{root}"


@pytest.fixture(scope="module")
def two_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("towers-data")
    warm = {"red": (220, 30, 30), "yellow": (230, 220, 30), "orange": (240, 140, 20), "pink": (240, 60, 170)}
    cold = {"blue": (30, 40, 220), "green": (30, 200, 40), "cyan": (30, 210, 220), "purple": (110, 40, 200)}
    return [_folder_dataset(root / "warm", warm, 0), _folder_dataset(root / "cold", cold, 1)]


@pytest.mark.parametrize(
    "model,timm_kw,depth",
    [
        ("mma-test-eva02:random", NARROW, 2),  # EVA02-B-16's config, 2 blocks per tower
        ("mma-test-hf-roberta:random", {}, 2),
    ],
    ids=["timm", "hf"],
)
def test_probe_and_train_selected_run_on_other_tower_families(local_hf, two_folders, tmp_path, model, timm_kw, depth):
    from mma.app.jobs.probe_layers import ProbeLayersConfig, probe_layers
    from mma.app.jobs.train_selected import TrainSelectedConfig, train_selected

    with smaller_timm(**timm_kw):
        run = probe_layers(
            ProbeLayersConfig(
                models=[model], data=two_folders, samples=12, seeds=[1], out=tmp_path / "probe", progress=False
            )
        )
        assert run.figure.is_file()
        assert run.selection["selections"][0]["depth"] == depth
        result = train_selected(
            TrainSelectedConfig(
                run=tmp_path / "probe",
                data=two_folders[:1],
                seeds=[1],
                out=tmp_path / "train",
                train={"epochs": 1, "shots": 2, "batch_size": 2, "augment": False},
                progress=False,
            )
        )
    mma_rows = result.results[result.results["method"] == "mma"]
    assert set(mma_rows["metric"]) == {"base", "novel", "hm"} and mma_rows["value"].notna().all()
    assert (tmp_path / "train" / "checkpoints").is_dir()


def test_convolutional_towers_are_probed_stage_by_stage(local_hf, two_folders, tmp_path):
    from mma.app.jobs.probe_layers import ProbeLayersConfig, probe_layers
    from mma.app.jobs.train_selected import TrainSelectedConfig, train_selected

    run = probe_layers(
        ProbeLayersConfig(
            models=["mma-test-rn50:random"], data=two_folders, samples=12, seeds=[1], out=tmp_path, progress=False
        )
    )
    assert run.figure.is_file()
    image = run.summary[(run.summary["tower"] == "image") & (run.summary["metric"] == "probe_accuracy")]
    assert list(image.sort_values("layer_index")["layer_name"]) == ["XEmbed", "1", "2", "3", "4", "XProj"]
    (sel,) = run.selection["selections"]
    assert sel["k"] is None and "4 image and 2 text layers" in sel["reason"]  # the rules read one depth
    with pytest.raises(MmaError, match="MMA needs transformer blocks"):
        train_selected(TrainSelectedConfig(run=tmp_path, k=1, data=two_folders[:1], out=tmp_path / "t", progress=False))
    assert not (tmp_path / "t").exists()


# -- 5. only live text positions and the image tower from block k, on every family ----------------------------

CUT = {"EVA02-B-16", "ViT-B-32", "vit_relpos_medium_patch16_cls_224", "RN50"}  # causal, read out at the EOT token


@pytest.mark.parametrize("name", list(REPRESENTATIVES))
def test_text_runs_only_to_the_last_readout_token(name):
    from mma.probe.textcut import encode_text, live_length

    model = build(name, **REPRESENTATIVES[name][0])
    text_map = layer_maps(model)["text"]
    _, tokens = _inputs(model, size=64)
    n = live_length(text_map, tokens)
    if text_map.cut_owner is None:  # bidirectional (SigLIP: last-token readout) or an appended token (CoCa)
        assert n is None and name not in CUT
        return
    assert n == 10 < tokens.shape[1]  # the longer prompt's EOT sits at position 9
    owner = model.get_submodule(text_map.cut_owner)
    pos, mask = owner.positional_embedding, owner.attn_mask
    with torch.no_grad():
        full, cut = model.encode_text(tokens), encode_text(model, text_map, tokens)
    torch.testing.assert_close(cut, full, rtol=1e-5, atol=1e-5)
    assert owner.positional_embedding is pos and owner.attn_mask is mask  # restored


def test_the_cut_covers_the_named_representatives():
    cut = {n for n in REPRESENTATIVES if layer_maps(build(n, **REPRESENTATIVES[n][0]))["text"].cut_owner is not None}
    assert CUT <= cut and not {"ViT-B-16-SigLIP", "coca_ViT-B-32"} & cut


@pytest.mark.parametrize("model_type", list(HF_CONFIGS))
def test_hf_text_towers_run_in_full(local_hf, model_type):
    from mma.probe.textcut import live_length

    loaded = load_model(f"mma-test-hf-{model_type}:random")
    text_map = layer_maps(loaded.model)["text"]
    assert text_map.cut_owner is None and live_length(text_map, loaded.tokenizer(["a dog"])) is None


@pytest.mark.parametrize("name", TRANSFORMER_REPS)
def test_the_image_tower_runs_from_block_k_exactly(name):
    from mma.adapters.frozen import image_part

    model = build(name, **REPRESENTATIVES[name][0])
    image_map = layer_maps(model)["image"]
    loaded = mock.Mock(model=model, image_size=_image_size(model))
    part = image_part(loaded, image_map.depth)  # the last block: every block below it is frozen
    images, _ = _inputs(model)
    if image_map.blocks_path is None or image_map.depth < 2:  # Swin's stages: the method reads images
        assert part is None
        return
    with torch.no_grad():
        assert torch.equal(part.rest(part.prefix(images)), model.encode_image(images))
