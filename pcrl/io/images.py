"""Read and write medical images safely, with clear errors naming the file at fault.

SimpleITK reads MetaImage (LUNA16 ``.mhd``/``.raw``) and NIfTI (Medical Segmentation
Decathlon ``.nii.gz``) with their spacing, origin and direction, but a truncated ``.raw``
is reported as "File cannot be read ... No such file or directory", and ITK before
version 6 reads the NaN/inf voxels of a NIfTI file as 0. :func:`read_image` verifies the
file's bytes before SimpleITK runs (:mod:`pcrl.io.metaimage`, :mod:`pcrl.io.nifti`), the dimension, spacing
and non-finite voxels after, and raises :class:`pcrl.errors.DataError` naming the file;
:func:`write_image` verifies what SimpleITK wrote the same way.

Arrays follow docs/CONVENTIONS.md: volumes are (x, y, z), multi-channel volumes
(C, x, y, z), whereas ``sitk.GetArrayFromImage`` returns (z, y, x).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pcrl.io.metaimage import check_metaimage
from pcrl.io.nifti import check_nifti
from pcrl.atomic import write_failure
from pcrl.errors import DataError, OutputWriteError


_FLOAT_PIXEL_IDS = frozenset(
    {sitk.sitkFloat32, sitk.sitkFloat64, sitk.sitkVectorFloat32, sitk.sitkVectorFloat64}
)
_META_SUFFIXES = (".mhd", ".mha")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")


def check_image_file(path: Path) -> tuple[int, int] | None:
    """Verify the bytes of an image file before (or after) SimpleITK touches it.

    MetaImage: :func:`check_metaimage`. NIfTI: :func:`check_nifti` (the whole gzip
    stream with its CRC and length, and the voxel bytes the header announces). SimpleITK
    reads a ``.nii.gz`` cut in half or with corrupt bytes without an error, filling the
    missing voxels, so this is the only check that catches it.

    Returns:
        For NIfTI, (non-finite voxels, voxels) of floating-point data ((0, 0) for other
        data types); None for other formats.
    """
    name = path.name.lower()
    if path.suffix.lower() in _META_SUFFIXES:
        check_metaimage(path)
    elif name.endswith(_NIFTI_SUFFIXES):
        return check_nifti(path)
    return None


def _check_is_file(path: Path) -> None:
    """Raise DataError unless ``path`` is an existing regular file."""
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    if not path.is_file():
        raise DataError(f"{path}: is not a file")


def read_image(
    path: str | os.PathLike[str], *, expect_dim: int | None = 3, allow_channels: bool = False
) -> sitk.Image:
    """Read an image with SimpleITK, checking that it is sound before and after.

    Args:
        path: image file (``.mhd``, ``.mha``, ``.nii``, ``.nii.gz``, ... any format
            SimpleITK reads).
        expect_dim: spatial dimension required (``None``: any).
        allow_channels: accept several channels, stored either as a 4D image whose
            last axis is the channel (MSD Task01_BrainTumour) or as a vector image.

    Returns:
        The image, untouched.

    Raises:
        DataError: the file (or a MetaImage's data file) is missing, truncated or
            unreadable, has the wrong dimension or unwanted channels, or holds NaN/inf.
    """
    path = Path(path)
    _check_is_file(path)
    nifti_counts = check_image_file(path)
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DataError(f"{path}: SimpleITK cannot read it: {_sitk_reason(exc)}") from exc
    _check_dimension(path, img, expect_dim, allow_channels)
    _check_spacing(path, img.GetSpacing())
    _check_finite(path, img, nifti_counts)
    return img


def _check_spacing(path: Path, spacing: Sequence[float]) -> None:
    """Raise DataError unless every spacing is a finite number > 0."""
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise DataError(f"{path}: spacing {tuple(spacing)} must be finite and > 0 on every axis")


def _sitk_reason(exc: RuntimeError) -> str:
    """The last line of a SimpleITK exception, without ITK's object address prefix."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[-1] if lines else "unknown error"
    return re.sub(r"^(sitk::ERROR:|ITK ERROR:\s*\w+\(0x[0-9a-f]+\):)\s*", "", reason)


def _check_dimension(
    path: Path, img: sitk.Image, expect_dim: int | None, allow_channels: bool
) -> None:
    """Raise DataError when the image's spatial dimension or channels are not as expected."""
    dim = img.GetDimension()
    channels = img.GetNumberOfComponentsPerPixel() > 1
    if expect_dim is not None and allow_channels and dim == expect_dim + 1 and not channels:
        return  # channels stored as the last image axis (4D NIfTI)
    if expect_dim is not None and dim != expect_dim:
        raise DataError(
            f"{path}: expected a {expect_dim}D image, found a {dim}D image of size {img.GetSize()}"
        )
    if channels and not allow_channels:
        raise DataError(
            f"{path}: expected a single-channel image, found "
            f"{img.GetNumberOfComponentsPerPixel()} components per voxel"
        )


def _check_finite(path: Path, img: sitk.Image, nifti_counts: tuple[int, int] | None) -> None:
    """Raise DataError when a floating-point image holds NaN or infinite voxels.

    ITK before version 6 silently turns the NaN/inf voxels of a NIfTI file into 0
    (its nifti_read_buffer; fixed by ITK pull request 6683), so for NIfTI the voxels are
    those counted in the file itself (``nifti_counts``, from the single pass of
    :func:`pcrl.io.nifti.check_nifti`) rather than in the image SimpleITK returns.
    """
    if img.GetPixelID() not in _FLOAT_PIXEL_IDS:
        return
    if nifti_counts is not None:
        bad, total = nifti_counts
    else:
        values = sitk.GetArrayViewFromImage(img)
        bad, total = int(values.size - np.count_nonzero(np.isfinite(values))), values.size
    if bad:
        raise DataError(f"{path}: {bad} non-finite voxels (NaN or inf) of {total}")


def image_to_array(img: sitk.Image) -> np.ndarray:
    """Voxels of ``img`` as a NumPy array in (x, y, z) order, channels first.

    A 3D scalar image gives (x, y, z); a 4D image (channels as its last axis) or a 3D
    vector image gives (C, x, y, z); a 2D image gives (x, y).
    """
    arr = sitk.GetArrayFromImage(img)  # (z, y, x), (t, z, y, x) or (z, y, x, C)
    if img.GetNumberOfComponentsPerPixel() > 1:
        order = (arr.ndim - 1, *range(arr.ndim - 2, -1, -1))
    elif img.GetDimension() == 4:
        order = (0, 3, 2, 1)
    else:
        order = tuple(range(arr.ndim - 1, -1, -1))
    return np.ascontiguousarray(arr.transpose(order))


def array_to_image(
    arr: np.ndarray,
    *,
    spacing: Sequence[float],
    origin: Sequence[float],
    direction: Sequence[float],
) -> sitk.Image:
    """Inverse of :func:`image_to_array`: an (x, y, z) or (C, x, y, z) array as an image.

    A (C, x, y, z) array becomes a 4D image with the channel as its last axis (the
    layout of MSD's 4D NIfTI). For a 4D array, ``spacing``/``origin``/``direction`` may
    be the 3D ones (the channel axis then gets spacing 1, origin 0 and no rotation) or
    the 4D ones SimpleITK gives.
    """
    if arr.ndim not in (2, 3, 4):
        raise ValueError(f"expected an (x, y[, z]) or (C, x, y, z) array, got shape {arr.shape}")
    if arr.ndim == 4:
        czyx = np.ascontiguousarray(arr.transpose(0, 3, 2, 1))
        img = sitk.GetImageFromArray(czyx, isVector=False)
        spacing, origin, direction = _extend_to_4d(spacing, origin, direction)
    else:
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose()), isVector=False)
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(o) for o in origin])
    img.SetDirection([float(d) for d in direction])
    return img


