"""The numbers of the report: each cell's statistics over seeds and paired differences.

A cell is one task, initialisation and label fraction: :func:`cell_statistics` reduces its runs
over seeds. Two cells are compared by pairing their runs by seed (:func:`paired_statistics`):
the per-seed differences of the headline metric, their mean, the percentile bootstrap
interval of that mean (:func:`bootstrap_interval`) and the Student-t interval
(:func:`t_interval`). What those numbers allow one to say is decided in
:mod:`pcrl.report.verdicts`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pcrl.errors import DataError

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "CONFIDENCE",
    "Summary",
    "bootstrap_interval",
    "cell_statistics",
    "paired_statistics",
    "t_interval",
    "task_metric",
]

#: Paired comparisons: bootstrap resamples, generator seed and confidence level (fixed, so the
#: report is reproducible).
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95

#: task -> fraction -> init -> cell (the layout is described in :mod:`pcrl.report.summary`).
Summary = dict[str, dict[str, dict[str, dict[str, Any]]]]


def cell_statistics(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean, sample std (ddof 1; 0 for one seed) and values of one cell's headline metric, in
    seed order, and the mean over seeds of every metric the runs report."""
    runs = sorted(runs, key=lambda r: r["seed"])
    primary = runs[0]["primary"]
    values = [r["metrics"][primary] for r in runs]
    names = sorted({name for r in runs for name in r["metrics"]})
    means = {n: float(np.mean([r["metrics"][n] for r in runs if n in r["metrics"]])) for n in names}
    return {
        "metric": primary,
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "n": len(values),
        "values": values,
        "seeds": [r["seed"] for r in runs],
        "metrics": means,
    }


def task_metric(task_summary: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """The headline metric of a task (the same in every cell of it)."""
    for inits in task_summary.values():
        for cell in inits.values():
            return str(cell["metric"])
    raise DataError("a task of the summary has no cells")


def bootstrap_interval(differences: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED, level: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``differences``.

    Draws ``resamples`` samples of the ``n`` differences with replacement (one
    ``(resamples, n)`` index draw from ``numpy.random.default_rng(seed)``), takes each
    sample's mean, and returns the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of
    those means (numpy's default, linear interpolation). A fresh generator per call makes every
    interval reproducible on its own, whatever else the report computes.

    Raises:
        ValueError: no differences, ``resamples`` < 1 or ``level`` outside (0, 1).
    """
    values = np.asarray(differences, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("bootstrap_interval needs a non-empty 1-D sequence of differences")
    if resamples < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap_interval: resamples must be >= 1 and level in (0, 1), "
                         f"got {resamples} and {level}")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    low, high = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)


def t_interval(differences: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t interval of the mean of ``differences`` (df n - 1); needs n >= 2.

    The guard on the bootstrap's verdict: with few seeds the percentile bootstrap is too
    narrow (with 2 it is the range of the two differences), the t interval is not.
    """
    from scipy import stats

    values = np.asarray(differences, dtype=np.float64)
    if values.size < 2:
        raise ValueError("t_interval needs at least 2 differences")
    half = float(stats.t.ppf(0.5 + confidence / 2, values.size - 1)) * float(values.std(ddof=1)) / np.sqrt(values.size)
    mean = float(values.mean())
    return mean - half, mean + half


def paired_statistics(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Cell ``a`` minus cell ``b`` of the headline metric, paired by seed (only seeds both ran).

    Returns ``{"n", "seeds", "differences", "mean", "ci"}`` and, from 2 paired seeds on,
    ``"t_ci"``: ``mean`` is that of the per-seed differences (``None`` without a paired seed),
    ``ci`` its percentile bootstrap interval (:func:`bootstrap_interval`; ``None`` below 2
    paired seeds) and ``t_ci`` its Student-t interval (:func:`t_interval`), both as ``[low, high]``.
    """
    theirs = dict(zip(b["seeds"], b["values"]))
    pairs = [(s, float(v) - float(theirs[s])) for s, v in zip(a["seeds"], a["values"]) if s in theirs]
    diffs = [d for _, d in pairs]
    result: dict[str, Any] = {"n": len(diffs), "seeds": [s for s, _ in pairs], "differences": diffs,
                              "mean": float(np.mean(diffs)) if diffs else None, "ci": None}
    if len(diffs) >= 2:
        result["ci"] = list(bootstrap_interval(diffs))
        result["t_ci"] = list(t_interval(diffs))
    return result
