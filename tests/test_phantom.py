"""Tests of pcrl.phantom: native layouts, geometry, labels and determinism."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from pcrl.outputs import MARKER, UnsafeOutputError
from pcrl import phantom
from pcrl.errors import ConfigError

LUNA_SHAPE = (80, 80, 20)
LIVER_SHAPE = (48, 48, 20)
BRAIN_SHAPE = (32, 32, 24)
UID_RE = re.compile(r"1\.3\.6\.1\.4\.1\.14519\.5\.2\.1\.6279\.6001\.[1-9]\d{29}")
FACES = ndimage.generate_binary_structure(3, 1)


# ------------------------------------------------------------------------ helpers


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path (the pipeline's marker left aside)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MARKER}


def read_xyz(path: Path) -> tuple[sitk.Image, np.ndarray]:
    """The image and its array in (x, y, z) (channels first for 4D)."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    return image, array.transpose(tuple(range(array.ndim))[::-1] if array.ndim == 3 else (0, 3, 2, 1))


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV file."""
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def world_grid(image: sitk.Image) -> np.ndarray:
    """World coordinates (3, x, y, z) of the voxel centres, from the image's own geometry."""
    size, spacing, origin = image.GetSize(), image.GetSpacing(), image.GetOrigin()
    assert image.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    return np.stack(np.meshgrid(*[o + s * np.arange(n) for o, s, n in zip(origin, spacing, size)], indexing="ij"))


def luna_scans(root: Path) -> dict[str, Path]:
    """seriesuid -> .mhd path."""
    return {p.stem: p for p in root.glob("subset*/*.mhd")}


# ----------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def luna_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("luna") / "luna16"
    phantom.generate_luna16(root, scans=3, subsets=2, seed=5, shape=LUNA_SHAPE)
    return root


@pytest.fixture(scope="module")
def liver_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("liver") / "Task03_Liver"
    phantom.generate_msd_liver(root, cases=2, test_cases=1, seed=3, shape=LIVER_SHAPE)
    return root


@pytest.fixture(scope="module")
def brain_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("brain") / "Task01_BrainTumour"
    phantom.generate_msd_brain(root, cases=2, test_cases=1, seed=3, shape=BRAIN_SHAPE)
    return root


# ------------------------------------------------------------------------- LUNA16


def test_luna16_layout_is_round_robin_over_subsets(luna_root: Path) -> None:
    uids = [phantom.luna16_case(5, i, LUNA_SHAPE).case_id for i in range(3)]
    expected = {f"subset{i % 2}/{uid}.{ext}" for i, uid in enumerate(uids) for ext in ("mhd", "raw")}
    expected |= {"annotations.csv", "candidates.csv"}
    assert set(tree_bytes(luna_root)) == expected
    assert all(UID_RE.fullmatch(uid) for uid in uids) and len(set(uids)) == 3


def test_luna16_metaimage_header_is_plain_short_raw(luna_root: Path) -> None:
    for uid, mhd in luna_scans(luna_root).items():
        fields = dict(line.split(" = ", 1) for line in mhd.read_text().splitlines())
        assert fields["ElementType"] == "MET_SHORT"
        assert fields["ElementDataFile"] == f"{uid}.raw"
        assert fields["CompressedData"] == "False"
        assert fields["DimSize"].split() == [str(n) for n in LUNA_SHAPE]
        assert mhd.with_suffix(".raw").stat().st_size == 2 * int(np.prod(LUNA_SHAPE))


def test_luna16_geometry_and_hu_read_back(luna_root: Path) -> None:
    scans = luna_scans(luna_root)
    for index in range(3):
        case = phantom.luna16_case(5, index, LUNA_SHAPE)
        image, array = read_xyz(scans[case.case_id])
        assert image.GetPixelID() == sitk.sitkInt16
        assert image.GetSize() == LUNA_SHAPE
        assert image.GetSpacing() == case.spacing and image.GetOrigin() == case.origin
        np.testing.assert_array_equal(array, case.image)
        sx, sy, sz = case.spacing
        assert sx == sy and 0.6 <= sx <= 0.9 and 1.25 <= sz <= 2.5 and sz > sx
        ox, oy, oz = case.origin
        assert -250 <= ox <= -150 and -250 <= oy <= -150 and -300 <= oz <= -100
        assert abs(array[:3, :3, :].mean() + 1000) < 10  # air in the corners
        assert -1024 <= array.min() and array.max() >= 600  # ribs / spine are bright


