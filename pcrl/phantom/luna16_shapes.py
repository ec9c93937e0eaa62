"""The objects of the LUNA16 phantom's ``shapes`` NCC task: spheres (nodules) and capsules
(decoys) of equal HU and volume distributions, so that only shape tells them apart.

Every object is a tube's size and pose; ``label`` picks the painted form. Objects are placed
in the lungs with a shell of lung around each (:func:`_place_shapes`), painted into the HU
volume (:func:`_paint_shapes`), and each gives one jittered candidate
(:func:`_shape_candidates`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pcrl.phantom.drawing import (
    Axes,
    Candidate,
    Vec3,
    _distance,
    _half_diagonal,
    _pick_center,
    _unit_vectors,
    _vec3,
)

# ncc_task "shapes": tube radius and length (between the cap centres) of every object; a
# nodule is the sphere of the same volume (diameter 9.9..13.2 mm), a decoy the capsule
# itself (7.6..9.2 mm thick, 13.6..21.2 mm long, within ~20 degrees of the axial plane so
# that it stays whole in a 32x32x16 NCC cube at 1 mm). The tube radius is >= 3.8 mm so
# that both forms fill the centre of the cube alike (after the partial volume of 2.5 mm
# slices): with thinner tubes the mean of the central 4x4x4 voxels still tells the
# classes apart (AUC 0.85 at 1.8..2.6 mm, 0.7 at 3.0..3.6 mm, ~0.5 from 3.8 mm). Sized so
# that 6-7 objects fit the lungs of a 96x96x48 phantom on average.
_SHAPE_RADIUS_MM = (3.8, 4.6)
_SHAPE_LENGTH_MM = (6.0, 12.0)
_SHAPE_HU = (30.0, 100.0)
_SHAPE_SHELL_MM = 1.5  # lung kept around each object (and 2 shells between two objects)
_SHAPE_JITTER_MM = 0.5  # candidate offset from the object's centre, both classes
_SHAPE_MAX_TILT = 0.35  # sine of the largest angle of a tube to the axial plane
_SHAPE_TRIES = 64  # draws of size, direction and centre before an object is dropped
_SHAPE_SCAN_TRIES = 8  # placements of a scan's objects before giving up on both classes


@dataclass(frozen=True)
class _Shape:
    """One object of the ``shapes`` task: a tube's size and pose, and which form is painted.

    ``label`` 1 paints the sphere of the tube's volume (a nodule), 0 the capsule of radius
    ``radius`` around the segment of length ``length`` along ``axis`` (a decoy).
    """

    center: np.ndarray
    axis: np.ndarray
    radius: float
    length: float
    hu: float
    label: int

    @property
    def ball_radius(self) -> float:
        """Radius of the sphere with the capsule's volume (pi r^2 L + 4/3 pi r^3)."""
        return _ball_radius(self.radius, self.length)

    def distance(self, axes: Axes) -> np.ndarray:
        """Distance in mm of every voxel centre to the painted object's surface (< 0 inside)."""
        if self.label == 1:
            return _distance(axes, self.center) - self.ball_radius
        return _segment_distance(axes, self.center, self.axis, self.length) - self.radius


def _ball_radius(radius: float, length: float) -> float:
    """Radius of the sphere with the volume of a capsule (tube radius, length between caps)."""
    return float((0.75 * radius**2 * length + radius**3) ** (1.0 / 3.0))


def _segment_distance(axes: Axes, center: np.ndarray, axis: np.ndarray, length: float) -> np.ndarray:
    """Distance in mm of every voxel centre to the segment ``center +- axis * length / 2``."""
    rel = [axes[d] - center[d] for d in range(3)]
    along = np.clip(sum(rel[d] * axis[d] for d in range(3)), -length / 2, length / 2)
    return np.sqrt(sum((rel[d] - along * axis[d]) ** 2 for d in range(3)))


