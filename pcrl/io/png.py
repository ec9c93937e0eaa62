"""PNG (ISO/IEC 15948) reading with integrity checks: chunk by chunk before decoding.

A PNG is verified chunk by chunk (signature, ``IHDR`` first, every chunk complete with a
matching CRC, ``IDAT`` present, ``IEND`` last) and its pixel stream inflated whole to the
size its header announces (as a ``.nii.gz`` is) before it is decoded, so a truncated file is
reported as such whatever the decoder would make of it. :func:`load_radiograph` reads an
8-bit radiograph (ChestX-ray14, Wang et al., CVPR 2017) as (H, W) uint8 grayscale. Every
failure is a :class:`pcrl.errors.DataError` naming the file.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from pcrl.errors import DataError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}


class PngInfo(NamedTuple):
    """The ``IHDR`` fields of a PNG file that matter here."""

    width: int
    height: int
    bit_depth: int
    color_type: int


def check_png(path: str | os.PathLike[str]) -> PngInfo:
    """Verify a PNG file chunk by chunk (PNG specification, ISO/IEC 15948): signature,
    ``IHDR`` first, every chunk complete with a matching CRC, ``IDAT`` present, ``IEND`` last.

    Raises:
        DataError: naming the file when it is missing, truncated or corrupt.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file does not exist") from None
    except OSError as exc:
        raise DataError(f"{path}: unreadable: {exc}") from None
    if not data.startswith(_PNG_SIGNATURE):
        raise DataError(f"{path}: not a PNG file (no PNG signature)")
    position, info, interlaced, idat = len(_PNG_SIGNATURE), None, False, []
    while True:
        if position + 8 > len(data):
            raise DataError(f"{path}: truncated PNG: it ends after {len(data)} bytes without an IEND chunk")
        length, kind = struct.unpack_from(">I4s", data, position)
        end = position + 12 + length
        if end > len(data):
            raise DataError(f"{path}: truncated PNG: chunk {kind!r} needs {end} bytes, the file holds {len(data)}")
        body = data[position + 4 : end - 4]
        if zlib.crc32(body) != struct.unpack_from(">I", data, end - 4)[0]:
            raise DataError(f"{path}: corrupt PNG: CRC mismatch in chunk {kind!r} at byte {position}")
        if info is None:
            if kind != b"IHDR" or length != 13:
                raise DataError(f"{path}: corrupt PNG: the first chunk is {kind!r}, not a 13-byte IHDR")
            width, height, depth, color = struct.unpack_from(">IIBB", body, 4)
            info = PngInfo(width, height, depth, color)
            interlaced = body[4 + 12] == 1
        if kind == b"IDAT":
            idat.append(body[4:])
        position = end
        if kind == b"IEND":
            break
    if not idat or info is None:
        raise DataError(f"{path}: corrupt PNG: no IDAT chunk (no pixel data)")
    _check_pixel_stream(path, b"".join(idat), info, interlaced)
    return info


