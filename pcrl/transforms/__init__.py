"""PCRL views: spatial codes, corruptions and augmentation, batched on the batch's device.

Every function takes a batch ``x`` of shape (N, C, x, y, z) (docs/CONVENTIONS.md) holding
intensities in [0, 1], and returns a new tensor of the same dtype on the same device; the
input is never modified. Randomness comes only from the ``generator`` argument, a
``torch.Generator`` living on the batch's device: the global RNGs are never touched, so
the same generator state gives the same output whatever else the process draws.

What is implemented and where each rule comes from:

* **Spatial codes** (docs/method.md "Transformation-conditioned attention"): a 7-vector per
  sample, flips of x, y, z as 0/1, then a one-hot of k = 0..3 quarter turns in the x-y
  plane (dims -3, -2); 2D images (PCRL's ChestX-ray14 setting) are one-slice volumes
  (N, C, x, y, 1) with the 6-entry code without the flip of z (:func:`codes_2d`), and
  :func:`augment` takes ``spatial_dims=2`` for them: one implementation for 2D and 3D.
  :func:`apply_spatial` flips first, then turns; :func:`invert_spatial` undoes it exactly.
  Both gather voxels by index, so they are exact for any dtype.
* **Corruptions** of Models Genesis (Zhou et al., MICCAI 2019 / MedIA 2021), kept by PCRL
  (docs/method.md "Views, corruptions and targets"): local pixel shuffling
  (:func:`local_pixel_shuffle`), the non-linear Bezier intensity transform
  (:func:`bezier_intensity`), in-painting and out-painting (:func:`in_paint`,
  :func:`out_paint`, :func:`paint`), chained by :func:`corrupt`.
* **Augmentation** before corruption (:func:`augment`): random flips, a small random affine
  and a Gaussian blur, the three transforms the release applies to each crop (with the
  defaults of the library it calls: rotations up to 10 degrees, scales 0.9..1.1, blur
  standard deviation 0..2 voxels).

Deviations from the release, all deliberate (docs/method.md "Known defects of the release"):

* Local pixel shuffling cuts a shuffled sample into a grid of non-overlapping blocks (one
  block shape per sample, each side uniform in [1, size // 10] as Models Genesis draws
  them, the grid shifted by a random phase per axis) and permutes the voxels of a random
  ``coverage`` fraction of the blocks uniformly at random, with one row-wise sort of
  random keys and one gather per sample. The release instead loops in Python over 10,000
  blocks of independent shapes and positions, which may overlap. The default coverage
  (0.8) is about the fraction of a 64x64x32 crop those 10,000 blocks cover (0.82,
  measured). Unlike the release, where a later block can overwrite part of an earlier
  one, every block keeps its multiset of values, and so does the whole crop.
* Multi-channel volumes: shuffling moves whole voxels (the same permutation for every
  channel) and painting noise is drawn per channel; the release handles one channel.
* :func:`corrupt` draws the painting decision per sample; the release draws it once per
  pair of views.

Layout of the package: :mod:`~pcrl.transforms.spatial` (spatial codes),
:mod:`~pcrl.transforms.shuffle` (local pixel shuffling), :mod:`~pcrl.transforms.painting`
(in/out-painting), :mod:`~pcrl.transforms.intensity` (Bezier intensity transform),
:mod:`~pcrl.transforms.augment` (augmentation), :mod:`~pcrl.transforms.corrupt` (the
corruption chain) and :mod:`~pcrl.transforms._checks` (shared argument checks and random
draws). Every public name is re-exported here.
"""

from __future__ import annotations

from pcrl.transforms.augment import augment
from pcrl.transforms.corrupt import CorruptionConfig, corrupt
from pcrl.transforms.intensity import bezier_intensity
from pcrl.transforms.painting import in_paint, out_paint, paint
from pcrl.transforms.shuffle import ShufflePlan, local_pixel_shuffle
from pcrl.transforms.spatial import (
    CODE_SIZE,
    CODE_SIZE_2D,
    apply_spatial,
    decode_spatial,
    encode_spatial,
    invert_spatial,
    codes_2d,
    spatial_codes,
    volume_codes,
)

# isort: split
# Private helpers re-exported only so that tests/test_transforms.py can keep reaching
# them as ``T._name`` (``from pcrl import transforms as T``); not part of the public API.
from pcrl.transforms.augment import _affine, _gaussian_blur  # noqa: F401
from pcrl.transforms.painting import (  # noqa: F401
    _inpaint_boxes,
    _outpaint_boxes,
    _paint_plan,
)
from pcrl.transforms.shuffle import _shuffle_plan  # noqa: F401

__all__ = [
    "CODE_SIZE",
    "CODE_SIZE_2D",
    "CorruptionConfig",
    "ShufflePlan",
    "apply_spatial",
    "augment",
    "bezier_intensity",
    "corrupt",
    "decode_spatial",
    "encode_spatial",
    "in_paint",
    "invert_spatial",
    "local_pixel_shuffle",
    "out_paint",
    "paint",
    "codes_2d",
    "spatial_codes",
    "volume_codes",
]
