"""The report's summary: every run reduced over seeds, with its paired comparisons.

:func:`summarise` groups runs into cells (task, fraction, init), reduces each over seeds
(:func:`pcrl.report.statistics.cell_statistics`) and gives each pretrained initialisation's
cell its comparisons with the others (:func:`pcrl.report.verdicts.paired_difference`).

Summary layout (JSON-serialisable; fractions keyed by :func:`pcrl.preprocessing.splits.fraction_key`,
e.g. ``"0.1"``, in increasing order; initialisations in :data:`INIT_ORDER`, others after)::

    {task: {fraction: {init: {"metric": "auc", "mean": 0.81, "std": 0.01, "n": 3,
                              "values": [...], "seeds": [...], "metrics": {"auc": 0.81, ...},
                              "paired": {other: {"n": 3, "seeds": [...], "differences": [...],
                                                 "mean": 0.05, "ci": [0.01, 0.09],
                                                 "verdict": "better", "reason": "..."}}}}}}

``mean``/``std``/``values`` are those of the task's headline (``primary``) metric; ``std`` is
the sample standard deviation over seeds (0 with a single seed); ``metrics`` holds the mean
over seeds of every metric the runs report. ``paired`` (only in the cells of pretrained
initialisations, i.e. every init but ``scratch``; keyed by every other init of the same task
and fraction) compares this init with ``other``: per-seed differences this − other of the
headline metric over the seeds both ran, their mean, the 95 % percentile bootstrap interval of
that mean (``null`` below 2 paired seeds; :data:`~pcrl.report.statistics.BOOTSTRAP_RESAMPLES`
resamples, generator seed :data:`~pcrl.report.statistics.BOOTSTRAP_SEED`), the Student-t
interval ``t_ci`` and the verdict ``"better"`` / ``"worse"`` (n >=
:data:`~pcrl.report.verdicts.MIN_PAIRED_SEEDS` and both intervals exclude 0) or
``"cannot tell"``, with the ``reason`` in words. Readers of the other keys are unaffected by it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pcrl.preprocessing.splits import fraction_key
from pcrl.errors import DataError
from pcrl.report.runs import check_run
from pcrl.report.statistics import Summary, cell_statistics
from pcrl.report.verdicts import BASELINE, paired_difference

__all__ = ["INIT_ORDER", "ordered_inits", "summarise"]

#: Table order of the paper's initialisations; any other (external) one follows, sorted.
INIT_ORDER = ("scratch", "genesis", "moco", "pcrl")


def summarise(runs: Sequence[Mapping[str, Any]]) -> Summary:
    """Reduce runs over seeds: task -> fraction -> init -> statistics of the headline metric.

    Args:
        runs: Run records (:func:`pcrl.report.runs.record_run`; hand-made dicts with the same
            fields are checked the same way, and their ``path``, if any, names them in errors).

    Returns:
        The nested summary described in the module docstring.

    Raises:
        DataError: no runs; two runs of the same task, init, fraction and seed; or runs of
            one task naming different primary metrics.
    """
    if not runs:
        raise DataError("no evaluate metrics.json files to report")
    cells: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    primaries: dict[str, tuple[str, str]] = {}
    seen: dict[tuple[str, str, str, int], str] = {}
    for raw in runs:
        source = str(raw.get("path", "<run>")) if isinstance(raw, Mapping) else "<run>"
        run = check_run(raw, source)
        _check_primary(primaries, run, source)
        key = (run["task"], run["init"], fraction_key(run["fraction"]), run["seed"])
        if key in seen:
            raise DataError(f"{source} and {seen[key]}: both are task {key[0]}, init {key[1]}, "
                            f"fraction {key[2]}, seed {key[3]}")
        seen[key] = source
        cells.setdefault(key[:3], []).append(run)
    return _nest(cells)


def ordered_inits(inits: Iterable[str]) -> list[str]:
    """:data:`INIT_ORDER` first, then external initialisations alphabetically."""
    present = set(inits)
    return [i for i in INIT_ORDER if i in present] + sorted(present - set(INIT_ORDER))


def _check_primary(primaries: dict[str, tuple[str, str]], run: dict[str, Any], source: str) -> None:
    """Every run of one task must name the same headline metric."""
    first = primaries.setdefault(run["task"], (run["primary"], source))
    if first[0] != run["primary"]:
        raise DataError(f"task {run['task']}: {first[1]} names primary metric {first[0]!r} "
                        f"but {source} names {run['primary']!r}")


def _nest(cells: Mapping[tuple[str, str, str], list[dict[str, Any]]]) -> Summary:
    """Order tasks, fractions and inits, and reduce each cell."""
    summary: Summary = {}
    for task in sorted({t for t, _, _ in cells}):
        fractions = sorted({f for t, _, f in cells if t == task}, key=float)
        summary[task] = {}
        for fraction in fractions:
            inits = ordered_inits(i for t, i, f in cells if t == task and f == fraction)
            summary[task][fraction] = _with_pairs({init: cell_statistics(cells[task, init, fraction])
                                                   for init in inits})
    return summary


def _with_pairs(inits: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Give each pretrained init's cell (every init but scratch) its ``paired`` comparisons
    (:func:`pcrl.report.verdicts.paired_difference`) with every other init of the same task
    and fraction."""
    for a, cell in inits.items():
        if a != BASELINE:
            cell["paired"] = {b: paired_difference(cell, other) for b, other in inits.items() if b != a}
    return inits
