"""Property-based tests (hypothesis) of the spec parsers and the CoOp few-shot / base-novel rules.

Each test states one invariant that must hold for every input hypothesis can build, not just the handful of
examples in test_specs.py / test_fewshot.py.
"""

from __future__ import annotations

import math
import os
import random
from collections import Counter

import open_clip
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from mma.errors import MmaError
from mma.probe.data import (
    DatasetSpec,
    ImageDataset,
    Sample,
    draw_few_shot,
    load_datasets,
    parse_data_spec,
    sample_per_label,
    split_base_novel,
    subsample_classes,
)
from mma.probe.embedded import EMBEDDED_NAME, register_config
from mma.probe.specs import DEFAULT_MODEL, ModelSpec, parse_model_spec

register_config()  # mma-tiny joins open_clip's registry, as parse_model_spec does
MODELS = sorted(open_clip.list_models())
PAIRS = sorted(open_clip.list_pretrained())  # (architecture, pretrained tag)
WHITESPACE = st.text(alphabet=" \t\n\r\f\v", max_size=4)
DATA_KINDS = ("builtin", "coop", "folder", "csv")


def _parse(parser, text):
    """``("ok", result)`` or ``("error", None)`` for an MmaError; any other exception propagates (and fails)."""
    try:
        return "ok", parser(text)
    except MmaError:
        return "error", None


# ----------------------------------------------------------------------------------------------- model specs


def _spec_texts():
    """Arbitrary text, and text built around the parser's own landmarks (known names, ':' and the schemas)."""
    return st.one_of(
        st.text(),
        st.builds(lambda n, rest: f"{n}:{rest}", st.sampled_from(MODELS), st.text(max_size=20)),
        st.builds(lambda n, rest: n + rest, st.sampled_from(MODELS), st.text(max_size=3)),
        st.builds(lambda s, rest: s + rest, st.sampled_from(["hf-hub:", "local-dir:", "HF-HUB:"]), st.text(max_size=8)),
    )


@settings(max_examples=150, deadline=None)
@given(_spec_texts())
@example("ViT-B-16:")
@example("ViT-B-16:~")
@example("ViT-B-16:\udcff")  # an undecodable byte in argv arrives as a lone surrogate
@example("mma-tiny:openai")
@example(":")
def test_model_spec_is_a_spec_or_one_mma_error(text):
    """Any text parses to a ModelSpec or raises MmaError; a parsed spec survives str() and a re-parse."""
    outcome, spec = _parse(parse_model_spec, text)
    if outcome == "ok":
        assert isinstance(spec, ModelSpec)
        assert parse_model_spec(str(spec)) == spec


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(MODELS))
def test_every_open_clip_name_parses_and_round_trips(name):
    """A bare open_clip architecture name is a valid spec with no pretrained part, and str() gives it back."""
    spec = parse_model_spec(name)
    assert spec == ModelSpec(name) and str(spec) == name
    assert parse_model_spec(str(spec)) == spec


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(PAIRS))
def test_every_pretrained_tag_parses_and_round_trips(pair):
    """NAME:TAG for each tag open_clip lists for NAME parses to exactly (NAME, TAG) and round-trips."""
    name, tag = pair
    assert tag in open_clip.list_pretrained_tags_by_model(name)
    spec = parse_model_spec(f"{name}:{tag}")
    assert spec == ModelSpec(name, tag) and str(spec) == f"{name}:{tag}"
    assert parse_model_spec(str(spec)) == spec
    assert not spec.is_random and not spec.has_schema


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(MODELS))
def test_random_weights_are_accepted_for_every_name(name):
    """NAME:random is valid for every architecture, the embedded one included, and is marked random."""
    spec = parse_model_spec(f"{name}:random")
    assert spec == ModelSpec(name, "random") and spec.is_random


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(MODELS), st.text(min_size=1, max_size=12).filter(lambda t: t.strip() and ":" not in t))
def test_unknown_tags_are_refused(name, tag):
    """NAME:TAG with a TAG that is not listed, not 'random' and not an existing file raises MmaError."""
    tags = [] if name == EMBEDDED_NAME else open_clip.list_pretrained_tags_by_model(name)
    tag = tag.strip()
    assume(tag not in tags and tag != "random" and not os.path.isfile(os.path.expanduser(tag)))
    with pytest.raises(MmaError):
        parse_model_spec(f"{name}:{tag}")


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("checkpoints")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(MODELS), st.from_regex(r"[A-Za-z0-9_.:=+-]{1,16}", fullmatch=True))
def test_an_existing_checkpoint_file_is_a_valid_pretrained_part(checkpoint_dir, name, filename):
    """NAME:/path/to/file (any file name, even one with ':') is kept as the path and round-trips."""
    path = checkpoint_dir / f"ckpt-{filename}"
    path.write_bytes(b"PK\x03\x04")  # begins like a torch.save archive: the spec is about the path
    spec = parse_model_spec(f"{name}:{path}")
    assert spec == ModelSpec(name, str(path))
    assert parse_model_spec(str(spec)) == spec


