"""How PCRL pretraining pairs are drawn: two overlapping crops of one CT volume, resized to one cube size.

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

The rule is :class:`PairConfig`; the boxes and the foreground are counted in
:mod:`pcrl.preprocessing.boxes`, the pairs drawn in :mod:`pcrl.preprocessing.pair_sampling` and written per
case in :mod:`pcrl.preprocessing.pretrain_pairs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pcrl.errors import ConfigError

__all__ = ["DEFAULT_CROP_SIZES", "PairConfig", "Size3"]

Size3 = tuple[int, int, int]

DEFAULT_CROP_SIZES: tuple[Size3, ...] = (
    (64, 64, 32),
    (96, 96, 48),
    (96, 96, 96),
    (32, 32, 16),
    (112, 112, 64),
)


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
