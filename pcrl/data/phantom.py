"""Deterministic phantoms written in the native layouts of LUNA16 and the Decathlon.

DESIGN.md principle 3: the demo dataset must exercise the real code path, so each
generator writes files exactly as the real dataset ships them:

- LUNA16 (Setio et al., "Validation, comparison, and combination of algorithms for
  automatic detection of pulmonary nodules in CT images", MedIA 2017; Zenodo records
  3723295 and 4121926): ``subsetK/<seriesuid>.mhd`` + ``.raw`` (MetaImage, MET_SHORT,
  HU, anisotropic spacing, non-zero origin), ``annotations.csv`` and ``candidates.csv``
  in world millimetres (``origin + index * spacing``).
- Medical Segmentation Decathlon (Antonelli et al., Nat. Commun. 2022) Task03_Liver
  and Task01_BrainTumour: ``imagesTr/``, ``labelsTr/``, ``imagesTs/`` NIfTI files and a
  ``dataset.json`` with MSD's fields. BraTS images are 4D (x, y, z, 4 modalities).

Anatomy is defined as implicit shapes in world millimetres and sampled on each scan's
voxel grid, so structures look the same whatever the spacing. Every case draws from its
own generator ``numpy.random.default_rng([seed, dataset stream, case index])``: the same
seed gives byte-identical files, and case ``i`` does not depend on how many cases are
generated. Sizes are relative to each scan's field of view (the demo shapes are small),
lesion sizes are in millimetres.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from pcrl.atomic import atomic_dir
from pcrl.errors import ConfigError

__all__ = [
    "GENERATORS",
    "LUNA16_UID_PREFIX",
    "Candidate",
    "Nodule",
    "PhantomCase",
    "brain_case",
    "generate_luna16",
    "generate_msd_brain",
    "generate_msd_liver",
    "liver_case",
    "luna16_case",
]

Vec3 = tuple[float, float, float]
Axes = tuple[np.ndarray, np.ndarray, np.ndarray]

LUNA16_UID_PREFIX = "1.3.6.1.4.1.14519.5.2.1.6279.6001."
"""Root of the LIDC-IDRI series instance UIDs that LUNA16 uses as scan names."""

_UID_DIGITS = 30  # real LUNA16 UIDs carry 30 digits after the prefix (64 characters)
_STREAMS = {"luna16": 16, "msd_liver": 3, "msd_brain": 1}  # seed stream per dataset
# Smallest shapes (x, y, z) that leave room for lesions whatever spacing is drawn.
_MIN_SHAPES = {"luna16": (80, 80, 20), "msd_liver": (48, 48, 20), "msd_brain": (32, 32, 24)}
_IDENTITY3 = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
_HU_MIN, _HU_MAX = -1024, 3071  # 12-bit CT range stored in int16

# LUNA16 anatomy, HU (typical CT values)
_AIR_HU, _FAT_HU, _SOFT_HU, _LUNG_HU, _RIB_HU, _SPINE_HU = -1000.0, -100.0, 40.0, -850.0, 700.0, 400.0
_LUNA_NOISE_HU = 20.0
_NODULE_MIN_MM, _NODULE_MAX_MM = 4.0, 12.0  # >= 4 mm so a 2.5 mm slice always cuts the centre
_NODULE_SHELL_MM = 3.5  # lung kept around each nodule (the test checks a shell of 1..3 mm)
_MAX_JITTER_MM = 1.5  # LUNA16 candidates lie within ~1.5 mm of the annotated centre

# Liver CT, HU (portal-venous phase)
_AORTA_HU, _KIDNEY_HU, _LIVER_NOISE_HU = 180.0, 160.0, 12.0

# BraTS tissue intensities per channel (FLAIR, T1w, t1gd, T2w), arbitrary MR units;
# contrasts follow the usual appearance: CSF dark on FLAIR and bright on T2, edema
# bright on FLAIR/T2, enhancing tumour bright on t1gd.
_BRAIN_TISSUES = ("background", "grey", "white", "csf", "edema", "core", "enhancing")
_BRAIN_TABLE = np.array(
    [
        [0.0, 0.0, 0.0, 0.0],
        [480.0, 380.0, 400.0, 520.0],
        [400.0, 520.0, 540.0, 380.0],
        [120.0, 150.0, 160.0, 900.0],
        [850.0, 330.0, 340.0, 880.0],
        [520.0, 250.0, 260.0, 700.0],
        [600.0, 400.0, 1100.0, 600.0],
    ],
    dtype=np.float32,
)
_BRAIN_NOISE = 20.0


@dataclass(frozen=True)
class Nodule:
    """A true nodule: centre in world mm (x, y, z) and diameter in mm (LUNA16 annotations)."""

    center: Vec3
    diameter_mm: float


@dataclass(frozen=True)
class Candidate:
    """A LUNA16 candidate: world mm (x, y, z) and class (1 nodule, 0 false positive)."""

    center: Vec3
    label: int


@dataclass(frozen=True)
class PhantomCase:
    """One generated case in memory.

    Attributes:
        case_id: file stem (LUNA16 seriesuid, ``liver_N``, ``BRATS_NNN``).
        image: (x, y, z) int16 HU for CT, (4, x, y, z) float32 for BraTS.
        label: (x, y, z) uint8 segmentation, or None (LUNA16).
        spacing: voxel size in mm (x, y, z); direction is the identity.
        origin: world position of voxel (0, 0, 0) in mm.
        nodules: LUNA16 true nodules.
        candidates: LUNA16 candidates (jittered nodule centres and vessel points, shuffled).
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    spacing: Vec3
    origin: Vec3
    nodules: tuple[Nodule, ...] = field(default=())
    candidates: tuple[Candidate, ...] = field(default=())


# --------------------------------------------------------------------------- checks


