"""LUNA16-like chest CT phantom: ``subsetK/<seriesuid>.mhd`` + ``.raw`` and the CSVs.

LUNA16 (Setio et al., "Validation, comparison, and combination of algorithms for
automatic detection of pulmonary nodules in CT images", MedIA 2017; Zenodo records
3723295 and 4121926) ships MetaImage scans (MET_SHORT, HU, anisotropic spacing,
non-zero origin) named by LIDC-IDRI series UID, with ``annotations.csv`` (true nodules)
and ``candidates.csv`` (detector candidates) in world millimetres
(``origin + index * spacing``). Each scan here has a body, spine, ribs, two lungs with
branching vessel trees, 2-4 solid nodules, and candidates made of jittered nodule
centres and vessel points (junctions first).

``ncc_task`` picks what the candidates ask of a classifier. ``vessels`` (the default,
above) is the LUNA16 look-alike, but one hand-made feature solves it: nodules are bright
solid spheres and negatives thin soft-tissue vessel points, so the mean of a few central
voxels separates them (test AUC ~0.99 with no training) and no pretraining can show a
gain. ``shapes`` is the task of the known-answer study, where learned features must
matter: every candidate sits on a bright lung object of the same HU distribution and the
same volume distribution, a sphere (nodule) or a straight capped tube (decoy), so only
shape tells them apart (see ``_place_shapes``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pcrl.atomic import atomic_dir
from pcrl.data.phantom.drawing import (
    _AIR_HU,
    _FAT_HU,
    _SOFT_HU,
    _SPINE_HU,
    Axes,
    Candidate,
    Nodule,
    PhantomCase,
    Vec3,
    _case_rng,
    _check_count,
    _check_shape,
    _depth_mm,
    _distance,
    _ellipse_radius,
    _ellipsoid_radius,
    _grid_center,
    _half_diagonal,
    _half_extent,
    _nearest_voxel_center,
    _pick_center,
    _to_hu,
    _unit_vectors,
    _vec3,
    _world_axes,
)
from pcrl.data.phantom.writers import _csv_text, _write_case_image
from pcrl.errors import ConfigError

__all__ = ["LUNA16_UID_PREFIX", "NCC_TASKS", "Candidate", "Nodule", "generate_luna16", "luna16_case"]

LUNA16_UID_PREFIX = "1.3.6.1.4.1.14519.5.2.1.6279.6001."
"""Root of the LIDC-IDRI series instance UIDs that LUNA16 uses as scan names."""

_UID_DIGITS = 30  # real LUNA16 UIDs carry 30 digits after the prefix (64 characters)

# LUNA16 anatomy, HU (typical CT values; air, fat, soft tissue and spine are shared)
_LUNG_HU, _RIB_HU = -850.0, 700.0
_LUNA_NOISE_HU = 20.0
_NODULE_MIN_MM, _NODULE_MAX_MM = 4.0, 12.0  # >= 4 mm so a 2.5 mm slice always cuts the centre
_NODULE_SHELL_MM = 3.5  # lung kept around each nodule (the test checks a shell of 1..3 mm)
_MAX_JITTER_MM = 1.5  # LUNA16 candidates lie within ~1.5 mm of the annotated centre

NCC_TASKS = ("vessels", "shapes")
"""Values of ``ncc_task``: what tells nodule candidates from the others (module docstring)."""

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


def luna16_case(
    seed: int, index: int, shape: Sequence[int] = (96, 96, 48), ncc_task: str = "vessels"
) -> PhantomCase:
    """One LUNA16-like chest CT with its nodules and candidates.

    Args:
        seed: dataset seed.
        index: scan number; scans are independent of each other.
        shape: voxels (x, y, z).
        ncc_task: ``vessels`` (nodules vs vessel points) or ``shapes`` (spheres vs tubes of
            equal HU and volume); see the module docstring.

    Returns:
        The case: int16 HU image (x, y, z), spacing/origin, nodules, candidates.

    Raises:
        ConfigError: ``shape`` leaves no room in the lungs for a nodule, or ``ncc_task``
            is unknown.
    """
    shape = _check_shape("luna16", shape)
    ncc_task = _check_ncc_task(ncc_task)
    rng = _case_rng(seed, "luna16", index)
    uid = _series_uid(rng)
    spacing, origin = _luna16_geometry(rng)
    axes = _world_axes(shape, spacing, origin)
    chest = _chest_frame(rng, shape, spacing, origin)
    hu, lung = _chest_hu(rng, axes, chest, shape)
    segments, junctions = _vessel_tree(rng, chest)
    _paint_vessels(hu, lung, axes, segments, spacing, origin)
    depth = _depth_mm(lung, spacing)
    if ncc_task == "shapes":
        shapes = _place_shapes(rng, depth, axes, spacing, origin)
        if not shapes:
            raise ConfigError(
                f"luna16 phantom: 'shape' {list(shape)} leaves no room for the objects of ncc_task "
                "'shapes' (a nodule and a decoy); enlarge it ([96, 96, 48] fits)"
            )
        nodules = [Nodule(_vec3(s.center), 2.0 * s.ball_radius) for s in shapes if s.label == 1]
        _paint_shapes(hu, axes, shapes)
        candidates = _shape_candidates(rng, shapes)
    else:
        nodules = _place_nodules(rng, depth, axes, spacing, origin)
        if not nodules:
            raise ConfigError(f"luna16 phantom: 'shape' {list(shape)} leaves no room for a lung nodule; enlarge it")
        _paint_nodules(rng, hu, axes, nodules)
        negatives = _false_positives(rng, depth, nodules, segments, junctions, spacing, origin)
        candidates = _luna16_candidates(rng, nodules, negatives, spacing, origin)
    hu += _LUNA_NOISE_HU * rng.standard_normal(hu.shape, dtype=np.float32)
    return PhantomCase(uid, _to_hu(hu), None, spacing, origin, tuple(nodules), candidates)


def _check_ncc_task(value: object) -> str:
    """Return ``value`` if it names an NCC task, else raise ConfigError listing them."""
    if not isinstance(value, str) or value not in NCC_TASKS:
        raise ConfigError(f"luna16 phantom: 'ncc_task' must be one of {list(NCC_TASKS)}, got {value!r}")
    return value


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
    root: Path, *, scans: int = 10, subsets: int = 10, seed: int = 0, shape: Sequence[int] = (96, 96, 48),
    shard: tuple[int, int] = (0, 1), ncc_task: str = "vessels",
) -> None:
    """Write a LUNA16-like dataset into ``root`` (replaced as a whole, atomically).

    Layout: ``subset0`` .. ``subset{subsets-1}`` (all created; scan i goes to subset
    i mod subsets) with ``<seriesuid>.mhd`` + uncompressed ``<seriesuid>.raw`` (MET_SHORT
    HU), ``annotations.csv`` and ``candidates.csv``. ``shard`` = (k, n) writes only the
    subsets s with s mod n = k and the CSV rows of their scans (one download shard, as the
    archives ``subset<s>.zip`` of the real dataset are shared out). ``ncc_task`` picks
    the candidates' task (``vessels`` or ``shapes``, see :func:`luna16_case`).

    Raises:
        ConfigError: a count, the seed, the shape or ``ncc_task`` is invalid.
    """
    scans = _check_count("luna16", "scans", scans, 1)
    subsets = _check_count("luna16", "subsets", subsets, 1)
    seed = _check_count("luna16", "seed", seed, 0)
    shape = _check_shape("luna16", shape)
    ncc_task = _check_ncc_task(ncc_task)
    mine = [k for k in range(subsets) if k % shard[1] == shard[0]]
    indices = [i for i in range(scans) if i % subsets in mine]
    cases = [luna16_case(seed, i, shape, ncc_task) for i in indices]
    with atomic_dir(root) as tmp:
        for k in mine:
            (tmp / f"subset{k}").mkdir()
        for i, case in zip(indices, cases):
            _write_case_image(tmp / f"subset{i % subsets}" / f"{case.case_id}.mhd", case)
        annotations, candidates = _luna16_csvs(cases)
        (tmp / "annotations.csv").write_text(annotations)
        (tmp / "candidates.csv").write_text(candidates)
