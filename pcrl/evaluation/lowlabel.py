"""Low-label evaluation of frozen encoders on cached features, with paired bootstrap intervals.

The known-answer study (pcrl/runners/study.py) asks whether pretraining helps where labels are
scarce (Zhou et al., ICCV 2021, Sec. 4: the 10 % label fractions). One fine-tuning run on
one fixed small split is too noisy to tell (random inits alone spread 0.46-0.78 in AUC at
10 %), so the criterion here is cheap enough to repeat: every encoder's pooled features of
the NCC candidates are computed once, and many random *label sets* (a few labelled scans
each, the same sets for every encoder) are scored by

* the logistic probe of :mod:`pcrl.evaluation.probe` (:func:`probe_auc_on`), and
* a k-nearest-neighbour vote on standardised, cosine-compared features (:func:`knn_auc`),

on the same held-out test scans. :func:`paired_bootstrap` then compares an arm (several
pretraining seeds) with scratch (several random inits) over seed x label set, pairing by
label set, and gives the mean difference with a percentile interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pcrl.errors import DataError
from pcrl.evaluation.metrics import classification_metrics
from pcrl.evaluation.probe import fit_logistic

__all__ = ["Comparison", "draw_label_sets", "knn_auc", "paired_bootstrap", "probe_auc_on", "verdict"]


def draw_label_sets(cases: Sequence[str], labels_by_case: dict[str, np.ndarray], *, count: int, scans: int,
                    seed: int, max_tries: int = 1000) -> list[list[str]]:
    """``count`` distinct random sets of ``scans`` labelled scans, each holding both classes.

    Args:
        cases: the training scans to draw from.
        labels_by_case: each scan's candidate classes.
        count: the number of sets.
        scans: scans per set.
        seed: the draws' seed (the same sets for every encoder).

    Raises:
        DataError: when fewer than ``count`` distinct valid sets turn up in ``max_tries`` draws.
    """
    pool = sorted(cases)
    if scans > len(pool):
        raise DataError(f"label sets of {scans} scans cannot be drawn from {len(pool)} training scans")
    rng = np.random.default_rng(seed)
    found: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for _ in range(max_tries):
        chosen = tuple(sorted(rng.choice(pool, size=scans, replace=False).tolist()))
        if chosen in seen:
            continue
        classes = np.concatenate([labels_by_case[c] for c in chosen])
        if classes.min() == classes.max():
            continue
        seen.add(chosen)
        found.append(list(chosen))
        if len(found) == count:
            return found
    raise DataError(f"only {len(found)} distinct label sets of {scans} scans with both classes in {max_tries} "
                    f"draws (wanted {count}): use more scans per set or more training scans")


def probe_auc_on(train: torch.Tensor, train_labels: np.ndarray, test: torch.Tensor, test_labels: np.ndarray,
                 *, l2: float) -> float:
    """Test ROC AUC of the class-balanced logistic probe fitted on ``train`` features."""
    probe = fit_logistic(train, train_labels, l2=l2)
    return float(classification_metrics(probe.scores(test).numpy(), test_labels)["auc"])


def knn_auc(train: torch.Tensor, train_labels: np.ndarray, test: torch.Tensor, test_labels: np.ndarray,
            *, k: int) -> float:
    """Test ROC AUC of a k-nearest-neighbour vote.

    Features are standardised with the training set's mean and deviation, compared by cosine;
    a test candidate's score is the share of nodules among its ``k`` nearest training
    candidates, each class weighted to equal total weight (nodules are the rarer class), ties
    in similarity broken by training order.
    """
    x = train.double()
    mean, std = x.mean(dim=0), x.std(dim=0, unbiased=False).clamp_min(1e-12)
    a = torch.nn.functional.normalize((x - mean) / std, dim=1)
    b = torch.nn.functional.normalize((test.double() - mean) / std, dim=1)
    y = torch.as_tensor(np.asarray(train_labels), dtype=torch.float64)
    w_pos, w_neg = 0.5 / y.sum().clamp_min(1), 0.5 / (1 - y).sum().clamp_min(1)
    k = min(int(k), x.shape[0])
    nearest = (b @ a.T).topk(k, dim=1).indices
    # From the (exact) count of nodules among the k: equal votes give bitwise equal scores, so
    # they tie in the AUC (summing the weights in neighbour order broke such ties by rounding).
    votes = y[nearest].sum(dim=1)
    scores = votes * w_pos / (votes * w_pos + (k - votes) * w_neg)
    return float(classification_metrics(scores.numpy(), test_labels)["auc"])


@dataclass(frozen=True)
class Comparison:
    """An arm against scratch: mean paired difference in AUC and its bootstrap interval."""

    arm_mean: float
    scratch_mean: float
    difference: float
    low: float
    high: float
    seeds: int
    label_sets: int

    def to_json(self) -> dict[str, float | int | str]:
        return {"arm_mean": self.arm_mean, "scratch_mean": self.scratch_mean, "difference": self.difference,
                "low": self.low, "high": self.high, "seeds": self.seeds, "label_sets": self.label_sets,
                "verdict": verdict(self)}


def paired_bootstrap(arm: np.ndarray, scratch: np.ndarray, *, samples: int, seed: int,
                     level: float = 0.95) -> Comparison:
    """Mean(arm) - mean(scratch), paired by label set, with a percentile bootstrap interval.

    Args:
        arm: (S, L) AUCs of S pretraining seeds on L label sets.
        scratch: (R, L) AUCs of R random inits on the same L label sets.
        samples: bootstrap resamples; each draws S arm seeds, R inits and L label sets with
            replacement (the same label sets for both sides), so the interval covers the
            spread over pretraining seeds, inits and label sets together.
        seed: the resampling seed.
        level: the interval's coverage.

    Raises:
        ValueError: on arrays that do not share their label sets.
    """
    arm, scratch = np.asarray(arm, dtype=np.float64), np.asarray(scratch, dtype=np.float64)
    if arm.ndim != 2 or scratch.ndim != 2 or arm.shape[1] != scratch.shape[1]:
        raise ValueError(f"paired_bootstrap: need (S, L) and (R, L) arrays, got {arm.shape} and {scratch.shape}")
    rng = np.random.default_rng(seed)
    n_s, n_l = arm.shape
    n_r = scratch.shape[0]
    diffs = np.empty(samples)
    for i in range(samples):
        sets = rng.integers(0, n_l, n_l)
        a = arm[rng.integers(0, n_s, n_s)][:, sets].mean()
        s = scratch[rng.integers(0, n_r, n_r)][:, sets].mean()
        diffs[i] = a - s
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    return Comparison(float(arm.mean()), float(scratch.mean()), float(arm.mean() - scratch.mean()),
                      float(low), float(high), n_s, n_l)


#: Fewer pretraining seeds than this cannot support a verdict.
MIN_SEEDS = 3


def verdict(comparison: Comparison) -> str:
    """``above scratch`` / ``below scratch`` when the interval excludes 0, else ``cannot tell``
    (also with fewer than :data:`MIN_SEEDS` seeds)."""
    if comparison.seeds < MIN_SEEDS:
        return "cannot tell"
    if comparison.low > 0:
        return "above scratch"
    if comparison.high < 0:
        return "below scratch"
    return "cannot tell"
