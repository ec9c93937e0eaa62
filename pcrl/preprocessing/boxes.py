"""Boxes of a volume: 3D IoU, summed-area tables for O(1) box sums, the foreground mask.

Boxes are half-open (x0, y0, z0, x1, y1, z1); the foreground rule is the
:class:`pcrl.preprocessing.pair_config.PairConfig`'s (``body`` or ``dense``).
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage

from pcrl.preprocessing.pair_config import PairConfig

__all__ = ["box_iou_3d", "box_sums", "foreground_mask", "integral_image"]


def box_iou_3d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3D IoU of axis-aligned boxes ``(..., 6)`` = (x0, y0, z0, x1, y1, z1), half-open.

    Broadcasts over the leading axes; an empty union gives 0.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if a.shape[-1] != 6 or b.shape[-1] != 6:
        raise ValueError(f"boxes must have 6 numbers in the last axis, got {a.shape} and {b.shape}")
    low = np.maximum(a[..., :3], b[..., :3])
    high = np.minimum(a[..., 3:], b[..., 3:])
    inter = np.clip(high - low, 0, None).prod(axis=-1)
    union = _box_volume(a) + _box_volume(b) - inter
    return np.divide(inter, union, out=np.zeros(inter.shape, dtype=np.float64), where=union > 0)


def _box_volume(boxes: np.ndarray) -> np.ndarray:
    """Voxel count of half-open boxes ``(..., 6)``."""
    return np.clip(boxes[..., 3:] - boxes[..., :3], 0, None).prod(axis=-1)


def integral_image(mask: np.ndarray) -> np.ndarray:
    """3D summed-area table with a leading zero plane: ``S[i, j, k] = mask[:i, :j, :k].sum()``."""
    dtype = np.int32 if mask.size < np.iinfo(np.int32).max else np.int64
    table = np.zeros(tuple(n + 1 for n in mask.shape), dtype=dtype)
    table[1:, 1:, 1:] = mask.astype(dtype).cumsum(0).cumsum(1).cumsum(2)
    return table


def box_sums(table: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Sum of the mask inside each half-open box ``(..., 6)`` from its integral image (O(1) a box)."""
    boxes = np.asarray(boxes, dtype=np.int64)
    total = np.zeros(boxes.shape[:-1], dtype=np.int64)
    for corner in itertools.product((0, 1), repeat=3):
        index = tuple(boxes[..., axis + 3 * side] for axis, side in enumerate(corner))
        sign = -1 if (3 - sum(corner)) % 2 else 1
        total += sign * table[index].astype(np.int64)
    return total


# ---------------------------------------------------------------------- foreground


def foreground_mask(volume: np.ndarray, config: PairConfig) -> np.ndarray:
    """Boolean foreground mask of a [0, 1]-scaled volume (x, y, z) under ``config.foreground``."""
    dense = volume >= config.threshold
    if config.foreground == "dense":
        return dense
    return _fill_axial_holes(dense)


def _fill_axial_holes(dense: np.ndarray) -> np.ndarray:
    """Dense voxels plus the air they enclose in each axial (x-y) slice.

    Air connected to the slice's edge (4-connectivity within the slice) is outside the body;
    everything else is inside. Slices are independent, so airways leaving the scan through its
    top or bottom slice still count as inside.
    """
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    labels, _ = ndimage.label(~dense, structure=in_plane)
    edge = np.concatenate(
        [labels[0].ravel(), labels[-1].ravel(), labels[:, 0].ravel(), labels[:, -1].ravel()]
    )
    outside_labels = np.unique(edge[edge > 0])
    return ~np.isin(labels, outside_labels)
