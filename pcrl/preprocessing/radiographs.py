"""Radiographs for training: resized, 8-bit, one memory-mappable array per shard.

PCRL's 2D setting (Zhou et al., ICCV 2021) pretrains on NIH ChestX-ray14 (Wang et al., CVPR
2017): 112,120 PNGs of 1024x1024. Decoding a PNG per training sample would starve a GPU, so
the 2D preprocessing writes each shard of images once, resized to ``size`` (area
interpolation, i.e. anti-aliased downsampling, on float32, rounded back to uint8), into

    images.npy    (n, H, W) uint8, read with ``np.load(mmap_mode="r")``
    index.json    [{"image": "00000001_000.png", "row": 0, "position": 17}, ...]

``position`` is the image's place in the dataset's sorted list; shard ``k`` of ``n`` holds
the images at positions k, k + n, ... (:func:`shard_positions`), so any shard count gives
the same set and :func:`gather_store` puts them back in dataset order. Intensities are
kept as 8-bit values; scaling to [0, 1] is ``/ 255`` when a batch is formed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pcrl.atomic import atomic_dir
from pcrl.datasets.chestxray14 import IMAGES_DIR
from pcrl.io.png import load_radiograph
from pcrl.datasets.shards import check_shard_set, shard_folders
from pcrl.errors import ConfigError, DataError
from pcrl.records import HashingWriter, npy_record, remember, verify_contents

__all__ = ["INDEX_FILE", "IMAGES_FILE", "RadiographStore", "gather_store", "open_store", "resize_radiograph",
           "shard_positions", "write_shard", "write_shard_of"]

IMAGES_FILE = "images.npy"
INDEX_FILE = "index.json"


def shard_positions(count: int, shard: tuple[int, int]) -> list[int]:
    """Positions ``k, k + n, ...`` below ``count`` of shard ``(k, n)``."""
    k, n = shard
    if n < 1 or not 0 <= k < n:
        raise ConfigError(f"shard must be (k, n) with 0 <= k < n, got {shard}")
    return list(range(k, count, n))


def resize_radiograph(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """(H, W) uint8 resized to ``size`` (height, width) by area interpolation, uint8."""
    if image.ndim != 2:
        raise ValueError(f"a radiograph is (H, W); got shape {image.shape}")
    height, width = (int(v) for v in size)
    if (height, width) == image.shape:
        return image.copy()
    x = torch.from_numpy(image.astype(np.float32))[None, None]
    mode = "area" if height <= image.shape[0] and width <= image.shape[1] else "bilinear"
    out = F.interpolate(x, size=(height, width), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return out[0, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def write_shard(root: str | os.PathLike[str], images: Sequence[str], out: str | os.PathLike[str], *,
                size: Sequence[int], shard: tuple[int, int] = (0, 1), expected_size: Sequence[int] | None = None,
                progress: bool = False) -> Path:
    """Decode, check and resize shard ``shard`` of ``images`` (file names under ``root/images``);
    :func:`write_shard_of` with those paths."""
    return write_shard_of([Path(root) / IMAGES_DIR / name for name in images], out, size=size, shard=shard,
                          expected_size=expected_size, progress=progress)


def write_shard_of(paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
                   size: Sequence[int], shard: tuple[int, int] = (0, 1), expected_size: Sequence[int] | None = None,
                   progress: bool = False, dataset: str = "chestxray14") -> Path:
    """Decode, check and resize shard ``shard`` of the radiographs ``paths`` into ``out``,
    recorded in ``contents.json`` as ``dataset``'s shard (:mod:`pcrl.records`).

    Args:
        paths: every image of the dataset in its order (e.g. sorted by file name); an
            image's name in the store is its file name.
        out: the shard's folder (swapped in whole when complete).
        size: (height, width) of the stored images.
        shard: (k, n).
        expected_size: the originals' (width, height), e.g. (1024, 1024); None: any.
        progress: show a progress bar.

    Raises:
        DataError: naming the first image that is missing, corrupt, not 8-bit or of the
            wrong size (nothing is written).
    """
    height, width = (int(v) for v in size)
    if height < 1 or width < 1:
        raise ConfigError(f"size must be positive (height, width), got {list(size)}")
    files = [Path(p) for p in paths]
    positions = shard_positions(len(files), shard)
    index = [{"image": files[p].name, "row": r, "position": p} for r, p in enumerate(positions)]
    with atomic_dir(Path(out), contents={"stage": "resample", "dataset": dataset, "shard": list(shard)}) as tmp:
        # streamed image by image: the job's memory is one radiograph's, whatever the shard's
        # size; hashed while written, for the folder's record (pcrl.records)
        shape = (len(positions), height, width)
        with open(tmp / IMAGES_FILE, "wb") as fh:
            writer = HashingWriter(fh)
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                      "shape": shape}
            np.lib.format.write_array_header_1_0(writer, header)
            for position in tqdm(positions, desc="radiographs", unit="image", disable=not progress):
                image = load_radiograph(files[position], expected_size=expected_size)
                writer.write(np.ascontiguousarray(resize_radiograph(image, (height, width))).tobytes())
        remember(tmp / IMAGES_FILE, npy_record(np.uint8, shape, writer))
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=1) + "\n")
    return Path(out)


@dataclass(frozen=True)
class RadiographStore:
    """Every image of the shards, in dataset order, read from the shards' memory maps.

    Each shard's ``images.npy`` is memory-mapped once per process, on first use; the store
    pickles without its maps (a DataLoader worker opens its own).
    """

    names: tuple[str, ...]
    files: tuple[Path, ...]
    file_index: np.ndarray
    rows: np.ndarray
    _maps: dict[int, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.names)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": {}}  # memory maps are not pickled to workers

    def _map(self, f: int) -> np.ndarray:
        if f not in self._maps:
            self._maps[f] = np.load(self.files[f], mmap_mode="r")
        return self._maps[f]

    def image(self, i: int) -> np.ndarray:
        """(H, W) uint8 of image ``i`` (a copy out of the memory map)."""
        return np.array(self._map(int(self.file_index[i]))[int(self.rows[i])])

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of every image (one size for all shards, checked by :func:`gather_store`)."""
        if not self.files:
            raise DataError("the radiograph store holds no shard")
        height, width = self._map(0).shape[1:]
        return int(height), int(width)

    def images(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """(len(rows), H, W) uint8 of the images ``rows``."""
        indices = np.asarray(rows, dtype=np.int64).reshape(-1)
        if not indices.size:
            return np.zeros((0, *self.image_shape), np.uint8)
        return np.stack([self.image(int(i)) for i in indices])


def _index_rows(path: Path, index: Any, count: int) -> list[tuple[int, str, int]]:
    """``(position, image, row)`` of a shard's index, checked: rows 0..count-1 once each
    (one per stored image), names unique."""
    try:
        rows = [(int(e["position"]), str(e["image"]), int(e["row"])) for e in index]
    except (TypeError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: not a radiograph index ({exc!r}); rerun its preprocessing") from None
    if sorted(r for _, _, r in rows) != list(range(count)):
        raise DataError(f"{path}: rows {sorted(r for _, _, r in rows)[:5]}... are not 0..{count - 1} once each "
                        f"(rows of {path.parent / IMAGES_FILE}); rerun its preprocessing")
    if len({name for _, name, _ in rows}) != len(rows):
        raise DataError(f"{path}: an image is listed twice; rerun its preprocessing")
    return rows


def gather_store(shards: Sequence[str | os.PathLike[str]]) -> RadiographStore:
    """The shards' images back in dataset order, each shard verified against its
    ``contents.json`` first (:func:`pcrl.records.verify_contents`).

    Raises:
        DataError: a shard folder without its files, a file that differs from its record,
            a truncated array, rows that do not match the index, images of different sizes,
            or positions that repeat or leave gaps.
    """
    entries, files, shapes = [], [], set()
    for f, folder in enumerate(map(Path, shards)):
        verify_contents(folder, stage="resample")
        try:
            index = json.loads((folder / INDEX_FILE).read_text())
            header = np.load(folder / IMAGES_FILE, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataError(f"{folder}: not a radiograph shard ({exc}); rerun its preprocessing") from None
        if header.ndim != 3 or header.dtype != np.uint8 or not isinstance(index, list) or header.shape[0] != len(index):
            raise DataError(f"{folder / IMAGES_FILE}: shape {header.shape} {header.dtype} does not hold the "
                            f"images of {folder / INDEX_FILE}")
        shapes.add(header.shape[1:])
        files.append(folder / IMAGES_FILE)
        entries += [(p, name, f, r) for p, name, r in _index_rows(folder / INDEX_FILE, index, header.shape[0])]
    if len(shapes) > 1:
        raise DataError(f"shards hold images of different sizes {sorted(shapes)}: preprocess them with one size")
    entries.sort()
    positions = [e[0] for e in entries]
    if positions != list(range(len(positions))):
        raise DataError(f"shards {[str(s) for s in shards]} do not hold positions 0..{len(positions) - 1} once each")
    return RadiographStore(tuple(e[1] for e in entries), tuple(files), np.array([e[2] for e in entries]),
                           np.array([e[3] for e in entries]))


def open_store(interim: str | os.PathLike[str], *, count: int | None = None) -> RadiographStore:
    """Every radiograph of the 2D preprocessing's shards under ``interim``, in dataset order:
    the complete shard set of ChestX-ray14 (``count`` shards when given,
    :func:`pcrl.datasets.shards.check_shard_set`).

    Raises:
        DataError: No shard, an incomplete or inconsistent one (see :func:`gather_store`).
    """
    folders = shard_folders(Path(interim), INDEX_FILE)
    marks = [(folder / INDEX_FILE, r.get("dataset"), r.get("shard"))
             for folder, r in ((folder, verify_contents(folder, stage="resample")) for folder in folders)]
    check_shard_set(Path(interim), marks, dataset="chestxray14", count=count)
    return gather_store(folders)
