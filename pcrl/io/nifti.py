"""NIfTI-1/2 (``.nii``, ``.nii.gz``) integrity: every voxel byte the header announces is
there, the gzip stream is whole, and NaN/inf voxels are counted in the file itself.

SimpleITK reads a ``.nii.gz`` cut in half or with corrupt bytes without an error (filling
the missing voxels), and ITK before version 6 reads NaN/inf voxels as 0. These checks read
NIfTI-1/2 headers (nifti1.h / nifti2.h) against the voxel bytes and gzip streams to their
CRC and length. Every failure is a :class:`pcrl.errors.DataError` naming the file.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pcrl.errors import DataError

#: NIfTI datatype codes of real floating-point voxels (nifti1.h: FLOAT32, FLOAT64).
_NIFTI_FLOAT_DTYPES = {16: "f4", 64: "f8"}
_CHUNK_BYTES = 1 << 22


def check_nifti(path: Path) -> tuple[int, int]:
    """Verify a NIfTI file: every voxel byte its header announces is there, and for
    ``.nii.gz`` the whole gzip stream decompresses with a matching CRC and length.

    The same single pass counts the NaN/inf voxels of floating-point data: ITK before
    version 6 reads them as 0 (its nifti_read_buffer; fixed by ITK pull request 6683), so
    they can only be seen in the file.

    Returns:
        (non-finite voxels, voxels) of floating-point data; (0, 0) for other data types.

    Raises:
        DataError: naming the file when it is truncated, corrupt or not NIfTI-1/2.
    """
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            header = fh.read(540)
            layout = _nifti_data_layout(header)
            if layout is None:
                raise DataError(f"{path}: not a NIfTI-1/2 file (no valid header)")
            counter = _NonFiniteCounter(_nifti_float_layout(header))
            found, chunk = 0, header
            while chunk:  # gzip checks the CRC and length at the end of the stream
                counter.feed(chunk, found)
                found += len(chunk)
                chunk = fh.read(_CHUNK_BYTES)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(f"{path}: corrupt or truncated file ({exc})") from None
    needed = layout[0] + layout[1]
    if found < needed:
        raise DataError(f"{path}: truncated: its header announces {needed} bytes of header and "
                        f"voxels, the file holds {found}")
    return counter.bad, counter.total


class _NonFiniteCounter:
    """Counts the NaN/inf values among the voxel bytes of a file read in chunks.

    Args:
        layout: (dtype, voxel count, data offset) of floating-point data, or None (nothing
            to count).
    """

    def __init__(self, layout: tuple[np.dtype, int, int] | None) -> None:
        self.dtype: np.dtype
        self.dtype, self.total, self.start = layout if layout else (np.dtype("f4"), 0, 0)
        self.end = self.start + self.total * self.dtype.itemsize
        self.bad = 0
        self._carry = b""

    def feed(self, chunk: bytes, position: int) -> None:
        """Count the voxels of ``chunk``, which starts at byte ``position`` of the file."""
        if not self.total:
            return
        part = chunk[max(0, self.start - position) : max(0, self.end - position)]
        buffer = self._carry + part
        whole = len(buffer) - len(buffer) % self.dtype.itemsize
        values = np.frombuffer(buffer[:whole], dtype=self.dtype)
        self.bad += int(values.size - np.count_nonzero(np.isfinite(values)))
        self._carry = buffer[whole:]


class _NiftiHeader(NamedTuple):
    """The fields of a NIfTI-1/2 header that locate its voxels."""

    endian: str
    datatype: int
    bitpix: int
    voxels: int
    offset: int


def _nifti_header(header: bytes) -> _NiftiHeader | None:
    """Parse the first bytes of a NIfTI-1 (348-byte) or NIfTI-2 (540-byte) header; None
    when they are neither. Field offsets are those of nifti1.h / nifti2.h."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack_from(endian + "i", header)[0] == 348:
            dims = struct.unpack_from(endian + "8h", header, 40)
            datatype, bitpix = struct.unpack_from(endian + "2h", header, 70)
            offset = int(struct.unpack_from(endian + "f", header, 108)[0])
        elif len(header) >= 540 and struct.unpack_from(endian + "i", header)[0] == 540:
            datatype, bitpix = struct.unpack_from(endian + "2h", header, 12)
            dims = struct.unpack_from(endian + "8q", header, 16)
            offset = struct.unpack_from(endian + "q", header, 168)[0]
        else:
            continue
        if not 1 <= dims[0] <= 7:
            return None
        voxels = int(np.prod([max(int(d), 1) for d in dims[1 : 1 + dims[0]]], dtype=np.int64))
        return _NiftiHeader(endian, int(datatype), int(bitpix), voxels, int(offset))
    return None


def _nifti_data_layout(header: bytes) -> tuple[int, int] | None:
    """(voxel offset, voxel bytes) of a NIfTI-1/2 header, or None when it is not one."""
    parsed = _nifti_header(header)
    if parsed is None or parsed.bitpix <= 0:
        return None
    return parsed.offset, parsed.voxels * parsed.bitpix // 8


def _nifti_float_layout(header: bytes) -> tuple[np.dtype, int, int] | None:
    """(dtype, voxel count, data offset) of a NIfTI-1/2 header with float voxels, else None."""
    parsed = _nifti_header(header)
    if parsed is None or parsed.datatype not in _NIFTI_FLOAT_DTYPES:
        return None
    dtype = np.dtype(parsed.endian + _NIFTI_FLOAT_DTYPES[parsed.datatype])
    return dtype, parsed.voxels, parsed.offset
