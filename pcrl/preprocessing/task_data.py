"""Fine-tuning data readers: patient splits, NCC candidate cubes, segmentation volumes.

Inputs are the outputs of the data stages (docs/CONVENTIONS.md): ``data/processed/<task>/``
(``split.json``, nested ``fractions.json``; for NCC ``cubes/<id>.npy`` and
``candidates.csv``) and ``data/interim/<dataset>/`` (``cases.json`` and the resampled
NIfTI volumes, read for LCS and BMS).

The training datasets built on these readers (NCC candidate cubes with per-epoch
negatives, segmentation patches) are in :mod:`pcrl.finetune.datasets`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pcrl.atomic import read_json
from pcrl.records import verify_contents
from pcrl.io.npy import read_npy_header
from pcrl.preprocessing.splits import check_disjoint, fraction_key
from pcrl.errors import ConfigError, DataError
from pcrl.tasks import (
    TaskSpec,
    check_label_values,
    get_task,
    segmentation_target,
)

__all__ = [
    "CandidateRows",
    "CubeStore",
    "TaskSplit",
    "VolumeCase",
    "check_cases",
    "cube_batches",
    "load_case",
    "load_split",
    "read_candidate_rows",
    "read_volume_cases",
]

SPLIT_FILE = "split.json"
FRACTIONS_FILE = "fractions.json"
CANDIDATES_FILE = "candidates.csv"
CASES_FILE = "cases.json"


# ------------------------------------------------------------------ splits


@dataclass(frozen=True)
class TaskSplit:
    """The cases of one fine-tuning run.

    Attributes:
        train: The label fraction's training cases (a subset of the split's train).
        val: Validation cases (early stopping, best checkpoint).
        test: Test cases, touched only by the evaluate stage.
    """

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]


def load_split(processed: str | Path, fraction: float, task: str | None = None) -> TaskSplit:
    """Read ``split.json`` and the label fraction's ids from ``fractions.json``, after
    checking the folder against its record (the cubes output of ``task`` when given).

    Raises:
        ConfigError: ``fraction`` is not one of the fractions the cubes stage wrote.
        DataError: Missing files; a fraction id outside the train split; a split left
            empty; or splits sharing cases (the message names the ids).
    """
    processed = Path(processed)
    hint = "run 'pcrl cubes' for the task first"
    if not (processed / SPLIT_FILE).is_file():
        raise DataError(f"{processed / SPLIT_FILE} is missing: {hint}")
    verify_contents(processed, stage="cubes", **({} if task is None else {"task": task}))
    split = read_json(processed / SPLIT_FILE, hint=hint)
    fractions = read_json(processed / FRACTIONS_FILE, hint=hint)
    key = fraction_key(fraction)
    if key not in fractions:
        raise ConfigError(f"label fraction {key} is not in {processed / FRACTIONS_FILE} "
                          f"(it has {sorted(fractions, key=float)}): add it to the cubes "
                          "stage's fractions or remove it from finetune.fractions")
    missing = [name for name in ("train", "val", "test") if name not in split]
    if missing:
        raise DataError(f"{processed / SPLIT_FILE}: no {', '.join(missing)} split")
    train = [str(i) for i in fractions[key]]
    outside = sorted(set(train) - set(map(str, split["train"])))
    if outside:
        raise DataError(f"{processed / FRACTIONS_FILE}: fraction {key} lists cases that are not "
                        f"in the train split: {outside[:5]}")
    result = TaskSplit(tuple(train), tuple(map(str, split["val"])), tuple(map(str, split["test"])))
    for name in ("train", "val", "test"):
        if not getattr(result, name):
            what = (f"label fraction {key} of the train split" if name == "train"
                    else f"the {name} split")
            raise DataError(f"{processed}: {what} is empty")
    check_disjoint({"train": list(result.train), "val": list(result.val),
                    "test": list(result.test)})
    return result


# ------------------------------------------------------------------ NCC cubes


@dataclass(frozen=True)
class CandidateRows:
    """Candidates of some scans: where each cube is stored and its class.

    Attributes:
        files: The cube files (``cubes/<id>.npy``, (n, X, Y, Z) float16).
        file_index: (N,) index into ``files`` of each candidate.
        row: (N,) row of the candidate in its file.
        label: (N,) uint8 class (1: nodule).
        case: (N,) scan id of each candidate.
    """

    files: tuple[Path, ...]
    file_index: np.ndarray
    row: np.ndarray
    label: np.ndarray
    case: np.ndarray

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def take(self, index: np.ndarray) -> CandidateRows:
        """The candidates at ``index`` (same files)."""
        return CandidateRows(self.files, self.file_index[index], self.row[index],
                             self.label[index], self.case[index])


def _npy_shape(path: Path) -> tuple[int, ...]:
    """The shape in an ``.npy`` header, without reading the data."""
    try:
        shape = read_npy_header(path).shape
    except FileNotFoundError:
        raise DataError(f"{path}: cube file is missing") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc})") from None
    return tuple(shape)


def read_candidate_rows(processed: str | Path, ids: Sequence[str], task: TaskSpec | str = "ncc"
                        ) -> CandidateRows:
    """The candidates of the scans ``ids`` from ``candidates.csv`` (rows in file order).

    Raises:
        DataError: Missing or malformed ``candidates.csv``, a class outside {0, 1}, a cube
            file that is missing or shorter than its rows, or a scan without candidates.
    """
    processed = Path(processed)
    path = processed / CANDIDATES_FILE
    if path.is_file():
        verify_contents(processed, stage="cubes")
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise DataError(f"{path} is missing: run 'pcrl cubes --task ncc' first") from None
    needed = {"seriesuid", "index", "class", "file"}
    if rows and not needed <= set(rows[0]):
        raise DataError(f"{path}: needs columns {sorted(needed)}, has {sorted(rows[0])}")
    wanted = set(ids)
    rows = [r for r in rows if r["seriesuid"] in wanted]
    try:
        labels = np.array([int(float(r["class"])) for r in rows], dtype=np.int64)
        index = np.array([int(r["index"]) for r in rows], dtype=np.int64)
    except ValueError as exc:
        raise DataError(f"{path}: non-numeric class or index ({exc})") from None
    check_label_values(labels, task, str(path))
    empty = sorted(wanted - {r["seriesuid"] for r in rows})
    if empty:
        raise DataError(f"{path}: no candidate for scan(s) {empty[:5]}")
    files = sorted({r["file"] for r in rows})
    file_of = {name: i for i, name in enumerate(files)}
    file_index = np.array([file_of[r["file"]] for r in rows], dtype=np.int64)
    paths = tuple(processed / name for name in files)
    for i, file in enumerate(paths):
        shape = _npy_shape(file)
        used = index[file_index == i]
        if len(shape) != 4 or used.min() < 0 or used.max() >= shape[0]:
            raise DataError(f"{file}: shape {shape} does not hold rows up to {used.max()} "
                            f"named in {path}")
    return CandidateRows(paths, file_index, index, labels.astype(np.uint8),
                         np.array([r["seriesuid"] for r in rows]))


@dataclass
class CubeStore:
    """Reads candidate cubes from memory-mapped files, opened lazily once per process."""

    rows: CandidateRows
    _maps: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"rows": self.rows, "_maps": {}}  # memory maps are not pickled to workers

    def cubes(self, index: np.ndarray) -> np.ndarray:
        """(len(index), X, Y, Z) float32 cubes of candidates ``index``."""
        out = []
        for i in np.asarray(index).reshape(-1):
            f = int(self.rows.file_index[i])
            if f not in self._maps:
                self._maps[f] = np.load(self.rows.files[f], mmap_mode="r")
            out.append(np.asarray(self._maps[f][int(self.rows.row[i])], dtype=np.float32))
        return np.stack(out) if out else np.zeros((0, 0, 0, 0), np.float32)


def cube_batches(rows: CandidateRows, batch_size: int) -> Iterator[tuple[Tensor, np.ndarray]]:
    """All candidates in order, as ``(cubes (B, 1, X, Y, Z) float32, labels (B,))`` batches."""
    store = CubeStore(rows)
    for start in range(0, len(rows), batch_size):
        index = np.arange(start, min(start + batch_size, len(rows)))
        yield torch.from_numpy(store.cubes(index))[:, None], rows.label[index]


# ------------------------------------------------------------------ segmentation volumes


@dataclass(frozen=True)
class VolumeCase:
    """A resampled case: its id, image (C or 1 channel) and label files, and the
    memory-mappable copies of both when the resample stage wrote them (``arrays``: names
    relative to ``folder``, :mod:`pcrl.preprocessing.arrays`)."""

    id: str
    image: Path
    label: Path
    arrays: dict[str, str] | None = None
    folder: Path | None = None

    def open_arrays(self) -> Any:
        """The case's memory-mapped :class:`pcrl.preprocessing.arrays.CaseArrays` (None without)."""
        from pcrl.preprocessing.arrays import open_arrays

        if self.arrays is None or self.folder is None:
            return None
        return open_arrays(self.folder, self.arrays)


