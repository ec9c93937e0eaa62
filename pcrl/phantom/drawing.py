"""Shared drawing helpers of the phantoms: validation, seeding, world-mm geometry.

Every dataset module builds its anatomy from these: argument and shape checks
(``_check_count``, ``_check_shape`` against ``_MIN_SHAPES``), the per-case generator
``_case_rng`` (seed, dataset stream, case index), open world-coordinate grids, implicit
ellipses/ellipsoids with smooth lobulation, depth maps of masks, random placement of
lesion centres, and the conversion of float HU volumes to int16. ``PhantomCase`` is the
in-memory case that every generator returns and the writers consume (with LUNA16's
``Nodule`` and ``Candidate`` records, which ``luna16`` re-exports).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from pcrl.seeding import indexed_rng
from pcrl.errors import ConfigError

Vec3 = tuple[float, float, float]
Axes = tuple[np.ndarray, np.ndarray, np.ndarray]

_STREAMS = {"luna16": 16, "msd_liver": 3, "msd_brain": 1}  # seed stream per dataset
# Smallest shapes (x, y, z) that leave room for lesions whatever spacing is drawn.
_MIN_SHAPES = {"luna16": (80, 80, 20), "msd_liver": (48, 48, 20), "msd_brain": (32, 32, 24)}
_HU_MIN, _HU_MAX = -1024, 3071  # 12-bit CT range stored in int16

# CT tissues shared by the chest and abdomen phantoms, HU (typical CT values)
_AIR_HU, _FAT_HU, _SOFT_HU, _SPINE_HU = -1000.0, -100.0, 40.0, 400.0


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
    return indexed_rng(seed, _STREAMS[dataset], index)


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


def _ellipsoid_radius(axes: Axes, center: np.ndarray, semi: Sequence[float] | np.ndarray) -> np.ndarray:
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
