"""Random foreground/background patches cut straight from memory-mapped volumes.

The rule is MONAI's ``RandCropByPosNegLabeld`` after ``SpatialPadd`` (what
:class:`pcrl.finetune.datasets.PatchSet` uses on NIfTI volumes): each of K patches is
centred on a foreground voxel (label > 0) with probability ``foreground_prob``, else on a
background voxel; the centre is moved inwards so the patch stays inside the volume; a
volume smaller than the patch is zero-padded symmetrically. It is written here rather than
called from MONAI because MONAI's transform converts the whole volume to a tensor and scans
every voxel for the foreground and background indices on every item: at LiTS size (~250 MB
a volume) that reads the whole file and costs far more than a GPU step per item. Here the
foreground indices are computed once per case (:mod:`pcrl.preprocessing.arrays`), a background
centre is drawn by rejection against the memory-mapped label, and a patch reads only its
own bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pcrl.preprocessing.arrays import CaseArrays

#: Draws of a random voxel before a background centre is taken without the label check
#: (a volume that is nearly all foreground).
BACKGROUND_TRIES = 64


def crop_start(centre: int, size: int, patch: int) -> int:
    """First index of a ``patch``-long window around ``centre`` inside ``size`` voxels
    (MONAI's centre correction); 0 when the volume is smaller than the patch."""
    if size <= patch:
        return 0
    return int(min(max(centre - patch // 2, 0), size - patch))


def draw_centres(rng: np.random.RandomState, arrays: CaseArrays, count: int,
                 foreground_prob: float) -> list[tuple[int, ...]]:
    """``count`` patch centres (x, y, z): foreground with probability ``foreground_prob``."""
    shape = arrays.label.shape
    total = int(np.prod(shape))
    centres = []
    for _ in range(count):
        foreground = rng.rand() < foreground_prob and len(arrays.foreground) > 0
        if foreground:
            flat = int(arrays.foreground[rng.randint(len(arrays.foreground))])
        else:
            flat = int(rng.randint(total))
            for _ in range(BACKGROUND_TRIES):
                if arrays.label[np.unravel_index(flat, shape)] == 0:
                    break
                flat = int(rng.randint(total))
        centres.append(tuple(int(i) for i in np.unravel_index(flat, shape)))
    return centres


def cut(volume: np.ndarray, centre: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """The patch of ``volume`` (channels first, or none) around ``centre``, zero-padded
    symmetrically where the volume is smaller than the patch."""
    spatial = volume.shape[-3:]
    starts = [crop_start(c, s, p) for c, s, p in zip(centre, spatial, patch)]
    window = [slice(b, b + min(p, s)) for b, p, s in zip(starts, patch, spatial)]
    index: tuple[Any, ...] = (Ellipsis, *window)
    block = np.asarray(volume[index])
    missing = [max(0, p - s) for p, s in zip(patch, spatial)]
    if any(missing):
        lead = [(0, 0)] * (block.ndim - 3)
        block = np.pad(block, lead + [(m // 2, m - m // 2) for m in missing])
    return block
