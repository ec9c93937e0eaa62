"""pcrl.evaluation.lowlabel: paired bootstrap, verdicts, k-NN and probe AUCs, label sets.

References are written here independently of the module: a brute-force k-NN with explicit
loops, a Mann-Whitney AUC, and analytic standard errors for the bootstrap's width.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from pcrl.errors import DataError
from pcrl.evaluation.lowlabel import (
    MIN_SEEDS,
    Comparison,
    draw_label_sets,
    knn_auc,
    paired_bootstrap,
    probe_auc_on,
    verdict,
)

# ------------------------------------------------------------------ paired_bootstrap


def test_a_constant_gain_gives_a_zero_width_interval_whatever_the_label_sets() -> None:
    """arm = c_l + 0.1, scratch = c_l: every resample moves both sides by the same label sets,
    so every bootstrap difference is exactly 0.1 although c_l varies a lot between sets."""
    c = np.array([0.50, 0.62, 0.71, 0.55, 0.93, 0.48, 0.66])
    arm = np.tile(c + 0.1, (3, 1))  # S = 3 seeds
    scratch = np.tile(c, (5, 1))  # R = 5 inits
    result = paired_bootstrap(arm, scratch, samples=500, seed=1)
    assert result.difference == pytest.approx(0.1, abs=1e-12)
    assert result.low == pytest.approx(0.1, abs=1e-12)
    assert result.high == pytest.approx(0.1, abs=1e-12)
    assert result.arm_mean == pytest.approx(sum(c) / 7 + 0.1, abs=1e-12)
    assert result.scratch_mean == pytest.approx(sum(c) / 7, abs=1e-12)
    assert (result.seeds, result.label_sets) == (3, 7)


def test_means_are_the_plain_means_of_all_entries() -> None:
    arm = np.array([[0.6, 0.7], [0.8, 0.9], [0.5, 0.4]])
    scratch = np.array([[0.5, 0.5], [0.6, 0.2]])
    result = paired_bootstrap(arm, scratch, samples=50, seed=0)
    assert result.arm_mean == pytest.approx((0.6 + 0.7 + 0.8 + 0.9 + 0.5 + 0.4) / 6, abs=1e-12)
    assert result.scratch_mean == pytest.approx((0.5 + 0.5 + 0.6 + 0.2) / 4, abs=1e-12)
    assert result.difference == pytest.approx(3.9 / 6 - 1.8 / 4, abs=1e-12)


@pytest.mark.parametrize("arm_shape, scratch_shape", [((3, 4), (5, 5)), ((3,), (5, 3)), ((3, 4), (4,))])
def test_arrays_that_do_not_share_label_sets_are_refused(arm_shape: tuple, scratch_shape: tuple) -> None:
    with pytest.raises(ValueError, match="paired_bootstrap"):
        paired_bootstrap(np.zeros(arm_shape), np.zeros(scratch_shape), samples=10, seed=0)


def _noisy(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    c = rng.uniform(0.5, 0.9, size=8)
    arm = c + 0.05 + sigma * rng.standard_normal((4, 8))
    scratch = c + sigma * rng.standard_normal((6, 8))
    return arm, scratch


def test_noisy_interval_holds_the_point_difference_and_widens_with_the_noise() -> None:
    arm, scratch = _noisy(0.02)
    small = paired_bootstrap(arm, scratch, samples=1000, seed=3)
    arm_big, scratch_big = _noisy(0.06)
    big = paired_bootstrap(arm_big, scratch_big, samples=1000, seed=3)
    for result in (small, big):
        assert result.low < result.difference < result.high
    assert big.high - big.low > small.high - small.low
    # The same draws scaled by 3 around the same c_l + 0.05: with the same resamples every
    # bootstrap difference is 0.05 + 3 x (noise part), so the interval is exactly 3x as wide.
    assert (big.high - big.low) == pytest.approx(3 * (small.high - small.low), rel=1e-9)


def test_same_seed_same_interval_other_seed_other_interval() -> None:
    arm, scratch = _noisy(0.03)
    a = paired_bootstrap(arm, scratch, samples=300, seed=11)
    b = paired_bootstrap(arm, scratch, samples=300, seed=11)
    c = paired_bootstrap(arm, scratch, samples=300, seed=12)
    assert (a.low, a.high) == (b.low, b.high)
    assert (a.low, a.high) != (c.low, c.high)


def test_interval_width_matches_the_standard_error_over_seeds() -> None:
    """One label set: only seeds and inits are resampled; the 95 % percentile interval of a mean
    difference is about 2 x 1.96 x sqrt(var_arm / S + var_scratch / R) (plug-in variances)."""
    rng = np.random.default_rng(0)
    arm = rng.normal(0.7, 0.05, size=(60, 1))
    scratch = rng.normal(0.6, 0.08, size=(80, 1))
    result = paired_bootstrap(arm, scratch, samples=4000, seed=0, level=0.95)
    se = math.sqrt(arm.var() / 60 + scratch.var() / 80)
    assert result.high - result.low == pytest.approx(2 * 1.959964 * se, rel=0.08)


def test_interval_width_follows_the_paired_differences_not_the_label_set_spread() -> None:
    """One seed and one init: the label sets are resampled, paired. Their AUCs c_l spread
    widely (sd 0.1) but the differences d_l barely (sd 0.01): the width is that of the mean
    of d, about 2 x 1.96 x sd(d) / sqrt(L); unpaired it would be ~10x wider."""
    rng = np.random.default_rng(1)
    n_sets = 200
    c = rng.normal(0.6, 0.1, size=n_sets)
    d = rng.normal(0.03, 0.01, size=n_sets)
    result = paired_bootstrap((c + d)[None], c[None], samples=4000, seed=2, level=0.95)
    expected = 2 * 1.959964 * d.std() / math.sqrt(n_sets)
    assert result.high - result.low == pytest.approx(expected, rel=0.08)
    assert result.difference == pytest.approx(d.mean(), abs=1e-12)


def test_level_narrows_the_interval() -> None:
    arm, scratch = _noisy(0.03)
    wide = paired_bootstrap(arm, scratch, samples=1000, seed=5, level=0.95)
    narrow = paired_bootstrap(arm, scratch, samples=1000, seed=5, level=0.6)
    assert wide.low < narrow.low < narrow.high < wide.high


# ------------------------------------------------------------------ verdict


def _comparison(low: float, high: float, seeds: int = 3) -> Comparison:
    return Comparison(arm_mean=0.7, scratch_mean=0.6, difference=(low + high) / 2, low=low, high=high,
                      seeds=seeds, label_sets=24)


@pytest.mark.parametrize("low, high, seeds, expected", [
    (0.01, 0.05, 3, "above scratch"),
    (0.01, 0.05, 10, "above scratch"),
    (-0.05, -0.01, 3, "below scratch"),
    (-0.02, 0.03, 3, "cannot tell"),
    (0.0, 0.03, 3, "cannot tell"),  # low == 0: the interval holds 0
    (-0.03, 0.0, 3, "cannot tell"),
    (0.01, 0.05, 2, "cannot tell"),  # fewer than MIN_SEEDS seeds
    (-0.05, -0.01, 1, "cannot tell"),
])
def test_verdict(low: float, high: float, seeds: int, expected: str) -> None:
    assert MIN_SEEDS == 3
    assert verdict(_comparison(low, high, seeds)) == expected
    assert _comparison(low, high, seeds).to_json()["verdict"] == expected


# ------------------------------------------------------------------ knn_auc


def _mann_whitney_auc(scores: list, labels: list[int]) -> float:
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    total = 0.0
    for p in pos:
        for n in neg:
            total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(pos) * len(neg))


def _brute_force_knn_auc(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray,
                         test_labels: np.ndarray, k: int) -> float:
    n, dims = train.shape
    mean = [sum(train[i, j] for i in range(n)) / n for j in range(dims)]
    std = [math.sqrt(sum((train[i, j] - mean[j]) ** 2 for i in range(n)) / n) for j in range(dims)]

    def unit(row: np.ndarray) -> list[float]:
        z = [(row[j] - mean[j]) / std[j] for j in range(dims)]
        norm = math.sqrt(sum(v * v for v in z))
        return [v / norm for v in z]

    a = [unit(train[i]) for i in range(n)]
    n_pos = sum(int(v) for v in train_labels)
    n_neg = n - n_pos
    # Exact fractions: two test points with the same vote must score exactly the same (a tie).
    weight = [Fraction(1, 2 * n_pos) if train_labels[i] == 1 else Fraction(1, 2 * n_neg) for i in range(n)]
    scores: list[Fraction] = []
    for row in test:
        b = unit(row)
        sims = [sum(x * y for x, y in zip(b, a[i])) for i in range(n)]
        nearest = sorted(range(n), key=lambda i: (-sims[i], i))[:k]
        total = sum(weight[i] for i in nearest)
        scores.append(sum(weight[i] for i in nearest if train_labels[i] == 1) / total)
    return _mann_whitney_auc(scores, [int(v) for v in test_labels])


@pytest.mark.parametrize("k", [1, 3, 5, 7])
def test_knn_auc_matches_a_brute_force_reference(k: int) -> None:
    rng = np.random.default_rng(42)
    train_labels = np.array([1] * 6 + [0] * 24)  # imbalanced: the class weights matter
    test_labels = np.array([1] * 8 + [0] * 12)
    # Different scales and offsets per feature (standardisation matters); weak class signal.
    scale, offset = np.array([1.0, 10.0, 0.1, 3.0]), np.array([5.0, -2.0, 0.0, 1.0])
    train = (rng.standard_normal((30, 4)) + 0.7 * train_labels[:, None]) * scale + offset
    test = (rng.standard_normal((20, 4)) + 0.7 * test_labels[:, None]) * scale + offset
    expected = _brute_force_knn_auc(train, train_labels, test, test_labels, k)
    got = knn_auc(torch.from_numpy(train).float(), train_labels, torch.from_numpy(test).float(), test_labels, k=k)
    assert got == pytest.approx(expected, abs=1e-12)
    assert 0.0 < expected < 1.0  # a non-trivial case


def test_knn_auc_by_hand_with_ties() -> None:
    """Training points at 0 deg (nodule), 90 deg, 180 deg (not), 270 deg (nodule) on the unit
    circle: mean 0 and equal deviations, so standardising keeps the angles. With k = 1 the test
    points at 10, 80 (nodules) and 200, 190 deg (not) score 1, 0 and 0, 0: the pairs give
    1 + 1 + 1/2 + 1/2 over 4 = 0.75."""
    def at(*degrees: float) -> torch.Tensor:
        rad = np.deg2rad(degrees)
        return torch.from_numpy(np.stack([np.cos(rad), np.sin(rad)], axis=1))

    train, train_labels = at(0, 90, 180, 270), np.array([1, 0, 0, 1])
    test, test_labels = at(10, 80, 200, 190), np.array([1, 1, 0, 0])
    assert knn_auc(train, train_labels, test, test_labels, k=1) == pytest.approx(0.75, abs=1e-12)


def test_knn_auc_is_one_on_separated_clusters_and_zero_when_flipped() -> None:
    train = torch.tensor([[10.0, 10.1], [10.2, 9.9], [9.8, 10.0], [-10.0, -9.9], [-10.1, -10.2], [-9.9, -10.0]])
    train_labels = np.array([1, 1, 1, 0, 0, 0])
    test = torch.tensor([[9.0, 11.0], [11.0, 9.5], [-9.5, -11.0], [-11.0, -8.0]])
    test_labels = np.array([1, 1, 0, 0])
    assert knn_auc(train, train_labels, test, test_labels, k=3) == 1.0
    assert knn_auc(train, train_labels, test, 1 - test_labels, k=3) == 0.0


def test_knn_auc_k_larger_than_the_training_set_ties_every_score() -> None:
    """k >= N: every test point sees all training points, all scores equal 0.5 -> AUC 0.5."""
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.5]])
    test = torch.tensor([[1.0, 0.1], [-1.0, 0.4], [0.3, 0.3]])
    assert knn_auc(train, np.array([1, 0, 0]), test, np.array([1, 0, 0]), k=50) == 0.5


# ------------------------------------------------------------------ probe_auc_on


def test_probe_auc_on_separable_data_is_one_and_flipped_labels_zero() -> None:
    rng = np.random.default_rng(3)
    train_labels = np.array([0] * 10 + [1] * 5)
    test_labels = np.array([0] * 7 + [1] * 6)
    train = torch.from_numpy(rng.standard_normal((15, 3)) + 4.0 * train_labels[:, None])
    test = torch.from_numpy(rng.standard_normal((13, 3)) + 4.0 * test_labels[:, None])
    assert probe_auc_on(train, train_labels, test, test_labels, l2=1e-2) == 1.0
    assert probe_auc_on(train, train_labels, test, 1 - test_labels, l2=1e-2) == 0.0


# ------------------------------------------------------------------ draw_label_sets


def _labels_by_case() -> dict[str, np.ndarray]:
    return {
        "a": np.array([0, 0, 1]), "b": np.array([0, 0]), "c": np.array([0]), "d": np.array([1, 0, 0, 0]),
        "e": np.array([0, 0, 0]), "f": np.array([1]), "g": np.array([0, 1]), "h": np.array([0, 0]),
    }


def _has_both_classes(chosen: list[str], labels: dict[str, np.ndarray]) -> bool:
    values = set()
    for case in chosen:
        values |= set(labels[case].tolist())
    return values == {0, 1}


def test_label_sets_are_distinct_valid_and_seeded() -> None:
    labels = _labels_by_case()
    cases = list(labels)
    sets = draw_label_sets(cases, labels, count=10, scans=2, seed=0)
    assert len(sets) == 10
    for chosen in sets:
        assert len(chosen) == 2 and len(set(chosen)) == 2
        assert set(chosen) <= set(cases)
        assert _has_both_classes(chosen, labels)
    assert len({frozenset(s) for s in sets}) == 10
    assert draw_label_sets(cases, labels, count=10, scans=2, seed=0) == sets
    assert draw_label_sets(cases, labels, count=10, scans=2, seed=1) != sets


def test_label_sets_of_single_class_scans_only_mix_them() -> None:
    """Only 'p' holds nodules: every set of 2 must contain 'p'."""
    labels = {"p": np.array([1, 1]), "n1": np.array([0]), "n2": np.array([0, 0]), "n3": np.array([0])}
    sets = draw_label_sets(list(labels), labels, count=3, scans=2, seed=4)
    assert sorted(sorted(s) for s in sets) == [["n1", "p"], ["n2", "p"], ["n3", "p"]]


def test_every_scan_single_class_is_a_data_error() -> None:
    labels = {c: np.array([0, 0]) for c in "abcdef"}
    with pytest.raises(DataError, match="both classes"):
        draw_label_sets(list(labels), labels, count=2, scans=3, seed=0)


def test_more_scans_per_set_than_scans_is_a_data_error() -> None:
    labels = _labels_by_case()
    with pytest.raises(DataError, match=r"9 scans.*8 training scans"):
        draw_label_sets(list(labels), labels, count=1, scans=9, seed=0)


def test_more_sets_than_exist_is_a_data_error() -> None:
    """Four scans, sets of 2: C(4, 2) = 6 distinct sets at most."""
    labels = {"a": np.array([0, 1]), "b": np.array([0, 1]), "c": np.array([1, 0]), "d": np.array([0, 1])}
    assert len(draw_label_sets(list(labels), labels, count=6, scans=2, seed=0)) == 6
    with pytest.raises(DataError, match=r"only 6 distinct label sets.*wanted 7"):
        draw_label_sets(list(labels), labels, count=7, scans=2, seed=0)
