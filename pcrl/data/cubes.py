"""PCRL pretraining pairs: two overlapping crops of one CT volume, resized to one cube size.

docs/method.md "Views, corruptions and targets": from one preprocessed volume (1 mm, HU clipped
to ``hu_range`` and scaled to [0, 1]) two crops x1, x2 of the same region are taken with 3D
IoU > ``min_iou``, each of a size drawn from ``crop_sizes`` (x, y, z), and resized to
``cube_size``; crops mostly outside the body/lung are rejected.

Two placement rules are offered, chosen by ``PairConfig.placement``.

``"overlap"`` (default; the benchmark's per-voxel reference follows it too):

1. Crop sizes (clipped to the volume) are drawn as a pair, uniformly among the pairs of
   ``crop_sizes`` that can reach IoU > ``min_iou`` at all.
2. Box 1 is placed uniformly inside the volume; box 2 uniformly among the positions inside
   the volume where it intersects box 1.
3. The pair is kept when IoU > ``min_iou`` and the foreground fraction of *each* box lies in
   ``[min_fraction, max_fraction]``.

``"release"`` (the released code's rule; ``PairConfig.release()`` selects it):

1. Two size indices are drawn independently and uniformly from ``crop_sizes`` (no
   feasibility filter). A crop whose x start range is empty
   (``size_x - crop_x - 1 - border_x <= border_x``) has its x and y sizes reduced by
   ``shrink`` once (z unchanged).
2. A volume too shallow for the deepest crop ``D`` (``size_z - D - depth_slack - 1 - border_z
   < border_z``) is zero-padded at the end of z to ``D + depth_slack + 1 + 2 border_z + 1``
   slices. (The release fixes ``D`` at 64, which leaves the 96-deep default crop no start in
   volumes of fewer than 130 slices; the deepest of ``crop_sizes`` is used here.)
3. Each box start is drawn independently (box 2 does not depend on box 1), uniformly among the
   integers of ``[border_x, size_x - crop_x - 1 - border_x]``, the same in y, and
   ``[border_z, size_z - crop_z - depth_slack - 1 - border_z]`` in z.
4. Sizes and starts are redrawn until IoU > ``min_iou`` and the foreground fraction of each
   box lies in ``[min_fraction, max_fraction]``.

   The release then reads ``depth_slack`` extra slices below each crop for its depth
   weighting; that is not reproduced (the crop is exactly the box).

The two rules give different size mixes: on a 320x320x280 volume with the five default crop
sizes and no foreground constraint, pairs of two 32x32x16 crops are 7.3 % of the pairs under
``"overlap"`` and 0.1 % under ``"release"``; pairs of two 64x64x32 crops 8.1 % and 1.2 %
(computed exactly from the two rules).
``"release"`` needs volumes larger than about twice the border plus the largest crop in
x and y (a DataError names the case otherwise).

The foreground mask is chosen by ``PairConfig.foreground``:

* ``"body"`` (default): voxels inside the body, i.e. voxels at or above ``threshold_hu``
  plus the air they enclose in each axial slice (lungs, airways, bowel gas). With
  ``min_fraction=0.5`` a crop that is mostly outside the body is rejected, the rule the
  spec states.
* ``"dense"``: voxels at or above ``threshold_hu`` (soft tissue, bone). The release keeps a
  crop when at most 15 % of it is dense, i.e. lung-dominated crops:
  ``PairConfig.release()`` sets ``foreground="dense", min_fraction=0, max_fraction=0.15``
  together with ``placement="release"``.
  (The release weights voxels by their distance to the next dense voxel along z, up to
  3 voxels, and compares with the volume of the crop before resizing; the plain
  fraction used here is its documented intent.)

Per-box foreground counts come from a 3D summed-area table in O(1) per box, so thousands
of candidate pairs are checked at once; accepted crops are gathered with one fancy index
per crop size and resized with ``torch.nn.functional.interpolate`` (trilinear).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from tqdm import tqdm

from pcrl.seeding import named_rng
from pcrl.atomic import save_npy
from pcrl.data.imageio import read_volume
from pcrl.errors import ConfigError, DataError

__all__ = [
    "DEFAULT_CROP_SIZES",
    "PairConfig",
    "PairLayout",
    "box_iou_3d",
    "box_sums",
    "case_rng",
    "foreground_mask",
    "integral_image",
    "pair_layout",
    "resize_crops",
    "sample_boxes",
    "sample_pairs",
    "write_pretrain_pairs",
]

log = logging.getLogger(__name__)

Size3 = tuple[int, int, int]

DEFAULT_CROP_SIZES: tuple[Size3, ...] = (
    (64, 64, 32),
    (96, 96, 48),
    (96, 96, 96),
    (32, 32, 16),
    (112, 112, 64),
)

#: Candidate pairs drawn per round; fixed so that the first k pairs of a call asking for
#: n > k pairs equal the pairs of a call asking for k (same seed).
_BATCH = 1024


@dataclass(frozen=True)
class PairConfig:
    """How pretraining pairs are drawn (docs/method.md "Views, corruptions and targets").

    Attributes:
        crop_sizes: Crop sizes (x, y, z) in voxels; each is clipped to the volume.
        cube_size: Size (x, y, z) every crop is resized to.
        min_iou: The two boxes of a pair must have 3D IoU strictly above this.
        threshold_hu: HU threshold of the foreground mask (the release uses -150).
        foreground: ``"body"`` (inside the body, lungs included) or ``"dense"`` (voxels at
            or above ``threshold_hu``); see the module docstring.
        min_fraction: A box is kept only if at least this fraction of it is foreground.
        max_fraction: A box is kept only if at most this fraction of it is foreground.
        hu_range: HU window that the volume's [0, 1] scale maps to.
        max_tries: Candidate pairs drawn per requested pair before giving up.
        placement: ``"overlap"`` (box 2 among the positions intersecting box 1, sizes among
            the feasible pairs) or ``"release"`` (the release's borders and independent
            draws); see the module docstring.
        border: ``"release"`` only: margin (x, y, z) in voxels kept free at both ends of
            each axis (the release: 70, 70, 15).
        depth_slack: ``"release"`` only: extra slices kept free below each crop in z
            (the release: 3).
        shrink: ``"release"`` only: voxels taken off the x and y sizes of a crop that does
            not fit within the x border (the release: 32).
    """

    crop_sizes: tuple[Size3, ...] = DEFAULT_CROP_SIZES
    cube_size: Size3 = (64, 64, 32)
    min_iou: float = 0.25
    threshold_hu: float = -150.0
    foreground: Literal["body", "dense"] = "body"
    min_fraction: float = 0.5
    max_fraction: float = 1.0
    hu_range: tuple[float, float] = (-1000.0, 1000.0)
    max_tries: int = 1000
    placement: Literal["overlap", "release"] = "overlap"
    border: Size3 = (70, 70, 15)
    depth_slack: int = 3
    shrink: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop_sizes", tuple(_size3(s, "crop_sizes") for s in self.crop_sizes))
        object.__setattr__(self, "cube_size", _size3(self.cube_size, "cube_size"))
        object.__setattr__(self, "hu_range", tuple(float(v) for v in self.hu_range))
        if not self.crop_sizes:
            raise ConfigError("PairConfig.crop_sizes: at least one crop size is needed")
        if not 0.0 <= self.min_iou < 1.0:
            raise ConfigError(f"PairConfig.min_iou must be in [0, 1), got {self.min_iou}")
        if self.foreground not in ("body", "dense"):
            raise ConfigError(f"PairConfig.foreground must be 'body' or 'dense', got {self.foreground!r}")
        if not 0.0 <= self.min_fraction <= self.max_fraction <= 1.0:
            raise ConfigError(
                "PairConfig.min_fraction/max_fraction must satisfy 0 <= min <= max <= 1, "
                f"got {self.min_fraction}, {self.max_fraction}"
            )
        if len(self.hu_range) != 2 or not self.hu_range[0] < self.hu_range[1]:
            raise ConfigError(f"PairConfig.hu_range must be (low, high) with low < high, got {self.hu_range}")
        if int(self.max_tries) < 1:
            raise ConfigError(f"PairConfig.max_tries must be >= 1, got {self.max_tries}")
        if self.placement not in ("overlap", "release"):
            raise ConfigError(f"PairConfig.placement must be 'overlap' or 'release', got {self.placement!r}")
        border = tuple(int(v) for v in self.border)
        if len(border) != 3 or min(border) < 0:
            raise ConfigError(f"PairConfig.border must be 3 ints >= 0 (x, y, z), got {list(self.border)}")
        object.__setattr__(self, "border", border)
        for key in ("depth_slack", "shrink"):
            if int(getattr(self, key)) < 0:
                raise ConfigError(f"PairConfig.{key} must be >= 0, got {getattr(self, key)}")
            object.__setattr__(self, key, int(getattr(self, key)))

    @classmethod
    def release(cls, **overrides: object) -> PairConfig:
        """The release's rule: its placement, and at most 15 % of a crop at or above -150 HU."""
        settings: dict[str, object] = {
            "placement": "release",
            "foreground": "dense",
            "min_fraction": 0.0,
            "max_fraction": 0.15,
        }
        settings.update(overrides)
        return cls(**settings)  # type: ignore[arg-type]

    @property
    def threshold(self) -> float:
        """``threshold_hu`` on the volume's [0, 1] scale."""
        low, high = self.hu_range
        return (self.threshold_hu - low) / (high - low)


