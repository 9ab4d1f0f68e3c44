"""Per-tower depth: the start-block currency (mma.adapters.depth), the settings that carry it from the probe
selection and the flags, MMA's per-tower adapters, and the regret report of sweep-k."""

from __future__ import annotations

import json

import open_clip
import pytest

from mma.adapters.depth import check_starts, depth_key, relative_start, tower_starts
from mma.adapters.mma import MultiModalAdapter
from mma.app.settings import TrainSelectedConfig, resolve_settings
from mma.errors import MmaError
from mma.probe.layers import layer_maps


def test_depth_key_names_shared_and_per_tower_depths():
    assert depth_key({"k": 5}) == depth_key({"k": 5, "k_image": None, "k_text": None}) == "k5"
    assert depth_key({"k": 4, "k_image": 3, "k_text": 7}) == "ki3-kt7"
    assert depth_key({"k": 4, "k_text": 7}) == "k4-kt7"  # the image tower follows k


def test_tower_starts_follow_k_by_relative_depth():
    assert tower_starts({"k": 5}, {"image": 12, "text": 12}) == {"image": 5, "text": 5}
    # ViT-L-14: 24 image blocks, 12 text blocks; k = 5 of the shallower tower starts image block 9 (SPEC.md)
    assert tower_starts({"k": 5}, {"image": 24, "text": 12}) == {"image": 9, "text": 5}
    assert relative_start(1, 24, 12) == 1 and relative_start(12, 24, 12) == 23
    assert tower_starts({"k": 5, "k_image": 2}, {"image": 12, "text": 12}) == {"image": 2, "text": 5}


def test_check_starts_refuses_out_of_range_and_apart_towers_in_one_sentence():
    depths = {"image": 12, "text": 12}
    with pytest.raises(MmaError, match=r"k=13 is out of range .* \(valid: 1\.\.12\)"):
        check_starts("MMA", {"k": 13}, depths, "m", per_tower=True)
    with pytest.raises(MmaError, match=r"k_text=0 is out of range for the text tower .* \(valid: 1\.\.12"):
        check_starts("MMA", {"k": 4, "k_text": 0}, depths, "m", per_tower=True)
    with pytest.raises(MmaError, match="starts both towers at one depth"):
        check_starts("MaPLe", {"k": 4, "k_image": 3, "k_text": 7}, depths, "m", per_tower=False)
    # the same start given per tower is no conflict
    assert check_starts("MaPLe", {"k": 4, "k_image": 4, "k_text": 4}, depths, "m", per_tower=False) == {
        "image": 4, "text": 4,
    }  # fmt: skip


def test_mma_per_tower_blocks_and_parameters_at_vit_b16():
    maps = layer_maps(open_clip.create_model("ViT-B-16"))
    adapter = MultiModalAdapter(maps, k=4, k_image=3, k_text=7)
    assert adapter.image_blocks == list(range(3, 13)) and adapter.text_blocks == list(range(7, 13))
    assert (adapter.k_image, adapter.k_text) == (3, 7)
    # SPEC.md's per-block counts: image 768*32+32 + 32*768+768 = 49,952; text 512*32+32 + 32*512+512 = 33,312;
    # one shared 32*32+32 = 1,056 per adapted depth of either tower (blocks 3..12 here)
    assert adapter.num_parameters() == 10 * 49_952 + 6 * 33_312 + 10 * 1_056
    # text blocks 7..12 share with image blocks 7..12; shared layers 3..6 serve the image tower alone
    assert adapter.shared_of["text"] == {j: j for j in range(7, 13)}
    assert MultiModalAdapter(maps, k=5, k_image=5, k_text=5).num_parameters() == 674_560  # = k 5 alone
    rebuilt = MultiModalAdapter.from_config(adapter.config(), maps)
    assert (rebuilt.image_blocks, rebuilt.text_blocks) == (adapter.image_blocks, adapter.text_blocks)


def _selection(tmp_path, **towers):
    probe = tmp_path / "probe"
    probe.mkdir(exist_ok=True)
    record = {"model": "mma-tiny", "k": 4, "rule": "saturation", "depth": 12, **towers}
    (probe / "selection.json").write_text(json.dumps({"selections": [record]}))
    return probe


def _depths(cfg) -> dict:
    values = resolve_settings(cfg, device_type="cpu").settings.values
    return {name: values[name] for name in ("k", "k_image", "k_text")}


