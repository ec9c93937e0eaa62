"""Per-case sizes and spacings of the phantoms: the demo's fixed shape, or drawn from the
published ranges of each dataset (``sizes: published`` in ``data.phantom.<dataset>``).

Published figures (the datasets' papers and pages):

- LUNA16 (Setio et al., MedIA 2017): 888 CT scans, 512 x 512 in-plane, in-plane spacing
  0.46..0.98 mm, slice thickness at most 2.5 mm, about 100..700 slices.
- MSD Task03 Liver (LiTS; Bilic et al., MedIA 2023): 131 training volumes, 512 x 512 x
  74..987, 0.5..1.0 mm in-plane, 0.7..5 mm slices.
- MSD Task01 BrainTumour (BraTS): 484 training cases, 4 channels of 240 x 240 x 155 at 1 mm.

A CT's slice count follows from its slice thickness and the length scanned: the draw
picks a thickness, then a scanned length (chest: 240..420 mm, abdomen: 150..450 mm) and
clips the count to the published range, so thin slices give many and thick ones few,
as in the real data (a uniform count would scan 700 slices of 2.5 mm = 1.75 m). Draws use
their own generator (seed, dataset stream + 100, case index), so the case's anatomy
stream, and with ``sizes: fixed`` every byte of the demo, is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pcrl.errors import ConfigError
from pcrl.phantom.drawing import Vec3, _STREAMS, _check_count, _check_shape
from pcrl.seeding import indexed_rng

__all__ = ["PUBLISHED", "SIZES", "CaseGeometry", "PublishedRange", "case_geometry"]

SIZES = ("fixed", "published")
"""Values of ``data.phantom.<dataset>.sizes``: the ``shape`` key for every case, or drawn per case."""

_DRAW_STREAM = 100  # added to the dataset's stream: the draws' own generator


@dataclass(frozen=True)
class PublishedRange:
    """One dataset's published geometry: in-plane matrix (voxels), slice counts, in-plane
    spacing and slice thicknesses (mm), and the length scanned (mm). In-plane spacing is
    drawn as a whole-millimetre field of view over the matrix (exact in binary for 512)."""

    matrix: int
    slices: tuple[int, int]
    inplane_mm: tuple[float, float]
    thicknesses_mm: tuple[float, ...]
    length_mm: tuple[float, float]


PUBLISHED: dict[str, PublishedRange] = {
    "luna16": PublishedRange(512, (100, 700), (0.46, 0.98), (0.625, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5), (240.0, 420.0)),
    "msd_liver": PublishedRange(512, (74, 987), (0.5, 1.0), (0.7, 0.8, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0),
                                (150.0, 450.0)),
    "msd_brain": PublishedRange(240, (155, 155), (1.0, 1.0), (1.0,), (155.0, 155.0)),
}
"""Published geometry per 3D dataset (module docstring)."""


@dataclass(frozen=True)
class CaseGeometry:
    """One case's shape (x, y, z) and spacing (mm); spacing None: the dataset's demo rule."""

    shape: tuple[int, int, int]
    spacing: Vec3 | None = None


def _draw(dataset: str, rng: np.random.Generator) -> CaseGeometry:
    """Shape and spacing drawn from ``PUBLISHED[dataset]``."""
    p = PUBLISHED[dataset]
    low, high = int(np.ceil(p.inplane_mm[0] * p.matrix)), int(np.floor(p.inplane_mm[1] * p.matrix))
    inplane = float(rng.integers(low, high + 1)) / p.matrix
    thickness = float(rng.choice(p.thicknesses_mm))
    length = float(rng.uniform(*p.length_mm))
    slices = int(np.clip(round(length / thickness), *p.slices))
    return CaseGeometry((p.matrix, p.matrix, slices), (inplane, inplane, thickness))


def check_sizes(dataset: str, value: object) -> str:
    """``value`` if it is one of :data:`SIZES`, else ConfigError naming the key."""
    if not isinstance(value, str) or value not in SIZES:
        raise ConfigError(f"{dataset} phantom: 'sizes' must be one of {list(SIZES)}, got {value!r}")
    return value


def case_geometry(dataset: str, seed: int, index: int, shape: Sequence[int], sizes: str = "fixed") -> CaseGeometry:
    """Case ``index``'s geometry: ``shape`` with the demo's spacing rule (``fixed``), or a
    shape and spacing drawn from the published ranges (``published``)."""
    if check_sizes(dataset, sizes) == "fixed":
        return CaseGeometry(_check_shape(dataset, shape))
    seed = _check_count(dataset, "seed", seed, 0)
    rng = indexed_rng(seed, _STREAMS[dataset] + _DRAW_STREAM, _check_count(dataset, "index", index, 0))
    return _draw(dataset, rng)
