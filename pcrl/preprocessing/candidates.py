"""NCC candidate cubes: cubes centred on the LUNA16 nodule candidates (docs/method.md protocol).

Models Genesis' NCC task (lung nodule false-positive reduction) classifies cubes cut around
the LUNA16 candidates, given in world coordinates (mm) in ``candidates.csv``
(``seriesuid,coordX,coordY,coordZ,class``). World points are mapped to voxels with each
resampled scan's own geometry (origin, spacing, direction, as SimpleITK reads them from the
NIfTI header); cubes are gathered from a once-padded volume with one fancy index.

A cube of size ``s`` along an axis covers voxels ``c - s // 2 .. c - s // 2 + s - 1`` where
``c`` is the centre's continuous index rounded half up, so the centre voxel sits at index
``s // 2`` of the cube.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from pcrl.atomic import save_npy
from pcrl.io.images import read_volume
from pcrl.errors import ConfigError, DataError

__all__ = [
    "CANDIDATE_COLUMNS",
    "CandidateTable",
    "extract_candidate_cubes",
    "outside_scan",
    "read_candidates",
    "subsample_negatives",
    "world_to_voxel",
    "write_ncc_cubes",
]

log = logging.getLogger(__name__)

CANDIDATE_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "class")


class Geometry(Protocol):
    """What ``sitk.Image`` and ``sitk.ImageFileReader`` (after ReadImageInformation) both offer."""

    def GetOrigin(self) -> tuple[float, ...]: ...  # noqa: N802 (SimpleITK's names)

    def GetSpacing(self) -> tuple[float, ...]: ...  # noqa: N802

    def GetDirection(self) -> tuple[float, ...]: ...  # noqa: N802


def world_to_voxel(img: Geometry, points_mm: np.ndarray) -> np.ndarray:
    """Continuous (x, y, z) indices of world points (n, 3) in mm, from the image's geometry.

    Vectorised form of SimpleITK's ``TransformPhysicalPointToContinuousIndex``:
    ``index = (direction @ diag(spacing))^-1 (point - origin)``.
    """
    points = np.atleast_2d(np.asarray(points_mm, dtype=np.float64))
    origin = np.asarray(img.GetOrigin(), dtype=np.float64)
    spacing = np.asarray(img.GetSpacing(), dtype=np.float64)
    dim = len(origin)
    if points.shape[-1] != dim:
        raise ValueError(f"points must be (n, {dim}), got {points.shape}")
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(dim, dim)
    index_to_world = direction * spacing[None, :]
    return np.linalg.solve(index_to_world, (points - origin).T).T


def _centre_voxels(centers_vox: np.ndarray) -> np.ndarray:
    """Continuous indices (n, 3) rounded half up to integer voxels."""
    return np.floor(np.asarray(centers_vox, dtype=np.float64) + 0.5).astype(np.int64)


def outside_scan(centers_vox: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Boolean (n,): whether each centre's voxel (rounded half up) lies outside the scan."""
    centre = _centre_voxels(centers_vox).reshape(-1, 3)
    return np.asarray(((centre < 0) | (centre >= np.asarray(shape)[None, :])).any(axis=1))


def extract_candidate_cubes(
    volume: np.ndarray,
    centers_vox: np.ndarray,
    size: tuple[int, int, int],
    *,
    pad_value: float = 0.0,
) -> np.ndarray:
    """Cubes (n, *size) centred on continuous voxel indices (n, 3) of a volume (x, y, z).

    Parts of a cube beyond the scan are ``pad_value``. The volume is padded once and all cubes
    are taken with one fancy index into its sliding-window view.

    Raises:
        DataError: a centre lies outside the scan (its row number is given).
    """
    dims = tuple(int(s) for s in size)
    if len(dims) != 3 or min(dims) < 1:
        raise ConfigError(f"cube size must be 3 positive ints (x, y, z), got {list(dims)}")
    centre = _centre_voxels(centers_vox).reshape(-1, 3)
    outside = np.flatnonzero(outside_scan(centre, volume.shape))
    if len(outside):
        raise DataError(
            f"candidate rows {outside[:5].tolist()} lie outside the scan of shape {volume.shape} "
            f"(centres {centre[outside[:5]].tolist()})"
        )
    half = np.asarray(dims) // 2
    widths = [(int(h), int(s - h - 1)) for h, s in zip(half, dims)]
    padded = np.pad(volume, widths, mode="constant", constant_values=pad_value)
    windows = np.lib.stride_tricks.sliding_window_view(padded, dims)
    # With `half` voxels of padding before, the window starting at centre - half starts at centre.
    return np.ascontiguousarray(windows[centre[:, 0], centre[:, 1], centre[:, 2]])


