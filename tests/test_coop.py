"""The CoOp-layout readers (``coop:ROOT``), on small fake trees with real file names and tiny images."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest
from PIL import Image

from mma.errors import MmaError
from mma.probe.data import load_datasets, parse_data_spec
from mma.probe.data.coop import COOP_DATASETS, describe_coop, load_coop

# name: (dataset folder, image folder inside it, split-file stem, class folders). Class folders with
# underscores check that class names come out with spaces.
ZHOU = {
    "caltech101": ("caltech-101", "101_ObjectCategories", "Caltech101", ["accordion", "face", "wild_cat"]),
    "oxford_pets": ("oxford_pets", "images", "OxfordPets", ["Abyssinian", "american_bulldog"]),
    "stanford_cars": ("stanford_cars", "", "StanfordCars", ["2012 Tesla Model S", "Audi TT RS Coupe 2012"]),
    "oxford_flowers": ("oxford_flowers", "jpg", "OxfordFlowers", ["pink primrose", "moon orchid"]),
    "food101": ("food-101", "images", "Food101", ["apple_pie", "baby_back_ribs"]),
    "sun397": ("sun397", "SUN397", "SUN397", ["a/abbey", "a/airplane_cabin"]),
    "dtd": ("dtd", "images", "DescribableTextures", ["banded", "blotchy", "braided"]),
    "eurosat": ("eurosat", "2750", "EuroSAT", ["AnnualCrop", "Forest", "Herbaceous_Vegetation"]),
    "ucf101": ("ucf101", "UCF-101-midframes", "UCF101", ["Apply_Eye_Makeup", "Archery"]),
}
PER_CLASS = {"train": 2, "val": 1, "test": 1}

WNIDS = {
    "n01440764": "tench",
    "n01443537": "goldfish",
    "n01484850": "great white shark",
    "n01491361": "tiger shark",
    "n01494475": "hammerhead shark",
}
VARIANTS = ["707-320", "Boeing 737-200", "Cessna 172", "F-16A/B"]


def write_image(path: Path, mode: str = "RGB") -> None:
    """An 8x8 image, JPEG or PNG by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.new(mode, (8, 8), 128).save(path, format=fmt)


