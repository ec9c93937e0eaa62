"""NumPy ``.npy`` headers read without loading the data (numpy.lib.format, versions 1.0 and 2.0).

Readers of large ``.npy`` files (pretraining pairs, NCC cubes) check what a header announces
before memory-mapping: a truncated or malformed file fails where it is opened, naming it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["NpyHeader", "read_npy_header"]

_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


class NpyHeader(NamedTuple):
    """What an ``.npy`` header says, and where its data start."""

    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype
    offset: int


def read_npy_header(path: str | os.PathLike[str]) -> NpyHeader:
    """The header of an ``.npy`` file.

    Raises:
        OSError: the file cannot be opened (FileNotFoundError when missing).
        ValueError, SyntaxError, EOFError: not an ``.npy`` file of a supported version.
    """
    with open(Path(path), "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version not in _HEADER_READERS:
            raise ValueError(f".npy format version {version} is not supported")
        shape, fortran_order, dtype = _HEADER_READERS[version](fh)
        return NpyHeader(tuple(shape), bool(fortran_order), dtype, fh.tell())