@dataclass(frozen=True)
class CandidateTable:
    """Candidates of ``candidates.csv``: series uid, world centre (mm) and class, one row each."""

    seriesuid: np.ndarray  # (n,) str
    world: np.ndarray  # (n, 3) float64, mm
    label: np.ndarray  # (n,) int64

    def __len__(self) -> int:
        return len(self.seriesuid)

    def take(self, rows: np.ndarray) -> CandidateTable:
        """The table restricted to ``rows`` (indices or a boolean mask), order kept."""
        return CandidateTable(self.seriesuid[rows], self.world[rows], self.label[rows])


def read_candidates(path: Path) -> CandidateTable:
    """Read a LUNA16 ``candidates.csv`` (``seriesuid,coordX,coordY,coordZ,class``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"candidates file {path} does not exist")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in CANDIDATE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing columns {missing} (has {reader.fieldnames})")
        rows = list(reader)
    world = np.empty((len(rows), 3))
    label = np.empty(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        world[i], label[i] = _parse_row(path, i + 2, row)  # line 1 is the header
    uids = np.array([r["seriesuid"] for r in rows], dtype=str)
    return CandidateTable(uids, world, label)


def _parse_row(path: Path, line: int, row: dict[str, str | None]) -> tuple[list[float], int]:
    """World centre and class of one candidates.csv row; DataError naming the line."""
    coords = []
    for column in ("coordX", "coordY", "coordZ"):
        text = row.get(column)
        try:
            value = float(text)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise DataError(f"{path}, line {line}: {column} = {text!r} is not a number") from None
        if not math.isfinite(value):
            raise DataError(f"{path}, line {line}: {column} = {text!r} is not a finite number")
        coords.append(value)
    text = (row.get("class") or "").strip()
    if text not in ("0", "1"):
        raise DataError(f"{path}, line {line}: class = {text!r}; a candidate's class must be "
                        "0 (not a nodule) or 1 (nodule)")
    return coords, int(text)


def gather_candidates(sources: Path | Sequence[tuple[Path, set[str]]], cases: Sequence[dict]) -> CandidateTable:
    """The candidates of ``cases`` from one ``candidates.csv`` or from each download shard's
    (``(csv, ids of the scans it holds)``), rows ordered by case (in ``cases`` order), then
    as listed: the same table however the dataset is sharded."""
    if isinstance(sources, (str, Path)):
        table = read_candidates(Path(sources))
    else:
        parts = []
        for path, ids in sources:
            part = read_candidates(path)
            parts.append(part.take(np.isin(part.seriesuid, sorted(ids))))
        table = CandidateTable(np.concatenate([p.seriesuid for p in parts]) if parts else np.array([], dtype=str),
                               np.concatenate([p.world for p in parts]) if parts else np.empty((0, 3)),
                               np.concatenate([p.label for p in parts]) if parts else np.empty(0, np.int64))
    position = {str(c.get("id")): i for i, c in enumerate(cases)}
    known = np.array([u in position for u in table.seriesuid], dtype=bool)
    if not known.all():
        log.warning("%d of %d candidates belong to no listed case and are ignored", (~known).sum(), len(table))
    table = table.take(known)
    rank = np.array([position[u] for u in table.seriesuid], dtype=np.int64)
    return table.take(np.argsort(rank, kind="stable"))


def subsample_negatives(table: CandidateTable, ratio: float, seed: int) -> CandidateTable:
    """Keep every positive and ``ceil(ratio * positives)`` negatives drawn at random (seeded).

    LUNA16 has ~1,500 positives among ~750,000 candidates; cutting a cube for every negative
    is rarely wanted. Row order is kept.
    """
    if ratio <= 0:
        raise ConfigError(f"negatives_per_positive must be > 0, got {ratio}")
    negatives = np.flatnonzero(table.label == 0)
    n_keep = min(len(negatives), math.ceil(ratio * int((table.label != 0).sum())))
    chosen = np.random.default_rng(seed).choice(negatives, size=n_keep, replace=False)
    keep = table.label != 0
    keep[chosen] = True
    return table.take(keep)


def _case_rows(case_id: str, relative: str, table: CandidateTable, voxels: np.ndarray) -> list[dict]:
    """Index rows of one case's cube file, in the order of its cubes."""
    centre = _centre_voxels(voxels)
    return [
        {
            "seriesuid": case_id,
            "index": i,
            "class": int(table.label[i]),
            "coordX": float(table.world[i, 0]),
            "coordY": float(table.world[i, 1]),
            "coordZ": float(table.world[i, 2]),
            "voxelX": int(centre[i, 0]),
            "voxelY": int(centre[i, 1]),
            "voxelZ": int(centre[i, 2]),
            "file": relative,
        }
        for i in range(len(table))
    ]


