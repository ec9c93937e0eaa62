"""Tests of pcrl.datasets.layout: native-layout verification and manifest.json."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pcrl.atomic import write_json
from pcrl.datasets.layout import build_manifest, check_mhd, scan_decathlon, scan_luna16
from pcrl.datasets.manifest import load_manifest, resolve_case_paths, resolve_extras
from pcrl.errors import ConfigError, DataError

ANNOTATIONS = "seriesuid,coordX,coordY,coordZ,diameter_mm\n1.2.3,1.0,2.0,3.0,4.5\n"
CANDIDATES = "seriesuid,coordX,coordY,coordZ,class\n1.2.3,1.0,2.0,3.0,1\n"


def write_mhd(
    folder: Path, uid: str, *, raw_bytes: int | None = 8, compressed: bool = False
) -> Path:
    """A 2x2x1 MET_SHORT header (8 data bytes) and, unless raw_bytes is None, its .raw."""
    folder.mkdir(parents=True, exist_ok=True)
    data_name = f"{uid}.{'zraw' if compressed else 'raw'}"
    header = (
        "ObjectType = Image\nNDims = 3\nBinaryData = True\n"
        f"CompressedData = {compressed}\nDimSize = 2 2 1\nElementSpacing = 0.7 0.7 2.5\n"
        f"ElementType = MET_SHORT\nElementDataFile = {data_name}\n"
    )
    mhd = folder / f"{uid}.mhd"
    mhd.write_text(header)
    if raw_bytes is not None:
        (folder / data_name).write_bytes(b"\x01" * raw_bytes)
    return mhd


def make_luna16(root: Path) -> None:
    """subset0: 1.2.3 and 1.2.10; subset1: 0.9; plus the two CSVs."""
    write_mhd(root / "subset0", "1.2.3")
    write_mhd(root / "subset0", "1.2.10")
    write_mhd(root / "subset1", "0.9")
    (root / "annotations.csv").write_text(ANNOTATIONS)
    (root / "candidates.csv").write_text(CANDIDATES)


DECATHLON_FILES = (
    "imagesTr/liver_0.nii.gz",
    "imagesTr/liver_1.nii.gz",
    "labelsTr/liver_0.nii.gz",
    "labelsTr/liver_1.nii.gz",
    "imagesTs/liver_7.nii.gz",
)


def make_decathlon(root: Path, *, skip: str | None = None) -> None:
    """Two training cases (one with a ./ prefix) and one test case; ``skip`` is not written."""
    training = [
        {"image": "./imagesTr/liver_1.nii.gz", "label": "./labelsTr/liver_1.nii.gz"},
        {"image": "imagesTr/liver_0.nii.gz", "label": "labelsTr/liver_0.nii.gz"},
    ]
    meta = {"name": "Liver", "training": training, "test": ["./imagesTs/liver_7.nii.gz"]}
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps(meta))
    for rel in DECATHLON_FILES:
        if rel != skip:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(b"nii")


LUNA16_CASES = [
    {"id": "1.2.10", "image": "subset0/1.2.10.mhd", "label": None, "group": "subset0"},
    {"id": "1.2.3", "image": "subset0/1.2.3.mhd", "label": None, "group": "subset0"},
    {"id": "0.9", "image": "subset1/0.9.mhd", "label": None, "group": "subset1"},
]
DECATHLON_CASES = [
    {
        "id": f"liver_{k}",
        "image": f"imagesTr/liver_{k}.nii.gz",
        "label": f"labelsTr/liver_{k}.nii.gz",
        "group": "train",
    }
    for k in (0, 1)
] + [{"id": "liver_7", "image": "imagesTs/liver_7.nii.gz", "label": None, "group": "test"}]


# --------------------------------------------------------------------------- LUNA16


def test_scan_luna16_lists_cases_sorted_by_group_then_id(tmp_path: Path) -> None:
    make_luna16(tmp_path)
    scanned = scan_luna16(tmp_path)
    assert scanned["cases"] == LUNA16_CASES
    assert scanned["extras"] == {"annotations": "annotations.csv", "candidates": "candidates.csv"}


def test_missing_raw_names_mhd_and_raw(tmp_path: Path) -> None:
    make_luna16(tmp_path)
    write_mhd(tmp_path / "subset2", "4.5.6", raw_bytes=None)
    with pytest.raises(DataError) as info:
        scan_luna16(tmp_path)
    assert "4.5.6.mhd" in str(info.value) and "4.5.6.raw" in str(info.value)


def test_truncated_raw_is_detected_from_header_sizes(tmp_path: Path) -> None:
    mhd = write_mhd(tmp_path, "1.2.3", raw_bytes=7)  # 2*2*1 shorts need 8 bytes
    with pytest.raises(DataError, match=r"1\.2\.3\.raw: truncated: expected 8 bytes, found 7"):
        check_mhd(mhd)


def test_compressed_data_without_its_size_is_refused(tmp_path: Path) -> None:
    """Without CompressedDataSize a truncated .zraw cannot be detected: refused, not read."""
    with pytest.raises(DataError, match="CompressedData = True without CompressedDataSize"):
        check_mhd(write_mhd(tmp_path, "1.2.3", raw_bytes=3, compressed=True))


def test_wrong_csv_header_names_both_headers(tmp_path: Path) -> None:
    make_luna16(tmp_path)
    (tmp_path / "candidates.csv").write_text("seriesuid,x,y,z,class\n")
    with pytest.raises(DataError) as info:
        scan_luna16(tmp_path)
    message = str(info.value)
    assert "candidates.csv" in message
    assert "seriesuid,x,y,z,class" in message and "seriesuid,coordX,coordY,coordZ,class" in message


def test_missing_csv_is_named(tmp_path: Path) -> None:
    make_luna16(tmp_path)
    (tmp_path / "annotations.csv").unlink()
    with pytest.raises(DataError, match="annotations.csv"):
        scan_luna16(tmp_path)


def test_luna16_without_scans_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "subset0").mkdir()
    (tmp_path / "annotations.csv").write_text(ANNOTATIONS)
    (tmp_path / "candidates.csv").write_text(CANDIDATES)
    with pytest.raises(DataError, match="no subset"):
        scan_luna16(tmp_path)


def test_missing_dataset_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere"):
        scan_luna16(tmp_path / "nowhere")


# --------------------------------------------------------------------------- Decathlon


def test_scan_decathlon_lists_train_then_test(tmp_path: Path) -> None:
    make_decathlon(tmp_path / "Task03_Liver")
    scanned = scan_decathlon(tmp_path / "Task03_Liver")
    assert scanned["cases"] == DECATHLON_CASES
    assert scanned["extras"] == {"dataset_json": "dataset.json"}


def test_decathlon_missing_image_names_it_and_folder(tmp_path: Path) -> None:
    root = tmp_path / "Task03_Liver"
    make_decathlon(root, skip="imagesTr/liver_1.nii.gz")
    with pytest.raises(DataError) as info:
        scan_decathlon(root)
    assert "imagesTr/liver_1.nii.gz" in str(info.value)
    assert str(root) in str(info.value)
    assert "1 missing" in str(info.value)


def test_decathlon_without_dataset_json(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset.json"):
        scan_decathlon(tmp_path)


def test_decathlon_path_escaping_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [], "test": ["../x.nii.gz"]}))
    with pytest.raises(DataError, match=r"test\[0\]"):
        scan_decathlon(tmp_path)


# --------------------------------------------------------------------------- manifest


def test_build_manifest_root_relative_inside_manifest_dir(tmp_path: Path) -> None:
    make_decathlon(tmp_path / "Task03_Liver")
    root = tmp_path / "Task03_Liver"
    manifest = build_manifest("msd_liver", root, source="download", manifest_dir=tmp_path)
    assert manifest == {
        "dataset": "msd_liver",
        "source": "download",
        "root": "Task03_Liver",
        "cases": DECATHLON_CASES,
        "extras": {"dataset_json": "dataset.json"},
    }


def test_build_manifest_root_dot_and_absolute(tmp_path: Path) -> None:
    make_luna16(tmp_path / "luna")
    root = tmp_path / "luna"
    same = build_manifest("luna16", root, source="phantom", manifest_dir=root)
    assert same["root"] == "."
    outside = build_manifest("luna16", root, source="local", manifest_dir=tmp_path / "raw")
    assert outside["root"] == root.resolve().as_posix()
    assert outside["cases"] == LUNA16_CASES


def test_build_manifest_rejects_unknown_source_and_layout(tmp_path: Path) -> None:
    make_luna16(tmp_path)
    with pytest.raises(ConfigError, match="'zenodo'"):
        build_manifest("luna16", tmp_path, source="zenodo", manifest_dir=tmp_path)


def test_chestxray14_manifest_lists_every_radiograph_in_its_official_list(tmp_path: Path) -> None:
    """Cases are the images of train_val_list.txt / test_list.txt (group), sorted by file
    stem; the phantom's download shards (patients p mod n) together give the unsharded set."""
    from pcrl.phantom import generate_chestxray14

    generate_chestxray14(tmp_path / "all", patients=6, images_per_patient=(1, 2), size=(64, 64), seed=3)
    manifest = build_manifest("chestxray14", tmp_path / "all", source="phantom", manifest_dir=tmp_path / "all")
    lists = {name: (tmp_path / "all" / f"{name}_list.txt").read_text().split() for name in ("train_val", "test")}
    expected = sorted(((Path(n).stem, f"images/{n}", group) for group, names in lists.items() for n in names))
    assert [(c["id"], c["image"], c["group"]) for c in manifest["cases"]] == expected
    assert manifest["extras"] == {"entries": "Data_Entry_2017_v2020.csv", "train_val_list": "train_val_list.txt",
                                  "test_list": "test_list.txt"}
    sharded = []
    for k in range(2):
        generate_chestxray14(tmp_path / str(k), patients=6, images_per_patient=(1, 2), size=(64, 64), seed=3,
                             shard=(k, 2))
        part = build_manifest("chestxray14", tmp_path / str(k), source="phantom", manifest_dir=tmp_path / str(k))
        assert {int(c["id"][:8]) % 2 for c in part["cases"]} == {(k + 1) % 2}  # Patient ID = index + 1
        sharded += part["cases"]
    assert sorted(sharded, key=lambda c: c["id"]) == manifest["cases"]
    for k in range(2):  # and byte for byte the same images
        for case in (c for c in manifest["cases"] if int(c["id"][:8]) % 2 == (k + 1) % 2):
            assert (tmp_path / str(k) / case["image"]).read_bytes() == (tmp_path / "all" / case["image"]).read_bytes()