def _extend_to_4d(
    spacing: Sequence[float], origin: Sequence[float], direction: Sequence[float]
) -> tuple[list[float], list[float], list[float]]:
    """Extend 3D geometry with a channel axis (spacing 1, origin 0); keep 4D geometry."""
    if len(spacing) == 4:
        return list(spacing), list(origin), list(direction)
    rot = np.eye(4)
    rot[:3, :3] = np.asarray(direction, dtype=float).reshape(3, 3)
    return [*spacing, 1.0], [*origin, 0.0], rot.ravel().tolist()


def write_image(
    path: str | os.PathLike[str], img: sitk.Image, *, compress: bool | None = None
) -> None:
    """Write ``img`` atomically; SimpleITK picks the format from the extension.

    The image is written under its final name into a hidden temporary folder next to
    ``path`` (so the extension, and for ``.mhd`` the ``ElementDataFile`` name, are the
    final ones), then moved into place, header last: an interrupted write never leaves
    a file under the final name (docs/design.md, principle 5).

    Args:
        path: output file.
        img: image to write.
        compress: ask SimpleITK to compress; default: only for ``.gz`` names.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    if compress is None:
        compress = final.name.lower().endswith(".gz")
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        written = staging / final.name
        try:
            sitk.WriteImage(img, str(written), useCompression=compress)
        except RuntimeError as exc:
            raise DataError(f"{final}: cannot write the image: {_sitk_reason(exc)}") from None
        # ITK does not raise when the disk is full ("wrote only 0 of N bytes"): verify
        if not written.is_file():
            raise DataError(f"{final}: the image writer produced no file")
        try:
            check_image_file(written)
        except DataError:
            raise OutputWriteError(f"{final}: cannot write: write cut short (disk full or file size "
                                   "limit; the image read back is incomplete)") from None
        for produced in sorted(staging.iterdir(), key=lambda p: p.name == final.name):
            os.replace(produced, final.parent / produced.name)
    except OSError as exc:
        failure = write_failure(exc, (final.parent,))
        if failure is not None:
            raise OutputWriteError(f"{final}: cannot write: {failure[0]}") from None
        raise DataError(f"{final}: cannot write the image: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_volume(path: Path, case_id: str) -> tuple[np.ndarray, sitk.Image]:
    """A resampled single-channel 3D volume: float32 (x, y, z) array and the image (geometry).

    Raises:
        DataError: naming the case and the file when it is missing, unreadable or not a
            single-channel 3D image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"case {case_id}: resampled image {path} does not exist")
    try:
        check_image_file(path)
    except DataError as exc:
        raise DataError(f"case {case_id}: {exc}") from None
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise DataError(f"case {case_id}: cannot read {path}: {_sitk_reason(err)}") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"case {case_id}: {path} is not a single-channel 3D image")
    return image_to_array(image).astype(np.float32, copy=False), image