def test_luna16_csv_headers_and_counts(luna_root: Path) -> None:
    ann_header, annotations = read_csv(luna_root / "annotations.csv")
    cand_header, candidates = read_csv(luna_root / "candidates.csv")
    assert ann_header == ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
    assert cand_header == ["seriesuid", "coordX", "coordY", "coordZ", "class"]
    assert {r["seriesuid"] for r in candidates} == set(luna_scans(luna_root))
    for uid in luna_scans(luna_root):
        nodules = [r for r in annotations if r["seriesuid"] == uid]
        labels = [int(r["class"]) for r in candidates if r["seriesuid"] == uid]
        assert 2 <= len(nodules) <= 4 and labels.count(1) == len(nodules)
        assert 8 <= labels.count(0) <= 15 and set(labels) == {0, 1}
        assert all(4.0 <= float(r["diameter_mm"]) <= 12.0 for r in nodules)


def test_luna16_positive_candidates_are_jittered_nodule_centres(luna_root: Path) -> None:
    _, annotations = read_csv(luna_root / "annotations.csv")
    _, candidates = read_csv(luna_root / "candidates.csv")
    coords = ("coordX", "coordY", "coordZ")
    positives = [r for r in candidates if r["class"] == "1"]
    for nodule in annotations:
        centre = np.array([float(nodule[c]) for c in coords])
        gaps = [
            np.linalg.norm(np.array([float(p[c]) for c in coords]) - centre)
            for p in positives
            if p["seriesuid"] == nodule["seriesuid"]
        ]
        assert min(gaps) <= 1.5 + 1e-5


def test_luna16_candidates_map_inside_and_nodules_are_dense_in_lung(luna_root: Path) -> None:
    _, annotations = read_csv(luna_root / "annotations.csv")
    _, candidates = read_csv(luna_root / "candidates.csv")
    images = {uid: read_xyz(path) for uid, path in luna_scans(luna_root).items()}
    for row in candidates:
        image, array = images[row["seriesuid"]]
        point = tuple(float(row[c]) for c in ("coordX", "coordY", "coordZ"))
        index = np.array(image.TransformPhysicalPointToContinuousIndex(point))
        assert np.all(index >= 0) and np.all(index <= np.array(image.GetSize()) - 1)
        if row["class"] == "1":
            assert array[tuple(np.round(index).astype(int))] > -400
    for row in annotations:
        image, array = images[row["seriesuid"]]
        centre = np.array([float(row[c]) for c in ("coordX", "coordY", "coordZ")])
        distance = np.linalg.norm(world_grid(image) - centre[:, None, None, None], axis=0)
        radius = float(row["diameter_mm"]) / 2
        assert array[distance < radius - 1.0].mean() > -100  # solid inside
        assert array[(distance > radius + 1.0) & (distance < radius + 3.0)].mean() < -500  # lung around


def test_luna16_same_seed_same_bytes_other_seed_differs(luna_root: Path, tmp_path: Path) -> None:
    phantom.generate_luna16(tmp_path / "same", scans=3, subsets=2, seed=5, shape=LUNA_SHAPE)
    assert tree_bytes(tmp_path / "same") == tree_bytes(luna_root)
    phantom.generate_luna16(tmp_path / "other", scans=3, subsets=2, seed=6, shape=LUNA_SHAPE)
    assert not set(luna_scans(tmp_path / "other")) & set(luna_scans(luna_root))
    raw_other = {p.read_bytes() for p in (tmp_path / "other").glob("subset*/*.raw")}
    assert not raw_other & {p.read_bytes() for p in luna_root.glob("subset*/*.raw")}


