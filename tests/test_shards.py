"""Datasets in shards: one download and one resample job per shard, gathered downstream.

The decisive check runs the real stage functions twice on the phantom, once in one shard
and once in three, and compares every byte the cubes stage writes.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pcrl.datasets.registry import get_dataset
from pcrl.datasets.shards import check_shard, read_cases, shard_count, shard_files, shard_folders, take_shard
from pcrl.errors import ConfigError, DataError
from pcrl.records import write_contents
from pcrl.stages.cubes import run_cubes
from pcrl.stages.download import run_download
from pcrl.stages.resample import run_resample


@pytest.mark.parametrize("bad", [[], [1], [0, 2], [1, 0], [0, 0], ["0"], [True], 2, None])
def test_shard_list_must_be_zero_to_n_minus_one(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"data.shards: expected the shard numbers \[0, 1, ..., n-1\]"):
        shard_count(bad)


def test_shard_numbers_and_slices() -> None:
    assert shard_count([0, 1, 2]) == 3
    assert check_shard(1, [0, 1, 2]) == (1, 3)
    with pytest.raises(ConfigError, match="--shard 3: data.shards is"):
        check_shard(3, [0, 1, 2])
    assert take_shard(list("abcdefg"), 0, 3) == ["a", "d", "g"]
    assert take_shard(list("abcdefg"), 2, 3) == ["c", "f"]
    assert take_shard(list("ab"), 2, 3) == []


def test_download_shards_share_out_the_archives() -> None:
    luna = get_dataset("luna16").files
    names = [f.filename for f in shard_files(luna, 1, 3)]
    # subset k in shard k mod 3; every shard that has an archive also fetches the CSVs
    assert names == ["subset1.zip", "subset4.zip", "subset7.zip", "annotations.csv", "candidates.csv"]
    assert sum(len([f for f in shard_files(luna, k, 4) if f.extract]) for k in range(4)) == 10
    liver = get_dataset("msd_liver").files
    assert [f.filename for f in shard_files(liver, 0, 2)] == ["Task03_Liver.tar"]
    assert shard_files(liver, 1, 2) == []
    chest = get_dataset("chestxray14").files  # one CSV and two lists describe all 12 archives
    assert shard_files(chest, 0, 3, together=True) == list(chest)
    assert shard_files(chest, 1, 3, together=True) == shard_files(chest, 2, 3, together=True) == []


def test_gathered_folders_must_be_complete(tmp_path: Path) -> None:
    for k in (0, 1):
        (tmp_path / str(k)).mkdir()
    (tmp_path / "0" / "cases.json").write_text("[]")
    with pytest.raises(DataError, match="shard\\(s\\) 1 without cases.json"):
        shard_folders(tmp_path, "cases.json")
    (tmp_path / "1" / "cases.json").write_text("[]")
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "cases.json").write_text("[]")
    with pytest.raises(DataError, match=r"shard folders \[0, 1, 3\] are not 0..2"):
        shard_folders(tmp_path, "cases.json")
    with pytest.raises(DataError, match="does not exist"):
        shard_folders(tmp_path / "absent", "cases.json")


def test_gathered_cases_take_the_unsharded_order_and_paths(tmp_path: Path) -> None:
    (tmp_path / "0").mkdir()
    (tmp_path / "1").mkdir()
    (tmp_path / "0" / "cases.json").write_text(json.dumps(
        [{"id": "a", "image": "a.nii.gz", "label": None, "order": 0},
         {"id": "c", "image": "c.nii.gz", "label": "c_label.nii.gz", "order": 2}]))
    (tmp_path / "1" / "cases.json").write_text(json.dumps(
        [{"id": "b", "image": "b.nii.gz", "label": None, "order": 1}]))
    for k in (0, 1):
        write_contents(tmp_path / str(k), {"stage": "resample", "dataset": "luna16", "shard": [k, 2]})
    cases = read_cases(tmp_path)
    assert [(c["id"], c["image"], c["label"]) for c in cases] == [
        ("a", "0/a.nii.gz", None), ("b", "1/b.nii.gz", None), ("c", "0/c.nii.gz", "0/c_label.nii.gz")]


def _data(demo_params: dict) -> dict:
    data = copy.deepcopy(demo_params["data"])
    data["source"] = "phantom"
    data["phantom"] = {"seed": 3, "luna16": {"scans": 6, "subsets": 4, "shape": [80, 80, 24]},
                       "msd_liver": {"cases": 5, "test_cases": 1, "shape": [48, 48, 32]}}
    return data


def _run(root: Path, demo_params: dict, shards: int) -> Path:
    """download (per shard) -> resample (per shard) -> cubes, as the DAG runs them."""
    data = _data(demo_params)
    for dataset in ("luna16", "msd_liver"):
        for k in range(shards):
            run_download(dataset, data, out=root / "raw" / dataset / str(k), shard=(k, shards), progress=False)
        for k in range(shards):
            run_resample(demo_params["resample"][dataset], raw=root / "raw" / dataset,
                         out=root / "interim" / dataset / str(k), shard=(k, shards), progress=False)
    cubes = copy.deepcopy(demo_params["cubes"])
    cubes["pretrain"]["groups"] = {"train": ["subset0", "subset1", "subset2"], "val": ["subset3"]}
    cubes["pretrain"]["pairs_per_case"] = 4
    cubes["ncc"]["groups"] = {"train": ["subset0", "subset1"], "val": ["subset2"], "test": ["subset3"]}
    cubes["ncc"]["negatives_per_positive"] = 2  # a draw over the whole table: order matters
    for task, dataset in (("pretrain", "luna16"), ("ncc", "luna16"), ("lcs", "msd_liver")):
        run_cubes(task, cubes[task], seed=cubes["seed"], raw=root / "raw" / dataset,
                  interim=root / "interim" / dataset, out=root / "processed" / task, progress=False)
    return root / "processed"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.pipeline
def test_three_shards_give_the_bytes_of_one(tmp_path: Path, demo_params: dict) -> None:
    one = _files(_run(tmp_path / "one", demo_params, 1))
    three_root = tmp_path / "three"
    three = _files(_run(three_root, demo_params, 3))
    assert one.keys() == three.keys() and len(one) > 10
    assert [name for name in one if one[name] != three[name]] == []
    # the shards really split the work: LUNA16 subsets 0 and 3 in shard 0, 1 in shard 1, ...
    subsets = {k: sorted(p.name for p in (three_root / "raw" / "luna16" / str(k)).glob("subset*"))
               for k in range(3)}
    assert subsets == {0: ["subset0", "subset3"], 1: ["subset1"], 2: ["subset2"]}
    per_shard = [len(json.loads((three_root / "interim" / "msd_liver" / str(k) / "cases.json").read_text()))
                 for k in range(3)]
    assert per_shard == [2, 2, 2]  # 6 cases, positions k, k + 3
