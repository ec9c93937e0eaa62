"""The chest of the LUNA16 phantom: body, spine, ribs, lungs and branching vessel trees.

Shapes are implicit in world millimetres, sampled on each scan's voxel grid
(:mod:`pcrl.phantom.drawing`); :func:`_chest_hu` renders the HU volume and the lung
mask, :func:`_vessel_tree` grows the vessels that :func:`_paint_vessels` draws inside the
lungs. The nodules and candidates are placed by :mod:`pcrl.phantom.luna16`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pcrl.phantom.drawing import (
    _AIR_HU,
    _FAT_HU,
    _SOFT_HU,
    _SPINE_HU,
    Axes,
    Vec3,
    _ellipse_radius,
    _ellipsoid_radius,
    _grid_center,
    _half_extent,
)

# LUNA16 anatomy, HU (typical CT values; air, fat, soft tissue and spine are shared)
_LUNG_HU, _RIB_HU = -850.0, 700.0


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
    return _Chest(center, (a, b), lungs, lung_semi)


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
