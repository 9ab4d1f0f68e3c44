"""The CoOp few-shot draw and base/novel split, against a direct re-statement of CoOp/Dassl's rule."""

from __future__ import annotations

import math
import random

import pytest
from PIL import Image

from mma.errors import MmaError
from mma.probe.data import ImageDataset, Sample, draw_few_shot, split_base_novel, subsample_classes


def _dataset(counts=(30, 3, 25, 17, 9), val_counts=(6, 2, 5, 5, 1)) -> ImageDataset:
    train = [Sample(f"train/{c}/{i}.png", c) for i in range(max(counts)) for c in range(len(counts)) if i < counts[c]]
    val = [Sample(f"val/{c}/{i}.png", c) for c in range(len(val_counts)) for i in range(val_counts[c])]
    test = [Sample(f"test/{c}/{i}.png", c) for c in range(len(counts)) for i in range(4)]
    return ImageDataset(
        "toy",
        [f"class_{c}" for c in range(len(counts))],
        {"train": train, "val": val, "test": test},
        loader=lambda ref: Image.new("RGB", (4, 4)),
    )


def _coop_rule(items, k):
    """Dassl's generate_fewshot_dataset, restated: group by label in order of appearance, random.sample."""
    groups = {}
    for item in items:
        groups.setdefault(item.label, []).append(item)
    out = []
    for label_items in groups.values():
        out.extend(random.sample(label_items, k) if len(label_items) >= k else label_items)
    return out


@pytest.mark.parametrize("shots,seed", [(1, 1), (4, 2), (16, 3), (8, 7)])
def test_draw_equals_the_coop_rule(shots, seed, tmp_path):
    d = _dataset()
    random.seed(seed)
    expected_train = _coop_rule(d.train, shots)
    expected_val = _coop_rule(d.val, min(shots, 4))
    got = draw_few_shot(d, shots, seed, cache=tmp_path)
    assert got.train == expected_train
    assert got.val == expected_val
    per_class = {c: sum(s.label == c for s in got.train) for c in range(d.num_classes)}
    assert per_class == {c: min(shots, n) for c, n in enumerate((30, 3, 25, 17, 9))}


def test_draw_is_cached_and_reused(tmp_path, monkeypatch):
    d = _dataset()
    first = draw_few_shot(d, 4, 1, cache=tmp_path)
    files = list(tmp_path.glob("toy-*-shot4-seed1.json"))
    assert len(files) == 1 and d.fingerprint in files[0].name
    from mma.probe.data import fewshot

    monkeypatch.setattr(fewshot, "sample_per_label", lambda *a: pytest.fail("the cached draw was not reused"))
    assert draw_few_shot(d, 4, 1, cache=tmp_path) == first


def test_a_changed_split_gets_a_new_cache_entry(tmp_path):
    a, b = _dataset(), _dataset(counts=(30, 3, 25, 17, 10))
    assert a.fingerprint != b.fingerprint
    draw_few_shot(a, 2, 1, cache=tmp_path)
    draw_few_shot(b, 2, 1, cache=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 2


@pytest.mark.parametrize("n", [2, 3, 10, 37, 101, 1000])
def test_base_novel_split(n):
    base, novel = split_base_novel(n)
    assert base == list(range(math.ceil(n / 2))) and novel == list(range(math.ceil(n / 2), n))
    assert not set(base) & set(novel)


def test_subsample_relabels_from_zero():
    samples = [Sample(str(i), i % 5) for i in range(20)]
    novel = subsample_classes(samples, [3, 4])
    assert sorted({s.label for s in novel}) == [0, 1]
    assert all(int(s.ref) % 5 == s.label + 3 for s in novel)


def test_base_novel_needs_two_classes():
    with pytest.raises(MmaError, match="at least 2 classes"):
        split_base_novel(1)