def read_volume_cases(interim: str | Path, ids: Sequence[str], dataset: str | None = None) -> list[VolumeCase]:
    """The labelled cases ``ids`` of a resampled Decathlon dataset (``cases.json``), in order;
    every shard verified, and ``dataset``'s when given (:func:`pcrl.datasets.shards.read_cases`).

    Raises:
        DataError: ``cases.json`` missing; an id absent from it or without a label; the
            shards changed, incomplete or of another dataset.
    """
    from pcrl.datasets.shards import read_cases

    interim = Path(interim)
    entries = read_cases(interim, dataset=dataset)  # every shard of the resample stage
    by_id = {str(c.get("id")): c for c in entries}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DataError(f"{interim / CASES_FILE}: no case {missing[:5]}")
    unlabelled = [i for i in ids if not by_id[i].get("label")]
    if unlabelled:
        raise DataError(f"{interim / CASES_FILE}: case(s) without a label: {unlabelled[:5]}")
    return [VolumeCase(i, interim / by_id[i]["image"], interim / by_id[i]["label"],
                       by_id[i].get("arrays"), interim) for i in ids]


def _check_channels(case: VolumeCase, channels: int, spec: TaskSpec) -> None:
    """DataError naming the image when it has not the task's channel count."""
    if channels != spec.in_channels:
        raise DataError(f"{case.image}: {channels} channel(s), task {spec.name} needs "
                        f"{spec.in_channels}")


