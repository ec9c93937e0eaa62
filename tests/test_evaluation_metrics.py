"""Tests of pcrl.evaluation.metrics: AUC, Dice / IoU and sliding-window inference against hand values."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from pcrl.errors import DataError
from pcrl.evaluation.metrics import binarize, classification_metrics, predict_volume, segmentation_metrics

# ---------------------------------------------------------------------- AUC

# Positives 0.9, 0.8, 0.3 against negatives 0.8, 0.6, 0.3 (two tied pairs):
# 0.9 wins 3; 0.8 ties 0.8 and wins 2 -> 2.5; 0.3 loses 2 and ties 0.3 -> 0.5. AUC = 6 / 9.
SCORES = np.array([0.9, 0.8, 0.8, 0.6, 0.3, 0.3])
LABELS = np.array([1, 1, 0, 0, 1, 0])


def _pair_count_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUC as the share of (positive, negative) pairs ordered right, ties counting 1/2."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_matches_hand_count_with_ties():
    out = classification_metrics(SCORES, LABELS)
    assert out["auc"] == pytest.approx(6 / 9, abs=1e-12)
    assert out["auc"] == pytest.approx(_pair_count_auc(SCORES, LABELS), abs=1e-12)
    assert (out["n"], out["positives"]) == (6, 3)


def test_auc_ignores_order_and_accepts_columns_and_bools():
    order = np.array([3, 0, 5, 1, 4, 2])
    out = classification_metrics(SCORES[order][:, None], LABELS[order].astype(bool)[:, None])
    assert out["auc"] == pytest.approx(6 / 9, abs=1e-12)


@pytest.mark.parametrize(("labels", "expected"), [([0, 0, 1, 1], 1.0), ([1, 1, 0, 0], 0.0), ([0, 1, 0, 1], 0.75)])
def test_auc_extremes(labels, expected):
    # Scores 0.1 < 0.2 < 0.3 < 0.4; [0, 1, 0, 1]: positives 0.2, 0.4 -> 1 + 2 wins of 4 pairs.
    out = classification_metrics(np.array([0.1, 0.2, 0.3, 0.4]), np.array(labels))
    assert out["auc"] == pytest.approx(expected)


def test_single_class_raises_with_counts():
    with pytest.raises(DataError, match=r"undefined.*2 positive\(s\) and 0 negative\(s\)"):
        classification_metrics(np.array([0.2, 0.7]), np.array([1, 1]))


def test_bad_labels_scores_and_shapes():
    with pytest.raises(DataError, match="0 or 1"):
        classification_metrics(np.array([0.2, 0.7]), np.array([0, 2]))
    with pytest.raises(DataError, match="NaN"):
        classification_metrics(np.array([0.2, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="length"):
        classification_metrics(np.array([0.2, 0.7, 0.1]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\(N,\)"):
        classification_metrics(np.zeros((2, 2)), np.zeros((2, 2)))


# ---------------------------------------------------------------------- Dice / IoU


def _masks() -> tuple[torch.Tensor, torch.Tensor]:
    """(2, 2, 2, 2, 1) masks; channel 0 "wt", channel 1 "et"; voxels listed flat (4 each)."""
    flat = {  # (volume, channel): (pred, target)
        (0, 0): ([1, 1, 1, 0], [1, 1, 0, 0]),  # |P|=3 |T|=2 |P&T|=2: Dice 4/5, IoU 2/3
        (0, 1): ([0, 0, 0, 0], [0, 0, 0, 0]),  # both empty: 1, 1
        (1, 0): ([1, 0, 0, 0], [0, 1, 1, 0]),  # disjoint: 0, 0
        (1, 1): ([0, 0, 0, 1], [0, 0, 0, 0]),  # empty target, a false positive: 0, 0
    }
    pred, target = torch.zeros(2, 2, 2, 2, 1), torch.zeros(2, 2, 2, 2, 1)
    for (n, c), (p, t) in flat.items():
        pred[n, c] = torch.tensor(p, dtype=torch.float32).reshape(2, 2, 1)
        target[n, c] = torch.tensor(t, dtype=torch.float32).reshape(2, 2, 1)
    return pred, target


def test_dice_iou_against_hand_values():
    pred, target = _masks()
    out = segmentation_metrics(pred, target, ["wt", "et"])
    expected = {
        "dice_wt": (0.8 + 0.0) / 2,
        "iou_wt": (2 / 3 + 0.0) / 2,
        "dice_et": (1.0 + 0.0) / 2,
        "iou_et": (1.0 + 0.0) / 2,
    }
    expected["dice_mean"] = (expected["dice_wt"] + expected["dice_et"]) / 2
    expected["iou_mean"] = (expected["iou_wt"] + expected["iou_et"]) / 2
    assert set(out) == set(expected)
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, abs=1e-6), key


def test_channel_names_follow_channels():
    pred, target = _masks()
    out = segmentation_metrics(pred.flip(1), target.flip(1), ["et", "wt"])
    assert out["dice_wt"] == pytest.approx(0.4, abs=1e-6)
    assert out["dice_et"] == pytest.approx(0.5, abs=1e-6)


def test_both_empty_counts_as_perfect():
    empty = torch.zeros(1, 1, 3, 3, 3)
    assert segmentation_metrics(empty, empty, ["liver"]) == {
        "dice_liver": 1.0, "iou_liver": 1.0, "dice_mean": 1.0, "iou_mean": 1.0,
    }


def test_segmentation_rejects_bad_inputs():
    pred, target = _masks()
    with pytest.raises(ValueError, match="channel names"):
        segmentation_metrics(pred, target, ["wt"])
    with pytest.raises(ValueError, match="binary"):
        segmentation_metrics(pred * 0.7, target, ["wt", "et"])
    with pytest.raises(ValueError, match="shapes differ"):
        segmentation_metrics(pred[:1], target, ["wt", "et"])


def test_binarize_threshold_is_inclusive():
    prob = torch.tensor([0.2, 0.5, 0.51, 0.9], dtype=torch.float64)
    out = binarize(prob)
    assert out.dtype == torch.float64
    assert out.tolist() == [0.0, 1.0, 1.0, 1.0]
    assert binarize(prob, threshold=0.6).tolist() == [0.0, 0.0, 0.0, 1.0]


# ---------------------------------------------------------------------- sliding window


def _pointwise(in_channels: int = 2, out_channels: int = 3) -> nn.Module:
    """A 1x1x1 conv: each output voxel depends on its input voxel only, so windows cannot matter."""
    torch.manual_seed(0)
    return nn.Conv3d(in_channels, out_channels, kernel_size=1)


@pytest.mark.parametrize(
    "shape",
    [(1, 2, 5, 6, 3), (1, 2, 19, 13, 9), (2, 2, 8, 3, 11)],
    ids=["smaller-than-roi", "larger-than-roi", "mixed"],
)
def test_sliding_window_equals_direct_application(shape):
    model = _pointwise()
    image = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    prob = predict_volume(model, image, (8, 8, 4), sw_batch_size=3, overlap=0.25)
    with torch.no_grad():
        direct = torch.sigmoid(model(image))
    assert prob.shape == direct.shape
    assert not prob.requires_grad
    torch.testing.assert_close(prob, direct, rtol=0, atol=1e-6)


def test_softmax_and_none_activations():
    model = _pointwise()
    image = torch.randn(1, 2, 10, 9, 5, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model(image)
    soft = predict_volume(model, image, (4, 4, 4), overlap=0.5, activation="softmax")
    torch.testing.assert_close(soft, torch.softmax(logits, dim=1), rtol=0, atol=1e-6)
    torch.testing.assert_close(soft.sum(1), torch.ones(1, 10, 9, 5), rtol=0, atol=1e-6)
    raw = predict_volume(model, image, (4, 4, 4), activation="none")
    torch.testing.assert_close(raw, logits, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="activation"):
        predict_volume(model, image, (4, 4, 4), activation="relu")  # type: ignore[arg-type]


def test_runs_in_eval_mode_and_restores_training_mode():
    model = nn.Sequential(nn.Conv3d(1, 2, kernel_size=1), nn.BatchNorm3d(2))
    model[1].running_mean.fill_(0.5)
    model[1].running_var.fill_(4.0)
    model.train()
    image = torch.randn(1, 1, 6, 6, 6, generator=torch.Generator().manual_seed(3))
    prob = predict_volume(model, image, (4, 4, 4), activation="none")
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        eval_out = model(image)
    torch.testing.assert_close(prob, eval_out, rtol=0, atol=1e-5)
    assert model[1].running_mean.tolist() == [0.5, 0.5]  # no batch statistics were taken


def test_predict_volume_rejects_bad_shapes():
    model = _pointwise()
    with pytest.raises(ValueError, match="N, C, x, y, z"):
        predict_volume(model, torch.zeros(2, 5, 5, 5), (4, 4, 4))
    with pytest.raises(ValueError, match="roi_size"):
        predict_volume(model, torch.zeros(1, 2, 5, 5, 5), (4, 4))


def _pairwise_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney by hand: P(score of a positive > score of a negative), ties one half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float(np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg]))


def test_multilabel_auc_per_finding_and_mean_by_hand():
    from pcrl.evaluation.metrics import multilabel_metrics

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(40, 3))
    scores = labels * rng.uniform(0.0, 1.0, size=(40, 3)) + rng.uniform(0.0, 0.8, size=(40, 3))
    scores[:5, 0] = 0.5  # ties
    out = multilabel_metrics(scores, labels, ["Mass", "Nodule", "Hernia"])
    expected = [_pairwise_auc(scores[:, j], labels[:, j]) for j in range(3)]
    assert [out["auc_Mass"], out["auc_Nodule"], out["auc_Hernia"]] == pytest.approx(expected)
    assert out["auc_mean"] == pytest.approx(np.mean(expected)) and out["n"] == 40
    assert out["labels_scored"] == 3
    labels[:, 2] = 0
    with pytest.raises(DataError, match="label Hernia: ROC AUC is undefined"):
        multilabel_metrics(scores, labels, ["Mass", "Nodule", "Hernia"])
    skipped = multilabel_metrics(scores, labels, ["Mass", "Nodule", "Hernia"], skip_single_class=True)
    assert "auc_Hernia" not in skipped and skipped["labels_scored"] == 2
    assert skipped["auc_mean"] == pytest.approx(np.mean(expected[:2]))
    labels[:, :2] = 1
    with pytest.raises(DataError, match="no label has both classes"):
        multilabel_metrics(scores, labels, ["Mass", "Nodule", "Hernia"], skip_single_class=True)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        multilabel_metrics(scores, labels, ["Mass", "Nodule"])
