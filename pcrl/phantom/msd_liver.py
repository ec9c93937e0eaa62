"""Task03_Liver-like abdominal CT phantom (Medical Segmentation Decathlon).

MSD (Antonelli et al., Nat. Commun. 2022) Task03_Liver comes from LiTS 2017: portal-venous
CT in int16 HU with labels 0 background, 1 liver, 2 cancer, as ``imagesTr/``,
``labelsTr/``, ``imagesTs/`` NIfTI files and a ``dataset.json``. Each case here has a
body with a fat rim, spine, aorta, kidneys, a lobulated liver and 1-2 tumours wholly
inside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pcrl.phantom.drawing import (
    _AIR_HU,
    _FAT_HU,
    _SOFT_HU,
    _SPINE_HU,
    Axes,
    PhantomCase,
    Vec3,
    _case_rng,
    _check_shape,
    _depth_mm,
    _distance,
    _ellipse_radius,
    _ellipsoid_radius,
    _grid_center,
    _half_diagonal,
    _half_extent,
    _lobulation,
    _pick_center,
    _to_hu,
    _world_axes,
)
from pcrl.phantom.geometry import case_geometry, check_sizes
from pcrl.phantom.writers import _check_decathlon_args, _msd_meta, _write_decathlon
from pcrl.errors import ConfigError

__all__ = ["generate_msd_liver", "liver_case"]

# Liver CT, HU (portal-venous phase)
_AORTA_HU, _KIDNEY_HU, _LIVER_NOISE_HU = 180.0, 160.0, 12.0


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


def liver_case(
    seed: int, index: int, shape: Sequence[int] = (64, 64, 48), spacing: Vec3 | None = None
) -> PhantomCase:
    """One Task03_Liver-like CT (int16 HU) with labels 0 background, 1 liver, 2 cancer;
    ``spacing`` (mm) replaces the drawn demo one (:mod:`pcrl.phantom.geometry`).

    Raises:
        ConfigError: ``shape`` leaves no room in the liver for a tumour.
    """
    shape = _check_shape("msd_liver", shape)
    rng = _case_rng(seed, "msd_liver", index)
    drawn, origin = _liver_geometry(rng)
    spacing = drawn if spacing is None else spacing
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


def generate_msd_liver(
    root: Path, *, cases: int = 8, test_cases: int = 2, seed: int = 0,
    shape: Sequence[int] = (64, 64, 48),
    shard: tuple[int, int] = (0, 1), sizes: str = "fixed",
) -> None:
    """Write a Task03_Liver-like dataset into ``root`` (replaced as a whole, atomically).

    ``imagesTr/liver_N.nii.gz`` (int16 HU), ``labelsTr/liver_N.nii.gz`` (uint8: 0
    background, 1 liver, 2 cancer), ``imagesTs/liver_M.nii.gz`` and ``dataset.json``.

    ``shard`` = (k, n) writes only the cases i with i mod n = k (one download shard).
    ``sizes``: ``fixed`` (every case ``shape``) or ``published`` (shape and spacing drawn per
    case from the dataset's published ranges, :mod:`pcrl.phantom.geometry`).

    Raises:
        ConfigError: a count, the seed, the shape or ``sizes`` is invalid.
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
    check_sizes("msd_liver", sizes)

    def make_case(index: int) -> PhantomCase:
        geometry = case_geometry("msd_liver", seed, index, shape, sizes)
        return liver_case(seed, index, geometry.shape, geometry.spacing)

    _write_decathlon(root, make_case, cases, test_cases, meta, shard)
