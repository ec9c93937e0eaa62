"""Tests of pcrl.io.images: safe reading, axis order, atomic writing."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pcrl.io.metaimage import check_metaimage
from pcrl.io.images import array_to_image, image_to_array, read_image, write_image
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


def test_nii_gz_is_a_gzipped_nifti1_file_of_the_image(tmp_path: Path):
    """The bytes, read with the NIfTI-1 header layout (nifti1.h) rather than SimpleITK:
    int16 voxels x fastest after a 352-byte header, and the geometry in NIfTI's RAS world,
    i.e. ITK's LPS with x and y negated, worked out by hand for small_image():
    srow = diag(-1, -1, 1) @ direction @ diag(spacing) | (3, -4, 5)."""
    write_image(tmp_path / "a.nii.gz", small_image())
    with gzip.open(tmp_path / "a.nii.gz") as fh:
        raw = fh.read()  # raises BadGzipFile if not gzip
    assert struct.unpack_from("<i", raw, 0) == (348,)  # sizeof_hdr
    assert raw[344:348] == b"n+1\0"  # magic: header and voxels in one file
    assert struct.unpack_from("<4h", raw, 40) == (3, 4, 3, 2)  # dim: 3D, x, y, z
    assert struct.unpack_from("<2h", raw, 70) == (4, 16)  # datatype DT_INT16, bitpix
    assert struct.unpack_from("<4f", raw, 76) == (1.0, 0.5, 1.0, 2.0)  # qfac, spacing
    assert struct.unpack_from("<f", raw, 108) == (352.0,)  # vox_offset
    assert struct.unpack_from("<3f", raw, 268) == (3.0, -4.0, 5.0)  # qoffset: origin in RAS
    assert struct.unpack_from("<12f", raw, 280) == (0.0, 1.0, 0.0, 3.0,
                                                    -0.5, 0.0, 0.0, -4.0,
                                                    0.0, 0.0, 2.0, 5.0)  # srow_x, srow_y, srow_z
    voxels = struct.unpack_from("<24h", raw, 352)
    assert voxels == tuple(100 * i + 10 * j + k for k in range(2) for j in range(3) for i in range(4))
    assert len(raw) == 352 + 24 * 2


def test_failed_write_leaves_nothing(tmp_path: Path):
    with pytest.raises(DataError, match="a.unknownformat: cannot write the image"):
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
    with pytest.raises(DataError, match=r"bad\.nii\.gz: corrupt or truncated"):
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


# ---------------------------------------------------------------- integrity of the bytes
def big_image() -> sitk.Image:
    """A 40 x 40 x 30 float image of noise: large enough for several gzip blocks."""
    values = np.random.default_rng(0).random((40, 40, 30)).astype(np.float32)
    return array_to_image(values, spacing=(1, 1, 2), origin=(0, 0, 0), direction=np.eye(3).ravel())


def test_nifti_cut_in_half_is_refused_although_simpleitk_reads_it(tmp_path: Path):
    path = tmp_path / "half.nii.gz"
    write_image(path, big_image())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    sitk.ReadImage(str(path))  # the reason for the check: SimpleITK does not complain
    with pytest.raises(DataError, match=r"half\.nii\.gz: corrupt or truncated .*end-of-stream"):
        read_image(path)


def test_nifti_with_corrupt_bytes_fails_its_crc(tmp_path: Path):
    path = tmp_path / "flipped.nii.gz"
    write_image(path, big_image())
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 300] = np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"flipped\.nii\.gz: corrupt or truncated"):
        read_image(path)


def test_uncompressed_nifti_short_of_its_voxels(tmp_path: Path):
    path = tmp_path / "short.nii"
    write_image(path, big_image())
    data = path.read_bytes()
    path.write_bytes(data[:-4])
    expected = 352 + 40 * 40 * 30 * 4  # NIfTI-1 header + float32 voxels
    with pytest.raises(DataError, match=f"announces {expected} bytes .* holds {expected - 4}"):
        read_image(path)


def _compressed_mhd(tmp_path: Path) -> tuple[Path, str]:
    mhd = tmp_path / "z.mhd"
    write_image(mhd, big_image(), compress=True)
    return mhd, mhd.read_text()


def test_compressed_raw_needs_compressed_data_size(tmp_path: Path):
    mhd, header = _compressed_mhd(tmp_path)
    mhd.write_text("".join(line for line in header.splitlines(keepends=True)
                           if not line.startswith("CompressedDataSize")))
    with pytest.raises(DataError, match="CompressedData = True without CompressedDataSize"):
        read_image(mhd)


def test_corrupt_compressed_raw_is_inflated_and_refused(tmp_path: Path):
    mhd, _ = _compressed_mhd(tmp_path)
    zraw = tmp_path / "z.zraw"
    data = bytearray(zraw.read_bytes())
    data[100:400] = bytes(300)
    zraw.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"z\.zraw: (corrupt compressed image data|compressed image data inflate)"):
        read_image(mhd)


@pytest.mark.parametrize("spacing", ["1 -1 2", "1 0 2", "1 nan 2", "1 x 2"])
def test_spacing_must_be_positive_and_finite(tmp_path: Path, spacing: str):
    mhd = tmp_path / "s.mhd"
    write_image(mhd, small_image())
    mhd.write_text(mhd.read_text().replace("ElementSpacing = 0.5 1 2", f"ElementSpacing = {spacing}"))
    with pytest.raises(DataError, match=r"s\.mhd: ElementSpacing"):
        read_image(mhd)


def test_data_file_outside_the_header_folder_is_not_read(tmp_path: Path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    write_image(outside / "secret.mhd", small_image())
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    header = (outside / "secret.mhd").read_text()
    (dataset / "scan.mhd").write_text(header.replace("ElementDataFile = secret.raw",
                                                     "ElementDataFile = ../elsewhere/secret.raw"))
    with pytest.raises(DataError, match="lies outside the header's folder"):
        read_image(dataset / "scan.mhd")


_FULL_DISK = """
import resource, signal, sys
import numpy as np
from pcrl.io.images import array_to_image, write_image
from pcrl.errors import DataError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
values = np.random.default_rng(0).random((40, 40, 30)).astype(np.float32)
img = array_to_image(values, spacing=(1, 1, 1), origin=(0, 0, 0), direction=np.eye(3).ravel())
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
try:
    write_image(sys.argv[1], img)
