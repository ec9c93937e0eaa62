"""The fine-tuning losses of each task kind (MONAI).

Segmentation uses Dice + binary cross-entropy on independent sigmoid channels
(:class:`DiceBCELoss`) or MONAI's ``DiceFocalLoss(sigmoid=True)``; NCC uses binary
cross-entropy on the logit; Chest14 binary cross-entropy on each finding's logit, averaged
over findings and images (PCRL's 2D fine-tuning, Zhou et al., ICCV 2021).
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from pcrl.errors import ConfigError
from pcrl.tasks import TaskSpec, get_task

__all__ = ["DiceBCELoss", "LossName", "build_loss"]

LossName = Literal["dice_bce", "dice_focal"]


class DiceBCELoss(nn.Module):
    """Soft Dice + binary cross-entropy on logits, every channel an independent sigmoid.

    ``loss = DiceLoss(sigmoid=True)(logits, y) + BCEWithLogits(logits, y)`` (MONAI's Dice,
    averaged over samples and channels; BCE averaged over voxels). For one channel this is
    exactly MONAI's ``DiceCELoss(sigmoid=True)``; for several channels MONAI's DiceCE
    applies a softmax cross-entropy across channels, which is wrong for the nested BraTS
    regions (a tumour-core voxel is also whole tumour), hence this combination.

    Args:
        lambda_dice: Weight of the Dice term.
        lambda_bce: Weight of the cross-entropy term.
    """

    def __init__(self, lambda_dice: float = 1.0, lambda_bce: float = 1.0) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(sigmoid=True)
        self.bce = nn.BCEWithLogitsLoss()
        self.lambda_dice = lambda_dice
        self.lambda_bce = lambda_bce

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of (N, C, *spatial) logits against a {0, 1} target of the same shape."""
        if logits.shape != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} "
                             "must have the same shape")
        return (self.lambda_dice * self.dice(logits, target)
                + self.lambda_bce * self.bce(logits, target))


def build_loss(task: TaskSpec | str, name: LossName = "dice_bce") -> nn.Module:
    """The task's loss: BCE with logits for NCC and per finding for Chest14 (``name`` is not
    read for them); ``dice_bce`` or ``dice_focal`` for segmentation.

    Raises:
        ConfigError: Unknown loss name.
    """
    spec = get_task(task)
    if spec.kind in ("classification", "multilabel"):
        return nn.BCEWithLogitsLoss()
    if name == "dice_bce":
        return DiceBCELoss()
    if name == "dice_focal":
        from monai.losses import DiceFocalLoss

        return DiceFocalLoss(sigmoid=True)
    raise ConfigError(f"loss must be 'dice_bce' or 'dice_focal', got {name!r}")