def write_ncc_cubes(
    cases: list[dict],
    interim_dir: Path,
    candidates_csv: Path | Sequence[tuple[Path, set[str]]],
    out_dir: Path,
    *,
    size: tuple[int, int, int],
    pad_value: float = 0.0,
    negatives_per_positive: float | None = None,
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Write ``out_dir/cubes/<id>.npy`` (n, *size) float16 for every case with candidates.

    Args:
        cases: Entries of the resample stage's ``cases.json`` (``id`` = LUNA16 seriesuid, ``image``).
        interim_dir: Folder of ``cases.json``; ``image`` paths are relative to it.
        candidates_csv: LUNA16 candidates in world mm: one file, or each download shard's
            with the ids of its scans (see :func:`gather_candidates`).
        out_dir: Stage output folder.
        size: Cube size (x, y, z) in voxels.
        pad_value: Value of cube voxels beyond the scan (0 = -1000 HU on the [0, 1] scale).
        negatives_per_positive: If given, keep all positives and this many negatives per
            positive, drawn with ``seed`` (see ``subsample_negatives``); else keep all.
        seed: Seed of that draw.
        progress: Show a progress bar.

    Returns:
        Rows for ``out_dir/candidates.csv``: seriesuid, index (row of the case's cube file),
        class, world coordX/Y/Z, the centre voxel voxelX/Y/Z and the cube file.

    Raises:
        DataError: a candidate of a listed case lies outside its scan (seriesuid and world
            coordinate named), or an input is missing or malformed.
    """
    table = gather_candidates(candidates_csv, cases)
    if negatives_per_positive is not None:
        table = subsample_negatives(table, negatives_per_positive, seed)
    by_case = _rows_by_uid(table.seriesuid)
    rows: list[dict] = []
    for case in tqdm(cases, desc="NCC cubes", disable=not progress):
        case_id = str(case.get("id"))
        if case_id not in by_case:
            continue
        mine = table.take(by_case[case_id])
        if not case.get("image"):
            raise DataError(f"cases.json: case {case_id} has no 'image'")
        volume, image = read_volume(Path(interim_dir) / case["image"], case_id)
        voxels = world_to_voxel(image, mine.world)
        _check_inside(case_id, mine.world, voxels, volume.shape)
        relative = f"cubes/{case_id}.npy"
        cubes = extract_candidate_cubes(volume, voxels, size, pad_value=pad_value)
        save_npy(Path(out_dir) / relative, cubes.astype(np.float16))
        rows.extend(_case_rows(case_id, relative, mine, voxels))
    return rows


def _rows_by_uid(uids: np.ndarray) -> dict[str, np.ndarray]:
    """Row indices of each series uid, in file order (one sort instead of a scan per case)."""
    order = np.argsort(uids, kind="stable")
    unique, starts = np.unique(uids[order], return_index=True)
    return dict(zip(unique.tolist(), np.split(order, starts[1:])))


def _check_inside(case_id: str, world: np.ndarray, voxels: np.ndarray, shape: Sequence[int]) -> None:
    """Raise DataError naming the seriesuid and world point of the first candidate outside its scan."""
    outside = np.flatnonzero(outside_scan(voxels, shape))
    if len(outside):
        first = outside[0]
        raise DataError(
            f"candidate of seriesuid {case_id} at world (x, y, z) = {world[first].round(3).tolist()} mm "
            f"lies outside its scan (voxel {voxels[first].round(2).tolist()}, shape {tuple(shape)}); "
            f"{len(outside)} such candidate(s) in this case"
        )
