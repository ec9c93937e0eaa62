"""Tests of pcrl.data.imageio: safe reading, axis order, atomic writing."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pcrl.data.imageio import (
    array_to_image,
    check_metaimage,
    image_to_array,
    read_image,
    write_image,
)
from pcrl.errors import DataError

ROTATION_Z90 = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def coded_array(shape: tuple[int, ...]) -> np.ndarray:
    """Array whose value spells its index: a[i, j, k] = 100 i + 10 j + k."""
    grids = np.indices(shape)
    weights = [10 ** (len(shape) - 1 - d) for d in range(len(shape))]
    return sum(w * g for w, g in zip(weights, grids)).astype(np.int16)


def image3d(arr: np.ndarray) -> sitk.Image:
    """``arr`` as an image of 1 mm voxels at the origin."""
    return array_to_image(arr, spacing=(1, 1, 1), origin=(0, 0, 0), direction=np.eye(3).ravel())


def small_image(dtype=np.int16) -> sitk.Image:
    """A 4 x 3 x 2 (x, y, z) image with spacing, origin and a rotated direction."""
    img = array_to_image(
        coded_array((4, 3, 2)).astype(dtype),
        spacing=(0.5, 1.0, 2.0),
        origin=(-3.0, 4.0, 5.0),
        direction=ROTATION_Z90,
    )
    return img


# ---------------------------------------------------------------- axis order
def test_array_to_image_puts_x_first():
    arr = coded_array((4, 3, 2))
    img = image3d(arr)
    assert img.GetSize() == (4, 3, 2)
    assert img.GetPixel(3, 1, 0) == 310
    assert img.GetPixel(2, 0, 1) == 201
    np.testing.assert_array_equal(image_to_array(img), arr)


def test_four_d_array_has_channels_last_in_image_and_extended_geometry():
    arr = np.stack([coded_array((4, 3, 2)) + 1000 * c for c in range(3)])  # (C, x, y, z)
    img = array_to_image(arr, spacing=(0.5, 1, 2), origin=(1, 2, 3), direction=ROTATION_Z90)
    assert img.GetSize() == (4, 3, 2, 3)
    assert img.GetPixel(3, 2, 1, 2) == 2321
    assert img.GetSpacing() == (0.5, 1.0, 2.0, 1.0)
    assert img.GetOrigin() == (1.0, 2.0, 3.0, 0.0)
    assert img.GetDirection()[:3] == ROTATION_Z90[:3]
    assert img.GetDirection()[12:] == (0.0, 0.0, 0.0, 1.0)
    np.testing.assert_array_equal(image_to_array(img), arr)


def test_vector_image_becomes_channels_first():
    zyxc = np.zeros((2, 3, 4, 2), dtype=np.float32)  # sitk order (z, y, x, C)
    zyxc[1, 2, 3, 1] = 7.0
    img = sitk.GetImageFromArray(zyxc, isVector=True)
    arr = image_to_array(img)
    assert arr.shape == (2, 4, 3, 2)
    assert arr[1, 3, 2, 1] == 7.0
    assert arr.sum() == 7.0


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("name", ["img.nii.gz", "img.mhd", "img.nrrd"])
def test_write_then_read_keeps_values_and_geometry(tmp_path: Path, name: str):
    img = small_image()
    write_image(tmp_path / name, img)
    back = read_image(tmp_path / name)
    np.testing.assert_array_equal(image_to_array(back), coded_array((4, 3, 2)))
    np.testing.assert_allclose(back.GetSpacing(), (0.5, 1.0, 2.0))
    np.testing.assert_allclose(back.GetOrigin(), (-3.0, 4.0, 5.0))
    np.testing.assert_allclose(back.GetDirection(), ROTATION_Z90, atol=1e-6)


def test_write_leaves_only_final_files_and_mhd_points_at_final_raw(tmp_path: Path):
    write_image(tmp_path / "case.mhd", small_image())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.mhd", "case.raw"]
    assert "ElementDataFile = case.raw" in (tmp_path / "case.mhd").read_text()


def test_nii_gz_is_gzip_compressed(tmp_path: Path):
    write_image(tmp_path / "a.nii.gz", small_image())
    with gzip.open(tmp_path / "a.nii.gz") as fh:
        assert len(fh.read()) > 0  # raises BadGzipFile if not gzip


def test_failed_write_leaves_nothing(tmp_path: Path):
    with pytest.raises(RuntimeError):
        write_image(tmp_path / "a.unknownformat", small_image())
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- bad inputs
def test_missing_file_is_named(tmp_path: Path):
    with pytest.raises(DataError, match=r"nothere\.nii\.gz: file does not exist"):
        read_image(tmp_path / "nothere.nii.gz")


def test_truncated_raw_names_raw_and_byte_counts(tmp_path: Path):
    write_image(tmp_path / "ct.mhd", small_image())  # 4*3*2 int16 = 48 bytes
    raw = tmp_path / "ct.raw"
    raw.write_bytes(raw.read_bytes()[:43])
    with pytest.raises(DataError) as info:
        read_image(tmp_path / "ct.mhd")
    message = str(info.value)
    assert str(raw) in message
    assert "truncated: expected 48 bytes, found 43" in message


def test_oversized_raw_is_reported(tmp_path: Path):
    write_image(tmp_path / "ct.mhd", small_image(np.float32))  # 24 float32 = 96 bytes
    raw = tmp_path / "ct.raw"
    raw.write_bytes(raw.read_bytes() + b"\0" * 4)
    with pytest.raises(DataError, match="too large: expected 96 bytes, found 100"):
        read_image(tmp_path / "ct.mhd")


def test_truncated_compressed_raw_checked_against_compressed_size(tmp_path: Path):
    mhd = tmp_path / "c.mhd"
    write_image(mhd, small_image(), compress=True)
    header = mhd.read_text()
    declared = int(header.split("CompressedDataSize = ")[1].split()[0])
    zraw = tmp_path / "c.zraw"
    zraw.write_bytes(zraw.read_bytes()[:-3])
    with pytest.raises(DataError, match=f"expected {declared} bytes, found {declared - 3}"):
        check_metaimage(mhd)


def test_truncated_local_mha_is_reported(tmp_path: Path):
    mha = tmp_path / "x.mha"
    write_image(mha, small_image())
    data = mha.read_bytes()
    header_bytes = len(data) - 48
    mha.write_bytes(data[:-8])
    expected = f"expected {header_bytes + 48} bytes, found {len(data) - 8}"
    with pytest.raises(DataError, match=expected):
        read_image(mha)


def test_missing_data_file_names_header_and_data_file(tmp_path: Path):
    write_image(tmp_path / "ct.mhd", small_image())
    (tmp_path / "ct.raw").unlink()
    with pytest.raises(DataError) as info:
        read_image(tmp_path / "ct.mhd")
    assert str(tmp_path / "ct.mhd") in str(info.value)
    assert str(tmp_path / "ct.raw") in str(info.value)
    assert "does not exist" in str(info.value)


def test_metaimage_header_inconsistent_ndims(tmp_path: Path):
    write_image(tmp_path / "ct.mhd", small_image())
    mhd = tmp_path / "ct.mhd"
    mhd.write_text(mhd.read_text().replace("DimSize = 4 3 2", "DimSize = 4 3"))
    with pytest.raises(DataError, match="NDims = 3 but DimSize has 2 values"):
        read_image(mhd)


@pytest.mark.parametrize("cut", [0.5, None])
def test_corrupt_nifti_becomes_data_error(tmp_path: Path, cut: float | None):
    path = tmp_path / "bad.nii.gz"
    write_image(path, small_image())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)] if cut else b"not an image at all")
    with pytest.raises(DataError, match=r"bad\.nii\.gz: SimpleITK cannot read it"):
        read_image(path)


@pytest.mark.parametrize("name", ["n.nii.gz", "n.nii", "n.nrrd"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_voxels_are_counted(tmp_path: Path, name: str, dtype):
    # ITK < 6 reads NIfTI NaN/inf as 0, so this also checks the file itself is scanned.
    arr = np.zeros((4, 3, 2), dtype=dtype)
    arr[0, 0, 0] = np.nan
    arr[3, 2, 1] = -np.inf
    write_image(tmp_path / name, image3d(arr))
    with pytest.raises(DataError, match=rf"{name}: 2 non-finite voxels \(NaN or inf\) of 24"):
        read_image(tmp_path / name)


def test_nan_in_one_channel_of_4d_nifti(tmp_path: Path):
    arr = np.ones((4, 3, 3, 2), dtype=np.float32)  # (C, x, y, z)
    arr[2, 1, 1, 1] = np.nan
    path = tmp_path / "brats.nii.gz"
    write_image(path, image3d(arr))
    with pytest.raises(DataError, match="1 non-finite voxels .* of 72"):
        read_image(path, allow_channels=True)


def test_finite_float_nifti_is_accepted(tmp_path: Path):
    arr = np.linspace(-1, 1, 24, dtype=np.float32).reshape(4, 3, 2)
    path = tmp_path / "ok.nii.gz"
    write_image(path, image3d(arr))
    np.testing.assert_array_equal(image_to_array(read_image(path)), arr)


def test_two_d_image_rejected_with_its_size(tmp_path: Path):
    img = sitk.GetImageFromArray(np.zeros((4, 5), dtype=np.uint8))  # (y, x) -> size (5, 4)
    write_image(tmp_path / "flat.nii.gz", img)
    expected = r"flat\.nii\.gz: expected a 3D image, found a 2D image of size \(5, 4\)"
    with pytest.raises(DataError, match=expected):
        read_image(tmp_path / "flat.nii.gz")
    assert read_image(tmp_path / "flat.nii.gz", expect_dim=2).GetSize() == (5, 4)


def test_four_d_image_needs_allow_channels(tmp_path: Path):
    arr = np.ones((4, 3, 3, 2), dtype=np.float32)  # (C, x, y, z)
    path = tmp_path / "brats.nii.gz"
    write_image(path, image3d(arr))
    with pytest.raises(DataError, match="expected a 3D image, found a 4D image"):
        read_image(path)
    assert read_image(path, allow_channels=True).GetSize() == (3, 3, 2, 4)


def test_vector_image_needs_allow_channels(tmp_path: Path):
    path = tmp_path / "rgb.nrrd"
    write_image(path, sitk.GetImageFromArray(np.zeros((2, 3, 4, 3), np.uint8), isVector=True))
    with pytest.raises(DataError, match="3 components per voxel"):
        read_image(path)
    assert read_image(path, allow_channels=True).GetNumberOfComponentsPerPixel() == 3
