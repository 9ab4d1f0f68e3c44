"""The pretraining corpus: apart from the downstream suite, captions that say what the picture shows."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mma.probe.embedded.concepts import CONCEPTS, CORPUS_CONCEPTS, UNSEEN_NAMES
from mma.probe.embedded.corpus import CORPUS_LOOK, EVAL_TEMPLATE, build_corpus, captions_for, corpus_rng
from mma.probe.embedded.pretrain import check_disjoint, image_hashes
from mma.probe.embedded.render import render
from mma.probe.embedded.suite import BUILTIN_DATASETS, REGISTRY, SUITE

N = 1500  # corpus images built here (the same images, by index, that pretraining starts with)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield build_corpus(N)


def _texts(corpus):
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    special = (0, tok.sot_token_id, tok.eot_token_id)
    rows = corpus.tokens.reshape(-1, corpus.tokens.shape[-1])
    return [tok.decode([int(i) for i in row if i not in special]) for row in rows]


def test_no_corpus_image_is_a_downstream_image(corpus):
    """Hash the corpus's first images and every image of every downstream split: no image is in both."""
    record = check_disjoint(corpus.images, 32)
    assert record["shared"] == 0 and record["corpus_images_hashed"] == N
    assert record["suite_images_hashed"] > 10_000
    # the check is not vacuous: an image copied from the suite is caught
    from mma.probe.embedded.suite import suite_arrays

    leaked = np.concatenate([corpus.images[:10], suite_arrays("shapes", 32)[0]["test_x"][:1]])
    with pytest.raises(RuntimeError, match="1 corpus image"):
        check_disjoint(leaked, 32)


def test_corpus_is_deterministic_and_cached(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    again = build_corpus(50)
    np.testing.assert_array_equal(again.images, corpus.images[:50])
    np.testing.assert_array_equal(again.tokens, corpus.tokens[:50])
    assert len(image_hashes(corpus.images)) > 0.99 * N  # distinct pictures, not copies


def test_every_suite_class_is_a_corpus_concept_except_the_unseen_names():
    for name in SUITE:
        for c in REGISTRY[name].classes:
            assert c in CONCEPTS, (name, c)
            assert (c in CORPUS_CONCEPTS) == (c not in UNSEEN_NAMES), c


def test_captions_name_the_concept_and_never_an_unseen_name(corpus):
    words = set(" ".join(_texts(corpus)).split())
    for unseen in UNSEEN_NAMES:
        assert unseen not in words
    assert len({int(i) for i in corpus.concepts}) > 0.9 * len(CORPUS_CONCEPTS)  # broad: almost every concept
    for i in range(0, N, 97):
        c = CONCEPTS[corpus.names[corpus.concepts[i]]]
        for text in _texts(corpus)[4 * i : 4 * i + 4]:
            assert c.name.split()[-1] in text or c.plural.split()[-1] in text, (c.name, text)


def test_captions_describe_attributes():
    """Captions mention colour, size, background and count when the picture shows them."""
    seen = {"colour": 0, "size": 0, "background": 0, "count": 0}
    for i in range(400):
        rng = corpus_rng("pretrain", i)
        c = CONCEPTS[CORPUS_CONCEPTS[int(rng.integers(len(CORPUS_CONCEPTS)))]]
        _, attrs = render(rng, c, CORPUS_LOOK, 32, "corpus", i)
        text = " ".join(captions_for(c, attrs, rng, 8))
        if attrs.colour and c.family != "colour" and re.search(rf"\b{attrs.colour}\b", text):
            seen["colour"] += 1
        if attrs.size and attrs.size in text:
            seen["size"] += 1
        if attrs.background and f"{attrs.background} background" in text:
            seen["background"] += 1
        if attrs.count > 1 and ("two " in text or "three " in text):
            seen["count"] += 1
        assert EVAL_TEMPLATE.format(c.name) in captions_for(c, attrs, rng, 40)
    assert min(seen.values()) > 0, seen


def test_the_variants_are_test_sets_only():
    for name in BUILTIN_DATASETS:
        if name not in SUITE:
            assert REGISTRY[name].counts[:2] == (0, 0)