def test_a_checkpoint_path_with_a_tilde_is_expanded(tmp_path, monkeypatch):
    """``~`` in a checkpoint path is expanded before the file is looked up, and the spec keeps the full path."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "ck.pt").write_bytes(b"PK\x03\x04")
    assert parse_model_spec("ViT-B-32:~/ck.pt") == ModelSpec("ViT-B-32", str(tmp_path / "ck.pt"))


@settings(max_examples=30, deadline=None)
@given(st.one_of(st.none(), WHITESPACE))
def test_no_spec_means_the_embedded_default(text):
    """None, '' and whitespace-only text all give the embedded default model."""
    assert parse_model_spec(text) == ModelSpec(DEFAULT_MODEL) == ModelSpec(EMBEDDED_NAME)


@settings(max_examples=100, deadline=None)
@given(_spec_texts(), WHITESPACE, WHITESPACE)
def test_surrounding_whitespace_is_ignored(text, before, after):
    """Leading and trailing whitespace never changes the outcome (same spec, or an error both times)."""
    assert _parse(parse_model_spec, before + text + after) == _parse(parse_model_spec, text)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(MODELS), st.sampled_from([str.upper, str.lower, str.swapcase]))
def test_names_are_case_sensitive_and_the_error_names_the_real_one(name, change):
    """A name in the wrong case is refused, and the one-sentence error suggests the correctly-cased name."""
    wrong = change(name)
    assume(wrong not in MODELS)
    with pytest.raises(MmaError, match="did you mean") as info:
        parse_model_spec(wrong)
    assert repr(name) in str(info.value)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["hf-hub:", "local-dir:"]), st.text(max_size=20))
def test_schema_specs_are_kept_verbatim(schema, rest):
    """hf-hub:... and local-dir:... are passed through to open_clip unchanged (outer whitespace aside)."""
    text = (schema + rest).strip()
    spec = parse_model_spec(schema + rest)
    assert spec == ModelSpec(text) and spec.has_schema and not spec.is_random and str(spec) == text


# ------------------------------------------------------------------------------------------------ data specs


def _name_lists():
    """Comma-separated dataset lists with stray spaces, upper case and empty entries."""
    name = st.text(alphabet=st.characters(exclude_characters=",:/\\"), max_size=8)
    return st.lists(name, min_size=1, max_size=4).map(",".join)


def _data_texts():
    """Arbitrary text and text shaped like each source form, with odd case and odd separators."""
    kind = st.sampled_from([*DATA_KINDS, "BUILTIN", "Coop", "FOLDER", "csv ", " csv", "image", ""])
    part = st.one_of(st.text(max_size=12), _name_lists(), st.sampled_from(["/data", "C:\\data", "~/x", "a:b", ""]))
    return st.one_of(
        st.text(),
        st.builds(lambda k, p: f"{k}:{p}", kind, part),
        st.builds(lambda k, p, n: f"{k}:{p}:{n}", kind, part, _name_lists()),
    )


@settings(max_examples=200, deadline=None)
@given(_data_texts())
@example("coop:/data:")
@example("coop::")
@example("builtin: , ")
@example("coop:C:\\data")
def test_data_spec_is_a_spec_or_one_mma_error(text):
    """Any text parses to a DatasetSpec or raises MmaError; a parsed spec survives str() and a re-parse."""
    outcome, spec = _parse(parse_data_spec, text)
    if outcome == "ok":
        assert isinstance(spec, DatasetSpec) and spec.kind in DATA_KINDS
        assert parse_data_spec(str(spec)) == spec


@pytest.mark.parametrize("value", [None, 3, b"builtin", ["builtin"]])
def test_a_data_spec_that_is_not_text_is_an_mma_error(value):
    """A non-string data spec is refused with MmaError, not a TypeError."""
    with pytest.raises(MmaError):
        parse_data_spec(value)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(DATA_KINDS), st.sampled_from([str.upper, str.title, str.lower]), _name_lists(), WHITESPACE)
def test_source_kind_is_case_insensitive(kind, change, rest, pad):
    """The source kind may be written in any case; outer whitespace is ignored."""
    assert _parse(parse_data_spec, f"{pad}{change(kind)}:{rest}{pad}") == _parse(parse_data_spec, f"{kind}:{rest}")


@settings(max_examples=100, deadline=None)
@given(_name_lists())
def test_builtin_names_are_stripped_lowercased_and_never_empty(names):
    """builtin:A,B keeps each non-blank name stripped and lower-cased, in order; a list of only commas, or nothing
    after the colon, is an error (as folder: is)."""
    expected = tuple(n.strip().lower() for n in names.split(",") if n.strip())
    outcome, spec = _parse(parse_data_spec, f"builtin:{names}")
    if expected:
        assert outcome == "ok" and spec == DatasetSpec("builtin", None, expected)
    else:
        assert outcome == "error"


def test_bare_builtin_means_every_builtin_dataset_and_builtin_colon_is_an_error():
    """'builtin' means the whole suite (names None); 'builtin:' names nothing, an error naming both forms."""
    assert parse_data_spec("builtin") == DatasetSpec("builtin", None, None)
    with pytest.raises(MmaError, match=r"write builtin for the whole suite, or builtin:NAME,\.\.\. for some"):
        parse_data_spec("builtin:")


_PATH = st.text(min_size=1, max_size=20).filter(lambda t: t == t.strip())


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["folder", "csv"]), _PATH)
def test_folder_and_csv_paths_are_kept_verbatim(kind, path):
    """folder:PATH and csv:PATH keep PATH exactly (case, inner spaces and colons included)."""
    assert parse_data_spec(f"{kind}:{path}") == DatasetSpec(kind, path, None)


@settings(max_examples=100, deadline=None)
@given(_PATH, _name_lists())
def test_coop_root_and_names(root, names):
    """coop:ROOT:A,B splits at the last ':'; the names are stripped and lower-cased like builtin's."""
    expected = tuple(n.strip().lower() for n in names.split(",") if n.strip())
    outcome, spec = _parse(parse_data_spec, f"coop:{root}:{names}")
    if expected:
        assert outcome == "ok" and spec == DatasetSpec("coop", root, expected)
    else:
        assert outcome == "error"


