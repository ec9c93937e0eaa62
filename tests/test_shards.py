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


# ------------------------------------------------------------ shard sets and datasets (issue 30, class 3)

PHANTOM = {"seed": 2, "luna16": {"scans": 2, "subsets": 2, "shape": [80, 80, 24]},
           "msd_liver": {"cases": 4, "test_cases": 1, "shape": [48, 48, 20]},
           "msd_brain": {"cases": 3, "test_cases": 1, "shape": [32, 32, 24]},
           "chestxray14": {"patients": 2, "images_per_patient": [1, 2], "size": [64, 64], "test_fraction": 0.5}}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """raw/<dataset>/{0,1} of the four phantoms in 2 download shards; interim/msd_liver/{0,1}
    and interim/msd_brain/{0,1} resampled in 2 shards (arrays too), as the DAG writes them."""
    import yaml

    root = tmp_path_factory.mktemp("world")
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    data = {"source": "phantom", "phantom": PHANTOM}
    for dataset in ("luna16", "msd_liver", "msd_brain", "chestxray14"):
        for k in range(2):
            run_download(dataset, data, out=root / "raw" / dataset / str(k), shard=(k, 2), progress=False)
    for dataset in ("msd_liver", "msd_brain"):
        for k in range(2):
            run_resample(params["resample"][dataset], raw=root / "raw" / dataset,
                         out=root / "interim" / dataset / str(k), shard=(k, 2), progress=False, dataset=dataset,
                         shards=2)
    return root


