"""The built-in offline suite: sizes, splits, vocabularies, determinism and the on-disk cache."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from mma.errors import MmaError
from mma.probe.data import SPLITS, load_datasets
from mma.probe.data import builtin as B
from mma.probe.data.builtin import BUILTIN_DATASETS, describe_builtin, load_builtin

SIZE = 16  # small images keep the whole-suite build fast


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "mma" / "builtin"


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield {d.name: d for d in load_builtin(image_size=SIZE)}


def _images(ds, split):
    return [np.asarray(ds.load_image(s)) for s in ds.splits[split]]


def test_names_are_stable_and_at_least_seven():
    assert len(BUILTIN_DATASETS) >= 7
    assert BUILTIN_DATASETS[:2] == ("digits", "shapes")
    assert [row["name"] for row in describe_builtin()] == list(BUILTIN_DATASETS)


def test_describe_is_cheap_and_complete(monkeypatch):
    monkeypatch.setattr(B, "_build", lambda *a: pytest.fail("describe_builtin must not build images"))
    for row in describe_builtin():
        assert set(row) == {"name", "classes", "train", "val", "test", "source", "licence"}
        assert 2 <= row["classes"] <= 15
        assert row["train"] >= 50 * row["classes"]
        assert row["val"] > 0 and row["test"] > 0
        assert row["source"] and row["licence"]


def test_suite_matches_description(suite):
    assert list(suite) == list(BUILTIN_DATASETS)
    for row in describe_builtin():
        ds = suite[row["name"]]
        assert ds.num_classes == row["classes"]
        assert [len(ds.train), len(ds.val), len(ds.test)] == [row["train"], row["val"], row["test"]]
        assert ds.source == "builtin"
        for split in ("train", "val", "test"):
            counts = np.bincount([s.label for s in ds.splits[split]], minlength=ds.num_classes)
            assert counts.min() == counts.max() > 0  # balanced, every class present
        assert np.bincount([s.label for s in ds.train]).min() >= 50


def test_images_are_rgb_uint8_of_the_requested_size(suite):
    for ds in suite.values():
        for s in ds.train[:5] + ds.test[:5]:
            img = ds.load_image(s)
            assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (SIZE, SIZE)
            assert np.asarray(img).dtype == np.uint8


def test_splits_are_disjoint(suite):
    for ds in suite.values():
        refs = [s.ref for split in ("train", "val", "test") for s in ds.splits[split]]
        assert len(refs) == len(set(refs))
        digests = {split: {hashlib.sha1(a.tobytes()).hexdigest() for a in _images(ds, split)} for split in SPLITS}
        assert not digests["train"] & digests["test"], ds.name
        assert not digests["train"] & digests["val"], ds.name
        assert not digests["val"] & digests["test"], ds.name


def test_class_vocabularies_are_distinct(suite):
    seen: dict[str, str] = {}
    for ds in suite.values():
        assert len(set(ds.classnames)) == ds.num_classes
        for c in ds.classnames:
            assert c == c.strip() and "_" not in c and c
            assert c.lower() not in seen, f"{c!r} is in both {seen.get(c.lower())} and {ds.name}"
            seen[c.lower()] = ds.name
        assert all("{}" not in p for p in ds.prompts())


def test_images_vary_in_colour(suite):
    """No dataset is recognisable by a constant palette: mean colours spread widely in every dataset."""
    for ds in suite.values():
        means = np.stack([a.reshape(-1, 3).mean(0) for a in _images(ds, "train")[:200]])
        assert means.std(0).min() > 15, ds.name


def test_build_is_deterministic():
    for name in ("faces", "patterns"):
        a, b = B._build(name, 12), B._build(name, 12)
        for split in ("train", "val", "test"):
            np.testing.assert_array_equal(a[split][0], b[split][0])
            np.testing.assert_array_equal(a[split][1], b[split][1])


def test_cache_is_reused(cache, monkeypatch):
    (first,) = load_builtin(["faces"], image_size=SIZE)
    files = sorted(p.name for p in cache.iterdir())
    assert files == [f"{B._cache_key('faces', SIZE)}.npz"]  # one file, no '.npz.npz', no temporary left
    monkeypatch.setattr(B, "_build", lambda *a: pytest.fail("the cache was not used"))
    (second,) = load_builtin(["faces"], image_size=SIZE)
    assert second.fingerprint == first.fingerprint
    assert np.array_equal(np.asarray(second.load_image("test/3")), np.asarray(first.load_image("test/3")))


def test_fingerprint_depends_on_size_and_version(cache, monkeypatch):
    (a,) = load_builtin(["faces"], image_size=SIZE)
    (b,) = load_builtin(["faces"], image_size=SIZE + 4)
    assert a.fingerprint != b.fingerprint
    calls = []
    real = B._build
    monkeypatch.setattr(B, "_build", lambda *args: calls.append(args) or real(*args))
    monkeypatch.setattr(B, "BUILD_VERSION", B.BUILD_VERSION + 1)
    (c,) = load_builtin(["faces"], image_size=SIZE)
    assert calls == [("faces", SIZE)]  # a new generator version rebuilds
    assert c.fingerprint != a.fingerprint


def test_corrupt_cache_is_rebuilt(cache):
    (a,) = load_builtin(["faces"], image_size=SIZE)
    path = cache / f"{B._cache_key('faces', SIZE)}.npz"
    assert path.is_file()
    path.write_bytes(b"not a zip file")
    (b,) = load_builtin(["faces"], image_size=SIZE)
    assert b.fingerprint == a.fingerprint


def test_unknown_name_is_a_clear_error(cache):
    with pytest.raises(MmaError, match=r"no built-in dataset 'digts'.*did you mean 'digits'.*valid names: digits"):
        load_builtin(["digts"])
    with pytest.raises(MmaError, match="valid names"):
        load_datasets("builtin:nonsense")


@pytest.mark.parametrize("size", [0, 4, 10_000, 32.5, "32", True])
def test_bad_image_size(cache, size):
    with pytest.raises(MmaError, match="image_size"):
        load_builtin(["faces"], image_size=size)


def test_loader_rejects_unknown_refs(cache):
    (ds,) = load_builtin(["faces"], image_size=SIZE)
    for ref in ("train/100000", "nope/1", "train/x", "train"):
        with pytest.raises(MmaError, match="no image"):
            ds.load_image(ref)


def test_load_datasets_spec(cache):
    datasets = load_datasets("builtin:digits,shapes")
    assert [d.name for d in datasets] == ["digits", "shapes"]
    for d in datasets:
        assert d.source == "builtin:digits,shapes"
        assert d.load_image(d.train[0]).size == (32, 32)
        assert d.prompts()[0] == f"a photo of a {d.classnames[0]}."
    assert datasets[0].classnames[:3] == ["zero", "one", "two"]
    (small,) = load_datasets("builtin:faces", image_size=SIZE)
    assert small.load_image(small.val[0]).size == (SIZE, SIZE)


def test_duplicate_names_load_once(cache):
    assert [d.name for d in load_builtin(["faces", "FACES", " faces "], image_size=SIZE)] == ["faces"]


def test_the_cache_key_follows_the_generator_source(monkeypatch):
    """Editing a generator must invalidate cached images even if BUILD_VERSION is forgotten."""
    key = B._cache_key("shapes", 32)
    assert B._source_digest() in key
    B._source_digest.cache_clear()
    monkeypatch.setattr(B.Path, "read_bytes", lambda self: b"edited generator")
    assert B._cache_key("shapes", 32) != key
    B._source_digest.cache_clear()