@settings(max_examples=60, deadline=None)
@given(_PATH, st.text(max_size=10).filter(lambda t: ":" not in t))
def test_coop_root_ending_in_a_path_has_no_names(root, tail):
    """coop:ROOT whose last ':'-part contains a path separator is all root (a Windows drive, a URL-ish path)."""
    rest = f"{root}:{tail}/x"
    assert parse_data_spec(f"coop:{rest}") == DatasetSpec("coop", rest.strip(), None)


@pytest.mark.parametrize("text", ["folder:", "csv:", "coop:", "coop:  ", "", "   "])
def test_a_source_without_its_path_is_an_error(text):
    """folder:, csv: and coop: need a path; an empty spec is an error."""
    with pytest.raises(MmaError):
        parse_data_spec(text)


_CSV_FIELD = st.one_of(st.text(max_size=6), st.sampled_from(["train", "val", "test", "a.png", "", '"', '"x,y"', "\n"]))
_CSV = st.builds(
    lambda header, rows: "\n".join([header, *rows]).encode("utf-8", "surrogatepass"),
    st.sampled_from(["path,label", "path,label,split", "label,path", "path", "x", "\ufeffpath,label"]),
    st.lists(st.lists(_CSV_FIELD, max_size=4).map(",".join), max_size=6),
)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return tmp_path_factory.mktemp("manifest") / "m.csv"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(_CSV, st.binary(max_size=60)))
@example(b"\xff\xfe path,label")  # not UTF-8
@example(b'path,label\n"x,y')  # an unterminated quote leaves a row without a label
@example(b"path\n,")  # a row longer than its header
@example(b"path,label\n")  # a header and no rows
def test_any_csv_manifest_is_a_dataset_or_one_mma_error(manifest, content):
    """csv:PATH with any file content loads a consistent dataset (labels 0..n-1) or raises MmaError."""
    manifest.write_bytes(content)
    outcome, datasets = _parse(load_datasets, f"csv:{manifest}")
    if outcome == "ok":
        (d,) = datasets
        labels = {s.label for split in d.splits.values() for s in split}
        assert labels == set(range(d.num_classes))