def _check_count(dataset: str, name: str, value: object, minimum: int) -> int:
    """Return ``value`` as int or raise ConfigError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{dataset} phantom: '{name}' must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_shape(dataset: str, shape: Sequence[int]) -> tuple[int, int, int]:
    """Return ``shape`` as 3 ints, each at least the dataset's minimum, or raise ConfigError."""
    minimum = _MIN_SHAPES[dataset]
    values = tuple(shape) if isinstance(shape, Sequence) and not isinstance(shape, str) else ()
    ok = len(values) == 3 and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
    if not ok or any(v < m for v, m in zip(values, minimum)):
        raise ConfigError(
            f"{dataset} phantom: 'shape' must be 3 integers (x, y, z) of at least {list(minimum)}, "
            f"got {shape!r}"
        )
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def _case_rng(seed: int, dataset: str, index: int) -> np.random.Generator:
    """Independent generator of one case (seed, dataset stream, case index)."""
    seed = _check_count(dataset, "seed", seed, 0)
    index = _check_count(dataset, "index", index, 0)
    return np.random.default_rng([seed, _STREAMS[dataset], index])


# ----------------------------------------------------------------------- geometry


def _world_axes(shape: Sequence[int], spacing: Vec3, origin: Vec3) -> Axes:
    """Open grids of voxel-centre world coordinates, broadcastable to (x, y, z)."""
    grids = []
    for dim in range(3):
        coords = origin[dim] + spacing[dim] * np.arange(shape[dim], dtype=np.float64)
        view = [1, 1, 1]
        view[dim] = shape[dim]
        grids.append(coords.reshape(view))
    return grids[0], grids[1], grids[2]


def _grid_center(shape: Sequence[int], spacing: Vec3, origin: Vec3) -> np.ndarray:
    """World position of the centre of the field of view."""
    return np.asarray(origin) + np.asarray(spacing) * (np.asarray(shape) - 1) / 2.0


def _half_extent(shape: Sequence[int], spacing: Vec3) -> np.ndarray:
    """Half the distance between the first and last voxel centres, per axis, in mm."""
    return np.asarray(spacing) * (np.asarray(shape) - 1) / 2.0


def _ellipse_radius(axes: Axes, center: np.ndarray, semi: Sequence[float]) -> np.ndarray:
    """Normalised in-plane (x, y) radius of an elliptic cylinder; shape (x, y, 1)."""
    return np.sqrt(((axes[0] - center[0]) / semi[0]) ** 2 + ((axes[1] - center[1]) / semi[1]) ** 2)


def _ellipsoid_radius(axes: Axes, center: np.ndarray, semi: Sequence[float]) -> np.ndarray:
    """Normalised radius of an ellipsoid (< 1 inside); shape (x, y, z)."""
    return np.sqrt(sum(((axes[d] - center[d]) / semi[d]) ** 2 for d in range(3)))


def _distance(axes: Axes, center: np.ndarray) -> np.ndarray:
    """Euclidean distance in mm of every voxel centre to ``center``."""
    return np.sqrt(sum((axes[d] - center[d]) ** 2 for d in range(3)))


