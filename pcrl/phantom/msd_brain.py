"""Task01_BrainTumour-like MRI phantom (Medical Segmentation Decathlon, BraTS).

MSD (Antonelli et al., Nat. Commun. 2022) Task01_BrainTumour comes from BraTS 2016-2017:
skull-stripped 4D MRI (x, y, z, 4 modalities: FLAIR, T1w, t1gd, T2w) at 1 mm with labels
0 background, 1 edema, 2 non-enhancing tumour, 3 enhancing tumour. Each case here has
grey and white matter, two ventricles and one nested lobulated tumour, with per-channel
gain, bias field and Rician-like noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pcrl.phantom.drawing import (
    Axes,
    PhantomCase,
    Vec3,
    _case_rng,
    _check_shape,
    _depth_mm,
    _distance,
    _ellipsoid_radius,
    _grid_center,
    _half_diagonal,
    _half_extent,
    _lobulation,
    _pick_center,
    _unit_vectors,
    _world_axes,
)
from pcrl.phantom.geometry import case_geometry, check_sizes
from pcrl.phantom.writers import _check_decathlon_args, _msd_meta, _write_decathlon

__all__ = ["brain_case", "generate_msd_brain"]

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


def brain_case(
    seed: int, index: int, shape: Sequence[int] = (48, 48, 40), spacing: Vec3 | None = None
) -> PhantomCase:
    """One Task01_BrainTumour-like case: (4, x, y, z) float32 MRI at 1 mm (or ``spacing``), labels 0-3."""
    shape = _check_shape("msd_brain", shape)
    rng = _case_rng(seed, "msd_brain", index)
    spacing, origin = (1.0, 1.0, 1.0) if spacing is None else spacing, (0.0, 0.0, 0.0)
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


def generate_msd_brain(
    root: Path, *, cases: int = 8, test_cases: int = 2, seed: int = 0,
    shape: Sequence[int] = (48, 48, 40),
    shard: tuple[int, int] = (0, 1), sizes: str = "fixed",
) -> None:
    """Write a Task01_BrainTumour-like dataset into ``root`` (replaced as a whole, atomically).

    ``imagesTr/BRATS_NNN.nii.gz`` are 4D (x, y, z, 4) float32 in the order FLAIR, T1w,
    t1gd, T2w; ``labelsTr`` uint8 (0 background, 1 edema, 2 non-enhancing tumour,
    3 enhancing tumour); ``imagesTs`` and ``dataset.json`` as MSD ships them.

    ``shard`` = (k, n) writes only the cases i with i mod n = k (one download shard).
    ``sizes``: ``fixed`` (every case ``shape``) or ``published`` (shape and spacing drawn per
    case from the dataset's published ranges, :mod:`pcrl.phantom.geometry`).

    Raises:
        ConfigError: a count, the seed, the shape or ``sizes`` is invalid.
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
    check_sizes("msd_brain", sizes)

    def make_case(index: int) -> PhantomCase:
        geometry = case_geometry("msd_brain", seed, index, shape, sizes)
        return brain_case(seed, index, geometry.shape, geometry.spacing)

    _write_decathlon(root, make_case, cases, test_cases, meta, shard)
