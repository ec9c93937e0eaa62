"""Verify a dataset's native layout on disk and describe it in ``manifest.json``.

The manifest format is defined in docs/CONVENTIONS.md ("Data layout"); it is read back by
:mod:`pcrl.datasets.manifest`. Layouts:

- LUNA16 (Setio et al., 2017): ``subset0/`` .. ``subset9/`` holding MetaImage ``.mhd``
  headers with their ``.raw`` data files, plus ``annotations.csv`` and ``candidates.csv``.
  The MetaImage header format is the one of ITK's MetaIO library (``Key = Value`` lines,
  ``ElementDataFile`` last).
- Medical Segmentation Decathlon (Antonelli et al., 2022): ``dataset.json`` listing
  ``training`` (image/label pairs) and ``test`` (images) relative to the task folder.
- NIH ChestX-ray14 (Wang et al., CVPR 2017): ``images/<patient>_<follow-up>.png``,
  ``Data_Entry_2017_v2020.csv`` and the split lists (:mod:`pcrl.datasets.chestxray14`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any


from pcrl.datasets.chestxray14 import (ENTRY_CSV, IMAGES_DIR, TEST_LIST, TRAIN_VAL_LIST, read_split_lists,
                                   verify_chestxray14)
from pcrl.datasets.registry import get_dataset
from pcrl.io.metaimage import check_metaimage
from pcrl.datasets.manifest import SOURCES
from pcrl.errors import ConfigError, DataError

LUNA16_ANNOTATIONS_HEADER = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
LUNA16_CANDIDATES_HEADER = ("seriesuid", "coordX", "coordY", "coordZ", "class")

_SUBSET_RE = re.compile(r"subset\d+")
_MAX_LISTED = 5


#: The order of a layout's cases in its manifest (and so in every later stage).
CASE_ORDER: dict[str, Callable[[dict[str, Any]], Any]] = {
    "luna16": lambda c: (c["group"], c["id"]),
    "decathlon": lambda c: (c["group"] != "train", c["id"]),
    "chestxray14": lambda c: c["id"],
}


def case_order(dataset: str) -> Callable[[dict[str, Any]], Any]:
    """The sort key of ``dataset``'s cases (see :data:`CASE_ORDER`)."""
    return CASE_ORDER[get_dataset(dataset).layout]


def _subset_number(case: dict[str, Any]) -> int:
    return int(str(case["group"]).removeprefix("subset"))


def shard_cases(dataset: str, cases: list[dict[str, Any]], shard: int, count: int) -> list[dict[str, Any]]:
    """The cases of download shard ``shard`` of ``count`` among a whole dataset's ``cases``:
    LUNA16 by subset (subset i in shard i mod n, as its archives), others by position."""
    if count == 1:
        return cases
    if get_dataset(dataset).layout == "luna16":
        return [c for c in cases if _subset_number(c) % count == shard]
    return [c for i, c in enumerate(cases) if i % count == shard]


# --------------------------------------------------------------------------- helpers


def _require_dir(root: Path, what: str) -> None:
    """Raise DataError unless ``root`` is an existing folder."""
    if not root.is_dir():
        raise DataError(f"{what} dataset folder {root} does not exist or is not a folder")


def _missing_error(missing: list[str], root: Path, what: str) -> DataError:
    """A DataError listing (up to a few) missing files of the dataset folder ``root``."""
    shown = ", ".join(missing[:_MAX_LISTED])
    more = f" (and {len(missing) - _MAX_LISTED} more)" if len(missing) > _MAX_LISTED else ""
    return DataError(f"{what} dataset folder {root}: {len(missing)} missing file(s): {shown}{more}")


