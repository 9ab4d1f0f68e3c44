"""folder:PATH and csv:PATH sources, the data-spec parser, and unreadable images."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mma.errors import MmaError
from mma.probe.data import ImageReader, ReadReport, load_datasets, parse_data_spec
from mma.probe.data.reading import collate_readable


def _tree(root, classes=("golden_retriever", "tabby_cat"), per_class=5, splits=None):
    for c in classes:
        for split in splits or [None]:
            folder = root / split / c if split else root / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.new("L" if i % 2 else "RGB", (6, 5), color=i * 20).save(folder / f"{i}.png")
    return root


@pytest.mark.parametrize(
    "text,kind,root,names",
    [
        ("builtin", "builtin", None, None),
        ("builtin:digits,Shapes", "builtin", None, ("digits", "shapes")),
        ("coop:/data", "coop", "/data", None),
        ("coop:/data:eurosat,dtd", "coop", "/data", ("eurosat", "dtd")),
        ("folder:/x/y", "folder", "/x/y", None),
        ("csv:rel/m.csv", "csv", "rel/m.csv", None),
    ],
)
def test_parse_data_spec(text, kind, root, names):
    spec = parse_data_spec(text)
    assert (spec.kind, spec.root, spec.names) == (kind, root, names)


@pytest.mark.parametrize(
    "text,match",
    [
        ("imagenet:/x", r"unknown source 'imagenet'"),
        ("folder", r"needs a path"),
        ("builtn", r"did you mean 'builtin'"),
        ("", r"empty"),
        ("builtin:,", r"empty"),
    ],
)
def test_bad_data_specs(text, match):
    with pytest.raises(MmaError, match=match):
        parse_data_spec(text)


def test_folder_without_splits(tmp_path):
    (d,) = load_datasets(f"folder:{_tree(tmp_path / 'pets')}")
    assert d.name == "pets" and d.classnames == ["golden retriever", "tabby cat"]
    assert len(d.train) + len(d.val) + len(d.test) == 10
    assert {s.label for s in d.test} == {0, 1}
    assert d.load_image(d.train[0]).mode == "RGB"
    assert d.prompts() == ["a photo of a golden retriever.", "a photo of a tabby cat."]


def test_folder_with_splits(tmp_path):
    (d,) = load_datasets(f"folder:{_tree(tmp_path / 'pets', splits=['train', 'test'])}", template="art of a {}.")
    assert len(d.train) == 10 and len(d.test) == 10 and d.val == []
    assert d.prompts()[0] == "art of a golden retriever."


def test_csv_manifest(tmp_path):
    _tree(tmp_path / "imgs")
    lines = ["path,label,split"] + [
        f"imgs/golden_retriever/{i}.png,dog,{'train' if i < 3 else 'test'}" for i in range(5)
    ]
    lines += [f"imgs/tabby_cat/{i}.png,cat,val" for i in range(5)]
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    (d,) = load_datasets(f"csv:{tmp_path / 'm.csv'}")
    assert d.classnames == ["cat", "dog"] and (len(d.train), len(d.val), len(d.test)) == (3, 5, 2)
    assert d.load_image(d.val[0]).size == (6, 5)


def test_csv_errors(tmp_path):
    (tmp_path / "bad.csv").write_text("file,cls\na.png,x\n")
    with pytest.raises(MmaError, match=r"needs columns 'path' and 'label'"):
        load_datasets(f"csv:{tmp_path / 'bad.csv'}")
    (tmp_path / "split.csv").write_text("path,label,split\na.png,x,training\n")
    with pytest.raises(MmaError, match=r"split values \['training'\]"):
        load_datasets(f"csv:{tmp_path / 'split.csv'}")
    with pytest.raises(MmaError, match="does not exist"):
        load_datasets(f"csv:{tmp_path / 'missing.csv'}")


def test_missing_folder_names_the_layout(tmp_path):
    with pytest.raises(MmaError, match=r"does not exist; folder:PATH expects PATH/CLASS/image.jpg"):
        load_datasets(f"folder:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MmaError, match="no class subfolders"):
        load_datasets(f"folder:{tmp_path / 'empty'}")


def test_unreadable_images_are_skipped_and_counted_or_strict(tmp_path):
    root = _tree(tmp_path / "pets", per_class=3)
    (root / "tabby_cat" / "broken.png").write_bytes(b"not a png")
    (d,) = load_datasets(f"folder:{root}")
    samples = d.train + d.val + d.test
    reader = ImageReader(d, samples, lambda im: torch.zeros(3, 2, 2))
    report = ReadReport()
    loader = torch.utils.data.DataLoader(reader, batch_size=4, collate_fn=collate_readable)
    seen = 0
    for idx, _images, _labels, bad in loader:
        seen += len(idx)
        for i in bad:
            report.add(samples[i].ref)
    assert seen == len(samples) - 1 and report.unreadable == 1 and report.examples == ["tabby_cat/broken.png"]
    strict = ImageReader(d, samples, lambda im: torch.zeros(3, 2, 2), strict=True)
    broken = next(i for i, s in enumerate(samples) if s.ref.endswith("broken.png"))
    with pytest.raises(MmaError, match=r"Cannot read image 'tabby_cat/broken.png'.*drop --strict"):
        strict[broken]
