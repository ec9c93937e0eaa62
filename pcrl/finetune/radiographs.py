"""Chest14's fine-tuning training set (PCRL's 2D setting): the labelled radiographs of the
training patients (:mod:`pcrl.preprocessing.chest_labels`), without randomness of their own
(a 3D fine-tune neither imports nor depends on this module)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from pcrl.errors import DataError
from pcrl.preprocessing.chest_labels import LabelledImages, to_unit

__all__ = ["RadiographSet"]


class RadiographSet(Dataset[tuple[Tensor, Tensor]]):
    """Chest14 training items: ``(pixels / 255 as (1, H, W) float32, labels (L,) float32)``.

    Args:
        images: The training images (e.g. the label fraction's patients).

    Raises:
        DataError: No image.
    """

    def __init__(self, images: LabelledImages) -> None:
        if not len(images):
            raise DataError(f"{images.source}: no training radiograph")
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} of {len(self)}")
        pixels = self.images.store.images([int(self.images.index[index])])  # (1, H, W): the channel axis
        labels = self.images.labels[index].astype(np.float32)
        return torch.from_numpy(to_unit(pixels)), torch.from_numpy(labels)