#: Samples per pixel of each PNG colour type.
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
#: Adam7 passes: (x start, y start, x step, y step).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def raw_size(info: PngInfo, interlaced: bool) -> int:
    """Bytes of the decompressed pixel stream: per row one filter byte and the packed samples,
    over the whole image or each Adam7 pass (ISO/IEC 15948, sections 7-8)."""
    bits = info.bit_depth * _CHANNELS.get(info.color_type, 1)

    def rows(width: int, height: int) -> int:
        return height * (1 + (width * bits + 7) // 8) if width and height else 0

    if not interlaced:
        return rows(info.width, info.height)
    return sum(rows(max(0, -(-(info.width - xs) // dx)), max(0, -(-(info.height - ys) // dy)))
               for xs, ys, dx, dy in _ADAM7)


def _check_pixel_stream(path: Path, stream: bytes, info: PngInfo, interlaced: bool) -> None:
    """The zlib stream of the IDAT chunks decompresses whole (its end and Adler-32 checksum
    reached) to exactly the bytes the header announces: chunks with valid CRCs can still
    hold a stream cut short, which a decoder would pad with black rows."""
    inflater = zlib.decompressobj()
    expected = raw_size(info, interlaced)
    try:
        pixels = inflater.decompress(stream, expected + 1)
    except zlib.error as exc:
        raise DataError(f"{path}: corrupt PNG: the pixel data does not inflate ({exc})") from None
    if not inflater.eof:
        raise DataError(f"{path}: truncated PNG: the pixel data stream ends before its end "
                        f"({len(pixels)} of {expected} bytes)")
    if len(pixels) != expected:
        raise DataError(f"{path}: corrupt PNG: the pixel data holds {len(pixels)} bytes, "
                        f"its header announces {expected}")


def check_depth(path: Path, info: PngInfo) -> None:
    """Accept 8-bit grayscale, RGB, RGBA, gray+alpha and palette PNGs; refuse the rest."""
    if info.color_type not in _PNG_COLOR_TYPES:
        raise DataError(f"{path}: PNG colour type {info.color_type} is not valid")
    if info.bit_depth != 8:
        raise DataError(
            f"{path}: {info.bit_depth}-bit {_PNG_COLOR_TYPES[info.color_type]} PNG; ChestX-ray14 "
            "radiographs are 8-bit (grayscale, or RGB/RGBA converted to grayscale)"
        )


def check_size(path: Path, info: PngInfo, expected_size: Sequence[int] | None) -> None:
    """Refuse an image whose (width, height) is not ``expected_size``."""
    if expected_size is not None and (info.width, info.height) != tuple(expected_size):
        raise DataError(
            f"{path}: image is {info.width} x {info.height} pixels (width x height), expected "
            f"{expected_size[0]} x {expected_size[1]}"
        )


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of (H, W, 3) uint8 RGB, rounded as PIL's ``convert('L')`` does."""
    weights = np.array([19595, 38470, 7471], dtype=np.uint32)  # 0.299, 0.587, 0.114 in 1/65536
    return ((rgb.astype(np.uint32) @ weights + 32768) >> 16).astype(np.uint8)


def decode_gray(path: Path, info: PngInfo) -> np.ndarray:
    """Pixels of a checked 8-bit PNG as (H, W) uint8; colour converted to luminance, alpha dropped."""
    try:
        with Image.open(path) as opened:
            opened.load()
            image: Image.Image = opened.convert("RGB") if opened.mode == "P" else opened
            mode, pixels = image.mode, np.asarray(image)
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: the PNG does not decode: {exc}") from None
    if mode == "L":
        gray = np.ascontiguousarray(pixels, dtype=np.uint8)
    elif mode == "LA":
        gray = np.ascontiguousarray(pixels[..., 0], dtype=np.uint8)
    elif mode in ("RGB", "RGBA"):
        gray = _luminance(pixels[..., :3])
    else:
        raise DataError(f"{path}: PNG decodes to mode {mode!r}; expected 8-bit grayscale, RGB or RGBA")
    if gray.shape != (info.height, info.width):
        raise DataError(f"{path}: decoded to shape {gray.shape}, its header says {info.height} x {info.width}")
    return gray


def load_radiograph(path: str | os.PathLike[str], *, expected_size: Sequence[int] | None = None) -> np.ndarray:
    """A ChestX-ray14 radiograph (Wang et al., CVPR 2017) as (H, W) uint8, rows then columns.

    8-bit grayscale PNGs are returned as they are; the few RGB/RGBA files of the real
    dataset are converted to grayscale luminance (ITU-R BT.601), the alpha channel dropped.

    Args:
        path: the PNG file.
        expected_size: required (width, height), e.g. (1024, 1024); None: any.

    Raises:
        DataError: naming the file when it is missing, truncated, corrupt, not 8-bit
            (16-bit PNGs are refused), of another size than ``expected_size``, or holds
            a handful of grey levels only (:func:`check_grey_levels`).
    """
    path = Path(path)
    info = check_png(path)
    check_depth(path, info)
    check_size(path, info, expected_size)
    gray = decode_gray(path, info)
    check_grey_levels(path, gray)
    return gray


#: Fewer distinct grey levels than this: a constant image or a mask, not a radiograph.
MIN_GREY_LEVELS = 8


def check_grey_levels(path: Path, gray: np.ndarray) -> None:
    """Refuse a radiograph holding fewer than :data:`MIN_GREY_LEVELS` distinct grey levels
    (a constant image, or a mask or label image given as the radiograph). One pass of
    ``bincount`` over the uint8 pixels: about a millisecond per 1024 x 1024 image."""
    levels = np.flatnonzero(np.bincount(gray.reshape(-1), minlength=256))
    if len(levels) < MIN_GREY_LEVELS:
        raise DataError(f"{path}: does not look like a radiograph: {len(levels)} distinct grey level(s) "
                        f"{levels.tolist()}, as in a constant image or a mask (a radiograph has hundreds)")