def _size3(value: Sequence[int], key: str) -> Size3:
    """Validate one (x, y, z) size of positive ints."""
    size = tuple(int(v) for v in value)
    if len(size) != 3 or min(size) < 1:
        raise ConfigError(f"PairConfig.{key}: sizes must be 3 positive ints (x, y, z), got {list(value)}")
    return size


# --------------------------------------------------------------------------- boxes


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


# ------------------------------------------------------------------------ sampling


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


# -------------------------------------------------------------------------- stage


def case_rng(seed: int, case_id: str) -> np.random.Generator:
    """Generator of one case, derived from (seed, case id) with ``numpy.random.SeedSequence``.

    Keyed by the id, not by the position, so the cubes of a case do not change when cases are
    reordered, added or processed in parallel.
    """
    return named_rng(seed, case_id)


def write_pretrain_pairs(
    cases: list[dict],
    interim_dir: Path,
    out_dir: Path,
    *,
    pairs_per_case: int,
    config: PairConfig,
    seed: int,
    progress: bool = True,
) -> list[dict]:
    """Write ``out_dir/pairs/<id>.npy`` (n, 2, *cube_size) float16 for every case.

    Args:
        cases: Entries of the resample stage's ``cases.json`` (``id``, ``group``, ``image``).
        interim_dir: Folder of ``cases.json``; ``image`` paths are relative to it.
        out_dir: Stage output folder.
        pairs_per_case: Pairs drawn from each volume.
        config: Sampling rule.
        seed: Root seed; each case draws from ``case_rng(seed, id)``.
        progress: Show a progress bar.

    Returns:
        One index entry per case: ``{"id", "group", "file", "n"}``, ``file`` relative to ``out_dir``.
    """
    if pairs_per_case < 1:
        raise ConfigError(f"pairs_per_case must be >= 1, got {pairs_per_case}")
    index = []
    for case in tqdm(cases, desc="pretraining pairs", disable=not progress):
        case_id = _case_field(case, "id", "?")
        volume, _ = read_volume(Path(interim_dir) / _case_field(case, "image", case_id), case_id)
        cubes, _ = sample_pairs(volume, pairs_per_case, config, case_rng(seed, case_id), case_id=case_id)
        relative = f"pairs/{case_id}.npy"
        save_npy(Path(out_dir) / relative, cubes.astype(np.float16))
        index.append({"id": case_id, "group": case.get("group"), "file": relative, "n": len(cubes)})
    log.info("wrote %d pairs for %d cases", pairs_per_case * len(index), len(index))
    return index


def _case_field(case: dict, key: str, case_id: str) -> str:
    """A required string field of a ``cases.json`` entry."""
    if key not in case or case[key] in (None, ""):
        raise DataError(f"cases.json: case {case_id} has no {key!r}")
    return str(case[key])