def test_the_selection_gives_each_tower_its_start_and_a_flag_wins(tmp_path):
    probe = _selection(tmp_path, k_image=3, k_text=7)
    cfg = TrainSelectedConfig(run=probe, methods=["mma"])
    assert _depths(cfg) == {"k": 4, "k_image": 3, "k_text": 7}
    line = resolve_settings(cfg, device_type="cpu").k_line
    assert "k = 4 from the probe selection" in line and "per tower: image 3, text 7 (from the probe selection" in line
    # --k sets both towers (the selection's per-tower starts no longer apply)
    assert _depths(TrainSelectedConfig(run=probe, methods=["mma"], k=6)) == {"k": 6, "k_image": None, "k_text": None}
    # --k-text alone changes that tower only, and the line names each tower's source
    cfg = TrainSelectedConfig(run=probe, methods=["mma"], k_text=9)
    assert _depths(cfg) == {"k": 4, "k_image": 3, "k_text": 9}
    assert "image 3 (from the probe selection" in resolve_settings(cfg, device_type="cpu").k_line
    assert "text 9 (from the user flag)" in resolve_settings(cfg, device_type="cpu").k_line
    # a selection whose towers agree with k gives k alone (the run keeps its shared name)
    same = _selection(tmp_path, k_image=4, k_text=4)
    assert _depths(TrainSelectedConfig(run=same, methods=["mma"])) == {"k": 4, "k_image": None, "k_text": None}


def test_train_selected_names_and_records_a_per_tower_run(tmp_path):
    from mma.app.jobs.train_selected import train_selected
    from mma.app.results import summary_table

    probe = _selection(tmp_path, k_image=3, k_text=7)
    cfg = TrainSelectedConfig(
        run=probe, data=["builtin:colors"], seeds=[1], out=tmp_path / "run", progress=False, checkpoints=False,
        train={"epochs": 1, "shots": 2, "batch_size": 4},
    )  # fmt: skip
    run = train_selected(cfg)
    result = json.loads((tmp_path / "run" / "results" / "base2novel" / "colors" / "seed1-ki3-kt7-mma.json").read_text())
    assert (result["k"], result["k_image"], result["k_text"]) == (None, 3, 7)
    assert result["depth"] == "image blocks 3..12, text blocks 7..12"
    assert (tmp_path / "run" / "train-ki3-kt7.json").is_file()
    assert run.depth == "image 3, text 7" and run.k == 4  # what the last line says; the selection's shared k
    table = summary_table(run.summary)
    assert set(table.loc[table["method"] == "mma", "k"]) == {"image 3, text 7"}


def test_sweep_k_reports_the_regret_of_the_probe_chosen_and_published_depth(tmp_path):
    from mma.app.jobs.sweep_k import REGRET_COLUMNS, sweep_k

    probe = _selection(tmp_path, k_image=3, k_text=7)
    cfg = TrainSelectedConfig(
        run=probe, data=["builtin:colors"], seeds=[1, 2], out=tmp_path / "sweep", progress=False, checkpoints=False,
        train={"epochs": 1, "shots": 2, "batch_size": 4},
    )  # fmt: skip
    record = sweep_k(cfg, [5], [3, 7])
    (row,) = record["regret"]
    assert list(row) == REGRET_COLUMNS and row["method"] == "mma"
    # trained: image 3 / text 7 (the probe's, and the tower grid's), k 5 (the grid's and the published one) and
    # image 7 / text 3 (the tower grid's other pair), each once
    assert row["depths"] == 3 and row["seeds"] == 2
    assert (row["probe"], row["published"]) == ("image 3, text 7", "5")
    results = json.loads((tmp_path / "sweep" / "regret.json").read_text())["rows"]
    assert results == record["regret"]
    hms = {}
    per_seed = {}
    for path in (tmp_path / "sweep" / "results" / "base2novel" / "colors").glob("seed*-mma.json"):
        r = json.loads(path.read_text())
        point = str(r["k"]) if r["k"] is not None else f"image {r['k_image']}, text {r['k_text']}"
        b, n = r["metrics"]["base"], r["metrics"]["novel"]
        per_seed.setdefault(point, []).append(2 * b * n / (b + n))
    hms = {p: sum(v) / len(v) for p, v in per_seed.items()}
    best = max(hms, key=hms.get)
    assert row["best"] == best and row["best_hm"] == pytest.approx(hms[best])
    assert row["probe_hm"] == pytest.approx(hms["image 3, text 7"])
    assert row["probe_vs_best"] == pytest.approx(hms["image 3, text 7"] - hms[best])
    for name in ("regret.png", "regret.pdf", "regret.csv", "k_sweep.png"):
        assert (tmp_path / "sweep" / name).is_file()
