"""Scoring a task network on held-out cases: validation during fine-tuning and the test.

The same functions serve the validation of every epoch (early stopping, best checkpoint)
and the evaluate stage, so the number that selects a checkpoint and the number reported
are computed the same way (Models Genesis' protocol):

- NCC: sigmoid scores of every candidate cube, then ROC AUC
  (:func:`pcrl.evaluation.metrics.classification_metrics`);
- LCS/BMS: sliding-window inference over each whole resampled volume
  (:func:`pcrl.evaluation.metrics.predict_volume`, sigmoid per region), thresholded, then Dice and
  IoU per region (:func:`pcrl.evaluation.metrics.segmentation_metrics`), averaged over volumes;
- Chest14: in :mod:`pcrl.evaluation.radiographs` (the 2D setting's code, which a 3D stage
  neither imports nor depends on).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pcrl.evaluation.metrics import (
    binarize,
    classification_metrics,
    predict_volume,
    segmentation_metrics,
)
from pcrl.preprocessing.task_data import CandidateRows, VolumeCase, cube_batches, load_case
from pcrl.tasks import TaskSpec, get_task

log = logging.getLogger(__name__)

__all__ = ["SegmentationSettings", "candidate_scores", "eval_outputs", "score_candidates", "score_volumes"]


@torch.no_grad()
def eval_outputs(net: nn.Module, batches: Iterable[tuple[torch.Tensor, Any]], device: torch.device,
                  to_numpy: Callable[[torch.Tensor], np.ndarray]) -> list[np.ndarray]:
    """``to_numpy(net(inputs))`` of every batch, in eval mode without gradients; the network's
    training mode is restored afterwards."""
    was_training = net.training
    net.eval()
    try:
        return [to_numpy(net(inputs.to(device))) for inputs, _ in batches]
    finally:
        net.train(was_training)


def candidate_scores(net: nn.Module, rows: CandidateRows, *, device: torch.device,
                     batch_size: int = 32) -> np.ndarray:
    """Nodule probabilities (sigmoid of the logit) of every candidate, in row order."""
    scores = eval_outputs(net, cube_batches(rows, batch_size), device,
                           lambda logits: torch.sigmoid(logits.float()).reshape(-1).cpu().numpy())
    return np.concatenate(scores) if scores else np.zeros(0, np.float32)


def score_candidates(net: nn.Module, rows: CandidateRows, *, device: torch.device,
                     batch_size: int = 32) -> dict[str, float]:
    """``{"auc", "n", "positives"}`` of the network on the candidates ``rows``.

    Raises:
        DataError: The candidates hold a single class (AUC undefined).
    """
    scores = candidate_scores(net, rows, device=device, batch_size=batch_size)
    return classification_metrics(scores, rows.label)


@dataclass(frozen=True)
class SegmentationSettings:
    """Sliding-window inference settings.

    Attributes:
        roi_size: Window (x, y, z): the fine-tuning patch size.
        sw_batch_size: Windows per forward pass.
        overlap: Overlap of neighbouring windows, in [0, 1).
        threshold: Probability at or above which a voxel belongs to a region.
    """

    roi_size: tuple[int, int, int]
    sw_batch_size: int = 4
    overlap: float = 0.25
    threshold: float = 0.5


def score_volumes(net: nn.Module, cases: Sequence[VolumeCase], task: TaskSpec | str, *,
                  settings: SegmentationSettings, device: torch.device
                  ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Dice/IoU per region of the network on whole volumes.

    Returns:
        The metrics averaged over the volumes (``dice_<region>``, ``iou_<region>``,
        ``dice_mean``, ``iou_mean``), and the same per case id.

    Raises:
        DataError: A case is unreadable, has the wrong channels or foreign label values.
    """
    spec = get_task(task)
    per_case: dict[str, dict[str, float]] = {}
    for case in cases:
        image, target = load_case(case, spec)
        prob = predict_volume(net, torch.from_numpy(image)[None].to(device), settings.roi_size,
                              sw_batch_size=settings.sw_batch_size, overlap=settings.overlap)
        pred = binarize(prob.float(), settings.threshold).cpu()
        per_case[case.id] = segmentation_metrics(pred, torch.from_numpy(target)[None],
                                                 spec.class_names)
    names = next(iter(per_case.values())).keys() if per_case else []
    mean = {name: float(np.mean([m[name] for m in per_case.values()])) for name in names}
    return mean, per_case
