"""Tests of pcrl.datasets.registry: the datasets of the protocol and their published files."""

from __future__ import annotations

import re

import pytest

from pcrl.datasets.registry import DATASETS, LAYOUTS, get_dataset
from pcrl.errors import ConfigError


def test_get_dataset_returns_registered_spec() -> None:
    assert get_dataset("msd_liver") is DATASETS["msd_liver"]
    assert set(DATASETS) == {"luna16", "msd_liver", "msd_brain", "chestxray14"}


def test_unknown_dataset_names_it_and_lists_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        get_dataset("lits")
    message = str(info.value)
    assert "'lits'" in message
    for name in ("chestxray14", "luna16", "msd_brain", "msd_liver"):
        assert name in message


def test_luna16_files_come_from_the_two_zenodo_records() -> None:
    spec = get_dataset("luna16")
    names = [f.filename for f in spec.files]
    assert names == [f"subset{k}.zip" for k in range(10)] + ["annotations.csv", "candidates.csv"]
    urls = {f.filename: f.url for f in spec.files}
    assert urls["subset0.zip"] == "https://zenodo.org/records/3723295/files/subset0.zip"
    assert urls["subset6.zip"] == "https://zenodo.org/records/3723295/files/subset6.zip"
    assert urls["subset7.zip"] == "https://zenodo.org/records/4121926/files/subset7.zip"
    assert urls["subset9.zip"] == "https://zenodo.org/records/4121926/files/subset9.zip"
    assert urls["candidates.csv"] == "https://zenodo.org/records/3723295/files/candidates.csv"
    assert [f.extract for f in spec.files] == [True] * 10 + [False, False]
    assert spec.layout == "luna16" and spec.folder is None


@pytest.mark.parametrize(
    ("name", "task", "md5"),
    [
        ("msd_liver", "Task03_Liver", "a90ec6c4aa7f6a3d087205e23d4e6397"),
        ("msd_brain", "Task01_BrainTumour", "240a19d752f0d9e9101544901065d872"),
    ],
)
def test_decathlon_tasks_use_monai_mirror_and_md5(name: str, task: str, md5: str) -> None:
    spec = get_dataset(name)
    (remote,) = spec.files
    assert remote.url == f"https://msd-for-monai.s3-us-west-2.amazonaws.com/{task}.tar"
    assert remote.md5 == md5
    assert remote.extract is True
    assert spec.folder == task
    assert spec.layout == "decathlon"


def test_chestxray14_is_manual_download() -> None:
    spec = get_dataset("chestxray14")
    assert spec.downloadable is False and spec.shardable is False
    assert "source: local" in spec.manual
    names = [f.filename for f in spec.files]
    assert names[0] == "images_001.tar.gz" and names[11] == "images_012.tar.gz"
    assert names[12:] == ["Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt"]
    assert [f.extract for f in spec.files] == [True] * 12 + [False] * 3


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_specs_are_consistent(name: str) -> None:
    spec = DATASETS[name]
    assert spec.name == name
    assert spec.layout in LAYOUTS
    filenames = [f.filename for f in spec.files]
    assert len(set(filenames)) == len(filenames)
    for remote in spec.files:
        assert remote.url.startswith("https://")
        assert remote.md5 is None or re.fullmatch(r"[0-9a-f]{32}", remote.md5)
        assert remote.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", remote.sha256)
    assert spec.downloadable or spec.manual


def test_mirror_keeps_checksums_and_replaces_only_hosts() -> None:
    """What a frozen spec is for: a mirrored copy changes URLs only, never the verification."""
    from pcrl.stages.download import with_mirror

    spec = DATASETS["msd_liver"]
    mirrored = with_mirror(spec, "https://mirror.example.org/msd/")
    assert [f.url for f in mirrored.files] == ["https://mirror.example.org/msd/Task03_Liver.tar"]
    assert [(f.md5, f.size, f.filename) for f in mirrored.files] == \
        [(f.md5, f.size, f.filename) for f in spec.files]
    assert spec.files[0].url != mirrored.files[0].url  # the registry itself is unchanged
    assert with_mirror(spec, None) is spec
