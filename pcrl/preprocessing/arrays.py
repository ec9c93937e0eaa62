"""Resampled volumes as uncompressed arrays that training reads without decompression.

A resampled LiTS volume is ~250 MB of float32 inside a ``.nii.gz``; reading it for every
training item means seconds of inflating, while a GPU step at paper size takes a fraction
of a second. With ``resample.<dataset>.arrays: true`` the resample stage also writes, per
case, next to the NIfTI files:

- ``<id>.npy``: the image, (C, x, y, z) float32, C-contiguous;
- ``<id>_label.npy``: the label, (x, y, z) uint8;
- ``<id>_fg.npy``: the flat indices of the label's foreground voxels (label > 0), int64.

:func:`open_arrays` memory-maps them: a patch touches only its own bytes, and the
foreground indices are computed once per case instead of once per item
(:class:`pcrl.finetune.datasets.PatchSet`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pcrl.atomic import save_npy
from pcrl.errors import DataError

SUFFIXES = {"image": ".npy", "label": "_label.npy", "foreground": "_fg.npy"}


@dataclass(frozen=True)
class CaseArrays:
    """The memory-mapped arrays of one case."""

    image: np.ndarray  # (C, x, y, z) float32
    label: np.ndarray  # (x, y, z) uint8
    foreground: np.ndarray  # (n,) flat indices into label


def array_names(case_id: str) -> dict[str, str]:
    """File names of a case's arrays (relative to its resample folder)."""
    return {key: f"{case_id}{suffix}" for key, suffix in SUFFIXES.items()}


def write_arrays(folder: Path, case_id: str, image: np.ndarray, label: np.ndarray | None) -> dict[str, str]:
    """Write a case's arrays into ``folder``; returns their names for ``cases.json``
    (``arrays``). A case without label gets the image only."""
    names = array_names(case_id)
    image = np.ascontiguousarray(image if image.ndim == 4 else image[None], dtype=np.float32)
    check_finite(folder / names["image"], image)
    save_npy(folder / names["image"], image)
    if label is None:
        return {"image": names["image"]}
    label = np.ascontiguousarray(label, dtype=np.uint8)
    if label.shape != image.shape[1:]:
        raise DataError(f"{case_id}: label {label.shape} and image {image.shape[1:]} differ in size")
    save_npy(folder / names["label"], label)
    save_npy(folder / names["foreground"], np.flatnonzero(label.reshape(-1)).astype(np.int64))
    return names


def open_arrays(folder: Path, names: dict[str, str]) -> CaseArrays:
    """Memory-map a case's arrays (read-only); DataError naming a missing or bad file."""
    arrays = {}
    for key in ("image", "label", "foreground"):
        path = Path(folder) / names.get(key, "")
        try:
            arrays[key] = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot memory-map the case's {key} array ({exc}); "
                            "rerun the resample stage") from None
    image, label = arrays["image"], arrays["label"]
    if image.ndim != 4 or image.shape[1:] != label.shape:
        raise DataError(f"{Path(folder) / names['image']}: shape {image.shape} does not match its "
                        f"label {label.shape}")
    state = tuple((str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns)
                  for path in (Path(folder) / names[k] for k in ("image", "label", "foreground")))
    if state not in _CHECKED:
        check_finite(Path(folder) / names["image"], image)
        check_foreground(Path(folder) / names["foreground"], arrays["foreground"], label, Path(folder) / names["label"])
        _CHECKED.add(state)
    return CaseArrays(image, label, arrays["foreground"])


#: Cases checked in this process (each once: a reopened map is not checked again).
_CHECKED: set[tuple[tuple[str, int, int], ...]] = set()


def check_finite(path: Path, image: np.ndarray) -> None:
    """Refuse an image with NaN or infinite voxels (DataError naming ``path`` and how many)."""
    bad = sum(int(np.count_nonzero(~np.isfinite(channel))) for channel in image)
    if bad:
        raise DataError(f"{path}: {bad} voxels are NaN or infinite; rerun the resample stage")


def check_foreground(path: Path, foreground: np.ndarray, label: np.ndarray, label_path: Path | str = "its label"
                     ) -> None:
    """Refuse foreground indices that are not exactly the label's foreground voxels:
    integers, within the label, each on a voxel > 0 and as many as there are.

    Raises:
        DataError: naming ``path`` and what is wrong.
    """
    flat = np.asarray(label).reshape(-1)
    if foreground.ndim != 1 or foreground.dtype.kind not in "iu":
        raise DataError(f"{path}: foreground indices must be a 1D integer array, got {foreground.dtype} "
                        f"{foreground.shape}; rerun the resample stage")
    if foreground.size and (int(foreground.min()) < 0 or int(foreground.max()) >= flat.size):
        raise DataError(f"{path}: foreground indices outside 0..{flat.size - 1} (the label's voxels); "
                        "rerun the resample stage")
    on_background = int(np.count_nonzero(flat[foreground] == 0))
    if on_background or foreground.size != np.count_nonzero(flat):
        raise DataError(f"{path}: {foreground.size} foreground indices, {on_background} on background voxels, "
                        f"for {np.count_nonzero(flat)} foreground voxels of {label_path}; rerun the resample stage")
