"""Drawing PCRL view pairs from one volume by the placement rule of a
:class:`pcrl.preprocessing.pair_config.PairConfig` (its docstring states the rules).

Per-box foreground counts come from a summed-area table (:mod:`pcrl.preprocessing.boxes`), so
thousands of candidate pairs are checked at once; accepted crops are gathered with one
fancy index per crop size and resized with ``torch.nn.functional.interpolate``
(trilinear).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pcrl.preprocessing.boxes import _box_volume, box_iou_3d, box_sums, foreground_mask, integral_image
from pcrl.preprocessing.pair_config import PairConfig, Size3
from pcrl.errors import ConfigError, DataError

__all__ = ["PairLayout", "pair_layout", "resize_crops", "sample_boxes", "sample_pairs"]

#: Candidate pairs drawn per round; fixed so that the first k pairs of a call asking for
#: n > k pairs equal the pairs of a call asking for k (same seed).
_BATCH = 1024


@dataclass(frozen=True)
class PairLayout:
    """Where the boxes of one volume may lie under ``PairConfig.placement``.

    Attributes:
        shape: (3,) shape boxes are drawn in: the volume's, plus ``pad_z`` slices of z.
        pad_z: Zero slices appended to the end of z before cropping (``"release"`` only).
        sizes: (k, 3) crop size of each entry of ``crop_sizes``, as drawn: clipped to the
            volume (``"overlap"``) or after the shrink rule (``"release"``).
        low: (k, 3) lowest start of each crop size, inclusive.
        high: (k, 3) highest start of each crop size, inclusive.
        size_pairs: (m, 2) index pairs sizes are drawn from (``"overlap"``: the feasible
            pairs); None for ``"release"``, which draws two independent indices.
    """

    shape: np.ndarray
    pad_z: int
    sizes: np.ndarray
    low: np.ndarray
    high: np.ndarray
    size_pairs: np.ndarray | None


def pair_layout(shape: Sequence[int], config: PairConfig, *, case_id: str = "volume") -> PairLayout:
    """The layout of a volume of ``shape`` (x, y, z) under ``config.placement``.

    Raises:
        DataError: ``"overlap"``: no two clipped sizes can reach IoU > ``min_iou``;
            ``"release"``: a crop does not fit within the border even after the shrink.
    """
    if config.placement == "release":
        return _release_layout(shape, config, case_id)
    volume_shape = np.asarray(shape, dtype=np.int64)
    sizes = _clipped_sizes(config, shape)
    size_pairs = _feasible_size_pairs(sizes, config.min_iou)
    if len(size_pairs) == 0:
        raise DataError(
            f"case {case_id}: no two crop sizes (clipped to the volume {tuple(shape)}) can reach "
            f"IoU > {config.min_iou}"
        )
    return PairLayout(volume_shape, 0, sizes, np.zeros_like(sizes), volume_shape - sizes, size_pairs)


def _release_layout(shape: Sequence[int], config: PairConfig, case_id: str) -> PairLayout:
    """Steps 1-2 of the release's rule: shrink crops too wide for the x border, pad shallow volumes."""
    border = np.asarray(config.border, dtype=np.int64)
    slack = np.array([0, 0, config.depth_slack], dtype=np.int64)
    sizes = np.asarray(config.crop_sizes, dtype=np.int64)
    size_x, size_y, size_z = (int(n) for n in shape)
    too_wide = size_x - sizes[:, 0] - 1 - border[0] <= border[0]
    sizes[too_wide, :2] -= config.shrink
    deepest = int(sizes[:, 2].max())
    pad_z = 0
    if size_z - deepest - config.depth_slack - 1 - border[2] < border[2]:
        pad_z = deepest + config.depth_slack + 1 + 2 * int(border[2]) + 1 - size_z
    padded = np.array([size_x, size_y, size_z + pad_z], dtype=np.int64)
    low = np.broadcast_to(border, sizes.shape).copy()
    high = padded - sizes - 1 - slack - border
    misfit = (sizes < 1) | (high < low)
    if misfit.any():
        problems = []
        for index in np.flatnonzero(misfit.any(axis=1)):
            shrunk = f" (shrunk to {tuple(int(v) for v in sizes[index])})" if too_wide[index] else ""
            axes = ", ".join(name for name, bad in zip("xyz", misfit[index]) if bad)
            problems.append(f"{config.crop_sizes[index]}{shrunk} in {axes}")
        raise DataError(
            f"case {case_id}: crop sizes do not fit in the volume {tuple(int(n) for n in shape)} "
            f"within the border {config.border} (depth slack {config.depth_slack}) of the 'release' "
            f"placement: {'; '.join(problems)}; use larger volumes, a smaller PairConfig.border "
            "or placement 'overlap'"
        )
    return PairLayout(padded, pad_z, sizes, low, high, None)