def load_case(case: VolumeCase, task: TaskSpec | str) -> tuple[np.ndarray, np.ndarray]:
    """Image (C, x, y, z) float32 and region target (out_channels, x, y, z) uint8 of a case.

    Raises:
        DataError: Unreadable files; an image whose channel count is not the task's, or
            whose size differs from the label's; label values outside the task's classes.
    """
    from pcrl.io.images import (  # SimpleITK: only when needed
        image_to_array,
        read_image,
    )

    spec = get_task(task)
    stored = case.open_arrays()
    if stored is not None:  # the same voxels, without inflating a .nii.gz
        image, label = np.array(stored.image), np.array(stored.label)
        _check_channels(case, image.shape[0], spec)
        return image, segmentation_target(spec, label, source=str(case.label))
    image = image_to_array(read_image(case.image, allow_channels=spec.in_channels > 1))
    if image.ndim == 3:
        image = image[None]
    _check_channels(case, image.shape[0], spec)
    label = image_to_array(read_image(case.label))
    if label.shape != image.shape[1:]:
        raise DataError(f"{case.label}: size {label.shape} differs from its image "
                        f"{image.shape[1:]} ({case.image})")
    target = segmentation_target(spec, label, source=str(case.label))
    return np.ascontiguousarray(image, dtype=np.float32), target


def _image_layout(path: Path) -> tuple[int, tuple[int, ...]]:
    """(channels, (x, y, z)) of an image file from its header only (SimpleITK)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(f"{path}: SimpleITK cannot read its header ({exc})") from None
    size = tuple(int(s) for s in reader.GetSize())
    if reader.GetDimension() == 4:  # channels as the last axis (MSD Task01)
        return size[3], size[:3]
    return int(reader.GetNumberOfComponents()), size


def check_cases(cases: Sequence[VolumeCase], task: TaskSpec | str) -> None:
    """Check every case before training: image channels and size, label values.

    Reads each label and each image header once, in the calling process, so that a bad
    file fails at once with its name instead of inside a DataLoader worker later.

    Raises:
        DataError: As :func:`load_case`.
    """
    from pcrl.io.images import image_to_array, read_image

    spec = get_task(task)
    for case in cases:
        stored = case.open_arrays()
        if stored is not None:  # header of the .npy, the label read without inflating
            _check_channels(case, stored.image.shape[0], spec)
            segmentation_target(spec, np.asarray(stored.label), source=str(case.label))
            continue
        channels, size = _image_layout(case.image)
        _check_channels(case, channels, spec)
        label = image_to_array(read_image(case.label))
        if label.shape != size:
            raise DataError(f"{case.label}: size {label.shape} differs from its image {size} "
                            f"({case.image})")
        segmentation_target(spec, label, source=str(case.label))
