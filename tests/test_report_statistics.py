"""Tests of pcrl.report.statistics against hand-computed or independent references: the
bootstrap and Student-t intervals, a cell's statistics and paired differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pcrl.report.statistics import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    bootstrap_interval,
    cell_statistics,
    paired_statistics,
    t_interval,
)


def test_bootstrap_interval_of_two_or_three_differences_is_their_range():
    # n = 2: the resampled means are d1, (d1+d2)/2 and d2 with probabilities 1/4, 1/2, 1/4, so the
    # 2.5 % and 97.5 % quantiles are d1 and d2; n = 3: all-min / all-max has probability 1/27 > 2.5 %
    assert bootstrap_interval([0.3, 0.1]) == pytest.approx((0.1, 0.3))
    assert bootstrap_interval([0.02, -0.01, 0.05]) == pytest.approx((-0.01, 0.05))
    assert bootstrap_interval([0.25, 0.25, 0.25]) == pytest.approx((0.25, 0.25))


def test_bootstrap_interval_agrees_with_an_independent_bootstrap():
    diffs = [0.052, 0.010, 0.094, 0.031, 0.075, -0.004, 0.060, 0.041]
    rng = np.random.default_rng(2024)  # another stream, drawn another way: only Monte Carlo error is shared
    means = sorted(sum(rng.choice(diffs, size=len(diffs), replace=True)) / len(diffs)
                   for _ in range(BOOTSTRAP_RESAMPLES))
    reference = (means[int(0.025 * BOOTSTRAP_RESAMPLES)], means[int(0.975 * BOOTSTRAP_RESAMPLES) - 1])
    spread = np.std(diffs) / math.sqrt(len(diffs))  # sd of the bootstrap distribution of the mean
    low, high = bootstrap_interval(diffs)
    assert low == pytest.approx(reference[0], abs=0.15 * spread)
    assert high == pytest.approx(reference[1], abs=0.15 * spread)
    assert low < np.mean(diffs) < high


def test_bootstrap_interval_for_many_differences_is_close_to_the_normal_interval():
    diffs = np.random.default_rng(7).normal(0.05, 0.1, size=400)
    half = 1.96 * diffs.std(ddof=1) / math.sqrt(diffs.size)
    low, high = bootstrap_interval(diffs.tolist())
    assert low == pytest.approx(diffs.mean() - half, abs=0.1 * half)
    assert high == pytest.approx(diffs.mean() + half, abs=0.1 * half)


def test_bootstrap_interval_is_reproducible_and_uses_its_seed():
    diffs = [0.05, -0.02, 0.11, 0.03, 0.07]
    assert bootstrap_interval(diffs) == bootstrap_interval(diffs)
    assert bootstrap_interval(diffs, seed=BOOTSTRAP_SEED + 1) != bootstrap_interval(diffs)
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_interval([])


def test_the_t_interval_matches_its_formula():
    from scipy import stats

    diffs = [0.30, 0.01, 0.02, 0.015, 0.012]
    low, high = t_interval(diffs)
    half = stats.t.ppf(0.975, 4) * np.std(diffs, ddof=1) / np.sqrt(5)
    assert (low, high) == pytest.approx((np.mean(diffs) - half, np.mean(diffs) + half))
    assert low < 0  # the outlier widens it across 0 (the guard of pcrl.report.verdicts)


#: Student-t quantile t(0.975, df 2), from a printed table (no scipy in the reference).
T_975_DF2 = 4.302652729911275


def test_the_t_interval_of_three_numbers_by_hand():
    # 0.1, 0.0, 0.1: mean 1/15; sample variance ((1/30)^2 + (1/15)^2 + (1/30)^2) / 2 = 1/300
    half = T_975_DF2 * math.sqrt(1 / 300) / math.sqrt(3)
    assert t_interval([0.1, 0.0, 0.1]) == pytest.approx((1 / 15 - half, 1 / 15 + half))
    assert t_interval([0.1, 0.0, 0.1]) == pytest.approx((-0.0767551, 0.2100884), abs=1e-7)
    with pytest.raises(ValueError, match="at least 2"):
        t_interval([0.1])


def test_cell_statistics_of_three_seeds_by_hand():
    runs = [{"seed": s, "primary": "auc", "metrics": m} for s, m in (
        (2, {"auc": 0.7}), (0, {"auc": 0.9, "n": 40.0}), (1, {"auc": 0.8, "n": 50.0}))]
    cell = cell_statistics(runs)
    # mean 0.8; sample std sqrt((0.1^2 + 0^2 + 0.1^2) / 2) = 0.1; n: the mean of the runs that report it
    assert cell == {"metric": "auc", "mean": pytest.approx(0.8), "std": pytest.approx(0.1), "n": 3,
                    "values": [0.9, 0.8, 0.7], "seeds": [0, 1, 2], "metrics": {"auc": pytest.approx(0.8), "n": 45.0}}
    assert list(cell) == ["metric", "mean", "std", "n", "values", "seeds", "metrics"]
    one = cell_statistics(runs[:1])
    assert (one["mean"], one["std"], one["n"]) == (0.7, 0.0, 1)


def test_paired_statistics_of_three_paired_seeds_by_hand():
    a = {"seeds": [0, 1, 2, 4], "values": [0.9, 0.8, 0.7, 0.1]}
    b = {"seeds": [0, 1, 2, 3], "values": [0.8, 0.8, 0.6, 0.9]}
    pair = paired_statistics(a, b)
    # seeds 0, 1, 2: differences 0.1, 0.0, 0.1; the bootstrap interval of 3 differences is their range
    half = T_975_DF2 * math.sqrt(1 / 300) / math.sqrt(3)
    assert pair == {"n": 3, "seeds": [0, 1, 2], "differences": pytest.approx([0.1, 0.0, 0.1]),
                    "mean": pytest.approx(1 / 15), "ci": pytest.approx([0.0, 0.1]),
                    "t_ci": pytest.approx([1 / 15 - half, 1 / 15 + half])}
    assert list(pair) == ["n", "seeds", "differences", "mean", "ci", "t_ci"]
    one = paired_statistics(a, {"seeds": [4], "values": [0.05]})
    assert one == {"n": 1, "seeds": [4], "differences": [pytest.approx(0.05)], "mean": pytest.approx(0.05),
                   "ci": None}
    assert paired_statistics(a, {"seeds": [9], "values": [0.5]}) == {
        "n": 0, "seeds": [], "differences": [], "mean": None, "ci": None}