def write_classnames(path: Path, names: dict[str, str] = WNIDS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{w} {n}\n" for w, n in names.items()))


class FakeCoop:
    """Builds CoOp's DATASETS.md layout under one root, one dataset at a time."""

    def __init__(self, root: Path):
        self.root = root

    def zhou(self, name: str, *, images: str | None = None, extra: dict | None = None) -> Path:
        """A split_zhou dataset; ``extra`` adds raw entries per split. Returns the split file."""
        folder, image_sub, stem, classes = ZHOU[name]
        image_dir = self.root / folder / (image_sub if images is None else images)
        split: dict[str, list] = {s: [] for s in PER_CLASS}
        for label, cls in enumerate(classes):
            for s, n in PER_CLASS.items():
                for i in range(n):
                    ref = f"{cls}/{cls.split('/')[-1]}_{s}_{i}.jpg"
                    write_image(image_dir / ref, mode="L" if i == 0 else "RGB")
                    split[s].append([ref, label, cls.split("/")[-1]])
        for s, entries in (extra or {}).items():
            split[s] += entries
        path = self.root / folder / f"split_zhou_{stem}.json"
        path.write_text(json.dumps(split))
        return path

    def fgvc(self) -> None:
        base = self.root / "fgvc_aircraft"
        base.mkdir(parents=True)
        (base / "variants.txt").write_text("\n".join(VARIANTS) + "\n")
        image_id = 1000000
        for s, n in PER_CLASS.items():
            lines = []
            for variant in VARIANTS:
                for _ in range(n):
                    image_id += 1
                    write_image(base / "images" / f"{image_id:07d}.jpg")
                    lines.append(f"{image_id:07d} {variant}")
            (base / f"images_variant_{s}.txt").write_text("\n".join(lines) + "\n")

    def imagenet(self, *, images: bool = True) -> None:
        write_classnames(self.root / "imagenet" / "classnames.txt")
        if not images:
            return
        for i, wnid in enumerate(WNIDS):
            for j in range(2):
                write_image(self.root / "imagenet/images/train" / wnid / f"{wnid}_{j}.JPEG")
            write_image(self.root / "imagenet/images/val" / wnid / f"ILSVRC2012_val_{i:08d}.JPEG")

    def imagenetv2(self, *, own_classnames: bool = False) -> None:
        base = self.root / "imagenetv2"
        for label in range(len(WNIDS)):
            write_image(base / "imagenetv2-matched-frequency-format-val" / str(label) / f"{label}abc.jpeg")
        if own_classnames:
            write_classnames(base / "classnames.txt", {w: f"{n} v2" for w, n in WNIDS.items()})

    def wnid_folders(self, folder: str, images: str, wnids) -> None:
        for wnid in wnids:
            for j in range(2):
                write_image(self.root / folder / images / wnid / f"{j}.jpg")
        write_classnames(self.root / folder / "classnames.txt")

    def everything(self) -> None:
        for name in ZHOU:
            self.zhou(name)
        self.fgvc()
        self.imagenet()
        self.imagenetv2()
        self.wnid_folders("imagenet-sketch", "images", WNIDS)
        self.wnid_folders("imagenet-adversarial", "imagenet-a", ["n01494475", "n01443537"])
        self.wnid_folders("imagenet-rendition", "imagenet-r", ["n01491361", "n01440764", "n01484850"])


@pytest.fixture
def fake(tmp_path) -> FakeCoop:
    return FakeCoop(tmp_path / "data")


def load_one(fake: FakeCoop, name: str):
    (ds,) = load_coop(fake.root, [name])
    return ds


def sizes(ds) -> tuple[int, int, int]:
    return len(ds.train), len(ds.val), len(ds.test)


# -- the table --------------------------------------------------------------------------------------


def test_names_and_describe():
    assert COOP_DATASETS[0] == "imagenet" and COOP_DATASETS[-1] == "imagenet_r"
    assert len(COOP_DATASETS) == 15 == len(set(COOP_DATASETS))
    rows = describe_coop()
    assert [r["name"] for r in rows] == list(COOP_DATASETS)
    assert all(set(r) == {"name", "classes", "train", "val", "test", "source", "licence"} for r in rows)
    classes = {r["name"]: r["classes"] for r in rows}
    assert classes["imagenet"] == 1000 and classes["caltech101"] == 100 and classes["oxford_pets"] == 37
    assert classes["imagenet_a"] == classes["imagenet_r"] == 200
    pets = rows[COOP_DATASETS.index("oxford_pets")]
    assert "oxford_pets/" in pets["source"] and "split_zhou_OxfordPets.json" in pets["source"]
    assert rows[COOP_DATASETS.index("imagenet_r")]["train"] is None


# -- split_zhou readers -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ZHOU))
def test_zhou_reader(fake, name):
    split_file = fake.zhou(name)
    ds = load_one(fake, name)
    classes = ZHOU[name][3]
    assert ds.name == name and ds.num_classes == len(classes)
    assert ds.classnames == [c.split("/")[-1].replace("_", " ") for c in classes]
    n = len(classes)
    assert sizes(ds) == (2 * n, n, n)
    assert {s.label for s in ds.test} == set(range(n))
    assert ds.fingerprint == hashlib.sha256(split_file.read_bytes()).hexdigest()[:16]
    assert ds.source == f"coop:{fake.root}"
    image = ds.load_image(ds.train[0])  # written as greyscale
    assert image.mode == "RGB" and image.size == (8, 8)
    assert ds.train[0].ref == f"{classes[0]}/{classes[0].split('/')[-1]}_train_0.jpg"


def test_caltech_drops_background_and_faces_easy(fake):
    extra = {
        "train": [["BACKGROUND_Google/image_0001.jpg", 1, "BACKGROUND_Google"]],
        "test": [["Faces_easy/image_0001.jpg", 7, "Faces_easy"]],
    }
    fake.zhou("caltech101", extra=extra)
    ds = load_one(fake, "caltech101")
    assert ds.classnames == ["accordion", "face", "wild cat"]
    assert sizes(ds) == (6, 3, 3)
    refs = [s.ref for split in ds.splits.values() for s in split]
    assert not any("BACKGROUND" in ref or "Faces_easy" in ref for ref in refs)


def test_caltech_relabels_when_an_excluded_class_had_a_label(fake):
    split_file = fake.zhou("caltech101")
    data = json.loads(split_file.read_text())
    for entries in data.values():  # labels 1, 2 become 2, 3; label 1 goes to the background class
        for e in entries:
            e[1] = e[1] + 1 if e[1] >= 1 else e[1]
        entries.append(["BACKGROUND_Google/image_0002.jpg", 1, "BACKGROUND_Google"])
    split_file.write_text(json.dumps(data))
    ds = load_one(fake, "caltech101")
    assert ds.classnames == ["accordion", "face", "wild cat"]
    assert sorted({s.label for s in ds.train}) == [0, 1, 2]


def test_dtd_accepts_the_nested_images_folder(fake):
    fake.zhou("dtd", images="dtd/images")
    ds = load_one(fake, "dtd")
    assert ds.load_image(ds.test[0]).mode == "RGB"


# -- FGVCAircraft --------------------------------------------------------------------------------------


def test_fgvc_variants_with_spaces(fake):
    fake.fgvc()
    ds = load_one(fake, "fgvc_aircraft")
    assert ds.classnames == VARIANTS
    assert sizes(ds) == (8, 4, 4)
    by_label = {s.label for s in ds.train}
    assert by_label == {0, 1, 2, 3}
    cessna = [s for s in ds.train if s.label == VARIANTS.index("Cessna 172")]
    assert len(cessna) == 2 and cessna[0].ref.endswith(".jpg")
    assert ds.load_image(cessna[0]).mode == "RGB"


def test_fgvc_unknown_variant(fake):
    fake.fgvc()
    path = fake.root / "fgvc_aircraft/images_variant_val.txt"
    path.write_text(path.read_text() + "1234567 Boeing 999\n")
    with pytest.raises(MmaError, match=r"images_variant_val\.txt.*'Boeing 999'"):
        load_one(fake, "aircraft")


# -- ImageNet and its shifts ------------------------------------------------------------------------


def test_imagenet_val_is_the_test_split(fake):
    fake.imagenet()
    ds = load_one(fake, "imagenet")
    assert ds.classnames == list(WNIDS.values())  # sorted wnid order
    assert sizes(ds) == (10, 5, 5)
    assert ds.val == ds.test and ds.val is not ds.test
    assert ds.test[2].ref == "val/n01484850/ILSVRC2012_val_00000002.JPEG" and ds.test[2].label == 2
    assert ds.train[0].ref == "train/n01440764/n01440764_0.JPEG"
    assert ds.load_image(ds.test[0]).mode == "RGB"


def test_imagenetv2_reads_imagenet_classnames(fake):
    fake.imagenet(images=False)
    fake.imagenetv2()
    ds = load_one(fake, "imagenet_v2")
    assert ds.name == "imagenetv2" and ds.classnames == list(WNIDS.values())
    assert sizes(ds) == (0, 0, 5)
    assert [(s.ref, s.label) for s in ds.test[:2]] == [("0/0abc.jpeg", 0), ("1/1abc.jpeg", 1)]
    assert ds.load_image(ds.test[-1]).mode == "RGB"


def test_imagenetv2_prefers_its_own_classnames(fake):
    fake.imagenetv2(own_classnames=True)
    assert load_one(fake, "imagenetv2").classnames[0] == "tench v2"


def test_imagenet_sketch(fake):
    fake.wnid_folders("imagenet-sketch", "images", WNIDS)
    ds = load_one(fake, "imagenet-sketch")
    assert ds.classnames == list(WNIDS.values())
    assert sizes(ds) == (0, 0, 10)


@pytest.mark.parametrize(
    "alias, folder, images",
    [
        ("imagenet-a", "imagenet-adversarial", "imagenet-a"),
        ("ImageNet-R", "imagenet-rendition", "imagenet-r"),
    ],
)
def test_imagenet_a_r_subset_labels(fake, alias, folder, images):
    fake.wnid_folders(folder, images, ["n01494475", "n01443537", "n01484850"])  # not in sorted order
    (fake.root / folder / images / "README.txt").write_text("not a class")
    ds = load_one(fake, alias)
    assert ds.classnames == ["goldfish", "great white shark", "hammerhead shark"]
    assert sizes(ds) == (0, 0, 6)
    assert [s.label for s in ds.test if s.ref.startswith("n01494475/")] == [2, 2]


# -- choosing datasets --------------------------------------------------------------------------------


def test_everything_found_in_order(fake):
    fake.everything()
    datasets = load_coop(fake.root, None)
    assert [d.name for d in datasets] == list(COOP_DATASETS)
    assert len({d.fingerprint for d in datasets}) == 15
    assert [d.num_classes for d in datasets][-2:] == [2, 3]
    assert [d.fingerprint for d in load_coop(fake.root, None)] == [d.fingerprint for d in datasets]


def test_classnames_only_imagenet_is_not_a_dataset(fake):
    fake.imagenet(images=False)
    fake.imagenetv2()
    assert [d.name for d in load_coop(fake.root, None)] == ["imagenetv2"]


@pytest.mark.parametrize(
    "alias, name",
    [
        ("flowers102", "oxford_flowers"),
        ("Pets", "oxford_pets"),
        ("CARS", "stanford_cars"),
        ("DescribableTextures", "dtd"),
        ("EuroSAT", "eurosat"),
        ("food-101", "food101"),
    ],
)
def test_aliases(fake, alias, name):
    fake.zhou(name)
    assert load_one(fake, alias).name == name


def test_duplicates_are_loaded_once(fake):
    fake.zhou("eurosat")
    assert [d.name for d in load_coop(fake.root, ["eurosat", "EuroSAT"])] == ["eurosat"]


def test_loader_pickles(fake):
    fake.zhou("eurosat")
    ds = load_one(fake, "eurosat")
    assert pickle.loads(pickle.dumps(ds.loader))(ds.test[0].ref).size == (8, 8)


def test_data_spec_routes_here(fake):
    fake.zhou("eurosat")
    fake.zhou("dtd")
    spec = f"coop:{fake.root}:eurosat,dtd"
    parsed = parse_data_spec(spec)
    assert (parsed.kind, parsed.root, parsed.names) == ("coop", str(fake.root), ("eurosat", "dtd"))
    datasets = load_datasets(spec)
    assert [d.name for d in datasets] == ["eurosat", "dtd"]
    assert all(d.source == spec for d in datasets)
    assert [d.name for d in load_datasets(f"coop:{fake.root}")] == ["dtd", "eurosat"]


# -- errors -------------------------------------------------------------------------------------------


def test_missing_root(tmp_path):
    with pytest.raises(MmaError, match=r"CoOp data root .*nowhere.* does not exist"):
        load_coop(tmp_path / "nowhere", None)


def test_no_dataset_found_lists_folders(tmp_path):
    with pytest.raises(MmaError, match=r"No CoOp dataset.*caltech-101/.*imagenet-rendition/"):
        load_coop(tmp_path, None)


def test_unknown_name_with_hint(fake):
    fake.zhou("eurosat")
    message = r"Unknown CoOp dataset 'eurosatt' \(did you mean 'eurosat'.*valid names: imagenet, "
    with pytest.raises(MmaError, match=message):
        load_coop(fake.root, ["eurosatt"])


def test_empty_name_list(fake):
    fake.zhou("eurosat")
    with pytest.raises(MmaError, match="list is empty"):
        load_coop(fake.root, [])


def test_missing_split_file(fake):
    fake.zhou("oxford_pets").unlink()
    with pytest.raises(MmaError, match=r"'oxford_pets' is incomplete: .*split_zhou_OxfordPets\.json"):
        load_one(fake, "oxford_pets")


def test_missing_dataset_folder(fake):
    fake.zhou("eurosat")
    with pytest.raises(MmaError, match=r"'sun397' is incomplete: .*sun397/SUN397.* does not exist"):
        load_coop(fake.root, ["eurosat", "sun397"])


def test_missing_fgvc_split(fake):
    fake.fgvc()
    (fake.root / "fgvc_aircraft/images_variant_test.txt").unlink()
    with pytest.raises(MmaError, match=r"images_variant_test\.txt' does not exist"):
        load_one(fake, "fgvc_aircraft")


def test_malformed_json(fake):
    fake.zhou("eurosat").write_text('{"train": [')
    with pytest.raises(MmaError, match=r"split_zhou_EuroSAT\.json' is not valid JSON"):
        load_one(fake, "eurosat")


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"train": [], "val": []}', "must be a JSON object with lists"),
        ('[["a.jpg", 0, "a"]]', "must be a JSON object with lists"),
        ('{"train": [["a.jpg", 0]], "val": [], "test": []}', r"malformed entry train\[0\]"),
        ('{"train": [["a.jpg", "x", "a"]], "val": [], "test": []}', r"malformed entry train\[0\]"),
        ('{"train": [["a.jpg", 0, "a"], ["b.jpg", 0, "b"]], "val": [], "test": []}', "two class names"),
        ('{"train": [], "val": [], "test": []}', "lists no images"),
    ],
)
def test_bad_split_contents(fake, content, message):
    fake.zhou("eurosat").write_text(content)
    with pytest.raises(MmaError, match=message):
        load_one(fake, "eurosat")


def test_imagenet_missing_class_folder(fake):
    fake.imagenet()
    for p in (fake.root / "imagenet/images/val/n01491361").iterdir():
        p.unlink()
    (fake.root / "imagenet/images/val/n01491361").rmdir()
    with pytest.raises(MmaError, match=r"imagenet/images/val/n01491361' does not exist"):
        load_one(fake, "imagenet")


def test_imagenet_folder_not_in_classnames(fake):
    fake.imagenet()
    write_image(fake.root / "imagenet/images/train/n99999999/x.JPEG")
    with pytest.raises(MmaError, match=r"not in .*classnames\.txt.*n99999999"):
        load_one(fake, "imagenet")


def test_shift_without_any_classnames(fake):
    fake.imagenetv2()
    with pytest.raises(MmaError, match=r"imagenetv2/classnames\.txt' does not exist"):
        load_one(fake, "imagenetv2")


def test_classnames_line_without_name(fake):
    fake.imagenet()
    (fake.root / "imagenet/classnames.txt").write_text("n01440764\n")
    with pytest.raises(MmaError, match=r"classnames\.txt' line 1 has no class name"):
        load_one(fake, "imagenet")