def test_chestxray14_manifest_refuses_a_truncated_png_naming_it(tmp_path: Path) -> None:
    from pcrl.phantom import generate_chestxray14

    generate_chestxray14(tmp_path, patients=3, images_per_patient=1, size=(64, 64))
    victim = sorted((tmp_path / "images").iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:-20])
    with pytest.raises(DataError, match=victim.name):
        build_manifest("chestxray14", tmp_path, source="local", manifest_dir=tmp_path)


def test_manifest_round_trip_resolves_absolute_paths(tmp_path: Path) -> None:
    make_luna16(tmp_path / "data")
    manifest = build_manifest("luna16", tmp_path / "data", source="phantom", manifest_dir=tmp_path)
    write_json(tmp_path / "manifest.json", manifest)
    loaded = load_manifest(tmp_path / "manifest.json")
    assert loaded == manifest
    cases = resolve_case_paths(loaded, tmp_path / "manifest.json")
    root = (tmp_path / "data").resolve()
    assert [c["image"] for c in cases] == [root / c["image"] for c in LUNA16_CASES]
    assert all(c["image"].is_absolute() and c["label"] is None for c in cases)
    extras = resolve_extras(loaded, tmp_path / "manifest.json")
    assert extras == {
        "annotations": root / "annotations.csv",
        "candidates": root / "candidates.csv",
    }


