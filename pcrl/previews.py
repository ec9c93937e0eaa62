"""Reconstruction previews: middle slices a person can look at after each epoch.

One PNG per epoch with a row per sample and four columns — the clean view, the corrupted
input, the reconstruction target (after the spatial transform of TCA) and the decoder's
output — at the middle axial (x-y) slice, or the whole image for the 2D setting's
radiographs. DVC shows the folder as an image plot.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from pcrl.atomic import atomic_path

COLUMNS = ("clean", "input", "target", "output")


def middle_slices(images: Mapping[str, torch.Tensor], samples: int = 2) -> dict[str, np.ndarray]:
    """(samples, x, y) float arrays: channel 0, middle z slice (of a volume (N, C, x, y, z);
    an image (N, C, x, y) is shown whole), of each of :data:`COLUMNS`."""
    missing = [c for c in COLUMNS if c not in images]
    if missing:
        raise ValueError(f"preview images lack {missing}; got {sorted(images)}")
    out = {}
    for name in COLUMNS:
        vol = images[name].detach().float().cpu()
        if vol.ndim not in (4, 5):
            raise ValueError(f"preview {name}: expected (N, C, x, y, z) or (N, C, x, y), got {tuple(vol.shape)}")
        out[name] = (vol[:samples, 0, :, :, vol.shape[-1] // 2] if vol.ndim == 5 else vol[:samples, 0]).numpy()
    return out


def save_preview(images: Mapping[str, torch.Tensor], path: Path, *, title: str = "") -> Path:
    """Write the preview PNG atomically; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slices = middle_slices(images)
    rows = next(iter(slices.values())).shape[0]
    fig, axes = plt.subplots(rows, len(COLUMNS), figsize=(2.2 * len(COLUMNS), 2.2 * rows), squeeze=False)
    for col, name in enumerate(COLUMNS):
        for row in range(rows):
            ax = axes[row][col]
            ax.imshow(slices[name][row].T, cmap="gray", vmin=0.0, vmax=1.0, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return Path(path)