def test_a_csv_manifest_saved_with_a_byte_order_mark_loads(manifest):
    """Spreadsheet programs write UTF-8 CSVs with a BOM; the 'path' column must still be found."""
    manifest.write_bytes("path,label\na.png,cat\nb.png,dog\n".encode("utf-8-sig"))
    (d,) = load_datasets(f"csv:{manifest}")
    assert d.classnames == ["cat", "dog"]


# --------------------------------------------------------------------------------------- few-shot draw rules

LABELS = st.lists(st.integers(min_value=0, max_value=7), max_size=80)


def _samples(labels: list[int], split: str = "train") -> list[Sample]:
    return [Sample(f"{split}/{i}.png", y) for i, y in enumerate(labels)]


def _dataset(train_labels: list[int], val_labels: list[int]) -> ImageDataset:
    n = max([*train_labels, *val_labels, 1]) + 1
    return ImageDataset(
        "toy",
        [f"class_{c}" for c in range(n)],
        {"train": _samples(train_labels, "train"), "val": _samples(val_labels, "val")},
        loader=lambda ref: Image.new("RGB", (4, 4)),
    )


def _check_draw(drawn: list[Sample], population: list[Sample], k: int) -> None:
    """min(k, available) per label, a subset of the population, no sample twice."""
    available = Counter(s.label for s in population)
    got = Counter(s.label for s in drawn)
    assert got == {y: min(k, n) for y, n in available.items()}
    assert set(drawn) <= set(population)
    assert len(set(drawn)) == len(drawn)


@settings(max_examples=150, deadline=None)
@given(LABELS, st.integers(min_value=1, max_value=40), st.integers(min_value=0, max_value=2**32))
def test_sample_per_label_draws_min_k_available(labels, k, seed):
    """Every label gets exactly min(k, available) distinct samples of its own, drawn from the input."""
    items = _samples(labels)
    drawn = sample_per_label(items, k, random.Random(seed))
    _check_draw(drawn, items, k)
    assert sample_per_label(items, k, random.Random(seed)) == drawn  # same seed, same draw


@settings(max_examples=100, deadline=None)
@given(LABELS, st.integers(min_value=1, max_value=10), st.integers(min_value=0, max_value=1000))
def test_sample_per_label_groups_labels_in_order_of_first_appearance(labels, k, seed):
    """The draw lists each label's samples together, labels in the order they first appear (Dassl's order)."""
    drawn = sample_per_label(_samples(labels), k, random.Random(seed))
    runs = [y for i, y in enumerate(s.label for s in drawn) if i == 0 or drawn[i - 1].label != y]
    assert runs == list(dict.fromkeys(labels))


