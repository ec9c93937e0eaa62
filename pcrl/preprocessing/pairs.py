"""Pretraining pairs: two crops of one region per sample, read from memory-mapped ``.npy``.

``pcrl cubes --task pretrain`` writes ``data/processed/pretrain/pairs/<id>.npy`` per scan,
each an array of shape (n, 2, X, Y, Z) (float16): n pairs of views (x1, x2) of the same
region (docs/method.md "Views, corruptions and targets"), and ``split.json`` with the ids of
the train and val scans. :class:`PairsDataset` concatenates such files; the corruptions
and spatial transforms are applied later, batched, by the method on the training device.

Files are validated at construction from their ``.npy`` headers and sizes only (a
truncated or malformed file fails there, naming the file, not hours into training), and
opened with ``np.load(mmap_mode="r")`` lazily, once per process (DataLoader worker): the
dataset pickles without its memory maps.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pcrl.io.npy import read_npy_header
from pcrl.errors import DataError

__all__ = ["PairFile", "PairsDataset", "pair_files", "read_pair_header"]

@dataclass(frozen=True)
class PairFile:
    """What the header of one pairs file says.

    Attributes:
        path: The ``.npy`` file.
        count: Number of pairs n.
        shape: Spatial shape (X, Y, Z) of each view.
        dtype: Element type (float16 or float32).
    """

    path: Path
    count: int
    shape: tuple[int, int, int]
    dtype: np.dtype


def read_pair_header(path: str | os.PathLike[str]) -> PairFile:
    """Read and check the ``.npy`` header of a pairs file without loading its data.

    Args:
        path: A ``.npy`` file holding an array of shape (n, 2, X, Y, Z).

    Returns:
        The file's :class:`PairFile` description.

    Raises:
        DataError: Naming the file if it is missing, not a ``.npy`` file, not a
            floating-point array of shape (n, 2, X, Y, Z), or shorter than its header
            announces (truncated).
    """
    path = Path(path)
    try:
        shape, fortran_order, dtype, data_offset = read_npy_header(path)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc})") from exc
    if len(shape) != 5 or shape[1] != 2 or min(shape[2:], default=0) < 1:
        raise DataError(f"{path}: expected an array of shape (n, 2, X, Y, Z), got {shape}")
    if dtype.kind != "f" or fortran_order:
        raise DataError(
            f"{path}: expected a C-ordered float16/float32 array, got {dtype}"
            + (" in Fortran order" if fortran_order else "")
        )
    expected = data_offset + int(np.prod(shape)) * dtype.itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise DataError(f"{path}: truncated, {actual} bytes where its header needs {expected}")
    return PairFile(path, int(shape[0]), (int(shape[2]), int(shape[3]), int(shape[4])), dtype)


def pair_files(pairs_dir: str | os.PathLike[str], ids: Sequence[str]) -> list[Path]:
    """The pairs files ``<pairs_dir>/<id>.npy`` of the given case ids (e.g. a split's "train").

    Args:
        pairs_dir: The ``pairs`` folder written by ``pcrl cubes --task pretrain``.
        ids: Case ids, as listed in ``split.json``.

    Returns:
        The file paths, in the order of ``ids``.

    Raises:
        DataError: Naming the first missing file.
    """
    files = [Path(pairs_dir) / f"{case_id}.npy" for case_id in ids]
    for path in files:
        if not path.is_file():
            raise DataError(f"{path}: pairs file of case listed in the split is missing")
    return files


class PairsDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """All pairs of a list of ``.npy`` files, as float32 tensors (1, X, Y, Z) each.

    Args:
        files: ``.npy`` files of shape (n, 2, X, Y, Z); every file must have the same
            spatial shape so that samples can be batched.
        spatial_dims: 3, or 2: the pairs are radiographs (Z = 1, :mod:`pcrl.preprocessing.setting2d`): views are
            returned as 2D images (1, X, Y) for the 2D network.

    Raises:
        DataError: If the list is empty, a file is bad (see :func:`read_pair_header`),
            the files disagree on the spatial shape, or 2D pairs have Z > 1.

    Example:
        >>> ds = PairsDataset(pair_files("data/processed/pretrain/pairs", split["train"]))
        >>> x1, x2 = ds[0]          # each (1, 64, 64, 32), float32
    """

    def __init__(self, files: Sequence[str | os.PathLike[str]], *, spatial_dims: int = 3) -> None:
        if len(files) == 0:
            raise DataError("PairsDataset: no pairs files given")
        self.headers: tuple[PairFile, ...] = tuple(read_pair_header(f) for f in files)
        first = self.headers[0]
        for header in self.headers[1:]:
            if header.shape != first.shape:
                raise DataError(
                    f"{header.path}: views of shape {header.shape} differ from "
                    f"{first.shape} in {first.path}; all pairs must have one shape"
                )
        if spatial_dims == 2 and first.shape[2] != 1:
            raise DataError(f"{first.path}: views of shape {first.shape} are not 2D (X, Y, 1) pairs")
        self.spatial_dims = spatial_dims
        self.shape: tuple[int, int, int] = first.shape
        self._ends: list[int] = np.cumsum([h.count for h in self.headers]).tolist()
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self._ends[-1]

    def locate(self, index: int) -> tuple[Path, int]:
        """The file and the row within it that hold sample ``index``.

        Raises:
            IndexError: If ``index`` is outside ``[-len, len)``.
        """
        file_index, row = self._locate(index)
        return self.headers[file_index].path, row

    def _locate(self, index: int) -> tuple[int, int]:
        size = len(self)
        if not -size <= index < size:
            raise IndexError(f"pair index {index} out of range for {size} pairs")
        index %= size
        file_index = bisect.bisect_right(self._ends, index)
        start = self._ends[file_index - 1] if file_index else 0
        return file_index, index - start

    def _array(self, file_index: int) -> np.ndarray:
        """The memory map of one file, opened on first use in this process."""
        array = self._maps.get(file_index)
        if array is None:
            path = self.headers[file_index].path
            try:
                array = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise DataError(f"{path}: cannot memory-map ({exc})") from exc
            self._maps[file_index] = array
        return array

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        file_index, row = self._locate(int(index))
        pair = torch.from_numpy(np.array(self._array(file_index)[row], dtype=np.float32))
        if self.spatial_dims == 2:
            pair = pair[..., 0]
        return pair[0:1], pair[1:2]

    def __getstate__(self) -> Mapping[str, object]:
        """Pickle without the memory maps: each worker opens its own."""
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state
