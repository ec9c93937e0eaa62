"""NIH ChestX-ray14 in its native layout: reading and verification of a local copy.

ChestX-ray14 (Wang et al., "ChestX-ray8: Hospital-scale chest X-ray database and
benchmarks on weakly-supervised classification and localization of common thorax
diseases", CVPR 2017; NIH Clinical Center) holds 112,120 frontal chest radiographs of
30,805 patients, shipped as ``images_001.tar.gz`` .. ``images_012.tar.gz`` that extract to
``images/<8-digit patient id>_<3-digit follow-up>.png`` (1024 x 1024, 8-bit grayscale; a
few files are RGBA), with:

- ``Data_Entry_2017_v2020.csv``: one row per image, header :data:`ENTRY_HEADER` (the two
  bracketed headers of the real file each span two CSV fields), ``Finding Labels`` the
  ``|``-joined names of :data:`FINDINGS` or ``No Finding``;
- ``train_val_list.txt`` and ``test_list.txt``: the official patient-wise split, one
  image file name per line.

:func:`verify_chestxray14` checks all of it; every failure is a
:class:`pcrl.errors.DataError` naming the file (and the line or patient at fault). PNG files
are checked chunk by chunk before they are decoded (:mod:`pcrl.io.png`).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pcrl.io.png import check_depth, check_png, check_size, decode_gray
from pcrl.errors import DataError
from pcrl.settings import CHEST14_FINDINGS

#: The 14 findings, in the order of Wang et al. (the order of the label vectors).
FINDINGS: tuple[str, ...] = CHEST14_FINDINGS

NO_FINDING = "No Finding"
ENTRY_CSV = "Data_Entry_2017_v2020.csv"
TRAIN_VAL_LIST = "train_val_list.txt"
TEST_LIST = "test_list.txt"
IMAGES_DIR = "images"

ENTRY_HEADER: tuple[str, ...] = (
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
    "OriginalImage[Width",
    "Height]",
    "OriginalImagePixelSpacing[x",
    "y]",
)
"""Header fields of ``Data_Entry_2017_v2020.csv`` as the CSV parser sees them."""

VIEWS = ("PA", "AP")
GENDERS = ("M", "F")

_IMAGE_RE = re.compile(r"(\d{8})_(\d{3})\.png")


#: The Chest14 label table the 2D cubes stage writes (image, patient, the 14 findings).
IMAGES_CSV = "images.csv"


def patient_of(image: str) -> str:
    """The 8-digit patient id of a file name (``00000001_000.png`` -> ``00000001``)."""
    return image[:8]


def image_name(patient: int, follow_up: int) -> str:
    """File name of a radiograph: ``<8-digit patient id>_<3-digit follow-up>.png``."""
    return f"{patient:08d}_{follow_up:03d}.png"


@dataclass(frozen=True)
class ChestEntry:
    """One row of ``Data_Entry_2017_v2020.csv``.

    Attributes:
        image: file name, e.g. ``00000001_000.png`` (under ``images/``).
        patient: ``Patient ID``.
        follow_up: ``Follow-up #``.
        labels: 14 values 0/1 in the order of :data:`FINDINGS` (all 0: ``No Finding``).
        age: ``Patient Age`` in years.
        gender: ``M`` or ``F``.
        view: ``PA`` or ``AP``.
        original_size: (width, height) of the original DICOM image, pixels.
        pixel_spacing: (x, y) of the original image, mm.
        line: line of the CSV file holding the row.
    """

    image: str
    patient: int
    follow_up: int
    labels: tuple[int, ...]
    age: int
    gender: str
    view: str
    original_size: tuple[int, int]
    pixel_spacing: tuple[float, float]
    line: int = field(default=0, compare=False)

    @property
    def findings(self) -> tuple[str, ...]:
        """Names of the positive findings (empty: ``No Finding``)."""
        return tuple(name for name, value in zip(FINDINGS, self.labels) if value)


class SplitLists(NamedTuple):
    """The official split: image file names of ``train_val_list.txt`` and ``test_list.txt``."""

    train_val: tuple[str, ...]
    test: tuple[str, ...]


@dataclass(frozen=True)
class ChestXray14Summary:
    """What :func:`verify_chestxray14` found: counts of a sound local copy."""

    images: int
    patients: int
    train_val: int
    test: int
    converted: int
    label_counts: dict[str, int]


def label_matrix(entries: Sequence[ChestEntry]) -> np.ndarray:
    """(N, 14) uint8 labels of ``entries``, columns in the order of :data:`FINDINGS`."""
    return np.array([e.labels for e in entries], dtype=np.uint8).reshape(len(entries), len(FINDINGS))


# ----------------------------------------------------------------------------- CSV


def _parse_int(path: Path, line: int, column: str, value: str, *, minimum: int = 0) -> int:
    """An integer CSV field >= ``minimum``, or DataError naming the file, line and column."""
    if not re.fullmatch(r"\d+", value.strip()):
        raise DataError(f"{path}, line {line}: {column} must be an integer, got {value!r}")
    number = int(value)
    if number < minimum:
        raise DataError(f"{path}, line {line}: {column} must be >= {minimum}, got {number}")
    return number


def _parse_spacing(path: Path, line: int, column: str, value: str) -> float:
    """A finite pixel spacing > 0."""
    try:
        number = float(value)
    except ValueError:
        raise DataError(f"{path}, line {line}: {column} must be a number, got {value!r}") from None
    if not np.isfinite(number) or number <= 0:
        raise DataError(f"{path}, line {line}: {column} must be finite and > 0, got {value!r}")
    return number


def _parse_labels(path: Path, line: int, image: str, value: str) -> tuple[int, ...]:
    """The 14-vector of a ``Finding Labels`` field; unknown or mixed names refused."""
    names = value.split("|")
    if names == [NO_FINDING]:
        return (0,) * len(FINDINGS)
    for name in names:
        if name == NO_FINDING:
            raise DataError(f"{path}, line {line} ({image}): '{NO_FINDING}' combined with findings in {value!r}")
        if name not in FINDINGS:
            raise DataError(
                f"{path}, line {line} ({image}): unknown finding {name!r} in Finding Labels {value!r}; "
                f"known: {', '.join(FINDINGS)} or '{NO_FINDING}'"
            )
    if len(set(names)) != len(names):
        raise DataError(f"{path}, line {line} ({image}): a finding is repeated in {value!r}")
    return tuple(int(name in names) for name in FINDINGS)


def _parse_entry(path: Path, line: int, row: list[str]) -> ChestEntry:
    """One data row (its 11 fields) as a record, each field checked."""
    image, labels, follow_up, patient, age, gender, view, width, height, sx, sy = row
    match = _IMAGE_RE.fullmatch(image)
    if match is None:
        raise DataError(f"{path}, line {line}: Image Index {image!r} is not <8-digit patient>_<3-digit follow-up>.png")
    patient_id = _parse_int(path, line, "Patient ID", patient, minimum=1)
    follow = _parse_int(path, line, "Follow-up #", follow_up)
    if image != image_name(patient_id, follow):
        raise DataError(
            f"{path}, line {line}: Image Index {image!r} does not match Patient ID {patient} and "
            f"Follow-up # {follow_up} (expected {image_name(patient_id, follow)})"
        )
    age_text = age[:-1] if age.endswith("Y") else age  # the 2017 release wrote ages as '058Y'
    if gender not in GENDERS:
        raise DataError(f"{path}, line {line} ({image}): Patient Gender must be M or F, got {gender!r}")
    if view not in VIEWS:
        raise DataError(f"{path}, line {line} ({image}): View Position must be PA or AP, got {view!r}")
    return ChestEntry(
        image=image,
        patient=patient_id,
        follow_up=follow,
        labels=_parse_labels(path, line, image, labels),
        age=_parse_int(path, line, "Patient Age", age_text),
        gender=gender,
        view=view,
        original_size=(
            _parse_int(path, line, "OriginalImage[Width", width, minimum=1),
            _parse_int(path, line, "Height]", height, minimum=1),
        ),
        pixel_spacing=(
            _parse_spacing(path, line, "OriginalImagePixelSpacing[x", sx),
            _parse_spacing(path, line, "y]", sy),
        ),
        line=line,
    )


def read_entries(root: str | os.PathLike[str]) -> list[ChestEntry]:
    """Parse ``<root>/Data_Entry_2017_v2020.csv`` (Wang et al., CVPR 2017) into records.

    The header must be the real one (:data:`ENTRY_HEADER`; a trailing empty field, as the
    2017 release had, is accepted). Each Image Index must read ``<Patient ID>_<Follow-up #>``
    (8 and 3 digits), each finding be one of :data:`FINDINGS` with ``No Finding`` alone, and
    no image appear twice.

    Raises:
        DataError: the file is missing or a row is malformed; the message names the file,
            the line and the image.
    """
    path = Path(root) / ENTRY_CSV
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return _read_entry_rows(path, csv.reader(fh))
    except FileNotFoundError:
        raise DataError(f"{path}: file does not exist (the ChestX-ray14 image table)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: unreadable: {exc}") from None


def _read_entry_rows(path: Path, reader: Any) -> list[ChestEntry]:
    """Records of the rows of an open CSV reader, header first."""
    header = next(reader, None)
    if header is not None and len(header) == len(ENTRY_HEADER) + 1 and header[-1] == "":
        header = header[:-1]
    if header is None or tuple(header) != ENTRY_HEADER:
        raise DataError(f"{path}: header {header!r} is not the ChestX-ray14 header {list(ENTRY_HEADER)!r}")
    entries: list[ChestEntry] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not row:
            continue
        if len(row) == len(ENTRY_HEADER) + 1 and row[-1] == "":
            row = row[:-1]
        if len(row) != len(ENTRY_HEADER):
            raise DataError(f"{path}, line {line}: {len(row)} fields, expected {len(ENTRY_HEADER)}")
        entry = _parse_entry(path, line, row)
        if entry.image in seen:
            raise DataError(f"{path}, line {line}: {entry.image} is listed twice (also line {seen[entry.image]})")
        seen[entry.image] = line
        entries.append(entry)
    if not entries:
        raise DataError(f"{path}: no image rows")
    return entries


# ---------------------------------------------------------------------- split lists


def _read_list(path: Path) -> tuple[str, ...]:
    """Image names of one split list: one per line, each a ChestX-ray14 file name, no repeats."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file does not exist (a ChestX-ray14 split list)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable: {exc}") from None
    names: list[str] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        name = raw.strip()
        if not name:
            continue
        if _IMAGE_RE.fullmatch(name) is None:
            raise DataError(f"{path}, line {number}: {name!r} is not an image name <patient>_<follow-up>.png")
        if name in seen:
            raise DataError(f"{path}, line {number}: {name} is listed twice (also line {seen[name]})")
        seen[name] = number
        names.append(name)
    return tuple(names)