def test_resolve_case_paths_names_a_file_missing_since(tmp_path: Path) -> None:
    make_decathlon(tmp_path / "task")
    manifest = build_manifest("msd_liver", tmp_path / "task", source="local", manifest_dir=tmp_path)
    (tmp_path / "task" / "labelsTr" / "liver_0.nii.gz").unlink()
    with pytest.raises(DataError, match="labelsTr/liver_0.nii.gz"):
        resolve_case_paths(manifest, tmp_path / "manifest.json")
    assert len(resolve_case_paths(manifest, tmp_path / "manifest.json", check=False)) == 3


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda m: m.pop("source"), "'source' is a required property"),
        (lambda m: m["cases"][0].pop("group"), "at cases/0: 'group' is a required property"),
        (lambda m: m["cases"][1].update(label=3), "at cases/1/label: 3 is not of type"),
    ],
)
def test_load_manifest_names_the_bad_key(
    tmp_path: Path, edit: Callable[[dict], object], needle: str
) -> None:
    make_luna16(tmp_path)
    manifest = build_manifest("luna16", tmp_path, source="phantom", manifest_dir=tmp_path)
    edit(manifest)
    write_json(tmp_path / "manifest.json", manifest)
    with pytest.raises(DataError) as info:
        load_manifest(tmp_path / "manifest.json")
    assert needle in str(info.value) and "manifest.json" in str(info.value)


def test_load_manifest_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="pcrl download"):
        load_manifest(tmp_path / "manifest.json")