except DataError as exc:
    print("DataError:", exc)
"""


@pytest.mark.parametrize("name", ["full.nii.gz", "full.nii", "full.mhd"])
def test_a_write_cut_short_is_an_error_and_leaves_no_file(tmp_path: Path, name: str):
    """The writer hits a file size limit (as on a full disk): ITK prints "wrote only 0 of N
    bytes" without raising; the written file is verified, so the error names it."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _FULL_DISK, str(tmp_path / name)],
                          capture_output=True, text=True, timeout=120)
    assert f"DataError: {tmp_path / name}:" in proc.stdout, proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["c.nii.gz", "c.nii"])
def test_nonfinite_voxels_are_counted_across_read_chunks(tmp_path: Path, monkeypatch, name: str):
    """The file is read once, in chunks: with 7-byte chunks every float32 straddles a chunk
    boundary somewhere, and the count must still equal numpy's over the voxels."""
    import pcrl.io.nifti as nifti

    values = np.random.default_rng(0).random((9, 7, 5)).astype(np.float32)
    values.flat[[0, 13, 14, 200, 314]] = [np.nan, np.inf, -np.inf, np.nan, np.nan]
    path = tmp_path / name
    write_image(path, array_to_image(values, spacing=(1, 1, 1), origin=(0, 0, 0),
                                     direction=np.eye(3).ravel()))
    monkeypatch.setattr(nifti, "_CHUNK_BYTES", 7)
    assert nifti.check_nifti(path) == (5, values.size)
    with pytest.raises(DataError, match=f"5 non-finite voxels \\(NaN or inf\\) of {values.size}"):
        read_image(path)
