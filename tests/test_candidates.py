"""Tests of pcrl.preprocessing.candidates: NCC cubes around LUNA16 candidates."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pcrl.preprocessing.candidates import (
    extract_candidate_cubes,
    read_candidates,
    subsample_negatives,
    world_to_voxel,
    write_ncc_cubes,
)
from pcrl.errors import DataError

FLIP_X = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _image(shape=(10, 12, 8), origin=(10.0, -20.0, 5.0), spacing=(0.7, 0.8, 2.5), direction=FLIP_X, array=None):
    """A SimpleITK image of (x, y, z) ``shape`` (or ``array``) with the given geometry."""
    array = np.zeros(shape, dtype=np.float32) if array is None else array
    image = sitk.GetImageFromArray(array.transpose(2, 1, 0))
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


# ------------------------------------------------------------------- world_to_voxel


def test_world_to_voxel_hand_computed_with_flipped_x():
    image = _image()
    # x axis flipped: world x = 10 - 0.7 * i; y = -20 + 0.8 * j; z = 5 + 2.5 * k
    points = np.array([[10.0 - 0.7 * 3, -20.0 + 0.8 * 4.5, 5.0 + 2.5 * 2], [10.0, -20.0, 5.0]])
    np.testing.assert_allclose(world_to_voxel(image, points), [[3.0, 4.5, 2.0], [0.0, 0.0, 0.0]], atol=1e-9)


def test_world_to_voxel_matches_simpleitk_for_a_permuted_direction():
    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # index x -> world -y, index y -> world x
    image = _image(direction=direction)
    points = np.random.default_rng(0).uniform(-30, 30, size=(5, 3))
    expected = [image.TransformPhysicalPointToContinuousIndex(tuple(p)) for p in points]
    np.testing.assert_allclose(world_to_voxel(image, points), expected, atol=1e-9)
    # and by hand for one point: index (2, 3, 1) -> world origin + (0.8*3, -0.7*2, 2.5*1)
    np.testing.assert_allclose(world_to_voxel(image, [[10.0 + 2.4, -20.0 - 1.4, 7.5]]), [[2.0, 3.0, 1.0]], atol=1e-9)


def test_world_to_voxel_reads_geometry_from_a_nifti_header(tmp_path):
    path = tmp_path / "scan.nii.gz"
    sitk.WriteImage(_image(), str(path))
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    np.testing.assert_allclose(world_to_voxel(reader, [[10.0 - 0.7 * 3, -20.0 + 0.8 * 4.5, 5.0 + 2.5 * 2]]),
                               [[3.0, 4.5, 2.0]], atol=1e-4)


# ------------------------------------------------------------------------ extraction


def test_cube_centre_holds_the_marker():
    volume = np.zeros((10, 12, 8), dtype=np.float32)
    volume[5, 6, 3] = 7.0
    cubes = extract_candidate_cubes(volume, np.array([[5.3, 5.6, 2.8]]), (4, 5, 3))
    assert cubes.shape == (1, 4, 5, 3)
    assert cubes[0, 2, 2, 1] == 7.0  # centre voxel at size // 2
    assert np.count_nonzero(cubes) == 1


def test_cube_near_the_border_is_padded():
    volume = np.arange(5 * 6 * 4, dtype=np.float32).reshape(5, 6, 4) + 1.0
    cubes = extract_candidate_cubes(volume, np.array([[1.0, 0.0, 3.0], [4.0, 5.0, 0.0]]), (4, 4, 4), pad_value=-1.0)
    padded = np.pad(volume, 2, constant_values=-1.0)
    # the cube spans centre - 2 .. centre + 1 along each axis; +2 in the padded volume
    np.testing.assert_array_equal(cubes[0], padded[1:5, 0:4, 3:7])
    np.testing.assert_array_equal(cubes[1], padded[4:8, 5:9, 0:4])
    assert cubes[0, 0, 0, 0] == -1.0 and cubes[0, 1, 2, 2] == volume[0, 0, 3]


def test_centre_outside_the_volume_raises():
    with pytest.raises(DataError, match="outside the scan"):
        extract_candidate_cubes(np.zeros((4, 4, 4), dtype=np.float32), np.array([[1.0, 1.0, 4.6]]), (2, 2, 2))


# ------------------------------------------------------------------------- CSV side


def _write_csv(path: Path, rows: list[tuple]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["seriesuid", "coordX", "coordY", "coordZ", "class"])
        writer.writerows(rows)


def test_read_candidates_names_missing_columns(tmp_path):
    path = tmp_path / "candidates.csv"
    path.write_text("seriesuid,coordX,coordY\n1.2.3,0,0\n")
    with pytest.raises(DataError, match=r"candidates\.csv.*coordZ.*class"):
        read_candidates(path)


def test_subsample_negatives_keeps_positives_and_ceil_ratio_negatives(tmp_path):
    path = tmp_path / "candidates.csv"
    labels = [1, 0, 0, 1, 0, 0, 0, 0, 1, 0]
    _write_csv(path, [("uid", i, 0, 0, c) for i, c in enumerate(labels)])
    table = read_candidates(path)
    kept = subsample_negatives(table, 1.5, seed=3)
    assert (kept.label == 1).sum() == 3 and (kept.label == 0).sum() == 5  # ceil(1.5 * 3)
    assert np.all(np.diff(kept.world[:, 0]) > 0)  # file order kept
    np.testing.assert_array_equal(subsample_negatives(table, 1.5, seed=3).world, kept.world)


# ---------------------------------------------------------------------------- stage


@pytest.fixture()
def two_scans(tmp_path):
    """Two resampled scans with markers at known voxels and a candidates.csv in world mm."""
    interim = tmp_path / "interim"
    interim.mkdir()
    geometry = {"origin": (10.0, -20.0, 5.0), "spacing": (1.0, 1.0, 1.0), "direction": FLIP_X}
    markers = {"1.2.840.1": [(3, 4, 2, 0.25), (6, 7, 5, 0.5)], "1.2.840.2": [(2, 9, 6, 0.75)]}
    cases, rows = [], []
    for uid, points in markers.items():
        array = np.zeros((10, 12, 8), dtype=np.float32)
        for i, j, k, value in points:
            array[i, j, k] = value
            rows.append((uid, 10.0 - i, -20.0 + j, 5.0 + k, int(value == 0.5)))
        sitk.WriteImage(_image(array=array, **geometry), str(interim / f"{uid}.nii.gz"))
        cases.append({"id": uid, "group": "subset0", "image": f"{uid}.nii.gz"})
    rows.append(("9.9.9", 0.0, 0.0, 0.0, 0))  # a scan that is not among the cases
    _write_csv(tmp_path / "candidates.csv", rows)
    return tmp_path, interim, cases


def test_write_ncc_cubes_centres_and_index_rows(two_scans):
    root, interim, cases = two_scans
    rows = write_ncc_cubes(cases, interim, root / "candidates.csv", root / "out", size=(4, 4, 2), progress=False)
    assert [(r["seriesuid"], r["index"], r["class"]) for r in rows] == [
        ("1.2.840.1", 0, 0), ("1.2.840.1", 1, 1), ("1.2.840.2", 0, 0)
    ]
    assert [(r["voxelX"], r["voxelY"], r["voxelZ"]) for r in rows] == [(3, 4, 2), (6, 7, 5), (2, 9, 6)]
    assert rows[0]["coordX"] == 7.0 and rows[0]["file"] == "cubes/1.2.840.1.npy"
    first = np.load(root / "out" / "cubes" / "1.2.840.1.npy")
    second = np.load(root / "out" / "cubes" / "1.2.840.2.npy")
    assert first.dtype == np.float16 and first.shape == (2, 4, 4, 2) and second.shape == (1, 4, 4, 2)
    assert first[0, 2, 2, 1] == 0.25 and first[1, 2, 2, 1] == 0.5 and second[0, 2, 2, 1] == 0.75
    assert not (root / "out" / "cubes" / "9.9.9.npy").exists()


def test_candidate_outside_its_scan_names_seriesuid_and_coordinate(two_scans):
    root, interim, cases = two_scans
    _write_csv(root / "bad.csv", [("1.2.840.2", 10.0 - 3, -20.0 + 4, 5.0 + 40.5, 0)])
    with pytest.raises(DataError, match=r"1\.2\.840\.2.*\[7\.0, -16\.0, 45\.5\]"):
        write_ncc_cubes(cases, interim, root / "bad.csv", root / "out", size=(4, 4, 2), progress=False)


@pytest.mark.parametrize("row,line,message", [
    ("uid,1,2,3,0.9", 3, r"class = '0.9'.*must be 0 .* or 1"),
    ("uid,1,2,3,2", 3, r"class = '2'"),
    ("uid,1,2,3,", 3, r"class = ''"),
    ("uid,nan,2,3,1", 3, r"coordX = 'nan' is not a finite number"),
    ("uid,1,inf,3,1", 3, r"coordY = 'inf' is not a finite number"),
    ("uid,1,2,abc,1", 3, r"coordZ = 'abc' is not a number"),
])
def test_bad_candidate_rows_name_their_line(tmp_path, row: str, line: int, message: str):
    path = tmp_path / "candidates.csv"
    path.write_text(f"seriesuid,coordX,coordY,coordZ,class\nuid,0,0,0,1\n{row}\n")
    with pytest.raises(DataError, match=rf"candidates\.csv, line {line}: {message}"):
        read_candidates(path)


def test_classes_zero_and_one_are_read_exactly(tmp_path):
    path = tmp_path / "candidates.csv"
    path.write_text("seriesuid,coordX,coordY,coordZ,class\na,1.5,-2,3e1,1\nb,0,0,0,0\n")
    table = read_candidates(path)
    assert table.label.tolist() == [1, 0]
    np.testing.assert_array_equal(table.world, [[1.5, -2.0, 30.0], [0.0, 0.0, 0.0]])
