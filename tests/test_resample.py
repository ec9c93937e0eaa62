"""Tests of pcrl.preprocessing.resample against hand-computed references."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pcrl.io.images import array_to_image, image_to_array, read_image, write_image
from pcrl.preprocessing.normalization import Normalization, normalize
from pcrl.preprocessing.resample import (
    output_size,
    resample_case,
    resample_dataset,
    resample_image,
    validate_spacing,
)
from pcrl.errors import ConfigError, DataError

ROTATION_Z90 = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
IDENTITY = tuple(np.eye(3).ravel())
LUNG = Normalization("window")


def ramp_image() -> sitk.Image:
    """10 x 20 x 4 voxels of 2 x 0.5 x 2.5 mm, rotated, valued f(p) = 2 px + 3 py - pz at each centre."""
    img = sitk.Image([10, 20, 4], sitk.sitkFloat32)
    img.SetSpacing((2.0, 0.5, 2.5))
    img.SetOrigin((-5.0, 10.0, 3.0))
    img.SetDirection(ROTATION_Z90)
    arr = np.zeros((10, 20, 4), dtype=np.float32)
    for index in np.ndindex(arr.shape):
        arr[index] = ramp(img.TransformIndexToPhysicalPoint([int(i) for i in index]))
    return array_to_image(arr, spacing=img.GetSpacing(), origin=img.GetOrigin(), direction=ROTATION_Z90)


def ramp(point) -> float:
    """The linear function sampled by :func:`ramp_image`."""
    return 2.0 * point[0] + 3.0 * point[1] - point[2]


def image3d(arr: np.ndarray, spacing=(2.0, 2.0, 2.0)) -> sitk.Image:
    """An (x, y, z) or (C, x, y, z) array as an image at the origin, axis-aligned."""
    return array_to_image(arr, spacing=spacing, origin=(0.0, 0.0, 0.0), direction=IDENTITY)


def write_ct(path: Path, hu: np.ndarray) -> Path:
    """Write an int16 CT (x, y, z) array of 2 mm voxels with SimpleITK."""
    write_image(path, image3d(hu.astype(np.int16)))
    return path


# ---------------------------------------------------------------- geometry
def test_output_size_is_rounded_extent():
    assert output_size((10, 20, 4), (2.0, 0.5, 2.5), (1.0, 1.0, 1.0)) == (20, 10, 10)
    assert output_size((5, 3, 7), (1.0, 1.0, 1.0), (2.0, 4.0, 1.4)) == (3, 1, 5)  # 2.5 -> 3, 0.75 -> 1
    assert output_size((1, 1, 1), (1.0, 1.0, 1.0), (10.0, 10.0, 10.0)) == (1, 1, 1)


def test_resample_keeps_origin_direction_and_sets_size():
    out = resample_image(ramp_image(), (1.0, 1.0, 1.0), is_label=False)
    assert out.GetSize() == (20, 10, 10)
    assert out.GetSpacing() == (1.0, 1.0, 1.0)
    assert out.GetOrigin() == (-5.0, 10.0, 3.0)
    assert out.GetDirection() == ROTATION_Z90
    assert out.GetPixelID() == sitk.sitkFloat32


def test_linear_ramp_stays_a_ramp_and_outside_is_the_minimum():
    img = ramp_image()
    out = resample_image(img, (1.0, 1.0, 1.0), is_label=False)
    arr = image_to_array(out)
    checked = 0
    for index in np.ndindex(arr.shape):
        point = out.TransformIndexToPhysicalPoint([int(i) for i in index])
        inside = np.array(img.TransformPhysicalPointToContinuousIndex(point))
        if np.all(inside >= 0) and np.all(inside <= np.array(img.GetSize()) - 1):
            assert arr[index] == pytest.approx(ramp(point), abs=1e-3)
            checked += 1
    assert checked > 1000
    # z = 3 + 9 mm lies 1.1 input voxels beyond the last slice centre (3 + 7.5 mm): outside
    np.testing.assert_array_equal(arr[:, :, 9], image_to_array(img).min())


def test_label_nearest_neighbour_keeps_values_and_type():
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array([0, 3, 7], dtype=np.uint8), size=(5, 4, 3))
    img = image3d(labels)
    out = resample_image(img, (1.0, 1.0, 1.0), is_label=True)
    arr = image_to_array(out)
    assert out.GetPixelID() == sitk.sitkUInt8
    assert arr.shape == (10, 8, 6)
    assert set(np.unique(arr)) == {0, 3, 7}
    np.testing.assert_array_equal(arr[::2, ::2, ::2], labels)  # coincident voxel centres


def test_four_channel_image_resamples_per_channel():
    arr = np.stack([np.full((6, 4, 2), c + 1.0, dtype=np.float32) for c in range(4)])
    arr[0, 0, 0, 0] = -5.0  # channel 0 minimum: fills its outside voxels
    img = array_to_image(arr, spacing=(2.0, 2.0, 2.0), origin=(1.0, 2.0, 3.0), direction=IDENTITY)
    out = resample_image(img, (1.0, 1.0, 1.0), is_label=False)
    assert out.GetSize() == (12, 8, 4, 4)
    assert out.GetSpacing()[:3] == (1.0, 1.0, 1.0)
    assert out.GetOrigin()[:3] == (1.0, 2.0, 3.0)
    values = image_to_array(out)
    assert values.shape == (4, 12, 8, 4)
    for c in (1, 2, 3):
        np.testing.assert_array_equal(values[c], c + 1.0)
    assert values[0, 0, 0, 0] == -5.0
    assert values[0, 11, 7, 3] == -5.0  # beyond the field: channel 0's own minimum


def test_vector_image_becomes_four_d():
    zyxc = np.zeros((2, 4, 6, 2), dtype=np.float32)
    zyxc[..., 1] = 4.0
    img = sitk.GetImageFromArray(zyxc, isVector=True)
    img.SetSpacing((2.0, 2.0, 2.0))
    out = resample_image(img, (1.0, 1.0, 1.0), is_label=False)
    assert out.GetSize() == (12, 8, 4, 2)
    np.testing.assert_array_equal(image_to_array(out)[1], 4.0)


@pytest.mark.parametrize(
    "bad", [(1.0, 1.0), (1.0, 0.0, 1.0), (1.0, -2.0, 1.0), (1.0, math.nan, 1.0), "111", (1, "1", 1)]
)
def test_bad_spacing_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="spacing must be three positive finite numbers"):
        resample_image(ramp_image(), bad, is_label=False)


def test_validate_spacing_names_the_callers_key():
    assert validate_spacing([1, 1.5, 2]) == (1.0, 1.5, 2.0)
    with pytest.raises(ConfigError, match=r"^resample\.luna16\.spacing must"):
        validate_spacing([1, 1], key="resample.luna16.spacing")


# ---------------------------------------------------------------- intensities
def test_hu_window_lung():
    hu = np.array([-3000.0, -1000.0, -500.0, 0.0, 1000.0, 2500.0])
    np.testing.assert_allclose(normalize(hu, LUNG), [0.0, 0.0, 0.25, 0.5, 1.0, 1.0])
    assert normalize(hu, LUNG).dtype == np.float32


def test_hu_window_liver():
    liver = Normalization("window", min=-160, max=240)
    hu = np.array([-200.0, -160.0, 40.0, 140.0, 300.0])
    np.testing.assert_allclose(normalize(hu, liver), [0, 0, 0.5, 0.75, 1])


def test_percentile_per_channel_on_foreground():
    channel = np.zeros((10, 10, 2), dtype=np.float32)
    channel[:, :, 0] = np.arange(1, 101).reshape(10, 10)  # foreground 1..100, background 0
    # numpy's linear percentile of 1..100: position 99 p / 100 -> 10th: 10.9, 90th: 90.1
    expected = np.clip((channel - 10.9) / (90.1 - 10.9), 0.0, 1.0)
    expected[channel == 0] = 0.0
    both = np.stack([channel, 10.0 * channel])  # scaling a channel must not change the result
    out = normalize(both, Normalization("percentile", lower=10, upper=90))
    np.testing.assert_allclose(out[0], expected, atol=1e-6)
    np.testing.assert_allclose(out[1], expected, atol=1e-6)
    assert out[0, 0, 0, 0] == 0.0 and out[0, 9, 9, 0] == 1.0  # 1 and 100 clipped
    assert np.all(out[:, :, :, 1] == 0.0)  # background stays 0


def test_percentile_constant_and_empty_channels():
    arr = np.zeros((2, 3, 3, 3), dtype=np.float32)
    arr[0, 1, 1, 1] = 5.0
    out = normalize(arr, Normalization("percentile"))
    assert out[0, 1, 1, 1] == 1.0 and out[0].sum() == 1.0
    assert np.all(out[1] == 0.0)


def test_none_keeps_values():
    values = np.array([[[-1000.0, 3.5]]])
    np.testing.assert_array_equal(normalize(values, Normalization("none")), values)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"kind": "zscore"}, "normalization.kind"),
        ({"kind": "window", "min": 10, "max": 10}, "normalization.min"),
        ({"kind": "percentile", "lower": 99, "upper": 1}, "normalization.lower"),
    ],
)
def test_normalization_validates(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        Normalization(**kwargs)


# ---------------------------------------------------------------- one case
def test_resample_case_writes_outputs_and_entry(tmp_path: Path):
    hu = np.broadcast_to((100 * np.arange(4))[:, None, None], (4, 3, 2))  # x ramp, 100 HU per 2 mm
    image = write_ct(tmp_path / "raw" / "ct.mhd", hu)
    label = np.zeros((4, 3, 2), dtype=np.uint8)
    label[1:3] = 2
    seg_path = image.with_name("ct_seg.nii.gz")
    write_image(seg_path, image3d(label))
    case = {"id": "c1", "image": str(image), "label": str(seg_path), "group": "train"}
    entry = resample_case(case, tmp_path / "out", spacing=(1.0, 1.0, 1.0), normalization=LUNG)
    assert entry == {
        "id": "c1", "group": "train", "image": "c1.nii.gz", "label": "c1_label.nii.gz",
        "channels": 1, "shape": [8, 6, 4], "spacing": [1.0, 1.0, 1.0], "origin": [0.0, 0.0, 0.0],
        "direction": list(IDENTITY), "original_spacing": [2.0, 2.0, 2.0], "original_shape": [4, 3, 2],
    }
    out = read_image(tmp_path / "out" / "c1.nii.gz")
    assert out.GetPixelID() == sitk.sitkFloat32
    values = image_to_array(out)
    # x = 0, 1, ..., 6 mm -> 0, 50, ..., 300 HU -> (HU + 1000) / 2000
    np.testing.assert_allclose(values[:7, 0, 0], (np.arange(7) * 50 + 1000) / 2000, atol=1e-6)
    seg = read_image(tmp_path / "out" / "c1_label.nii.gz")
    assert seg.GetPixelID() == sitk.sitkUInt8
    # x = 0..7 mm sit at input index x / 2; ITK rounds the half-way ties (odd x) up and
    # x = 7 mm (index 3.5) lies outside the field: 0
    np.testing.assert_array_equal(image_to_array(seg)[:, 0, 0], [0, 2, 2, 2, 2, 0, 0, 0])


def test_label_on_another_grid_names_both_files(tmp_path: Path):
    image = write_ct(tmp_path / "ct.nii.gz", np.full((4, 3, 2), -1000))
    label = tmp_path / "seg.nii.gz"
    write_image(label, image3d(np.zeros((4, 3, 2), np.uint8), spacing=(2, 2, 3)))
    case = {"id": "c", "image": str(image), "label": str(label), "group": "train"}
    with pytest.raises(DataError) as info:
        resample_case(case, tmp_path / "out", spacing=(1, 1, 1), normalization=LUNG)
    assert str(image) in str(info.value) and str(label) in str(info.value)
    assert "spacing (2.0, 2.0, 3.0) vs (2.0, 2.0, 2.0)" in str(info.value)
    assert not (tmp_path / "out" / "c.nii.gz").exists()


def test_non_integer_label_is_rejected(tmp_path: Path):
    image = write_ct(tmp_path / "ct.nii.gz", np.full((4, 3, 2), -1000))
    label = tmp_path / "seg.nii.gz"
    values = np.full((4, 3, 2), 0.5, np.float32)
    write_image(label, image3d(values))
    case = {"id": "c", "image": str(image), "label": str(label), "group": "train"}
    with pytest.raises(DataError, match=r"seg\.nii\.gz: label values must be integers"):
        resample_case(case, tmp_path / "out", spacing=(2, 2, 2), normalization=LUNG)


def test_four_d_case_entry(tmp_path: Path):
    arr = np.stack([np.full((4, 3, 2), 10.0 * (c + 1), np.float32) for c in range(4)])
    arr[:, 0, 0, 0] = 0.0  # background
    image = tmp_path / "brats.nii.gz"
    write_image(image, image3d(arr))
    case = {"id": "b", "image": str(image), "label": None, "group": "test"}
    mri = Normalization("percentile")
    entry = resample_case(case, tmp_path / "out", spacing=(2, 2, 2), normalization=mri)
    summary = (entry["channels"], entry["shape"], entry["label"], len(entry["direction"]))
    assert summary == (4, [4, 3, 2], None, 16)
    values = image_to_array(read_image(tmp_path / "out" / "b.nii.gz", allow_channels=True))
    assert values.shape == (4, 4, 3, 2)
    assert np.all(values[:, 0, 0, 0] == 0.0)
    assert np.all(values[:, 1:, :, :] == 1.0)  # constant foreground -> 1


# ---------------------------------------------------------------- the dataset
def make_cases(root: Path, n: int) -> list[dict]:
    """``n`` small CTs with distinct constant HU, as resolved manifest entries."""
    return [
        {"id": f"case{i}", "image": str(write_ct(root / f"case{i}.mhd", np.full((4, 3, 2), 100 * i - 1000))),
         "label": None, "group": "subset0"}
        for i in range(n)
    ]


def test_resample_dataset_writes_cases_json_in_input_order(tmp_path: Path):
    cases = make_cases(tmp_path / "raw", 3)[::-1]
    entries = resample_dataset(
        cases, tmp_path / "out", spacing=(1, 1, 1), normalization=LUNG, workers=2, progress=False
    )
    assert [e["id"] for e in entries] == ["case2", "case1", "case0"]
    assert json.loads((tmp_path / "out" / "cases.json").read_text()) == entries
    for i in range(3):
        values = image_to_array(read_image(tmp_path / "out" / f"case{i}.nii.gz"))
        np.testing.assert_allclose(values, (100 * i - 1000 + 1000) / 2000)  # the lung window [-1000, 1000] HU


@pytest.mark.parametrize("workers", [1, 2])
def test_one_bad_case_raises_and_leaves_no_cases_json(tmp_path: Path, workers: int):
    cases = make_cases(tmp_path / "raw", 3)
    raw = tmp_path / "raw" / "case1.raw"
    raw.write_bytes(raw.read_bytes()[:-2])
    out = tmp_path / "out"
    out.mkdir()
    (out / "cases.json").write_text("[]")  # a stale result of an earlier run
    with pytest.raises(DataError) as info:
        resample_dataset(
            cases, out, spacing=(1, 1, 1), normalization=LUNG, workers=workers, progress=False
        )
    message = str(info.value)
    assert "case 'case1'" in message and str(raw) in message and "expected 48 bytes, found 46" in message
    assert not (out / "cases.json").exists()


def test_duplicate_ids_are_rejected(tmp_path: Path):
    cases = make_cases(tmp_path / "raw", 2)
    cases[1]["id"] = "case0"
    with pytest.raises(DataError, match="duplicate case ids: case0"):
        resample_dataset(cases, tmp_path / "out", spacing=(1, 1, 1), normalization=LUNG, progress=False)


def test_arrays_written_by_workers_are_recorded_with_the_digests_of_their_bytes(tmp_path: Path):
    """The workers hash the arrays while writing them and hand the digests back: the folder's
    record matches each file as read back, and cases.json does not carry them."""
    import hashlib

    from pcrl.records import pending, write_contents

    cases = make_cases(tmp_path / "raw", 3)
    out = tmp_path / "out"
    entries = resample_dataset(cases, out, spacing=(1, 1, 1), normalization=LUNG, workers=2, progress=False,
                               arrays=True)
    assert all(set(e["arrays"]) == {"image"} and "_records" not in e for e in entries)
    handed = pending(out / "case1.npy")  # the worker's digest, kept in this process (taken out here)
    assert handed is not None and handed["sha256"] == hashlib.sha256((out / "case1.npy").read_bytes()).hexdigest()
    files = write_contents(out, {"stage": "resample"})["files"]
    assert sorted(files) == sorted([*(f"case{i}{s}" for i in range(3) for s in (".nii.gz", ".npy")), "cases.json"])
    for name, record in files.items():
        data = (out / name).read_bytes()
        assert (record["size"], record["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    loaded = np.load(out / "case0.npy")
    assert files["case0.npy"]["dtype"] == "<f4" and files["case0.npy"]["shape"] == [1, *loaded.shape[1:]]
