"""Intensity scaling of resampled volumes to [0, 1]: an HU window (CT) or per-channel
foreground percentiles (MRI).

docs/method.md pretrains on CT with HU clipped to [-1000, 1000] and scaled to [0, 1]; the
liver task uses the abdominal window [-160, 240] HU (as Models Genesis did for LCS) and the
BraTS MRI channels are scaled per channel between percentiles of their foreground.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pcrl.errors import ConfigError

__all__ = ["Normalization", "normalize", "percentile_scale", "window"]


@dataclass(frozen=True)
class Normalization:
    """How voxel values are scaled to [0, 1] after resampling.

    Attributes:
        kind: ``"window"`` clips to [min, max] (HU) and scales linearly to [0, 1];
            ``"percentile"`` clips each channel to the [lower, upper] percentiles of
            its nonzero (foreground) voxels and scales to [0, 1], background staying 0
            (MRI); ``"none"`` keeps the values.
        min: lower end of the window (lung CT: -1000 HU; liver: -160 HU).
        max: upper end of the window (lung CT: 1000 HU; liver: 240 HU).
        lower: lower percentile (0-100) for ``"percentile"``.
        upper: upper percentile (0-100) for ``"percentile"``.
    """

    kind: Literal["window", "percentile", "none"]
    min: float = -1000.0
    max: float = 1000.0
    lower: float = 0.5
    upper: float = 99.5

    def __post_init__(self) -> None:
        if self.kind not in ("window", "percentile", "none"):
            raise ConfigError(
                f"normalization.kind must be 'window', 'percentile' or 'none', got {self.kind!r}"
            )
        if not (math.isfinite(self.min) and math.isfinite(self.max) and self.min < self.max):
            raise ConfigError(
                f"normalization.min must be below normalization.max, got [{self.min}, {self.max}]"
            )
        if not 0.0 <= self.lower < self.upper <= 100.0:
            raise ConfigError(
                "normalization.lower/upper must satisfy 0 <= lower < upper <= 100, "
                f"got {self.lower}, {self.upper}"
            )


def normalize(arr: np.ndarray, normalization: Normalization) -> np.ndarray:
    """Scale an (x, y, z) or (C, x, y, z) array to [0, 1] as ``normalization`` says.

    Returns:
        A new float32 array of the same shape.
    """
    values = np.asarray(arr, dtype=np.float32)
    if normalization.kind == "window":
        return window(values, normalization.min, normalization.max)
    if normalization.kind == "percentile":
        channels = values if values.ndim == 4 else values[None]
        scaled = np.stack(
            [percentile_scale(c, normalization.lower, normalization.upper) for c in channels]
        )
        return scaled if values.ndim == 4 else scaled[0]
    return values.copy()


def window(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip ``values`` to [low, high] and map that interval linearly onto [0, 1]."""
    scaled = (np.asarray(values, dtype=np.float32) - np.float32(low)) / np.float32(high - low)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32, copy=False)


def percentile_scale(channel: np.ndarray, lower: float, upper: float) -> np.ndarray:
    """Window one channel between percentiles of its nonzero voxels; zeros stay 0.

    A channel without foreground stays all zero; a constant foreground becomes 1.
    """
    foreground = channel != 0
    out = np.zeros(channel.shape, dtype=np.float32)
    if not foreground.any():
        return out
    low, high = np.percentile(channel[foreground], [lower, upper])
    if high > low:
        out[foreground] = window(channel[foreground], float(low), float(high))
    else:
        out[foreground] = 1.0
    return out