def _bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _cli(tmp_path: Path, demo_params: dict, argv: list[str], capsys, shards: int = 2) -> str:
    """Run ``pcrl <argv>`` with the demo params (``data.shards``: ``shards``); the one-line
    error it must end with (exit 2)."""
    import yaml

    from pcrl.cli import main

    demo_params["data"]["shards"] = list(range(shards))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(demo_params))
    capsys.readouterr()
    assert main(["--params", str(params), *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"pcrl {argv[0]}: error: "), err
    return err[0]


def _copy(world: Path, what: str, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(world / what, tmp_path / what))


def _resample(folder: Path, dataset: str, out: Path) -> list[str]:
    return ["resample", "--dataset", dataset, "--raw", str(folder), "--out", str(out), "--shard", "0"]


def _cubes(task: str, raw: Path, interim: Path, out: Path) -> list[str]:
    return ["cubes", "--task", task, "--raw", str(raw), "--interim", str(interim), "--out", str(out)]


def test_a_missing_raw_shard_is_refused(world: Path, tmp_path: Path, demo_params: dict, capsys) -> None:
    import shutil

    raw = _copy(world, "raw/msd_liver", tmp_path)
    shutil.rmtree(raw / "1")
    before, out = _bytes(raw), tmp_path / "interim"
    err = _cli(tmp_path, demo_params, _resample(raw, "msd_liver", out), capsys)
    assert f"{raw}: 1 shard folder(s) for 2 shards: shard(s) 1 missing" in err
    assert _bytes(raw) == before and not out.exists()


def test_a_missing_interim_shard_is_refused(world: Path, tmp_path: Path, demo_params: dict, capsys) -> None:
    import shutil

    interim = _copy(world, "interim/msd_liver", tmp_path)
    shutil.rmtree(interim / "0")
    (interim / "1").rename(interim / "0")  # what is left looks like shard 0
    before, out = _bytes(interim), tmp_path / "processed"
    err = _cli(tmp_path, demo_params, _cubes("lcs", world / "raw" / "msd_liver", interim, out), capsys)
    assert f"{interim / '0' / 'cases.json'}: holds shard 1 of 2, but lies in the folder of shard 0" in err
    assert _bytes(interim) == before and not out.exists()
    shutil.rmtree(interim / "0")
    shutil.copytree(world / "interim" / "msd_liver" / "0", interim / "0")  # shard 1 is gone
    err = _cli(tmp_path, demo_params, _cubes("lcs", world / "raw" / "msd_liver", interim, out), capsys)
    assert f"{interim}: 1 shard folder(s) for 2 shards: shard(s) 1 missing" in err and not out.exists()


def test_an_extra_shard_is_refused(world: Path, tmp_path: Path, demo_params: dict, capsys) -> None:
    import shutil

    raw = _copy(world, "raw/msd_liver", tmp_path)
    shutil.copytree(raw / "1", raw / "2")  # a copy of shard 1 beside it
    before, out = _bytes(raw), tmp_path / "interim"
    err = _cli(tmp_path, demo_params, _resample(raw, "msd_liver", out), capsys)
    assert f"{raw / '2' / 'manifest.json'}: holds shard 1 of 2, but lies in the folder of shard 2" in err
    assert _bytes(raw) == before and not out.exists()
    interim = _copy(world, "interim/msd_liver", tmp_path)
    contents = json.loads((interim / "1" / "contents.json").read_text())
    shutil.copytree(interim / "1", interim / "2")  # a stale shard of a run in 3 shards
    (interim / "2" / "contents.json").write_text(json.dumps({**contents, "shard": [2, 3]}))
    err = _cli(tmp_path, demo_params, _cubes("lcs", raw, interim, tmp_path / "processed"), capsys)
    assert f"{interim}: shards of different shard counts [2, 3]" in err and not (tmp_path / "processed").exists()


def test_a_shard_count_other_than_data_shards_is_refused(world: Path, tmp_path: Path, demo_params: dict,
                                                          capsys) -> None:
    out = tmp_path / "interim"
    err = _cli(tmp_path, demo_params, _resample(world / "raw" / "msd_liver", "msd_liver", out), capsys, shards=3)
    assert f"{world / 'raw' / 'msd_liver'}: its shards were written for 2 shard(s), but data.shards has 3" in err
    assert not out.exists()


def test_a_shard_of_another_dataset_is_refused(world: Path, tmp_path: Path, demo_params: dict, capsys) -> None:
    import shutil

    raw = _copy(world, "raw/luna16", tmp_path)
    shutil.rmtree(raw / "1")
    shutil.copytree(world / "raw" / "msd_liver" / "1", raw / "1")  # a liver shard among the lung scans
    before, out = _bytes(raw), tmp_path / "interim"
    err = _cli(tmp_path, demo_params, _resample(raw, "luna16", out), capsys)
    assert f"{raw / '1' / 'manifest.json'}: holds msd_liver data, but {raw} gathers luna16" in err
    assert _bytes(raw) == before and not out.exists()


def test_cubes_of_a_task_refuse_another_datasets_volumes(world: Path, tmp_path: Path, demo_params: dict,
                                                         capsys) -> None:
    interim, out = world / "interim" / "msd_brain", tmp_path / "processed"
    before = _bytes(interim)
    err = _cli(tmp_path, demo_params, _cubes("lcs", world / "raw" / "msd_liver", interim, out), capsys)
    assert f"{interim / '0' / 'cases.json'}: holds msd_brain data, but {interim} gathers msd_liver" in err
    assert _bytes(interim) == before and not out.exists()


@pytest.mark.parametrize(("dataset", "raw"), [
    ("luna16", "msd_liver"),  # luna16's HU window over the liver scans
    ("chestxray14", "msd_liver"),  # the 2D preprocessing over volumes (was a KeyError)
    ("msd_liver", "chestxray14"),  # the 3D resampling over radiographs (was a KeyError)
])
def test_resample_refuses_another_datasets_raw(world: Path, tmp_path: Path, demo_params: dict, capsys,
                                               dataset: str, raw: str) -> None:
    folder, out = world / "raw" / raw, tmp_path / "interim"
    before = _bytes(folder)
    err = _cli(tmp_path, demo_params, _resample(folder, dataset, out), capsys)
    assert (f"{folder / '0' / 'manifest.json'}: holds {raw} data, but 'pcrl resample' was called for {dataset}"
            in err)
    assert _bytes(folder) == before and not out.exists()


def test_the_complete_shard_set_is_gathered(world: Path) -> None:
    cases = read_cases(world / "interim" / "msd_liver", dataset="msd_liver", count=2)
    listed = [c["id"] for k in range(2)
              for c in json.loads((world / "raw" / "msd_liver" / str(k) / "manifest.json").read_text())["cases"]]
    assert len(listed) == 5 and sorted(c["id"] for c in cases) == sorted(listed)  # 4 labelled + 1 test case
