"""Evaluation of fine-tuned models: the metrics of the Models Genesis benchmark, via MONAI.

PCRL (Zhou et al., ICCV 2021, "Protocol" in docs/method.md) is
evaluated on the Models Genesis benchmark (Zhou et al., MICCAI 2019 / MedIA 2021):

- NCC, lung nodule false-positive reduction: ROC AUC of the candidate scores
  (:func:`classification_metrics`);
- LCS, liver segmentation, and BMS, brain tumour segmentation (BraTS regions whole tumour,
  tumour core, enhancing tumour, one binary channel each): Dice and IoU per channel
  (:func:`segmentation_metrics`) of whole volumes predicted by sliding windows
  (:func:`predict_volume`, then :func:`binarize`).

The metrics themselves are MONAI's (``compute_roc_auc``, ``DiceMetric``, ``MeanIoU``), and
so is the sliding-window inference; this module only fixes their conventions and checks
their inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.metrics import DiceMetric, MeanIoU, compute_roc_auc
from torch import Tensor, nn

from pcrl.errors import DataError

__all__ = ["binarize", "classification_metrics", "predict_volume", "segmentation_metrics"]

Activation = Literal["sigmoid", "softmax", "none"]


# ------------------------------------------------------------------ classification


def classification_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """ROC AUC of binary scores, as in the NCC task of the Models Genesis benchmark.

    Ties between a positive and a negative score count one half (the Mann-Whitney
    definition, which MONAI's ``compute_roc_auc`` implements).

    Args:
        scores: (N,) or (N, 1) scores, higher meaning "positive" (e.g. nodule probability).
        labels: (N,) or (N, 1) labels in {0, 1} (bool accepted).

    Returns:
        ``{"auc": float, "n": int, "positives": int}``.

    Raises:
        ValueError: the shapes do not describe N scores and N labels.
        DataError: labels other than 0/1, non-finite scores, or a single class in the
            labels (the AUC is then undefined; the message gives both counts).
    """
    y_score = _as_vector(scores, "scores").astype(np.float64)
    y_true = _as_vector(labels, "labels")
    if y_score.shape != y_true.shape:
        raise ValueError(f"scores and labels differ in length: {y_score.shape[0]} vs {y_true.shape[0]}")
    bad = ~np.isin(y_true, (0, 1))
    if bad.any():
        raise DataError(f"labels must be 0 or 1; found {sorted(set(np.asarray(y_true)[bad].tolist()))[:5]}")
    if not np.isfinite(y_score).all():
        raise DataError(f"{int((~np.isfinite(y_score)).sum())} of {y_score.size} scores are NaN or infinite")
    positives = int(y_true.astype(bool).sum())
    negatives = int(y_true.size - positives)
    if positives == 0 or negatives == 0:
        raise DataError(
            f"ROC AUC is undefined when the test set has a single class: "
            f"{positives} positive(s) and {negatives} negative(s)"
        )
    auc = compute_roc_auc(torch.from_numpy(y_score), torch.from_numpy(y_true.astype(np.int64)))
    return {"auc": float(np.asarray(auc)), "n": int(y_true.size), "positives": positives}


def multilabel_metrics(scores: np.ndarray, labels: np.ndarray, names: Sequence[str], *,
                       skip_single_class: bool = False) -> dict[str, float]:
    """ROC AUC per label and their mean: the Chest14 task (Wang et al., CVPR 2017; PCRL's 2D setting).

    Args:
        scores: (N, L) scores, higher meaning "present".
        labels: (N, L) 0/1 labels.
        names: the L label names (e.g. the 14 findings); metric keys ``auc_<name>``.
        skip_single_class: leave out a label with a single class among the N (its AUC is
            undefined) instead of raising; the mean is then over the labels scored, and
            ``labels_scored`` says how many. On the real ChestX-ray14 val and test lists
            every finding has positives; a small phantom split does not.

    Returns:
        ``{"auc_<name>": ..., "auc_mean": mean over the labels scored, "labels_scored": count,
        "n": N}``.

    Raises:
        ValueError: shapes that do not fit ``names``.
        DataError: a label column with a single class (its AUC is undefined; the message
            names the label and its counts) unless skipped, no label scorable, labels other
            than 0/1, non-finite scores.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 2 or scores.shape != labels.shape or scores.shape[1] != len(names):
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must both be (N, {len(names)})")
    out: dict[str, float] = {}
    skipped = []
    for j, name in enumerate(names):
        column = labels[:, j]
        if skip_single_class and np.isin(column, (0, 1)).all() and len(np.unique(column)) == 1:
            skipped.append(name)
            continue
        try:
            out[f"auc_{name}"] = classification_metrics(scores[:, j], column)["auc"]
        except DataError as exc:
            raise DataError(f"label {name}: {exc}") from None
    if not out:
        raise DataError(f"no label has both classes among the {scores.shape[0]} samples: no AUC is defined")
    out["auc_mean"] = float(np.mean(list(out.values())))
    out["labels_scored"] = len(names) - len(skipped)
    out["n"] = int(scores.shape[0])
    return out


def _as_vector(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` as a 1-D array; (N, 1) columns are squeezed."""
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"{name} must have shape (N,) or (N, 1), got {array.shape}")
    return array


# ------------------------------------------------------------------ segmentation


def segmentation_metrics(pred: Tensor, target: Tensor, names: Sequence[str]) -> dict[str, float]:
    """Dice and IoU per binary channel, averaged over the batch, and their channel means.

    Each channel is one region scored on its own (``include_background=True``: e.g. the
    liver for LCS; whole tumour, tumour core and enhancing tumour for BMS, the BraTS
    regions), as in the Models Genesis benchmark.

    Empty regions: MONAI is called with ``ignore_empty=False``. Where the target channel of
    a volume is empty, MONAI then scores 1.0 if the prediction is empty too (nothing to
    find, nothing found: perfect) and 0.0 otherwise (any predicted voxel is a false
    positive), for Dice and IoU alike. So no value is NaN and every volume counts in the
    mean. (With MONAI's default ``ignore_empty=True`` such volumes would be NaN and left
    out of the mean, which rewards no prediction on tumour-free cases.)

    Args:
        pred: (N, C, x, y, z) binary prediction (0/1 of any dtype, e.g. from :func:`binarize`).
        target: binary target of the same shape.
        names: C channel names, used as keys ``dice_<name>`` and ``iou_<name>``.

    Returns:
        ``dice_<name>`` and ``iou_<name>`` (mean over the N volumes) for every channel, and
        ``dice_mean`` / ``iou_mean``, the mean over channels of these.

    Raises:
        ValueError: shapes differ, are not (N, C, spatial...), the names do not match the
            channels, or the inputs are not binary.
    """
    names = _check_segmentation_inputs(pred, target, names)
    y_pred = pred.detach().float()
    y = target.detach().float()
    dice = _per_channel(DiceMetric(include_background=True, reduction="mean_batch", ignore_empty=False), y_pred, y)
    iou = _per_channel(MeanIoU(include_background=True, reduction="mean_batch", ignore_empty=False), y_pred, y)
    out: dict[str, float] = {}
    for index, name in enumerate(names):
        out[f"dice_{name}"] = dice[index]
        out[f"iou_{name}"] = iou[index]
    out["dice_mean"] = float(np.mean(dice))
    out["iou_mean"] = float(np.mean(iou))
    return out


def _per_channel(metric: DiceMetric | MeanIoU, y_pred: Tensor, y: Tensor) -> list[float]:
    """Run a cumulative MONAI metric once and return its per-channel batch means."""
    metric(y_pred=y_pred, y=y)
    values = metric.aggregate()
    metric.reset()
    return [float(v) for v in torch.as_tensor(values).reshape(-1)]


def _check_segmentation_inputs(pred: Tensor, target: Tensor, names: Sequence[str]) -> list[str]:
    """Validate shapes, channel names and binariness; return the names as a list."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.ndim < 3:
        raise ValueError(f"expected (N, C, spatial...) tensors, got shape {tuple(pred.shape)}")
    names = [str(n) for n in names]
    if len(names) != pred.shape[1] or len(set(names)) != len(names):
        raise ValueError(f"need {pred.shape[1]} distinct channel names, got {names}")
    for label, tensor in (("pred", pred), ("target", target)):
        if not bool(((tensor == 0) | (tensor == 1)).all()):
            raise ValueError(f"{label} must be binary (0/1); binarize probabilities first")
    return names


# ------------------------------------------------------------------ inference


def predict_volume(
    model: nn.Module,
    image: Tensor,
    roi_size: Sequence[int],
    *,
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    activation: Activation = "sigmoid",
) -> Tensor:
    """Probabilities over a whole volume by MONAI's sliding-window inference.

    The model is run in eval mode under ``torch.no_grad`` (its previous mode is restored
    afterwards), on the device of ``image``: the model must already live there. Windows of
    ``roi_size`` overlap by ``overlap`` and their outputs are blended with equal weights
    (MONAI's ``mode="constant"``); a volume smaller than ``roi_size`` along some axis is
    zero-padded by MONAI and the prediction cropped back to the volume. The activation is
    applied once, to the blended output.

    Args:
        model: Maps (B, C_in, *roi_size) to (B, C_out, *roi_size).
        image: (N, C_in, x, y, z) volume(s), e.g. one resampled case (1, C, x, y, z).
        roi_size: Window size (x, y, z), e.g. the fine-tuning cube size.
        sw_batch_size: Windows per forward pass.
        overlap: Fraction of overlap between neighbouring windows, in [0, 1).
        activation: ``"sigmoid"`` (independent binary channels, the default),
            ``"softmax"`` over channels, or ``"none"`` when the model already outputs
            probabilities (e.g. a ``UNet3D`` built with ``out_activation="sigmoid"``).

    Returns:
        (N, C_out, x, y, z) float tensor on the image's device.

    Raises:
        ValueError: ``image`` is not 5-D, ``roi_size`` does not have 3 positive sizes, or
            ``activation`` is unknown.
    """
    if image.ndim != 5:
        raise ValueError(f"image must be (N, C, x, y, z), got shape {tuple(image.shape)}")
    roi = tuple(int(s) for s in roi_size)
    if len(roi) != 3 or min(roi) < 1:
        raise ValueError(f"roi_size must be 3 positive sizes (x, y, z), got {tuple(roi_size)}")
    if activation not in ("sigmoid", "softmax", "none"):
        raise ValueError(f"activation must be 'sigmoid', 'softmax' or 'none', got {activation!r}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = sliding_window_inference(
                inputs=image, roi_size=roi, sw_batch_size=sw_batch_size, predictor=model, overlap=overlap
            )
    finally:
        model.train(was_training)
    return _activate(torch.as_tensor(output), activation)


def _activate(output: Tensor, activation: Activation) -> Tensor:
    """Apply the named activation over the channel dimension."""
    if activation == "sigmoid":
        return torch.sigmoid(output)
    if activation == "softmax":
        return torch.softmax(output, dim=1)
    return output


def binarize(prob: Tensor, threshold: float = 0.5) -> Tensor:
    """0/1 mask of ``prob >= threshold`` with the dtype of ``prob`` (MONAI ``AsDiscrete``'s rule)."""
    return (prob >= threshold).to(prob.dtype)