def read_split_lists(root: str | os.PathLike[str]) -> SplitLists:
    """The official patient-wise split (Wang et al., CVPR 2017): ``train_val_list.txt``
    and ``test_list.txt`` of ``root``.

    Raises:
        DataError: a list is missing, holds a malformed or repeated name, or an image is in
            both lists (naming it).
    """
    root = Path(root)
    lists = SplitLists(_read_list(root / TRAIN_VAL_LIST), _read_list(root / TEST_LIST))
    both = sorted(set(lists.train_val) & set(lists.test))
    if both:
        raise DataError(f"{root / TEST_LIST}: {both[0]} is also in {root / TRAIN_VAL_LIST}")
    return lists


def _check_split(root: Path, lists: SplitLists, entries: Sequence[ChestEntry]) -> None:
    """Every listed image in the CSV, every CSV image listed, no patient in both lists."""
    known = {e.image for e in entries}
    for file_name, names in ((TRAIN_VAL_LIST, lists.train_val), (TEST_LIST, lists.test)):
        for name in names:
            if name not in known:
                raise DataError(f"{root / file_name}: {name} is not in {root / ENTRY_CSV}")
    listed = set(lists.train_val) | set(lists.test)
    for entry in entries:
        if entry.image not in listed:
            raise DataError(
                f"{root / ENTRY_CSV}, line {entry.line}: {entry.image} is in neither "
                f"{TRAIN_VAL_LIST} nor {TEST_LIST}"
            )
    train_patients = {name[:8]: name for name in lists.train_val}
    for name in lists.test:
        if name[:8] in train_patients:
            raise DataError(
                f"{root / TEST_LIST}: patient {name[:8]} is in both split lists ({name} in {TEST_LIST}, "
                f"{train_patients[name[:8]]} in {root / TRAIN_VAL_LIST}); the official split is patient-wise"
            )


