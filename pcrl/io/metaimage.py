"""MetaImage (``.mhd``/``.mha`` + ``.raw``/``.zraw``) integrity: every byte a header
announces is there and sound, before SimpleITK reads it and after it writes it.

SimpleITK reports a truncated ``.raw`` as a missing file, reads a ``.zraw`` without
``CompressedDataSize`` whatever its length, turns a negative spacing into an axis flip, and
its writer does not raise on a full disk. These checks read the files themselves: MetaImage
headers (keys of https://itk.org/Wiki/ITK/MetaIO/Documentation) against the size of their
data file, compressed data inflated whole. Every failure is a
:class:`pcrl.errors.DataError` naming the file.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from pcrl.errors import DataError

#: Bytes per element of the MetaIO scalar element types (MET_ValueTypeSize in MetaIO).
MET_ELEMENT_BYTES: dict[str, int] = {
    "MET_CHAR": 1,
    "MET_UCHAR": 1,
    "MET_SHORT": 2,
    "MET_USHORT": 2,
    "MET_INT": 4,
    "MET_UINT": 4,
    "MET_LONG": 4,
    "MET_ULONG": 4,
    "MET_LONG_LONG": 8,
    "MET_ULONG_LONG": 8,
    "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}


_MAX_HEADER_BYTES = 1 << 16


def parse_metaimage_header(path: Path) -> tuple[dict[str, str], int]:
    """Parse the ``key = value`` lines of a MetaImage header.

    Reading stops after ``ElementDataFile``, which MetaIO requires to be the last key
    (with ``LOCAL`` the binary data follows it in the same file).

    Returns:
        The header fields (keys as written) and the number of header bytes read.

    Raises:
        DataError: the header has no ``ElementDataFile`` within its first 64 KiB.
    """
    fields: dict[str, str] = {}
    consumed = 0
    with open(path, "rb") as fh:
        while consumed < _MAX_HEADER_BYTES:
            raw_line = fh.readline(_MAX_HEADER_BYTES)
            if not raw_line:
                break
            consumed += len(raw_line)
            key, sep, value = raw_line.decode("latin-1").partition("=")
            if sep:
                fields[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile":
                return fields, consumed
    raise DataError(f"{path}: not a MetaImage header (no ElementDataFile key)")


def check_metaimage(path: Path) -> None:
    """Check a MetaImage header against its data file: present and of the right size.

    Uncompressed data must hold exactly ``prod(DimSize)`` elements of ``ElementType`` times
    ``ElementNumberOfChannels`` (plus ``HeaderSize``); compressed data must give
    ``CompressedDataSize``, hold that many bytes and inflate to exactly the voxels announced.
    The spacing must be finite and > 0, and the data file lie in the header's folder.

    Raises:
        DataError: naming the header and the missing or truncated data file.
    """
    fields, header_bytes = parse_metaimage_header(path)
    _check_header_spacing(path, fields)
    data_name = fields["ElementDataFile"]
    if data_name == "LIST" or "%" in data_name:
        raise DataError(f"{path}: ElementDataFile = {data_name}: multi-file MetaImages are "
                        "not supported (one data file per header)")
    local = data_name == "LOCAL"
    data_path = path if local else path.parent / data_name
    if not local and not data_path.resolve().is_relative_to(path.parent.resolve()):
        raise DataError(f"{path}: ElementDataFile = {data_name} lies outside the header's "
                        "folder; refusing to read a file outside the dataset")
    if not data_path.is_file():
        raise DataError(
            f"{path}: its data file {data_path} (ElementDataFile = {data_name}) does not exist"
        )
    compressed = fields.get("CompressedData", "False").lower() == "true"
    if compressed and "CompressedDataSize" not in fields:
        raise DataError(f"{path}: CompressedData = True without CompressedDataSize: a "
                        "truncated data file could not be detected")
    expected = _expected_data_bytes(path, fields)
    if expected is None:
        return
    offset = header_bytes if local else _header_size(path, fields)
    found = data_path.stat().st_size
    if offset < 0:  # HeaderSize = -1: the data are the last bytes, after any header
        if found < expected:
            _check_size(data_path, path, expected, found)
        return
    _check_size(data_path, path, offset + expected, found)
    raw_bytes = _raw_data_bytes(path, fields)
    if compressed and raw_bytes is not None:
        _check_zlib_stream(data_path, offset, expected, raw_bytes)


def _check_header_spacing(path: Path, fields: dict[str, str]) -> None:
    """Raise DataError unless ``ElementSpacing`` / ``ElementSize`` are finite and > 0.

    ITK turns a negative spacing into a flip of the axis (a negative direction), silently.
    """
    for key in ("ElementSpacing", "ElementSize"):
        if key not in fields:
            continue
        try:
            values = [float(v) for v in fields[key].split()]
        except ValueError:
            raise DataError(f"{path}: {key} = {fields[key]!r} is not a list of numbers") from None
        if not values or not all(np.isfinite(v) and v > 0 for v in values):
            raise DataError(f"{path}: {key} = {fields[key]!r}: every spacing must be finite "
                            "and > 0 (a negative one would silently flip the axis)")


def _check_zlib_stream(data_path: Path, offset: int, size: int, raw_bytes: int) -> None:
    """Inflate a compressed MetaImage data block: a complete stream of ``raw_bytes`` bytes."""
    inflater = zlib.decompressobj()
    produced = 0
    try:
        with open(data_path, "rb") as fh:
            fh.seek(offset)
            left = size
            while left > 0 and not inflater.eof:
                chunk = fh.read(min(left, 1 << 20))
                if not chunk:
                    break
                left -= len(chunk)
                produced += len(inflater.decompress(chunk))
            produced += len(inflater.flush())
    except zlib.error as exc:
        raise DataError(f"{data_path}: corrupt compressed image data ({exc})") from None
    if not inflater.eof or produced != raw_bytes:
        raise DataError(f"{data_path}: compressed image data inflate to {produced} bytes, "
                        f"expected {raw_bytes} (truncated or corrupt)")


def _check_size(data_path: Path, header: Path, expected: int, found: int) -> None:
    """Raise DataError when a data file does not hold exactly ``expected`` bytes."""
    if found == expected:
        return
    what = "truncated" if found < expected else "too large"
    raise DataError(
        f"{data_path}: {what}: expected {expected} bytes, found {found} (header {header})"
    )


def _expected_data_bytes(path: Path, fields: dict[str, str]) -> int | None:
    """Bytes of image data the header announces (compressed bytes when compressed);
    ``None`` when they cannot be known."""
    if fields.get("CompressedData", "False").lower() == "true":
        size = fields.get("CompressedDataSize")
        return _header_int(path, "CompressedDataSize", size) if size else None
    return _raw_data_bytes(path, fields)


def _raw_data_bytes(path: Path, fields: dict[str, str]) -> int | None:
    """Uncompressed bytes of the voxels the header announces; None for exotic element types."""
    element_type = _required(path, fields, "ElementType")
    if element_type not in MET_ELEMENT_BYTES:
        return None  # let SimpleITK judge exotic element types
    dims = [_header_int(path, "DimSize", v) for v in _required(path, fields, "DimSize").split()]
    ndims = fields.get("NDims")
    if ndims is not None and _header_int(path, "NDims", ndims) != len(dims):
        raise DataError(f"{path}: NDims = {ndims} but DimSize has {len(dims)} values")
    if any(d <= 0 for d in dims):
        raise DataError(f"{path}: DimSize must be positive, got {dims}")
    channels_text = fields.get("ElementNumberOfChannels", "1")
    channels = _header_int(path, "ElementNumberOfChannels", channels_text)
    return int(np.prod(dims, dtype=np.int64)) * MET_ELEMENT_BYTES[element_type] * channels


def _header_size(path: Path, fields: dict[str, str]) -> int:
    """``HeaderSize`` of a MetaImage data file (bytes to skip; -1: data at the end)."""
    return _header_int(path, "HeaderSize", fields.get("HeaderSize", "0"))


def _required(path: Path, fields: dict[str, str], key: str) -> str:
    """The value of a header key that must be present."""
    if key not in fields:
        raise DataError(f"{path}: MetaImage header lacks {key}")
    return fields[key]


def _header_int(path: Path, key: str, value: str) -> int:
    """Parse one integer of a MetaImage header, naming the key when it is not one."""
    try:
        return int(value)
    except ValueError:
        raise DataError(f"{path}: {key} must be an integer, got {value!r}") from None
