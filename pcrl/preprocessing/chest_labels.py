"""Chest14 fine-tuning data: the labelled radiographs of some patients, as items and batches.

PCRL's 2D setting (Zhou et al., ICCV 2021) fine-tunes on the 14 findings of NIH ChestX-ray14
(Wang et al., CVPR 2017). The inputs are the outputs of the data stages:

- ``data/interim/chestxray14/<k>/``: the 2D preprocessing's shards, ``images.npy`` ((n, H, W)
  uint8, memory-mapped) and ``index.json`` (:mod:`pcrl.preprocessing.radiographs`); together, every
  radiograph in dataset order (:func:`open_store`);
- ``data/processed/chest14/``: ``split.json`` and ``fractions.json`` over patient ids, the
  8-digit strings of the file names (:func:`pcrl.preprocessing.task_data.load_split`), and
  ``images.csv``, one row per image::

      image,patient,Atelectasis,Cardiomegaly,...,Hernia
      00000001_000.png,00000001,0,1,...,0

  the findings as 0/1 in the order of the task's class names (compared without case). A
  patient's images are all the rows naming it, so the splits are patient-wise.

The network sees ``pixels / 255``, float32 in [0, 1] (the scaling the 2D preprocessing leaves
to the batch, :mod:`pcrl.preprocessing.radiographs`). The training items built on these readers are
:class:`pcrl.finetune.datasets.RadiographSet`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pcrl.datasets.chestxray14 import IMAGES_CSV
from pcrl.preprocessing.radiographs import RadiographStore, open_store
from pcrl.records import verify_contents
from pcrl.errors import DataError
from pcrl.tasks import TaskSpec, get_task

__all__ = [
    "IMAGES_CSV",
    "LabelledImages",
    "image_size",
    "open_store",
    "radiograph_batches",
    "read_image_labels",
    "to_unit",
]

_PATIENT = re.compile(r"\d{8}")


def image_size(store: RadiographStore) -> tuple[int, int]:
    """(H, W) of the store's images (one size for all, checked by ``gather_store``)."""
    if not len(store):
        raise DataError(f"{store.files[0].parent if store.files else 'the store'}: no radiograph")
    return store.image_shape


def to_unit(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels as float32 in [0, 1]: ``pixels / 255``."""
    return np.asarray(pixels, dtype=np.float32) / np.float32(255.0)


@dataclass(frozen=True)
class LabelledImages:
    """Radiographs with their finding labels, in ``images.csv`` order.

    Attributes:
        store: The radiographs (:func:`open_store`).
        source: The ``images.csv`` the labels come from (named in errors).
        names: (N,) file names.
        patients: (N,) patient id of each image.
        index: (N,) row of each image in ``store``.
        labels: (N, L) uint8 0/1, one column per finding.
    """

    store: RadiographStore
    source: Path
    names: tuple[str, ...]
    patients: tuple[str, ...]
    index: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.names)

    def take(self, rows: np.ndarray) -> LabelledImages:
        """The images at positions ``rows`` (same store and source)."""
        rows = np.asarray(rows, dtype=np.int64)
        return LabelledImages(self.store, self.source, tuple(self.names[i] for i in rows),
                              tuple(self.patients[i] for i in rows), self.index[rows],
                              self.labels[rows])

    def of_patients(self, ids: Sequence[str]) -> LabelledImages:
        """Every image of the patients ``ids``, in file order.

        Raises:
            DataError: A patient without any image (named, with the file).
        """
        wanted = set(map(str, ids))
        empty = sorted(wanted - set(self.patients))
        if empty:
            raise DataError(f"{self.source}: no image of patient(s) {empty[:5]}"
                            f"{' ...' if len(empty) > 5 else ''} (of the split)")
        return self.take(np.array([i for i, p in enumerate(self.patients) if p in wanted],
                                  dtype=np.int64))


def read_image_labels(processed: str | Path, store: RadiographStore,
                      task: TaskSpec | str = "chest14") -> LabelledImages:
    """Every row of ``processed/images.csv``, checked against the task and the store.

    Raises:
        DataError: The file is missing, its header is not ``image,patient`` and the task's
            findings in order, or a row (named by file and line) has the wrong number of
            fields, a patient id that is not 8 digits, a finding that is not 0 or 1, an
            image listed twice or an image the store does not hold.
    """
    spec = get_task(task)
    path = Path(processed) / IMAGES_CSV
    position = {name: i for i, name in enumerate(store.names)}
    names: list[str] = []
    patients: list[str] = []
    labels: list[list[int]] = []
    first_line: dict[str, int] = {}
    if path.is_file():
        verify_contents(processed, stage="cubes")
    try:
        fh = open(path, newline="")
    except FileNotFoundError:
        raise DataError(f"{path} is missing (run the stage that writes {processed} first)") from None
    with fh:
        reader = csv.reader(fh)
        _check_header(next(reader, None), spec, path)
        for row in reader:
            if not row:
                continue
            where = f"{path}, line {reader.line_num}"
            name, patient, flags = _parse_row(row, spec, where)
            if name in first_line:
                raise DataError(f"{where}: image {name} is listed again (first on line "
                                f"{first_line[name]})")
            if name not in position:
                raise DataError(f"{where}: image {name} is not among the {len(store)} "
                                "radiographs of the 2D preprocessing (rerun it, or the stage "
                                f"that wrote {path.name})")
            first_line[name] = reader.line_num
            names.append(name)
            patients.append(patient)
            labels.append(flags)
    return LabelledImages(store, path, tuple(names), tuple(patients),
                          np.array([position[n] for n in names], dtype=np.int64),
                          np.array(labels, dtype=np.uint8).reshape(-1, spec.out_channels))


def _check_header(header: list[str] | None, spec: TaskSpec, path: Path) -> None:
    """DataError naming ``path`` unless the header is image, patient and the findings."""
    if header is None:
        raise DataError(f"{path}: empty file (expected a header line)")
    found = [h.strip() for h in header]
    if found[:2] != ["image", "patient"] or [h.lower() for h in found[2:]] != list(spec.class_names):
        raise DataError(f"{path}: header {','.join(found)!r} is not 'image,patient' followed by "
                        f"the {spec.out_channels} findings of task {spec.name} in order "
                        f"({', '.join(spec.class_names)})")


def _parse_row(row: list[str], spec: TaskSpec, where: str) -> tuple[str, str, list[int]]:
    """(image, patient, 0/1 per finding) of one row; DataError prefixed by ``where``."""
    width = 2 + spec.out_channels
    if len(row) != width:
        raise DataError(f"{where}: {len(row)} fields, expected {width} (image, patient and "
                        f"{spec.out_channels} findings)")
    name, patient = row[0].strip(), row[1].strip()
    if not name:
        raise DataError(f"{where}: empty image name")
    if not _PATIENT.fullmatch(patient):
        raise DataError(f"{where}: patient {patient!r} is not an 8-digit id")
    flags = []
    for finding, value in zip(spec.class_names, row[2:]):
        if value.strip() not in ("0", "1"):
            raise DataError(f"{where}: {finding} is {value!r}, expected 0 or 1")
        flags.append(int(value))
    return name, patient, flags


def radiograph_batches(images: LabelledImages, batch_size: int
                       ) -> Iterator[tuple[Tensor, np.ndarray]]:
    """All images in order, as ``(pixels / 255 (B, 1, H, W) float32, labels (B, L))`` batches."""
    for start in range(0, len(images), batch_size):
        rows = np.arange(start, min(start + batch_size, len(images)))
        yield torch.from_numpy(to_unit(images.store.images(images.index[rows])))[:, None], images.labels[rows]