def _check_unique_ids(cases: list[dict], root: Path) -> None:
    """Raise DataError when two cases share an id."""
    seen: dict[str, str] = {}
    for case in cases:
        if case["id"] in seen:
            raise DataError(
                f"dataset folder {root}: case id {case['id']!r} appears twice "
                f"({seen[case['id']]} and {case['image']})"
            )
        seen[case["id"]] = case["image"]


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` in POSIX form."""
    return path.relative_to(root).as_posix()


# --------------------------------------------------------------------------- LUNA16


def check_mhd(mhd: Path) -> None:
    """Check that the data file a ``.mhd`` header names exists next to it, with the right size.

    The same check :func:`pcrl.io.images.read_image` makes before reading.

    Raises:
        DataError: naming the header and the missing or truncated data file.
    """
    check_metaimage(mhd)


def check_csv_header(path: Path, expected: Iterable[str]) -> None:
    """Check that the CSV file ``path`` exists and its first line is the column list ``expected``.

    Raises:
        DataError: the file is missing or its header differs (both headers are named).
    """
    expected = tuple(expected)
    if not path.is_file():
        raise DataError(f"missing {path.name} in dataset folder {path.parent}")
    with path.open(encoding="utf-8-sig", newline="") as fh:
        first = fh.readline().strip()
    actual = tuple(col.strip() for col in first.split(","))
    if actual != expected:
        raise DataError(
            f"{path} has header {','.join(actual)!r}, expected {','.join(expected)!r}"
        )


def scan_luna16(root: Path) -> dict[str, Any]:
    """Verify a LUNA16 folder and list its scans.

    Cases: every ``subset*/**/*.mhd``; ``id`` is the seriesuid (the file stem), ``group``
    the subset folder, ``label`` None; sorted by (group, id).

    Returns:
        ``{"cases": [...], "extras": {"annotations": ..., "candidates": ...}}`` with paths
        relative to ``root``.

    Raises:
        DataError: a missing/truncated data file, a missing or malformed CSV, or no scan.
    """
    root = Path(root)
    _require_dir(root, "LUNA16")
    check_csv_header(root / "annotations.csv", LUNA16_ANNOTATIONS_HEADER)
    check_csv_header(root / "candidates.csv", LUNA16_CANDIDATES_HEADER)
    subsets = [p for p in root.iterdir() if p.is_dir() and _SUBSET_RE.fullmatch(p.name)]
    cases = []
    for subset in subsets:
        for mhd in subset.rglob("*.mhd"):
            check_mhd(mhd)
            image = _relative(mhd, root)
            cases.append({"id": mhd.stem, "image": image, "label": None, "group": subset.name})
    if not cases:
        raise DataError(f"LUNA16 dataset folder {root} holds no subset*/ folder with .mhd scans")
    cases.sort(key=CASE_ORDER["luna16"])
    _check_unique_ids(cases, root)
    extras = {"annotations": "annotations.csv", "candidates": "candidates.csv"}
    return {"cases": cases, "extras": extras}


# --------------------------------------------------------------------------- Decathlon


def _read_dataset_json(root: Path) -> dict[str, Any]:
    """Load ``root/dataset.json``; DataError when missing or not a JSON object."""
    path = root / "dataset.json"
    if not path.is_file():
        raise DataError(f"missing dataset.json in Decathlon dataset folder {root}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"cannot parse {path}: {err}") from err
    if not isinstance(meta, dict):
        raise DataError(f"{path} is not a JSON object")
    return meta


def _decathlon_path(entry: Any, where: str, dataset_json: Path) -> str:
    """Normalise a dataset.json path (``./imagesTr/x.nii.gz`` -> ``imagesTr/x.nii.gz``)."""
    if not isinstance(entry, str) or not entry:
        raise DataError(f"{dataset_json}: {where} is {entry!r}, expected a file path")
    path = PurePosixPath(entry)
    if path.is_absolute() or ".." in path.parts:
        raise DataError(f"{dataset_json}: {where} {entry!r} must stay inside the dataset folder")
    return path.as_posix()


def _decathlon_id(image: str) -> str:
    """Case id: the image file name without ``.nii.gz`` / ``.nii``."""
    name = PurePosixPath(image).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _decathlon_cases(meta: dict[str, Any], dataset_json: Path) -> list[dict[str, Any]]:
    """Cases of the ``training`` (group train) then ``test`` (group test) lists."""
    cases: list[dict[str, Any]] = []
    for i, item in enumerate(meta.get("training", [])):
        if not isinstance(item, dict):
            raise DataError(f"{dataset_json}: training[{i}] is not an object with image/label")
        image = _decathlon_path(item.get("image"), f"training[{i}].image", dataset_json)
        label = _decathlon_path(item.get("label"), f"training[{i}].label", dataset_json)
        cases.append({"id": _decathlon_id(image), "image": image, "label": label, "group": "train"})
    for i, item in enumerate(meta.get("test", [])):
        raw = item.get("image") if isinstance(item, dict) else item
        image = _decathlon_path(raw, f"test[{i}]", dataset_json)
        cases.append({"id": _decathlon_id(image), "image": image, "label": None, "group": "test"})
    return cases


def scan_decathlon(root: Path) -> dict[str, Any]:
    """Verify a Decathlon task folder against its ``dataset.json`` and list its cases.

    Returns:
        ``{"cases": [...], "extras": {"dataset_json": "dataset.json"}}``; cases of group
        ``train`` (with label) then ``test`` (label None), each sorted by id.

    Raises:
        DataError: dataset.json missing or malformed, a listed file missing, or no case.
    """
    root = Path(root)
    _require_dir(root, "Decathlon")
    dataset_json = root / "dataset.json"
    cases = _decathlon_cases(_read_dataset_json(root), dataset_json)
    if not cases:
        raise DataError(f"{dataset_json} lists no training or test case")
    listed = [c["image"] for c in cases] + [c["label"] for c in cases if c["label"]]
    missing = [p for p in listed if not (root / p).is_file()]
    if missing:
        raise _missing_error(missing, root, "Decathlon")
    cases.sort(key=CASE_ORDER["decathlon"])
    _check_unique_ids(cases, root)
    return {"cases": cases, "extras": {"dataset_json": "dataset.json"}}


# --------------------------------------------------------------------------- ChestX-ray14


def scan_chestxray14(root: Path) -> dict[str, Any]:
    """Verify a ChestX-ray14 folder (:func:`pcrl.datasets.chestxray14.verify_chestxray14`) and
    list its radiographs.

    Every image is checked chunk by chunk (PNG signature, CRCs, bit depth); decoding is left
    to the resample stage, which decodes each image once anyway and names the file that
    fails. Cases: ``id`` the file stem (``00000001_000``), ``group`` ``train_val`` or
    ``test`` (the official lists), ``label`` None (the findings stay in the CSV).

    Raises:
        DataError: see :func:`~pcrl.datasets.chestxray14.verify_chestxray14`.
    """
    root = Path(root)
    _require_dir(root, "ChestX-ray14")
    verify_chestxray14(root, decode=False)
    lists = read_split_lists(root)
    cases = [{"id": Path(name).stem, "image": f"{IMAGES_DIR}/{name}", "label": None, "group": group}
             for group, names in (("train_val", lists.train_val), ("test", lists.test)) for name in names]
    cases.sort(key=CASE_ORDER["chestxray14"])
    extras = {"entries": ENTRY_CSV, "train_val_list": TRAIN_VAL_LIST, "test_list": TEST_LIST}
    return {"cases": cases, "extras": extras}


# --------------------------------------------------------------------------- manifest

_SCANNERS = {"luna16": scan_luna16, "decathlon": scan_decathlon, "chestxray14": scan_chestxray14}


def _stored_root(root: Path, manifest_dir: Path) -> str:
    """``root`` relative to ``manifest_dir`` when inside it, else absolute (POSIX form)."""
    root, manifest_dir = root.resolve(), manifest_dir.resolve()
    if root.is_relative_to(manifest_dir):
        return root.relative_to(manifest_dir).as_posix()  # "." when equal
    return root.as_posix()


def build_manifest(dataset: str, root: Path, *, source: str, manifest_dir: Path,
                   shard: tuple[int, int] = (0, 1)) -> dict[str, Any]:
    """Verify the native layout of ``dataset`` under ``root`` and return its manifest.

    Args:
        dataset: Registry name (``luna16``, ``msd_liver``, ...).
        root: Folder holding the native layout.
        source: ``phantom``, ``download`` or ``local``.
        manifest_dir: Folder the manifest will be written to (``root`` is stored relative
            to it when inside it).
        shard: ``(k, n)``: list only the cases of download shard k of n
            (:func:`shard_cases`); for a folder that holds the whole dataset (a local copy).

    Raises:
        ConfigError: unknown dataset or source, or a layout without scanner.
        DataError: the layout is incomplete (see the ``scan_*`` functions).
    """
    spec = get_dataset(dataset)
    if source not in SOURCES:
        raise ConfigError(f"unknown source {source!r} for dataset {dataset}; known: {SOURCES}")
    scanner = _SCANNERS.get(spec.layout)
    if scanner is None:
        raise ConfigError(f"dataset {dataset}: layout {spec.layout!r} has no verifier yet")
    scanned = scanner(Path(root))
    return {
        "dataset": dataset,
        "source": source,
        "root": _stored_root(Path(root), Path(manifest_dir)),
        "cases": shard_cases(dataset, scanned["cases"], *shard),
        "extras": scanned["extras"],
    }