def _unit_vectors(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` directions drawn uniformly on the sphere, shape (count, 3)."""
    vectors = rng.normal(size=(count, 3))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _lobulation(rng: np.random.Generator, axes: Axes, center: np.ndarray, amplitude: float) -> np.ndarray:
    """Smooth angular deformation f(u) in [-amplitude, amplitude] around ``center``.

    A blob is ``radius < 1 + f(u)`` with u the direction from the centre; f is a sum of
    three quadratic lobes ``a_k ((u . v_k)^2 - 1/3)`` with random axes v_k.
    """
    offsets = [axes[d] - center[d] for d in range(3)]
    norm = np.sqrt(sum(o**2 for o in offsets)) + 1e-9
    lobes = _unit_vectors(rng, 3)
    weights = rng.uniform(-1.0, 1.0, size=3) * amplitude * 1.5 / 3.0
    out = np.zeros(np.broadcast_shapes(*(o.shape for o in offsets)))
    for lobe, weight in zip(lobes, weights):
        cosine = sum(offsets[d] * lobe[d] for d in range(3)) / norm
        out = out + weight * (cosine**2 - 1.0 / 3.0)
    return out


def _bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice]:
    """Slices of the smallest box holding every True voxel of ``mask``."""
    box = []
    for dim in range(3):
        hits = np.flatnonzero(mask.any(axis=tuple(d for d in range(3) if d != dim)))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1) if hits.size else slice(0, 0))
    return box[0], box[1], box[2]


def _depth_mm(mask: np.ndarray, spacing: Vec3) -> np.ndarray:
    """Distance in mm from each voxel of ``mask`` to the nearest voxel outside it.

    Voxels beyond the grid count as outside, so a structure cut by the field of view is
    shallow near the cut. Computed on the mask's bounding box plus a background layer,
    which gives the same distances as the full grid.
    """
    depth = np.zeros(mask.shape, dtype=np.float64)
    box = _bounding_box(mask)
    if mask[box].size:
        padded = np.pad(mask[box], 1, constant_values=False)
        depth[box] = ndimage.distance_transform_edt(padded, sampling=spacing)[1:-1, 1:-1, 1:-1]
    return depth


def _half_diagonal(spacing: Vec3) -> float:
    """Largest distance from a point to its nearest voxel centre, in mm."""
    return float(np.linalg.norm(np.asarray(spacing) / 2.0))


def _pick_center(
    rng: np.random.Generator, eligible: np.ndarray, spacing: Vec3, origin: Vec3
) -> np.ndarray | None:
    """Uniform random world point within half a voxel of an eligible voxel, or None."""
    flat = np.flatnonzero(eligible)
    if flat.size == 0:
        return None
    index = np.array(np.unravel_index(flat[rng.integers(flat.size)], eligible.shape), dtype=np.float64)
    offset = rng.uniform(-0.5, 0.5, size=3)
    return np.asarray(origin) + np.asarray(spacing) * (index + offset)


def _nearest_voxel_center(point: np.ndarray, spacing: Vec3, origin: Vec3) -> np.ndarray:
    """World position of the voxel centre nearest to ``point``."""
    index = np.round((point - np.asarray(origin)) / np.asarray(spacing))
    return np.asarray(origin) + np.asarray(spacing) * index


def _vec3(values: np.ndarray) -> Vec3:
    """Three plain floats (for the frozen dataclasses and the CSVs)."""
    return float(values[0]), float(values[1]), float(values[2])


def _to_hu(values: np.ndarray) -> np.ndarray:
    """Round and clip to the CT range, as int16."""
    return np.clip(np.rint(values), _HU_MIN, _HU_MAX).astype(np.int16)


# ------------------------------------------------------------------------- LUNA16


def _series_uid(rng: np.random.Generator) -> str:
    """A LIDC-IDRI-like series instance UID (no leading zero in the last component)."""
    digits = rng.integers(0, 10, size=_UID_DIGITS)
    digits[0] = rng.integers(1, 10)
    return LUNA16_UID_PREFIX + "".join(str(d) for d in digits)


def _luna16_geometry(rng: np.random.Generator) -> tuple[Vec3, Vec3]:
    """Spacing and origin of one chest CT, as LUNA16 scans have them.

    In-plane spacing is a 512-matrix field of view of 308..460 mm (0.60..0.90 mm, exact
    in binary), slice spacing one of the common reconstruction intervals; origins are
    in the ranges seen in LUNA16 headers.
    """
    inplane = float(rng.integers(308, 461)) / 512.0
    thickness = float(rng.choice([1.25, 1.5, 2.0, 2.5]))
    xy = np.round(rng.uniform(-250.0, -150.0, size=2) * 4.0) / 4.0
    z = round(float(rng.uniform(-300.0, -100.0)) * 4.0) / 4.0
    return (inplane, inplane, thickness), (float(xy[0]), float(xy[1]), z)


@dataclass(frozen=True)
class _Chest:
    """Anatomical frame of a chest phantom: body ellipse and the two lung ellipsoids."""

    center: np.ndarray
    body_semi: tuple[float, float]
    lung_centers: tuple[np.ndarray, np.ndarray]
    lung_semi: tuple[float, float, float]


def _chest_frame(rng: np.random.Generator, shape: Sequence[int], spacing: Vec3, origin: Vec3) -> _Chest:
    """Body and lungs sized from the field of view, with a small random offset."""
    half = _half_extent(shape, spacing)
    center = _grid_center(shape, spacing, origin)
    center[:2] += rng.uniform(-0.03, 0.03, size=2) * half[:2]
    a, b = 0.95 * half[0] * rng.uniform(0.95, 1.0), 0.8 * half[1] * rng.uniform(0.95, 1.0)
    lung_semi = (0.40 * a, 0.76 * b, 0.85 * half[2])
    lungs = tuple(center + np.array([side * 0.48 * a, -0.06 * b, 0.08 * half[2]]) for side in (-1.0, 1.0))
    return _Chest(center, (a, b), lungs, lung_semi)  # type: ignore[arg-type]


def _ribs(rng: np.random.Generator, axes: Axes, chest: _Chest, rho: np.ndarray) -> np.ndarray:
    """Oblique rib arcs in a ring inside the body wall, open anteriorly (-y in LPS)."""
    a, b = chest.body_semi
    angle = np.arctan2((axes[1] - chest.center[1]) / b, (axes[0] - chest.center[0]) / a)
    ring = (rho > 0.88) & (rho < 0.945) & (np.abs(angle + np.pi / 2) > 0.6)
    pitch, thickness = rng.uniform(18.0, 24.0), rng.uniform(5.0, 8.0)
    phase = rng.uniform(0.0, pitch)
    slant = axes[2] + 0.3 * (axes[1] - chest.center[1]) + phase
    return ring & (np.mod(slant, pitch) < thickness)


def _lung_mask(axes: Axes, chest: _Chest, rho: np.ndarray) -> np.ndarray:
    """Both lungs, kept inside the rib cage."""
    lungs = [_ellipsoid_radius(axes, c, chest.lung_semi) < 1.0 for c in chest.lung_centers]
    return (lungs[0] | lungs[1]) & (rho < 0.87)


def _chest_hu(
    rng: np.random.Generator, axes: Axes, chest: _Chest, shape: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """HU volume of air, body, fat, spine, ribs and lungs; returns (hu, lung mask)."""
    a, b = chest.body_semi
    rho = _ellipse_radius(axes, chest.center, (a, b))
    hu = np.full(tuple(shape), _AIR_HU, dtype=np.float32)
    body = np.broadcast_to(rho < 1.0, hu.shape)
    hu[body] = _SOFT_HU
    hu[np.broadcast_to(body & (rho > 0.95), hu.shape)] = _FAT_HU
    spine_center = chest.center + np.array([0.0, 0.62 * b, 0.0])
    spine = _ellipse_radius(axes, spine_center, (0.16 * b, 0.16 * b)) < 1.0
    hu[np.broadcast_to(spine, hu.shape)] = _SPINE_HU
    lung = _lung_mask(axes, chest, rho)
    hu[_ribs(rng, axes, chest, rho) & ~lung] = _RIB_HU
    hu[lung] = _LUNG_HU
    return hu, lung


@dataclass(frozen=True)
class _Segment:
    """A vessel piece from ``start`` to ``start + vector`` with radius tapering 40 %."""

    start: np.ndarray
    vector: np.ndarray
    radius: float


def _grow_vessel(
    rng: np.random.Generator,
    start: np.ndarray,
    direction: np.ndarray,
    length: float,
    radius: float,
    generations: int,
    out: tuple[list[_Segment], list[np.ndarray]],
) -> None:
    """Append a segment and, while ``generations`` remain, 1-2 thinner, shorter branches."""
    segment = _Segment(start, direction / np.linalg.norm(direction) * length, radius)
    out[0].append(segment)
    if generations == 0:
        return
    for _ in range(rng.integers(1, 3)):
        fork = start + rng.uniform(0.35, 0.75) * segment.vector
        turn = direction / np.linalg.norm(direction) + 0.9 * rng.normal(size=3)
        out[1].append(fork)
        _grow_vessel(rng, fork, turn, length * rng.uniform(0.5, 0.7), radius * 0.65, generations - 1, out)


def _vessel_tree(rng: np.random.Generator, chest: _Chest) -> tuple[list[_Segment], list[np.ndarray]]:
    """Vessel trees fanning out from each hilum: 4-5 trunks branching twice.

    Returns the segments and the branch points (vessel junctions, the classic false
    positives of nodule detectors).
    """
    out: tuple[list[_Segment], list[np.ndarray]] = ([], [])
    size = float(np.mean(chest.lung_semi))
    for side, lung_center in zip((-1.0, 1.0), chest.lung_centers):
        hilum = lung_center - np.array([side * 0.6 * chest.lung_semi[0], 0.0, 0.0])
        for _ in range(rng.integers(4, 6)):
            direction = np.array([side * rng.uniform(0.3, 1.0), rng.uniform(-1, 1), rng.uniform(-1.2, 1.2)])
            _grow_vessel(rng, hilum, direction, size * rng.uniform(0.6, 1.0), rng.uniform(1.3, 1.8), 2, out)
    return out


def _segment_box(segment: _Segment, spacing: Vec3, origin: Vec3, shape: Sequence[int]) -> tuple[slice, ...]:
    """Voxel slices of the box around a segment's tube (empty if off the grid)."""
    ends = np.stack([segment.start, segment.start + segment.vector])
    low = np.floor((ends.min(axis=0) - segment.radius - np.asarray(origin)) / np.asarray(spacing))
    high = np.ceil((ends.max(axis=0) + segment.radius - np.asarray(origin)) / np.asarray(spacing)) + 1
    return tuple(slice(int(np.clip(lo, 0, n)), int(np.clip(hi, 0, n))) for lo, hi, n in zip(low, high, shape))


def _tube(axes: Axes, segment: _Segment) -> np.ndarray:
    """Voxels of ``axes`` inside the tapered tube of ``segment``."""
    rel = [axes[d] - segment.start[d] for d in range(3)]
    along = sum(rel[d] * segment.vector[d] for d in range(3)) / float(segment.vector @ segment.vector)
    t = np.clip(along, 0.0, 1.0)
    dist2 = sum((rel[d] - t * segment.vector[d]) ** 2 for d in range(3))
    return dist2 < (segment.radius * (1.0 - 0.4 * t)) ** 2


def _paint_vessels(
    hu: np.ndarray, lung: np.ndarray, axes: Axes, segments: list[_Segment], spacing: Vec3, origin: Vec3
) -> None:
    """Paint vessel tubes (soft tissue HU) where they run inside the lungs."""
    for segment in segments:
        box = _segment_box(segment, spacing, origin, hu.shape)
        sub_axes = (axes[0][box[0]], axes[1][:, box[1]], axes[2][:, :, box[2]])
        hu[box][_tube(sub_axes, segment) & lung[box]] = _SOFT_HU


def _place_nodules(
    rng: np.random.Generator, depth: np.ndarray, axes: Axes, spacing: Vec3, origin: Vec3
) -> list[Nodule]:
    """Up to 2-4 separate spherical nodules (fewer if the lungs are full), each in a lung shell.

    Each nodule keeps _NODULE_SHELL_MM of lung around it and clear of the field of view.
    """
    clearance = _NODULE_SHELL_MM + _half_diagonal(spacing)
    largest = min(_NODULE_MAX_MM, 2.0 * (float(depth.max()) - clearance))
    if largest < _NODULE_MIN_MM:
        return []
    nodules: list[Nodule] = []
    free = np.ones(depth.shape, dtype=bool)
    for _ in range(rng.integers(2, 5)):
        for diameter in (rng.uniform(_NODULE_MIN_MM, largest), _NODULE_MIN_MM):
            center = _pick_center(rng, free & (depth >= diameter / 2 + clearance), spacing, origin)
            if center is not None:
                break
        if center is None:
            break
        nodules.append(Nodule(_vec3(center), float(diameter)))
        free &= _distance(axes, center) > diameter / 2 + _NODULE_MAX_MM / 2 + 2 * _NODULE_SHELL_MM
    return nodules


def _paint_nodules(rng: np.random.Generator, hu: np.ndarray, axes: Axes, nodules: list[Nodule]) -> None:
    """Solid spheres of +30..+100 HU."""
    for nodule in nodules:
        hu[_distance(axes, np.asarray(nodule.center)) < nodule.diameter_mm / 2] = rng.uniform(30.0, 100.0)


def _jitter_candidate(rng: np.random.Generator, nodule: Nodule, spacing: Vec3, origin: Vec3) -> np.ndarray:
    """Nodule centre moved by <= 1.5 mm, keeping its nearest voxel inside the nodule.

    LUNA16 candidates of true nodules are a detector's output, close to but not at the
    annotated centre. The nearest-voxel rule makes the candidate's own voxel nodule-like.
    """
    center = np.asarray(nodule.center)
    radius = nodule.diameter_mm / 2
    offsets = _unit_vectors(rng, 16) * rng.uniform(0.0, min(_MAX_JITTER_MM, radius / 2), size=(16, 1))
    for point in center + offsets:
        if np.linalg.norm(_nearest_voxel_center(point, spacing, origin) - center) <= radius - 0.25:
            return point
    return center


def _vessel_points(
    rng: np.random.Generator, segments: list[_Segment], junctions: list[np.ndarray]
) -> np.ndarray:
    """Junctions first, then random points on vessel centrelines, shape (N, 3)."""
    along = [s.start + t * s.vector for s in segments for t in rng.uniform(0.05, 0.95, size=8)]
    junction_points = np.array(junctions).reshape(-1, 3)
    return np.concatenate([junction_points[rng.permutation(len(junction_points))], np.array(along)])


def _false_positives(
    rng: np.random.Generator,
    depth: np.ndarray,
    nodules: list[Nodule],
    segments: list[_Segment],
    junctions: list[np.ndarray],
    spacing: Vec3,
    origin: Vec3,
) -> list[np.ndarray]:
    """8-15 vessel points (up to half at junctions) inside the lungs and away from nodules."""
    wanted = int(rng.integers(8, 16))
    points = _vessel_points(rng, segments, junctions)
    index = np.round((points - np.asarray(origin)) / np.asarray(spacing)).astype(int)
    in_grid = np.all((index >= 0) & (index < np.asarray(depth.shape)), axis=1)
    ok = np.zeros(len(points), dtype=bool)
    ok[in_grid] = depth[tuple(index[in_grid].T)] >= 1.0
    for nodule in nodules:
        distance = np.linalg.norm(points - np.asarray(nodule.center), axis=1)
        ok &= distance > nodule.diameter_mm / 2 + _NODULE_SHELL_MM
    is_junction = np.arange(len(points)) < len(junctions)
    chosen_junctions = np.flatnonzero(ok & is_junction)[: wanted // 2]
    rest = np.flatnonzero(ok & ~is_junction)
    rest = rest[rng.permutation(rest.size)][: wanted - chosen_junctions.size]
    return [points[i] for i in np.concatenate([chosen_junctions, rest])]


def _luna16_candidates(
    rng: np.random.Generator,
    nodules: list[Nodule],
    negatives: list[np.ndarray],
    spacing: Vec3,
    origin: Vec3,
) -> tuple[Candidate, ...]:
    """Positives (jittered nodule centres) and negatives in a seeded random order."""
    jittered = [_jitter_candidate(rng, nodule, spacing, origin) for nodule in nodules]
    merged = [Candidate(_vec3(p), 1) for p in jittered] + [Candidate(_vec3(p), 0) for p in negatives]
    return tuple(merged[i] for i in rng.permutation(len(merged)))


def luna16_case(seed: int, index: int, shape: Sequence[int] = (96, 96, 48)) -> PhantomCase:
    """One LUNA16-like chest CT with its nodules and candidates.

    Args:
        seed: dataset seed.
        index: scan number; scans are independent of each other.
        shape: voxels (x, y, z).

    Returns:
        The case: int16 HU image (x, y, z), spacing/origin, nodules, candidates.

    Raises:
        ConfigError: ``shape`` leaves no room in the lungs for a nodule.
    """
    shape = _check_shape("luna16", shape)
    rng = _case_rng(seed, "luna16", index)
    uid = _series_uid(rng)
    spacing, origin = _luna16_geometry(rng)
    axes = _world_axes(shape, spacing, origin)
    chest = _chest_frame(rng, shape, spacing, origin)
    hu, lung = _chest_hu(rng, axes, chest, shape)
    segments, junctions = _vessel_tree(rng, chest)
    _paint_vessels(hu, lung, axes, segments, spacing, origin)
    depth = _depth_mm(lung, spacing)
    nodules = _place_nodules(rng, depth, axes, spacing, origin)
    if not nodules:
        raise ConfigError(f"luna16 phantom: 'shape' {list(shape)} leaves no room for a lung nodule; enlarge it")
    _paint_nodules(rng, hu, axes, nodules)
    negatives = _false_positives(rng, depth, nodules, segments, junctions, spacing, origin)
    candidates = _luna16_candidates(rng, nodules, negatives, spacing, origin)
    hu += _LUNA_NOISE_HU * rng.standard_normal(hu.shape, dtype=np.float32)
    return PhantomCase(uid, _to_hu(hu), None, spacing, origin, tuple(nodules), candidates)


# ---------------------------------------------------------------------- MSD liver


def _liver_geometry(rng: np.random.Generator) -> tuple[Vec3, Vec3]:
    """Spacing 0.70..0.90 mm in-plane (512-matrix FOV), 1.5..3 mm slices; LiTS-like origins."""
    inplane = float(rng.integers(359, 461)) / 512.0
    thickness = float(rng.choice([1.5, 2.0, 2.5, 3.0]))
    xy = np.round(rng.uniform(-250.0, -150.0, size=2) * 4.0) / 4.0
    z = round(float(rng.uniform(-700.0, -300.0)) * 4.0) / 4.0
    return (inplane, inplane, thickness), (float(xy[0]), float(xy[1]), z)


def _abdomen_hu(
    rng: np.random.Generator, axes: Axes, center: np.ndarray, semi: tuple[float, float], half: np.ndarray
) -> np.ndarray:
    """Air, body with fat rim, spine, aorta and kidneys (HU), shape (x, y, z)."""
    a, b = semi
    shape = np.broadcast_shapes(*(g.shape for g in axes))
    hu = np.full(shape, _AIR_HU, dtype=np.float32)
    rho = np.broadcast_to(_ellipse_radius(axes, center, semi), shape)
    hu[rho < 1.0] = _SOFT_HU
    hu[(rho < 1.0) & (rho > 0.93)] = _FAT_HU
    discs = (
        (np.array([0.0, 0.6 * b, 0.0]), 0.15 * b, _SPINE_HU),
        (np.array([0.12 * a, 0.33 * b, 0.0]), 0.07 * b, _AORTA_HU),
    )
    for offset, radius, value in discs:
        hu[np.broadcast_to(_ellipse_radius(axes, center + offset, (radius, radius)) < 1.0, shape)] = value
    for side in (-1.0, 1.0):
        kidney_center = center + np.array([side * 0.45 * a, 0.42 * b, -0.15 * half[2]])
        semi_axes = np.array([0.16 * a, 0.2 * b, min(0.35 * half[2], 0.4 * a)]) * rng.uniform(0.9, 1.1, size=3)
        hu[_ellipsoid_radius(axes, kidney_center, semi_axes) < 1.0] = _KIDNEY_HU
    return hu


def _liver_mask(
    rng: np.random.Generator, axes: Axes, center: np.ndarray, semi: tuple[float, float], half: np.ndarray
) -> np.ndarray:
    """A lobulated liver in the patient's right upper abdomen (-x in LPS), inside the body."""
    a, b = semi
    liver_center = center + np.array([-0.33 * a, -0.05 * b, 0.15 * half[2]])
    liver_semi = np.array([0.5 * a, 0.62 * b, min(0.6 * half[2], 0.65 * a)]) * rng.uniform(0.9, 1.1, size=3)
    shape = _ellipsoid_radius(axes, liver_center, liver_semi) < 1.0 + _lobulation(rng, axes, liver_center, 0.12)
    return shape & (_ellipse_radius(axes, center, semi) < 0.9)


def _tumour_masks(
    rng: np.random.Generator, liver: np.ndarray, axes: Axes, spacing: Vec3, origin: Vec3
) -> list[np.ndarray]:
    """1-2 separate ellipsoidal tumours (radius 3..10 mm), each wholly inside the liver."""
    depth = _depth_mm(liver, spacing)
    margin = 1.0 + _half_diagonal(spacing)
    largest = min(10.0, 0.6 * float(depth.max()), (float(depth.max()) - margin) / 1.15)
    tumours: list[np.ndarray] = []
    if largest < 3.0:
        return tumours
    free = np.ones(liver.shape, dtype=bool)
    for _ in range(rng.integers(1, 3)):
        radius = rng.uniform(3.0, largest)
        center = _pick_center(rng, free & (depth >= radius * 1.15 + margin), spacing, origin)
        if center is None:
            break
        semi = radius * rng.uniform(0.85, 1.15, size=3)
        tumours.append((_ellipsoid_radius(axes, center, semi) < 1.0) & liver)
        free &= _distance(axes, center) > radius * 1.15 + 10.0 * 1.15 + 2.0
    return tumours


def liver_case(seed: int, index: int, shape: Sequence[int] = (64, 64, 48)) -> PhantomCase:
    """One Task03_Liver-like CT (int16 HU) with labels 0 background, 1 liver, 2 cancer.

    Raises:
        ConfigError: ``shape`` leaves no room in the liver for a tumour.
    """
    shape = _check_shape("msd_liver", shape)
    rng = _case_rng(seed, "msd_liver", index)
    spacing, origin = _liver_geometry(rng)
    axes = _world_axes(shape, spacing, origin)
    half = _half_extent(shape, spacing)
    center = _grid_center(shape, spacing, origin)
    semi = (0.95 * half[0] * rng.uniform(0.95, 1.0), 0.75 * half[1] * rng.uniform(0.95, 1.0))
    hu = _abdomen_hu(rng, axes, center, semi, half)
    liver = _liver_mask(rng, axes, center, semi, half)
    hu[liver] = rng.uniform(55.0, 70.0)
    label = liver.astype(np.uint8)
    tumours = _tumour_masks(rng, liver, axes, spacing, origin)
    if not tumours:
        raise ConfigError(f"msd_liver phantom: 'shape' {list(shape)} leaves no room for a tumour; enlarge it")
    for tumour in tumours:
        hu[tumour] = rng.uniform(10.0, 30.0)
        label[tumour] = 2
    hu += _LIVER_NOISE_HU * rng.standard_normal(hu.shape, dtype=np.float32)
    return PhantomCase(f"liver_{index}", _to_hu(hu), label, spacing, origin)


# ---------------------------------------------------------------------- MSD brain


def _brain_tissues(rng: np.random.Generator, axes: Axes, center: np.ndarray, semi: np.ndarray) -> np.ndarray:
    """Tissue codes (indices of _BRAIN_TISSUES) of a skull-stripped brain: grey, white, ventricles."""
    radius = _ellipsoid_radius(axes, center, semi)
    brain = radius < 1.0 + _lobulation(rng, axes, center, 0.05)
    tissues = brain.astype(np.uint8)  # grey matter everywhere in the brain
    tissues[brain & (radius < 0.62 + _lobulation(rng, axes, center, 0.08))] = 2
    for side in (-1.0, 1.0):
        ventricle = center + np.array([side * 0.1 * semi[0], -0.05 * semi[1], 0.1 * semi[2]])
        tissues[_ellipsoid_radius(axes, ventricle, semi * np.array([0.07, 0.3, 0.15])) < 1.0] = 3
    return tissues


def _tumour_labels(
    rng: np.random.Generator, brain: np.ndarray, axes: Axes, spacing: Vec3, origin: Vec3
) -> np.ndarray:
    """Nested tumour labels (MSD): 1 edema shell, 3 enhancing rim, 2 non-enhancing core.

    All three regions share one lobulated shape at growing radii, so they nest by
    construction, and the edema lies wholly inside the brain.
    """
    depth = _depth_mm(brain, spacing)
    edema_radius = float(depth.max()) * rng.uniform(0.45, 0.6)
    center = _pick_center(rng, depth >= edema_radius * 1.15 + 1.0 + _half_diagonal(spacing), spacing, origin)
    if center is None:
        deepest = np.asarray(np.unravel_index(int(np.argmax(depth)), depth.shape))
        center = np.asarray(origin) + np.asarray(spacing) * deepest
    core_radius = edema_radius * rng.uniform(0.45, 0.6)
    rim = float(np.clip(0.35 * core_radius, 1.0, 3.0))
    scaled = _distance(axes, center) / (1.0 + _lobulation(rng, axes, center, 0.15))
    labels = np.zeros(brain.shape, dtype=np.uint8)
    labels[(scaled < edema_radius) & brain] = 1
    labels[(scaled < core_radius) & brain] = 3
    labels[(scaled < core_radius - rim) & brain] = 2
    return labels


def _mri_channels(rng: np.random.Generator, tissues: np.ndarray, axes: Axes, center: np.ndarray) -> np.ndarray:
    """Four MR channels (FLAIR, T1w, t1gd, T2w) from tissue codes, (4, x, y, z) float32.

    Each channel gets its own global gain and a smooth linear bias field (MR intensities
    are not standardised), Rician-like magnitude noise, and exact zeros outside the brain.
    """
    gains = rng.uniform(0.85, 1.15, size=4).astype(np.float32)
    channels = np.ascontiguousarray(np.moveaxis(_BRAIN_TABLE[tissues] * gains, -1, 0))  # (4, x, y, z)
    for channel, direction in zip(channels, _unit_vectors(rng, 4)):
        ramp = sum((axes[d] - center[d]) * direction[d] for d in range(3)) / max(float(np.ptp(axes[0])), 1.0)
        channel *= (1.0 + 0.2 * ramp).astype(np.float32)
        noise = _BRAIN_NOISE * rng.standard_normal((2,) + channel.shape, dtype=np.float32)
        channel[...] = np.hypot(channel + noise[0], noise[1])
    channels[:, tissues == 0] = 0.0
    return np.ascontiguousarray(channels, dtype=np.float32)


def brain_case(seed: int, index: int, shape: Sequence[int] = (48, 48, 40)) -> PhantomCase:
    """One Task01_BrainTumour-like case: (4, x, y, z) float32 MRI at 1 mm, labels 0-3."""
    shape = _check_shape("msd_brain", shape)
    rng = _case_rng(seed, "msd_brain", index)
    spacing, origin = (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)
    axes = _world_axes(shape, spacing, origin)
    half = _half_extent(shape, spacing)
    center = _grid_center(shape, spacing, origin) + rng.uniform(-0.03, 0.03, size=3) * half
    semi = half * np.array([0.8, 0.92, 0.85]) * rng.uniform(0.95, 1.0, size=3)
    tissues = _brain_tissues(rng, axes, center, semi)
    labels = _tumour_labels(rng, tissues > 0, axes, spacing, origin)
    for code, name in ((1, "edema"), (2, "core"), (3, "enhancing")):
        tissues[labels == code] = _BRAIN_TISSUES.index(name)
    image = _mri_channels(rng, tissues, axes, center)
    return PhantomCase(f"BRATS_{index + 1:03d}", image, labels, spacing, origin)


# ------------------------------------------------------------------------ writing


def _to_sitk(array: np.ndarray, spacing: Vec3, origin: Vec3) -> sitk.Image:
    """A 3D SimpleITK image from an (x, y, z) array with explicit geometry."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(_IDENTITY3)
    return image


def _write_case_image(path: Path, case: PhantomCase) -> None:
    """Write the case's image: 3D as is, (C, x, y, z) as a 4D image (x, y, z, C) like MSD."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if case.image.ndim == 3:
        image = _to_sitk(case.image, case.spacing, case.origin)
    else:
        image = sitk.JoinSeries([_to_sitk(channel, case.spacing, case.origin) for channel in case.image])
    # MetaImage: plain .raw as LUNA16 ships it; NIfTI: gzip, as the .nii.gz name says.
    sitk.WriteImage(image, str(path), useCompression=path.suffix == ".gz")


def _write_label(path: Path, case: PhantomCase) -> None:
    """Write the case's uint8 label volume as NIfTI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(_to_sitk(case.label, case.spacing, case.origin), str(path))


def _csv_text(header: Sequence[str], rows: list[list[str]]) -> str:
    """CSV text with Unix line ends."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _mm(value: float) -> str:
    """A world coordinate or size as LUNA16's CSVs write them."""
    return f"{value:.6f}"


def _luna16_csvs(cases: list[PhantomCase]) -> tuple[str, str]:
    """Text of annotations.csv and candidates.csv (LUNA16 headers)."""
    annotations = [[c.case_id, *map(_mm, n.center), _mm(n.diameter_mm)] for c in cases for n in c.nodules]
    candidates = [[c.case_id, *map(_mm, k.center), str(k.label)] for c in cases for k in c.candidates]
    return (
        _csv_text(("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"), annotations),
        _csv_text(("seriesuid", "coordX", "coordY", "coordZ", "class"), candidates),
    )


def generate_luna16(
    root: Path, *, scans: int = 10, subsets: int = 10, seed: int = 0, shape: Sequence[int] = (96, 96, 48)
) -> None:
    """Write a LUNA16-like dataset into ``root`` (replaced as a whole, atomically).

    Layout: ``subset0`` .. ``subset{subsets-1}`` (all created; scan i goes to subset
    i mod subsets) with ``<seriesuid>.mhd`` + uncompressed ``<seriesuid>.raw`` (MET_SHORT
    HU), ``annotations.csv`` and ``candidates.csv``.

    Raises:
        ConfigError: a count, the seed or the shape is invalid.
    """
    scans = _check_count("luna16", "scans", scans, 1)
    subsets = _check_count("luna16", "subsets", subsets, 1)
    seed = _check_count("luna16", "seed", seed, 0)
    shape = _check_shape("luna16", shape)
    cases = [luna16_case(seed, i, shape) for i in range(scans)]
    with atomic_dir(root) as tmp:
        for k in range(subsets):
            (tmp / f"subset{k}").mkdir()
        for i, case in enumerate(cases):
            _write_case_image(tmp / f"subset{i % subsets}" / f"{case.case_id}.mhd", case)
        annotations, candidates = _luna16_csvs(cases)
        (tmp / "annotations.csv").write_text(annotations)
        (tmp / "candidates.csv").write_text(candidates)


def _decathlon_json(meta: dict[str, object], train_ids: list[str], test_ids: list[str]) -> dict[str, object]:
    """MSD dataset.json: task metadata, then the training pairs and the test images."""
    return {
        **meta,
        "numTraining": len(train_ids),
        "numTest": len(test_ids),
        "training": [{"image": f"./imagesTr/{i}.nii.gz", "label": f"./labelsTr/{i}.nii.gz"} for i in train_ids],
        "test": [f"./imagesTs/{i}.nii.gz" for i in test_ids],
    }


def _write_decathlon(
    root: Path, make_case: Callable[[int], PhantomCase], cases: int, test_cases: int, meta: dict[str, object]
) -> None:
    """Write cases 0..cases-1 as training (image + label), the next ``test_cases`` as test."""
    with atomic_dir(root) as tmp:
        train_ids, test_ids = [], []
        for index in range(cases + test_cases):
            case = make_case(index)
            if index < cases:
                _write_case_image(tmp / "imagesTr" / f"{case.case_id}.nii.gz", case)
                _write_label(tmp / "labelsTr" / f"{case.case_id}.nii.gz", case)
                train_ids.append(case.case_id)
            else:
                _write_case_image(tmp / "imagesTs" / f"{case.case_id}.nii.gz", case)
                test_ids.append(case.case_id)
        (tmp / "imagesTs").mkdir(exist_ok=True)
        text = json.dumps(_decathlon_json(meta, train_ids, test_ids), indent=4) + "\n"
        (tmp / "dataset.json").write_text(text)


def _msd_meta(
    name: str,
    description: str,
    reference: str,
    tensor: str,
    modality: dict[str, str],
    labels: dict[str, str],
    seed: int,
) -> dict[str, object]:
    """The descriptive fields of an MSD dataset.json, marked as a phantom."""
    return {
        "name": name,
        "description": f"{description} (synthetic phantom generated by pcrl, seed {seed}; not patient data)",
        "reference": reference,
        "licence": "CC-BY-SA 4.0",
        "release": "1.0 phantom",
        "tensorImageSize": tensor,
        "modality": modality,
        "labels": labels,
    }


def _check_decathlon_args(dataset: str, cases: int, test_cases: int, seed: int) -> tuple[int, int, int]:
    """Validated (cases, test_cases, seed)."""
    return (
        _check_count(dataset, "cases", cases, 1),
        _check_count(dataset, "test_cases", test_cases, 0),
        _check_count(dataset, "seed", seed, 0),
    )


def generate_msd_liver(
    root: Path, *, cases: int = 8, test_cases: int = 2, seed: int = 0, shape: Sequence[int] = (64, 64, 48)
) -> None:
    """Write a Task03_Liver-like dataset into ``root`` (replaced as a whole, atomically).

    ``imagesTr/liver_N.nii.gz`` (int16 HU), ``labelsTr/liver_N.nii.gz`` (uint8: 0
    background, 1 liver, 2 cancer), ``imagesTs/liver_M.nii.gz`` and ``dataset.json``.

    Raises:
        ConfigError: a count, the seed or the shape is invalid.
    """
    cases, test_cases, seed = _check_decathlon_args("msd_liver", cases, test_cases, seed)
    shape = _check_shape("msd_liver", shape)
    meta = _msd_meta(
        "Liver",
        "Liver and liver tumour segmentation in contrast-enhanced CT",
        "LiTS 2017 (Bilic et al., MedIA 2023); Medical Segmentation Decathlon (Antonelli et al., 2022)",
        "3D",
        {"0": "CT"},
        {"0": "background", "1": "liver", "2": "cancer"},
        seed,
    )
    _write_decathlon(root, lambda i: liver_case(seed, i, shape), cases, test_cases, meta)


def generate_msd_brain(
    root: Path, *, cases: int = 8, test_cases: int = 2, seed: int = 0, shape: Sequence[int] = (48, 48, 40)
) -> None:
    """Write a Task01_BrainTumour-like dataset into ``root`` (replaced as a whole, atomically).

    ``imagesTr/BRATS_NNN.nii.gz`` are 4D (x, y, z, 4) float32 in the order FLAIR, T1w,
    t1gd, T2w; ``labelsTr`` uint8 (0 background, 1 edema, 2 non-enhancing tumour,
    3 enhancing tumour); ``imagesTs`` and ``dataset.json`` as MSD ships them.

    Raises:
        ConfigError: a count, the seed or the shape is invalid.
    """
    cases, test_cases, seed = _check_decathlon_args("msd_brain", cases, test_cases, seed)
    shape = _check_shape("msd_brain", shape)
    meta = _msd_meta(
        "BRATS",
        "Gliomas segmentation tumour and oedema in brain MRI",
        "BraTS 2016-2017 (Menze et al., IEEE TMI 2015; Bakas et al., Sci. Data 2017); "
        "Medical Segmentation Decathlon (Antonelli et al., 2022)",
        "4D",
        {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        seed,
    )
    _write_decathlon(root, lambda i: brain_case(seed, i, shape), cases, test_cases, meta)


GENERATORS: dict[str, Callable[..., None]] = {
    "luna16": generate_luna16,
    "msd_liver": generate_msd_liver,
    "msd_brain": generate_msd_brain,
}
"""Phantom writer per dataset name of the registry."""