# ---------------------------------------------------------------------- verification


def verify_chestxray14(
    root: str | os.PathLike[str], *, expected_size: Sequence[int] | None = None, decode: bool = True
) -> ChestXray14Summary:
    """Verify a local copy of ChestX-ray14 (Wang et al., CVPR 2017) in its native layout.

    Checks ``Data_Entry_2017_v2020.csv`` (:func:`read_entries`), the split lists
    (:func:`read_split_lists`: every listed image in the CSV, every CSV image in one list,
    no patient in both), and every image of the CSV: present under ``images/``, a complete
    8-bit PNG (RGB/RGBA accepted, 16-bit refused) of ``expected_size`` when given, and,
    with ``decode``, decodable.

    Args:
        root: the folder holding ``images/``, the CSV and the two lists.
        expected_size: required (width, height) of every image (the real data: (1024, 1024)).
        decode: decode every image (False: check the PNG chunks and header only).

    Returns:
        Counts of images, patients, split sizes, colour files converted and labels.

    Raises:
        DataError: the first problem found, naming the file (and line or patient).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: ChestX-ray14 root folder does not exist")
    entries = read_entries(root)
    lists = read_split_lists(root)
    _check_split(root, lists, entries)
    converted = 0
    for entry in entries:
        path = root / IMAGES_DIR / entry.image
        if not path.is_file():
            raise DataError(f"{path}: missing: {entry.image} is listed in {root / ENTRY_CSV}, line {entry.line}")
        info = check_png(path)
        check_depth(path, info)
        check_size(path, info, expected_size)
        if decode:
            decode_gray(path, info)
        converted += info.color_type != 0
    counts = label_matrix(entries).sum(axis=0)
    label_counts = {name: int(n) for name, n in zip(FINDINGS, counts)}
    label_counts[NO_FINDING] = sum(1 for e in entries if not any(e.labels))
    return ChestXray14Summary(
        images=len(entries),
        patients=len({e.patient for e in entries}),
        train_val=len(lists.train_val),
        test=len(lists.test),
        converted=converted,
        label_counts=label_counts,
    )