@settings(max_examples=100, deadline=None)
@given(LABELS, LABELS, st.integers(min_value=1, max_value=40), st.integers(min_value=0, max_value=2**32))
def test_draw_few_shot_gives_k_train_and_min_k_4_val(train, val, shots, seed):
    """draw_few_shot: min(K, available) train and min(K, 4, available) val per label, deterministic per seed."""
    d = _dataset(train, val)
    fs = draw_few_shot(d, shots, seed, cache=False)
    _check_draw(fs.train, d.train, shots)
    _check_draw(fs.val, d.val, min(shots, 4))
    assert (fs.shots, fs.seed) == (shots, seed)
    assert draw_few_shot(d, shots, seed, cache=False) == fs


@settings(max_examples=50, deadline=None)
@given(LABELS, LABELS, st.integers(max_value=0), st.integers(min_value=0, max_value=1000))
def test_draw_few_shot_with_no_positive_k_takes_everything(train, val, shots, seed):
    """shots <= 0 means "all samples": train and val come back whole, in their original order."""
    d = _dataset(train, val)
    fs = draw_few_shot(d, shots, seed, cache=False)
    assert fs.train == d.train and fs.val == d.val


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(LABELS, LABELS, st.integers(min_value=1, max_value=20), st.integers(min_value=0, max_value=50))
def test_a_cached_draw_equals_a_fresh_one(tmp_path_factory, train, val, shots, seed):
    """Writing a draw to the cache and reading it back gives exactly the draw made without a cache."""
    folder = tmp_path_factory.mktemp("fewshot")
    d = _dataset(train, val)
    fresh = draw_few_shot(d, shots, seed, cache=False)
    assert draw_few_shot(d, shots, seed, cache=folder) == fresh  # written
    assert draw_few_shot(d, shots, seed, cache=folder) == fresh  # read back


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=2, max_value=5000))
def test_base_novel_split_is_a_disjoint_cover_with_base_first(n):
    """Base = the first ceil(n/2) labels, novel = the rest: disjoint, together all n, base never smaller."""
    base, novel = split_base_novel(n)
    assert base + novel == list(range(n))
    assert len(base) == math.ceil(n / 2) and len(base) - len(novel) in (0, 1)


@given(st.integers(max_value=1))
def test_base_novel_split_needs_two_classes(n):
    """Fewer than two classes cannot be split into base and novel: MmaError."""
    with pytest.raises(MmaError):
        split_base_novel(n)


@settings(max_examples=150, deadline=None)
@given(LABELS, st.sets(st.integers(min_value=0, max_value=9)).map(sorted), st.randoms(use_true_random=False))
def test_subsample_classes_relabels_from_zero_in_order(labels, keep, rnd):
    """Only kept labels survive, relabelled to 0..len(keep)-1 in sorted order; refs and order are kept."""
    items = _samples(labels)
    shuffled = list(keep)
    rnd.shuffle(shuffled)  # the order *keep* is given in does not matter
    out = subsample_classes(items, shuffled)
    kept = [s for s in items if s.label in keep]
    assert [s.ref for s in out] == [s.ref for s in kept]
    assert [s.label for s in out] == [keep.index(s.label) for s in kept]
    assert all(0 <= s.label < len(keep) for s in out)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=80), st.integers(1, 8), st.integers(0, 99))
def test_base_and_novel_tasks_partition_the_draw(labels, shots, seed):
    """CoOp's order (draw over all classes, then restrict): base and novel draws split the full draw exactly."""
    d = _dataset(labels, [])
    n = d.num_classes
    assume(n >= 2)
    fs = draw_few_shot(d, shots, seed, cache=False)
    base, novel = split_base_novel(n)
    on_base, on_novel = subsample_classes(fs.train, base), subsample_classes(fs.train, novel)
    assert len(on_base) + len(on_novel) == len(fs.train)
    assert {s.ref for s in on_base} | {s.ref for s in on_novel} == {s.ref for s in fs.train}
    assert all(s.label < len(base) for s in on_base) and all(s.label < len(novel) for s in on_novel)
