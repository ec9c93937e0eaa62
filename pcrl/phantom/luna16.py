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
shape tells them apart (:mod:`pcrl.phantom.luna16_shapes`). The chest itself (body,
ribs, lungs, vessel trees) is drawn by :mod:`pcrl.phantom.luna16_chest`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pcrl.atomic import atomic_dir
from pcrl.phantom.drawing import (
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
    _half_diagonal,
    _nearest_voxel_center,
    _pick_center,
    _to_hu,
    _unit_vectors,
    _vec3,
    _world_axes,
)
from pcrl.phantom.geometry import case_geometry, check_sizes
from pcrl.phantom.luna16_chest import _chest_frame, _chest_hu, _paint_vessels, _Segment, _vessel_tree
from pcrl.phantom.luna16_shapes import _paint_shapes, _place_shapes, _shape_candidates
from pcrl.phantom.writers import _csv_text, _write_case_image
from pcrl.errors import ConfigError

__all__ = ["LUNA16_UID_PREFIX", "NCC_TASKS", "Candidate", "Nodule", "generate_luna16", "luna16_case"]

LUNA16_UID_PREFIX = "1.3.6.1.4.1.14519.5.2.1.6279.6001."
"""Root of the LIDC-IDRI series instance UIDs that LUNA16 uses as scan names."""

_UID_DIGITS = 30  # real LUNA16 UIDs carry 30 digits after the prefix (64 characters)

_LUNA_NOISE_HU = 20.0
_NODULE_MIN_MM, _NODULE_MAX_MM = 4.0, 12.0  # >= 4 mm so a 2.5 mm slice always cuts the centre
_NODULE_SHELL_MM = 3.5  # lung kept around each nodule (the test checks a shell of 1..3 mm)
_MAX_JITTER_MM = 1.5  # LUNA16 candidates lie within ~1.5 mm of the annotated centre

NCC_TASKS = ("vessels", "shapes")
"""Values of ``ncc_task``: what tells nodule candidates from the others (module docstring)."""


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


def luna16_case(
    seed: int, index: int, shape: Sequence[int] = (96, 96, 48), ncc_task: str = "vessels",
    spacing: Vec3 | None = None,
) -> PhantomCase:
    """One LUNA16-like chest CT with its nodules and candidates.

    Args:
        seed: dataset seed.
        index: scan number; scans are independent of each other.
        shape: voxels (x, y, z).
        ncc_task: ``vessels`` (nodules vs vessel points) or ``shapes`` (spheres vs tubes of
            equal HU and volume); see the module docstring.
        spacing: voxel size (mm) instead of the drawn demo one (:mod:`pcrl.phantom.geometry`).

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
    drawn, origin = _luna16_geometry(rng)
    spacing = drawn if spacing is None else spacing
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
    shard: tuple[int, int] = (0, 1), ncc_task: str = "vessels", sizes: str = "fixed",
) -> None:
    """Write a LUNA16-like dataset into ``root`` (replaced as a whole, atomically).

    Layout: ``subset0`` .. ``subset{subsets-1}`` (all created; scan i goes to subset
    i mod subsets) with ``<seriesuid>.mhd`` + uncompressed ``<seriesuid>.raw`` (MET_SHORT
    HU), ``annotations.csv`` and ``candidates.csv``. ``shard`` = (k, n) writes only the
    subsets s with s mod n = k and the CSV rows of their scans (one download shard, as the
    archives ``subset<s>.zip`` of the real dataset are shared out). ``ncc_task`` picks
    the candidates' task (``vessels`` or ``shapes``, see :func:`luna16_case`). ``sizes``:
    ``fixed`` (every scan ``shape``) or ``published`` (shape and spacing drawn per scan from
    LUNA16's published ranges, :mod:`pcrl.phantom.geometry`; ``shape`` is then unused).
    Scans are generated and written one at a time (memory of one scan).

    Raises:
        ConfigError: a count, the seed, the shape, ``ncc_task`` or ``sizes`` is invalid.
    """
    scans = _check_count("luna16", "scans", scans, 1)
    subsets = _check_count("luna16", "subsets", subsets, 1)
    seed = _check_count("luna16", "seed", seed, 0)
    shape = _check_shape("luna16", shape)
    ncc_task = _check_ncc_task(ncc_task)
    check_sizes("luna16", sizes)
    mine = [k for k in range(subsets) if k % shard[1] == shard[0]]
    indices = [i for i in range(scans) if i % subsets in mine]
    cases = []
    with atomic_dir(root) as tmp:
        for k in mine:
            (tmp / f"subset{k}").mkdir()
        for i in indices:
            geometry = case_geometry("luna16", seed, i, shape, sizes)
            case = luna16_case(seed, i, geometry.shape, ncc_task, geometry.spacing)
            _write_case_image(tmp / f"subset{i % subsets}" / f"{case.case_id}.mhd", case)
            cases.append(dataclasses.replace(case, image=np.zeros((0, 0, 0), np.int16)))  # CSVs: no voxels
        annotations, candidates = _luna16_csvs(cases)
        (tmp / "annotations.csv").write_text(annotations)
        (tmp / "candidates.csv").write_text(candidates)