def test_luna16_scan_does_not_depend_on_scan_count(luna_root: Path, tmp_path: Path) -> None:
    phantom.generate_luna16(tmp_path / "one", scans=1, subsets=1, seed=5, shape=LUNA_SHAPE)
    (raw,) = (tmp_path / "one").glob("subset0/*.raw")
    assert raw.read_bytes() == (luna_root / "subset0" / raw.name).read_bytes()


# ---------------------------------------------------------------------- MSD liver


def check_dataset_json_matches_disk(root: Path, meta: dict, train: list[str], test: list[str]) -> None:
    """dataset.json lists exactly the files on disk, in MSD's ./-relative form."""
    assert meta["numTraining"] == len(train) and meta["numTest"] == len(test)
    assert meta["training"] == [
        {"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in train
    ]
    assert meta["test"] == [f"./imagesTs/{c}.nii.gz" for c in test]
    listed = {e[k][2:] for e in meta["training"] for k in ("image", "label")} | {t[2:] for t in meta["test"]}
    assert set(tree_bytes(root)) == listed | {"dataset.json"}


def test_liver_dataset_json_lists_exactly_the_files(liver_root: Path) -> None:
    meta = json.loads((liver_root / "dataset.json").read_text())
    assert meta["name"] == "Liver" and meta["tensorImageSize"] == "3D"
    assert meta["modality"] == {"0": "CT"}
    assert meta["labels"] == {"0": "background", "1": "liver", "2": "cancer"}
    assert {"description", "reference", "licence", "release"} <= set(meta)
    check_dataset_json_matches_disk(liver_root, meta, ["liver_0", "liver_1"], ["liver_2"])


def test_liver_image_and_label_geometry(liver_root: Path) -> None:
    for case in ("liver_0", "liver_1"):
        image, hu = read_xyz(liver_root / "imagesTr" / f"{case}.nii.gz")
        label_image, label = read_xyz(liver_root / "labelsTr" / f"{case}.nii.gz")
        assert image.GetPixelID() == sitk.sitkInt16 and label_image.GetPixelID() == sitk.sitkUInt8
        assert image.GetSize() == label_image.GetSize() == LIVER_SHAPE
        assert np.allclose(image.GetSpacing(), label_image.GetSpacing())
        assert np.allclose(image.GetOrigin(), label_image.GetOrigin())
        sx, sy, sz = image.GetSpacing()
        assert abs(sx - sy) < 1e-6 and 0.7 <= sx <= 0.9 and 1.5 <= sz <= 3.0
        assert set(np.unique(label)) == {0, 1, 2}


def test_liver_tumours_lie_inside_the_liver_and_are_darker(liver_root: Path) -> None:
    for case in ("liver_0", "liver_1"):
        _, hu = read_xyz(liver_root / "imagesTr" / f"{case}.nii.gz")
        _, label = read_xyz(liver_root / "labelsTr" / f"{case}.nii.gz")
        tumour = label == 2
        touching = ndimage.binary_dilation(tumour, FACES) & ~tumour
        assert np.all(label[touching] == 1)  # every tumour is wrapped in liver
        assert ndimage.label(label > 0)[1] == 1  # one liver blob
        liver_hu, tumour_hu = hu[label == 1].mean(), hu[tumour].mean()
        assert 45 < liver_hu < 80 and liver_hu - tumour_hu > 20


def test_liver_same_seed_same_bytes_other_seed_differs(liver_root: Path, tmp_path: Path) -> None:
    phantom.generate_msd_liver(tmp_path / "same", cases=2, test_cases=1, seed=3, shape=LIVER_SHAPE)
    assert tree_bytes(tmp_path / "same") == tree_bytes(liver_root)
    phantom.generate_msd_liver(tmp_path / "other", cases=2, test_cases=1, seed=4, shape=LIVER_SHAPE)
    other = tree_bytes(tmp_path / "other")
    assert all(other[k] != v for k, v in tree_bytes(liver_root).items() if k.endswith(".nii.gz"))


# ---------------------------------------------------------------------- MSD brain


def test_brain_dataset_json_lists_exactly_the_files(brain_root: Path) -> None:
    meta = json.loads((brain_root / "dataset.json").read_text())
    assert meta["tensorImageSize"] == "4D"
    assert meta["modality"] == {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
    assert meta["labels"] == {
        "0": "background",
        "1": "edema",
        "2": "non-enhancing tumor",
        "3": "enhancing tumour",
    }
    check_dataset_json_matches_disk(brain_root, meta, ["BRATS_001", "BRATS_002"], ["BRATS_003"])


def test_brain_reads_back_as_four_channels_at_1mm(brain_root: Path) -> None:
    image, channels = read_xyz(brain_root / "imagesTr" / "BRATS_001.nii.gz")
    label_image, label = read_xyz(brain_root / "labelsTr" / "BRATS_001.nii.gz")
    assert image.GetDimension() == 4 and image.GetSize() == (*BRAIN_SHAPE, 4)
    assert image.GetPixelID() == sitk.sitkFloat32 and channels.shape == (4, *BRAIN_SHAPE)
    assert image.GetSpacing()[:3] == (1.0, 1.0, 1.0) and label_image.GetSpacing() == (1.0, 1.0, 1.0)
    assert label_image.GetPixelID() == sitk.sitkUInt8 and label.shape == BRAIN_SHAPE
    assert set(np.unique(label)) == {0, 1, 2, 3}
    outside = np.all(channels == 0, axis=0)
    assert outside.any() and np.all(label[outside] == 0)  # skull-stripped, zero background
    assert not np.any(np.all(channels[:, ~outside] == channels[0, ~outside], axis=0))  # channels differ


def test_brain_tumour_regions_nest_and_show_mri_contrast(brain_root: Path) -> None:
    for case in ("BRATS_001", "BRATS_002"):
        _, channels = read_xyz(brain_root / "imagesTr" / f"{case}.nii.gz")
        _, label = read_xyz(brain_root / "labelsTr" / f"{case}.nii.gz")
        core = label >= 2
        assert np.all(label[ndimage.binary_dilation(core, FACES) & ~core] == 1)  # edema wraps the core
        centre = np.array(ndimage.center_of_mass(label > 0))
        grid = np.indices(label.shape)
        mean_distance = [np.linalg.norm(grid[:, label == k].T - centre, axis=1).mean() for k in (2, 3, 1)]
        assert mean_distance == sorted(mean_distance)  # non-enhancing inside enhancing inside edema
        healthy = (label == 0) & np.any(channels > 0, axis=0)
        flair, t1gd = channels[0], channels[2]
        assert flair[label == 1].mean() > 1.3 * flair[healthy].mean()
        assert t1gd[label == 3].mean() > 1.5 * t1gd[healthy].mean()


def test_brain_same_seed_same_bytes(brain_root: Path, tmp_path: Path) -> None:
    phantom.generate_msd_brain(tmp_path / "same", cases=2, test_cases=1, seed=3, shape=BRAIN_SHAPE)
    assert tree_bytes(tmp_path / "same") == tree_bytes(brain_root)
    assert not np.array_equal(phantom.brain_case(3, 0, BRAIN_SHAPE).image, phantom.brain_case(4, 0, BRAIN_SHAPE).image)


# ------------------------------------------------------------------ API and errors


#: The download stage's call for each dataset name (smallest sizes) and the files that
#: dataset ships with, written by hand from its native layout (the module docstring).
NATIVE_LAYOUTS = {
    "luna16": ({"scans": 1, "subsets": 1, "shape": LUNA_SHAPE},
               ["annotations.csv", "candidates.csv", "subset0/<uid>.mhd", "subset0/<uid>.raw"]),
    "msd_liver": ({"cases": 1, "test_cases": 0, "shape": LIVER_SHAPE},
                  ["dataset.json", "imagesTr/liver_0.nii.gz", "labelsTr/liver_0.nii.gz"]),
    "msd_brain": ({"cases": 1, "test_cases": 0, "shape": BRAIN_SHAPE},
                  ["dataset.json", "imagesTr/BRATS_001.nii.gz", "labelsTr/BRATS_001.nii.gz"]),
    "chestxray14": ({"patients": 1, "images_per_patient": 2, "size": (64, 64)},
                    ["Data_Entry_2017_v2020.csv", "images/00000001_000.png",
                     "images/00000001_001.png", "test_list.txt", "train_val_list.txt"]),
}


def test_generators_registry_has_one_phantom_per_dataset() -> None:
    assert sorted(phantom.GENERATORS) == ["chestxray14", "luna16", "msd_brain", "msd_liver"]


@pytest.mark.parametrize("name", sorted(NATIVE_LAYOUTS))
def test_each_registered_generator_writes_its_datasets_native_layout(name: str, tmp_path: Path) -> None:
    """The download stage's call ``GENERATORS[name](root, seed=, **sizes, shard=)`` writes the
    files of that dataset (a LUNA16 series uid stands as <uid>), and nothing else."""
    sizes, expected = NATIVE_LAYOUTS[name]
    phantom.GENERATORS[name](tmp_path / name, seed=0, shard=(0, 1), **sizes)
    written = sorted(UID_RE.sub("<uid>", path) for path in tree_bytes(tmp_path / name))
    assert written == expected


def test_generator_replaces_a_stale_root(tmp_path: Path) -> None:
    root = tmp_path / "Task03_Liver"
    phantom.generate_msd_liver(root, cases=2, test_cases=0, seed=0, shape=LIVER_SHAPE)
    (root / "imagesTr" / "liver_99.nii.gz").write_bytes(b"stale")
    phantom.generate_msd_liver(root, cases=1, test_cases=0, seed=0, shape=LIVER_SHAPE)
    assert sorted(tree_bytes(root)) == ["dataset.json", "imagesTr/liver_0.nii.gz",
                                        "labelsTr/liver_0.nii.gz"]
    assert (root / MARKER).is_file()
    assert (root / "imagesTs").is_dir()


def test_generator_never_replaces_a_folder_it_did_not_write(tmp_path: Path) -> None:
    root = tmp_path / "Task03_Liver"
    (root / "imagesTr").mkdir(parents=True)
    (root / "imagesTr" / "liver_99.nii.gz").write_bytes(b"a real scan")
    with pytest.raises(UnsafeOutputError):
        phantom.generate_msd_liver(root, cases=1, test_cases=0, seed=0, shape=LIVER_SHAPE)
    assert (root / "imagesTr" / "liver_99.nii.gz").read_bytes() == b"a real scan"


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"scans": 0}, "scans"),
        ({"subsets": 0}, "subsets"),
        ({"seed": -1}, "seed"),
        ({"shape": (16, 16, 8)}, "shape"),
        ({"shape": (96, 96)}, "shape"),
        ({"scans": 2.5}, "scans"),
    ],
)
def test_luna16_bad_arguments_raise_config_error_and_write_nothing(tmp_path: Path, kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'"):
        phantom.generate_luna16(tmp_path / "luna16", **kwargs)
    assert not (tmp_path / "luna16").exists()


@pytest.mark.parametrize("generate", [phantom.generate_msd_liver, phantom.generate_msd_brain])
def test_decathlon_bad_arguments_raise_config_error(tmp_path: Path, generate) -> None:
    with pytest.raises(ConfigError, match="'cases'"):
        generate(tmp_path / "task", cases=0)
    with pytest.raises(ConfigError, match="'test_cases'"):
        generate(tmp_path / "task", test_cases=-1)
    with pytest.raises(ConfigError, match="'shape'"):
        generate(tmp_path / "task", shape=(8, 8, 8))
    assert not (tmp_path / "task").exists()