def _clipped_sizes(config: PairConfig, shape: Sequence[int]) -> np.ndarray:
    """Crop sizes (k, 3) clipped to the volume's shape."""
    return np.minimum(np.asarray(config.crop_sizes, dtype=np.int64), np.asarray(shape, dtype=np.int64))


def _feasible_size_pairs(sizes: np.ndarray, min_iou: float) -> np.ndarray:
    """Index pairs (m, 2) of sizes whose best alignment (same corner) has IoU > ``min_iou``."""
    first, second = np.meshgrid(np.arange(len(sizes)), np.arange(len(sizes)), indexing="ij")
    zeros = np.zeros((len(sizes), len(sizes), 3), dtype=np.int64)
    best = box_iou_3d(
        np.concatenate([zeros, sizes[first]], axis=-1), np.concatenate([zeros, sizes[second]], axis=-1)
    )
    return np.argwhere(best > min_iou)


def _draw_candidates(layout: PairLayout, count: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``count`` candidate box pairs (count, 2, 6): sizes and starts of the placement rule."""
    if layout.size_pairs is None:
        chosen = rng.integers(len(layout.sizes), size=(count, 2))
        starts = rng.integers(layout.low[chosen], layout.high[chosen] + 1)
        return np.concatenate([starts, starts + layout.sizes[chosen]], axis=-1)
    shape, sizes = layout.shape, layout.sizes
    chosen = layout.size_pairs[rng.integers(len(layout.size_pairs), size=count)]
    size1, size2 = sizes[chosen[:, 0]], sizes[chosen[:, 1]]
    start1 = rng.integers(0, shape - size1 + 1)
    low = np.maximum(0, start1 - size2 + 1)
    high = np.minimum(shape - size2, start1 + size1 - 1)
    start2 = rng.integers(low, high + 1)
    box1 = np.concatenate([start1, start1 + size1], axis=-1)
    box2 = np.concatenate([start2, start2 + size2], axis=-1)
    return np.stack([box1, box2], axis=1)


def _valid_pairs(boxes: np.ndarray, table: np.ndarray | None, config: PairConfig) -> np.ndarray:
    """Acceptance of (n, 2, 6) boxes: IoU and, with a table, the per-box foreground fraction."""
    valid = box_iou_3d(boxes[:, 0], boxes[:, 1]) > config.min_iou
    if table is None:
        return valid
    fraction = box_sums(table, boxes) / _box_volume(boxes)
    inside = (fraction >= config.min_fraction) & (fraction <= config.max_fraction)
    return valid & inside.all(axis=1)


def resize_crops(crops: torch.Tensor, size: Size3) -> torch.Tensor:
    """Resize crops (n, x, y, z) to ``size`` with trilinear interpolation (identity if equal)."""
    if tuple(crops.shape[1:]) == tuple(size):
        return crops
    return F.interpolate(crops[:, None], size=size, mode="trilinear", align_corners=False)[:, 0]


def _crop_and_resize(volume: np.ndarray, boxes: np.ndarray, cube_size: Size3) -> np.ndarray:
    """Cut boxes (m, 6) out of ``volume`` and resize each to ``cube_size``; (m, *cube_size) float32.

    Boxes of one size are gathered with one fancy index into a sliding-window view and
    resized as one batch.
    """
    out = np.empty((len(boxes), *cube_size), dtype=np.float32)
    extents = boxes[:, 3:] - boxes[:, :3]
    for extent in np.unique(extents, axis=0):
        rows = np.flatnonzero((extents == extent).all(axis=1))
        windows = np.lib.stride_tricks.sliding_window_view(volume, tuple(extent))
        crops = windows[boxes[rows, 0], boxes[rows, 1], boxes[rows, 2]]
        out[rows] = resize_crops(torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32)), cube_size).numpy()
    return out


def sample_pairs(
    volume: np.ndarray,
    n_pairs: int,
    config: PairConfig,
    rng: np.random.Generator,
    *,
    case_id: str = "volume",
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n_pairs`` PCRL view pairs from one [0, 1]-scaled volume (x, y, z).

    Args:
        volume: 3D array, HU window scaled to [0, 1] (docs/method.md preprocessing).
        n_pairs: Number of pairs wanted.
        config: Sampling rule (see the module docstring).
        rng: Source of randomness; the result depends only on it, the volume and config.
        case_id: Names the case in error messages.

    Returns:
        cubes: (n_pairs, 2, *cube_size) float32, the two resized crops of each pair.
        boxes: (n_pairs, 2, 6) int64, their boxes (x0, y0, z0, x1, y1, z1), half-open. Under
            ``"release"`` placement of a shallow volume they may reach into the zero slices
            appended to z (:class:`PairLayout` ``pad_z``).

    Raises:
        ConfigError: ``n_pairs < 1``.
        DataError: the volume is not 3D, the crops cannot be placed in it
            (:func:`pair_layout`), or too few valid pairs were found in
            ``config.max_tries * n_pairs`` candidates.
    """
    if n_pairs < 1:
        raise ConfigError(f"the number of pairs per case must be >= 1, got {n_pairs}")
    if volume.ndim != 3:
        raise DataError(f"case {case_id}: pretraining pairs need a 3D volume, got shape {volume.shape}")
    layout = pair_layout(volume.shape, config, case_id=case_id)
    if layout.pad_z:
        volume = np.pad(volume, ((0, 0), (0, 0), (0, layout.pad_z)))
    boxes = _accepted_boxes(layout, foreground_mask(volume, config), n_pairs, config, rng, case_id)
    cubes = _crop_and_resize(volume, boxes.reshape(-1, 6), config.cube_size)
    return cubes.reshape(n_pairs, 2, *config.cube_size), boxes


def sample_boxes(
    shape: Sequence[int],
    n_pairs: int,
    config: PairConfig,
    rng: np.random.Generator,
    *,
    case_id: str = "volume",
) -> np.ndarray:
    """Box pairs (n_pairs, 2, 6) of a volume of ``shape`` by the placement rule, IoU only.

    Every box counts as foreground-valid (no mask is built); the boxes are those
    :func:`sample_pairs` would draw on a volume whose every box passes the foreground rule.
    """
    if n_pairs < 1:
        raise ConfigError(f"the number of pairs per case must be >= 1, got {n_pairs}")
    layout = pair_layout(shape, config, case_id=case_id)
    return _accepted_boxes(layout, None, n_pairs, config, rng, case_id)


def _accepted_boxes(
    layout: PairLayout,
    mask: np.ndarray | None,
    n_pairs: int,
    config: PairConfig,
    rng: np.random.Generator,
    case_id: str,
) -> np.ndarray:
    """Draw candidate batches until ``n_pairs`` valid box pairs are found, in draw order.

    ``mask`` (of shape ``layout.shape``) gives the foreground rule; None accepts every box.
    """
    table = None if mask is None else integral_image(mask)
    budget = int(config.max_tries) * n_pairs
    accepted: list[np.ndarray] = []
    found = drawn = 0
    while found < n_pairs and drawn < budget:
        candidates = _draw_candidates(layout, _BATCH, rng)
        kept = candidates[_valid_pairs(candidates, table, config)]
        accepted.append(kept)
        found += len(kept)
        drawn += _BATCH
    if found < n_pairs:
        rule = "no foreground rule" if mask is None else (
            f"{config.foreground} fraction in [{config.min_fraction}, {config.max_fraction}] at "
            f"{config.threshold_hu} HU; foreground is {mask.mean():.1%} of the volume {tuple(mask.shape)}"
        )
        raise DataError(
            f"case {case_id}: found only {found} of {n_pairs} valid crop pairs in {drawn} candidates "
            f"({config.placement} placement, IoU > {config.min_iou}, {rule})"
        )
    return np.concatenate(accepted)[:n_pairs]