def _axial_direction(rng: np.random.Generator) -> np.ndarray:
    """Unit vector uniform on the band of the sphere within _SHAPE_MAX_TILT of the axial plane."""
    z = rng.uniform(-1.0, 1.0) * _SHAPE_MAX_TILT
    phi = rng.uniform(0.0, 2.0 * np.pi)
    return np.array([np.sqrt(1.0 - z * z) * np.cos(phi), np.sqrt(1.0 - z * z) * np.sin(phi), z])


def _room_along(room: np.ndarray, points: np.ndarray, spacing: Vec3, origin: Vec3) -> float:
    """Smallest ``room`` at the voxels nearest to ``points`` (n, 3); -inf if one is off the grid."""
    index = np.round((points - np.asarray(origin)) / np.asarray(spacing)).astype(int)
    if np.any((index < 0) | (index >= np.asarray(room.shape))):
        return -np.inf
    return float(room[tuple(index.T)].min())


def _place_shapes(
    rng: np.random.Generator, depth: np.ndarray, axes: Axes, spacing: Vec3, origin: Vec3
) -> list[_Shape]:
    """The objects of one scan, at least one of each class; [] if a few tries find none such.

    Small lungs may not hold both classes on a try (see ``_try_shapes``); the condition on
    both classes treats the two alike.
    """
    for _ in range(_SHAPE_SCAN_TRIES):
        shapes = _try_shapes(rng, depth, axes, spacing, origin)
        if len({s.label for s in shapes}) == 2:
            return shapes
    return []


def _try_shapes(
    rng: np.random.Generator, depth: np.ndarray, axes: Axes, spacing: Vec3, origin: Vec3
) -> list[_Shape]:
    """2-4 nodules and 3-6 decoys (fewer if the lungs are full), in a random class order.

    Every object, whatever its class, draws a tube radius, length and direction, an HU
    value, and a centre where both forms fit: the sphere of the tube's volume around the
    centre and the capsule along the direction each keep ``_SHAPE_SHELL_MM`` of lung
    around them and twice that from the objects placed before. So class tells nothing
    about size, HU, depth in the lung or neighbourhood; only the painted form differs.
    """
    labels = np.array([1] * int(rng.integers(2, 5)) + [0] * int(rng.integers(3, 7)))
    margin = _SHAPE_SHELL_MM + _half_diagonal(spacing)
    room = depth.copy()  # mm of lung around each voxel not claimed by a placed object
    shapes: list[_Shape] = []
    for label in labels[rng.permutation(labels.size)]:
        for _ in range(_SHAPE_TRIES):
            radius, length = rng.uniform(*_SHAPE_RADIUS_MM), rng.uniform(*_SHAPE_LENGTH_MM)
            axis = _axial_direction(rng)
            center = _pick_center(rng, room >= _ball_radius(radius, length) + margin, spacing, origin)
            if center is None:
                continue
            steps = np.linspace(-length / 2, length / 2, int(np.ceil(length / 0.5)) + 1)
            if _room_along(room, center + steps[:, None] * axis, spacing, origin) >= radius + margin:
                break
        else:
            continue
        shape = _Shape(center, axis, float(radius), float(length), float(rng.uniform(*_SHAPE_HU)), int(label))
        shapes.append(shape)
        room = np.minimum(room, shape.distance(axes) - _SHAPE_SHELL_MM)
    return shapes


def _paint_shapes(hu: np.ndarray, axes: Axes, shapes: list[_Shape]) -> None:
    """Solid spheres (nodules) and capsules (decoys), each of its own HU."""
    for shape in shapes:
        hu[shape.distance(axes) < 0.0] = shape.hu


def _shape_candidates(rng: np.random.Generator, shapes: list[_Shape]) -> tuple[Candidate, ...]:
    """One candidate per object, its centre moved by <= _SHAPE_JITTER_MM in a random direction."""
    offsets = _unit_vectors(rng, len(shapes)) * rng.uniform(0.0, _SHAPE_JITTER_MM, size=(len(shapes), 1))
    return tuple(Candidate(_vec3(s.center + o), s.label) for s, o in zip(shapes, offsets))
