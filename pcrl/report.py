"""The report: every initialisation on every task and label fraction, over seeds.

PCRL (Zhou et al., ICCV 2021) compares initialisations — random (``scratch``), Models
Genesis (``genesis``, restoration only), a MoCo v2 style contrastive baseline (``moco``) and
PCRL (``pcrl``) — fine-tuned on each task of the Models Genesis benchmark (NCC, LCS, BMS)
and, in PCRL's 2D setting, on Chest14 (the 14 ChestX-ray14 findings, Wang et al., CVPR 2017;
headline ``auc_mean``, the mean ROC AUC over the findings) with a fraction of the training
labels (e.g. 10 %, 20 %, 50 %, 100 %) and several seeds (docs/method.md, "Protocol: pretrain,
then fine-tune"). Every task gets the same table, paired table, verdict and plot. This
module reads the evaluate stage's ``metrics.json`` files (:func:`collect_runs`), reduces them
over seeds (:func:`summarise`), pairs the runs of two initialisations by seed
(:func:`paired_difference`), states in plain sentences what the numbers can and cannot show
(:func:`verdict`), and writes a paper-style table, a table of paired differences, the summary
as JSON and one plot per task (:func:`write_report`).

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
that mean (``null`` below 2 paired seeds; :data:`BOOTSTRAP_RESAMPLES` resamples, generator
seed :data:`BOOTSTRAP_SEED`), the Student-t interval ``t_ci`` and the verdict ``"better"`` /
``"worse"`` (n >= :data:`MIN_PAIRED_SEEDS` and both intervals exclude 0) or ``"cannot tell"``,
with the ``reason`` in words. Readers of the
other keys are unaffected by it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pcrl.atomic import atomic_path, write_json, write_text
from pcrl.preprocessing.splits import fraction_key
from pcrl.errors import DataError
from pcrl.tasks import get_task

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "CONFIDENCE",
    "MIN_PAIRED_SEEDS",
    "INIT_ORDER",
    "bootstrap_interval",
    "collect_runs",
    "comparison_rows",
    "fraction_label",
    "paired_difference",
    "render_markdown",
    "summarise",
    "verdict",
    "write_report",
]

#: Table order of the paper's initialisations; any other (external) one follows, sorted.
INIT_ORDER = ("scratch", "genesis", "moco", "pcrl")
REFERENCE = "pcrl"
BASELINE = "scratch"
#: Paired comparisons: bootstrap resamples, generator seed and confidence level (fixed, so the
#: report is reproducible).
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
#: Fewest paired seeds for a "better" / "worse" verdict.
MIN_PAIRED_SEEDS = 3
_LEVEL = f"{CONFIDENCE * 100:g} %"
_REQUIRED = ("task", "init", "fraction", "seed", "metrics", "primary")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

Summary = dict[str, dict[str, dict[str, dict[str, Any]]]]


# ------------------------------------------------------------------ reading runs


def collect_runs(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Read and check the evaluate stage's ``metrics.json`` files.

    Each file holds ``{"task", "init", "fraction", "seed", "metrics": {...}, "primary",
    "provenance"}`` (docs/INTERFACES.md).

    Args:
        paths: The files, e.g. ``data/evaluate/<task>/<init>/f<fraction>/s<seed>/metrics.json``.

    Returns:
        One dict per file with ``task``, ``init`` (str), ``fraction`` (float), ``seed`` (int),
        ``metrics`` (name -> float), ``primary`` (str) and ``path`` (the file, as str).

    Raises:
        DataError: a file is missing, not JSON, or lacks / mistypes a field; the message
            names the file.
    """
    return [_read_run(Path(path)) for path in paths]


def _read_run(path: Path) -> dict[str, Any]:
    """One metrics.json, parsed and checked."""
    return record_run(read_metrics_json(path), str(path))


def record_run(obj: Any, source: str) -> dict[str, Any]:
    """A full run record (``{"task", "init", "fraction", "seed", "metrics", "primary"}``),
    checked; ``source`` (the file it came from) is kept as ``path``."""
    run = _check_run(obj, source)
    run["path"] = source
    return run


def read_metrics_json(path: Path) -> Any:
    """A metrics JSON file; DataError naming it when missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: metrics file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable metrics JSON file ({err})") from None


def numbers_run(numbers: Any, source: str, *, task: str, init: str, fraction: float, seed: int,
                primary: str) -> dict[str, Any]:
    """A run from a numbers-only ``metrics.json`` (the evaluate stage's output): which run it
    is comes from its folder (``<task>/<init>/f<fraction>/s<seed>``), the headline metric from
    the task. ``test_cases`` is a count, not a metric."""
    if not isinstance(numbers, Mapping):
        raise DataError(f"{source}: expected a JSON object of numbers, got {type(numbers).__name__}")
    metrics = {k: v for k, v in numbers.items() if k != "test_cases"}
    return record_run({"task": task, "init": init, "fraction": fraction, "seed": seed,
                       "metrics": metrics, "primary": primary}, source)


def _check_run(obj: Any, source: str) -> dict[str, Any]:
    """Validate one run's fields and return them normalised; errors name ``source``."""
    if not isinstance(obj, Mapping):
        raise DataError(f"{source}: expected a JSON object, got {type(obj).__name__}")
    missing = [key for key in _REQUIRED if key not in obj]
    if missing:
        raise DataError(f"{source}: missing field(s) {missing}")
    task, init = _check_name(obj["task"], "task", source), _check_name(obj["init"], "init", source)
    fraction = _check_number(obj["fraction"], "fraction", source)
    if not 0.0 < fraction <= 1.0:
        raise DataError(f"{source}: fraction must be in (0, 1], got {fraction}")
    seed = obj["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"{source}: seed must be an integer, got {seed!r}")
    metrics = obj["metrics"]
    if not isinstance(metrics, Mapping) or not metrics:
        raise DataError(f"{source}: 'metrics' must be a non-empty object of numbers")
    values = {str(k): _check_number(v, f"metrics.{k}", source) for k, v in metrics.items()}
    primary = obj["primary"]
    if primary not in values:
        raise DataError(f"{source}: primary metric {primary!r} is not among the metrics {sorted(values)}")
    return {"task": task, "init": init, "fraction": fraction, "seed": seed, "metrics": values, "primary": primary}


def _check_name(value: Any, key: str, source: str) -> str:
    """A task / init name, safe as a file name."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise DataError(f"{source}: {key} must be a simple name (letters, digits, _ . -), got {value!r}")
    return value


def _check_number(value: Any, key: str, source: str) -> float:
    """A finite real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{source}: {key} must be a finite number, got {value!r}")
    return float(value)


# ------------------------------------------------------------------ summary


def summarise(runs: Sequence[Mapping[str, Any]]) -> Summary:
    """Reduce runs over seeds: task -> fraction -> init -> statistics of the headline metric.

    Args:
        runs: Runs as returned by :func:`collect_runs` (hand-made dicts with the same fields
            are checked the same way).

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
        run = _check_run(raw, source)
        _check_primary(primaries, run, source)
        key = (run["task"], run["init"], fraction_key(run["fraction"]), run["seed"])
        if key in seen:
            raise DataError(f"{source} and {seen[key]}: both are task {key[0]}, init {key[1]}, "
                            f"fraction {key[2]}, seed {key[3]}")
        seen[key] = source
        cells.setdefault(key[:3], []).append(run)
    return _nest(cells)


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
            inits = _ordered_inits(i for t, i, f in cells if t == task and f == fraction)
            summary[task][fraction] = _with_pairs({init: _cell(cells[task, init, fraction]) for init in inits})
    return summary


def _with_pairs(inits: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Give each pretrained init's cell (every init but scratch) its ``paired`` comparisons
    (:func:`paired_difference`) with every other init of the same task and fraction."""
    for a, cell in inits.items():
        if a != BASELINE:
            cell["paired"] = {b: paired_difference(cell, other) for b, other in inits.items() if b != a}
    return inits


def _ordered_inits(inits: Iterable[str]) -> list[str]:
    """:data:`INIT_ORDER` first, then external initialisations alphabetically."""
    present = set(inits)
    return [i for i in INIT_ORDER if i in present] + sorted(present - set(INIT_ORDER))


def _cell(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, sample std (ddof 1; 0 for one seed) and values of one cell, in seed order."""
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


def fraction_label(fraction: str | float) -> str:
    """``0.1`` (or ``"0.1"``) -> ``"10%"``; ``0.125`` -> ``"12.5%"``."""
    return f"{float(fraction) * 100:.4g}%"


def _task_metric(task_summary: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """The headline metric of a task (the same in every cell, see :func:`summarise`)."""
    for inits in task_summary.values():
        for cell in inits.values():
            return str(cell["metric"])
    raise DataError("a task of the summary has no cells")


# ------------------------------------------------------------------ paired statistics


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


def paired_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Cell ``a`` minus cell ``b`` of the headline metric, paired by seed.

    Only seeds present in both cells count. Returns ``{"n", "seeds", "differences", "mean",
    "ci", "verdict", "reason"}``: ``mean`` is that of the per-seed differences (``None``
    without a paired seed), ``ci`` its 95 % percentile bootstrap interval
    (:func:`bootstrap_interval`; ``None`` below 2 paired seeds), ``t_ci`` the Student-t
    interval (:func:`t_interval`), ``verdict`` ``"better"`` / ``"worse"`` when n >=
    :data:`MIN_PAIRED_SEEDS` and both intervals lie above / below 0, else ``"cannot tell"``;
    ``reason`` says why in words.
    """
    theirs = dict(zip(b["seeds"], b["values"]))
    pairs = [(s, float(v) - float(theirs[s])) for s, v in zip(a["seeds"], a["values"]) if s in theirs]
    seeds = [s for s, _ in pairs]
    diffs = [d for _, d in pairs]
    result: dict[str, Any] = {"n": len(diffs), "seeds": seeds, "differences": diffs,
                              "mean": float(np.mean(diffs)) if diffs else None, "ci": None}
    if not diffs:
        return {**result, "verdict": "cannot tell", "reason": "no seed was run by both"}
    if len(diffs) == 1:
        return {**result, "verdict": "cannot tell", "reason": "n = 1 paired seed"}
    low, high = bootstrap_interval(diffs)
    interval = f"the {_LEVEL} interval {_interval(low, high)}"
    result["ci"] = [low, high]
    t_low, t_high = t_interval(diffs)
    result["t_ci"] = [t_low, t_high]
    if not (low > 0.0 or high < 0.0):
        return {**result, "verdict": "cannot tell", "reason": f"{interval} contains 0"}
    if len(diffs) < MIN_PAIRED_SEEDS:
        return {**result, "verdict": "cannot tell",
                "reason": f"{interval} excludes 0, but {len(diffs)} paired seeds are too few (at least "
                          f"{MIN_PAIRED_SEEDS})"}
    if not (t_low > 0.0 or t_high < 0.0) or (low > 0.0) != (t_low > 0.0):
        return {**result, "verdict": "cannot tell",
                "reason": f"{interval} excludes 0 but the Student-t interval {_interval(t_low, t_high)} does not"}
    return {**result, "verdict": "better" if low > 0.0 else "worse", "reason": f"{interval} excludes 0"}


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


def _pair(inits: Mapping[str, Mapping[str, Any]], a: str, b: str) -> dict[str, Any]:
    """``a`` − ``b`` at one task and fraction: the summary's record, or computed afresh."""
    stored = inits[a].get("paired", {}).get(b)
    return dict(stored) if stored is not None else paired_difference(inits[a], inits[b])


# ------------------------------------------------------------------ verdict


def verdict(summary: Summary) -> list[str]:
    """Plain sentences, computed from the paired statistics, comparing PCRL with each other init.

    One sentence per task and label fraction, giving PCRL's mean difference to each other
    initialisation over the seeds both ran, its 95 % bootstrap interval and the verdict of
    :func:`paired_difference` ("better" / "worse" only with n >= 3 paired seeds and both the
    bootstrap and the Student-t interval excluding 0; otherwise "cannot tell", and why). Then one
    sentence per task: PCRL is *best at every label fraction* only when every comparison at every
    fraction is "better"; otherwise
    the sentence says where it is worse or what cannot be told. A missing PCRL or scratch run is
    stated, not guessed around.
    """
    sentences: list[str] = []
    for task, fractions in summary.items():
        metric = _task_metric(fractions)
        outcomes: dict[str, dict[str, dict[str, Any]] | None] = {}
        for fraction, inits in fractions.items():
            sentence, outcome = _fraction_sentence(task, metric, fraction, inits)
            sentences.append(sentence)
            outcomes[fraction] = outcome
        sentences.append(_best_sentence(task, metric, outcomes))
    return sentences


def _clause(name: str, pair: Mapping[str, Any]) -> str:
    """``Against scratch: +0.052 over 5 paired seeds, 95 % interval [...]; PCRL is better (...).``"""
    if pair["n"] == 0:
        return f"Against {name}: cannot tell ({pair['reason']})."
    seeds = _count(pair["n"], "paired seed")
    if pair["verdict"] == "cannot tell":
        return f"Against {name}: {_signed(pair['mean'])} over {seeds}; cannot tell ({pair['reason']})."
    low, high = pair["ci"]
    return (f"Against {name}: {_signed(pair['mean'])} over {seeds}, {_LEVEL} interval "
            f"{_interval(low, high)}; PCRL is {pair['verdict']} (the interval excludes 0).")


def _fraction_sentence(
    task: str, metric: str, fraction: str, inits: Mapping[str, Mapping[str, Any]]
) -> tuple[str, dict[str, dict[str, Any]] | None]:
    """The sentence of one task and fraction, and PCRL's paired comparison with each other init."""
    head = f"{task} ({metric}, {fraction_label(fraction)} labels)"
    if REFERENCE not in inits:
        present = ", ".join(inits) or "none"
        return f"{head}: no PCRL run, so PCRL cannot be compared (runs: {present}).", None
    ours = inits[REFERENCE]
    others = [name for name in inits if name != REFERENCE]
    text = f"{head}: PCRL {_mean_std(ours)} over {_count(ours['n'], 'seed')}."
    if not others:
        return f"{text} It has no other initialisation to compare with.", {}
    outcome = {name: _pair(inits, REFERENCE, name) for name in others}
    sentence = " ".join([text] + [_clause(name, pair) for name, pair in outcome.items()])
    if BASELINE not in inits:
        sentence += f" No {BASELINE} run, so the gain over random initialisation cannot be stated."
    return sentence, outcome


def _best_sentence(task: str, metric: str, outcomes: Mapping[str, dict[str, dict[str, Any]] | None]) -> str:
    """Whether PCRL is better than every other init at every label fraction of ``task``
    (``None``: no PCRL run at that fraction)."""
    head = f"{task} ({metric})"
    unknown = "so whether it is best at every label fraction cannot be told"
    missing = [fraction_label(f) for f, o in outcomes.items() if o is None]
    if missing:
        return f"{head}: PCRL has no run at {_join(missing)}, {unknown}."
    alone = [fraction_label(f) for f, o in outcomes.items() if not o]
    if alone:
        return f"{head}: PCRL has no other initialisation to compare with at {_join(alone)}, {unknown}."
    results = {f: o for f, o in outcomes.items() if o is not None}
    worse = _where(results, "worse")
    undecided = _where(results, "cannot tell")
    if worse:
        sentence = f"{head}: PCRL is not best at every label fraction: it is worse {worse}"
        return sentence + (f"; undecided {undecided}." if undecided else ".")
    if undecided:
        return f"{head}: whether PCRL is best at every label fraction cannot be told; undecided {undecided}."
    labels = _join([fraction_label(f) for f in outcomes])
    return f"{head}: PCRL is best at every label fraction ({labels}): better than every other initialisation."


def _where(results: Mapping[str, Mapping[str, Mapping[str, Any]]], outcome: str) -> str:
    """``at 10% than moco and genesis; at 100% than scratch`` for one verdict ("" if none)."""
    word = "than" if outcome == "worse" else "against"
    parts = [f"at {fraction_label(f)} {word} {_join([n for n, p in o.items() if p['verdict'] == outcome])}"
             for f, o in results.items() if any(p["verdict"] == outcome for p in o.values())]
    return "; ".join(parts)


def _count(n: int, noun: str) -> str:
    """``1 seed`` / ``3 seeds``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _interval(low: float, high: float) -> str:
    """``[-0.020, +0.050]``."""
    return f"[{_signed(low)}, {_signed(high)}]"


def _same(x: float, y: float) -> bool:
    """Equal means: equal but for the rounding of summing the same values in another order."""
    return math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-12)


def _mean_std(cell: Mapping[str, Any]) -> str:
    return f"{cell['mean']:.3f} ± {cell['std']:.3f}"


def _signed(diff: float) -> str:
    """``+0.052``; a non-zero difference that rounds to zero keeps its sign and digits."""
    diff = float(diff) or 0.0  # -0.0 -> +0.000
    if diff != 0.0 and abs(diff) < 5e-4:
        return f"{diff:+.1e}"
    return f"{diff:+.3f}"


def _join(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


# ------------------------------------------------------------------ writing


def write_report(summary: Summary, out_dir: str | Path, probe: Mapping[str, Mapping[str, float]] | None = None
                 ) -> None:
    """Write ``report.md``, ``summary.json`` and ``plots/<task>.png|.csv`` atomically.

    ``report.md`` has, per task, a table in the paper's layout (rows: initialisations,
    columns: label fractions, cells ``mean ± std (n)``, the best mean of each column in
    bold), a table of paired differences (:func:`render_markdown`), the verdict sentences and
    notes on the statistics and seeds. ``plots/<task>.csv`` (columns ``fraction, init, mean,
    std``) is the same data for ``dvc plots``.
    """
    out = Path(out_dir)
    write_text(out / "report.md", render_markdown(summary, probe))
    write_json(out / "summary.json", summary)
    for task, fractions in summary.items():
        write_text(out / "plots" / f"{task}.csv", _plot_csv(fractions))
        _plot_task(task, fractions, out / "plots" / f"{task}.png")


#: Marks of the paired-difference table.
MARKS = {"better": "✓", "worse": "✗", "cannot tell": "?"}


def render_markdown(summary: Summary, probe: Mapping[str, Mapping[str, float]] | None = None) -> str:
    """The text of ``report.md`` (with the probe stage's table when ``probe`` is given).

    Each task's paired table has one row per comparison A − B (each pretrained init − scratch,
    then PCRL − each other pretrained init) and one column per label fraction; a cell reads
    ``+0.052 [+0.010, +0.094] (n=5) ✓``: mean paired difference, 95 % bootstrap interval (absent
    below 2 paired seeds), number of paired seeds and the verdict's mark (:data:`MARKS`).
    """
    lines = ["# PCRL fine-tuning report", ""]
    for task, fractions in summary.items():
        metric = _task_metric(fractions)
        lines += [f"## {task}", "", f"Headline metric: **{metric}** (higher is better).", ""]
        scored = sorted({int(cell["metrics"]["labels_scored"]) for cells in fractions.values()
                         for cell in cells.values() if "labels_scored" in cell.get("metrics", {})})
        if scored:  # Chest14: findings without a positive test image have no AUC (score_radiographs)
            shown = f"{scored[0]}" if len(scored) == 1 else f"{scored[0]} to {scored[-1]}"
            total = len(get_task(task).class_names)
            lines[-1:] = [f"The mean is over the findings with both classes among the test images: {shown} of "
                          f"{total} here (`labels_scored` in metrics.json; all {total} on the official test list).", ""]
        lines += _table(fractions) + [""]
        paired = _paired_table(fractions)
        if paired:
            lines += [f"Paired differences A − B of {metric} over the seeds both ran "
                      f"(✓ better, ✗ worse, ? cannot tell; see Statistics):", ""]
            lines += paired + [""]
    if probe:
        lines += _probe_section(probe)
    lines += ["## Verdict", ""] + [f"- {s}" for s in verdict(summary)] + [""]
    lines += ["## Statistics", "", _statistics_note(), ""]
    lines += ["## Seeds", "", _seed_note(summary), ""]
    return "\n".join(lines)


def _probe_section(probe: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The frozen-encoder probe (``pcrl probe``): NCC test AUC per initialisation and fraction.

    One pretraining run per initialisation, so the rows carry no interval: differences
    between them are stated as "cannot tell" by construction and the table is descriptive.
    """
    fractions = sorted({f for by_f in probe.values() for f in by_f}, key=float)
    inits = _ordered_inits(probe)
    lines = ["## Frozen-encoder probe (NCC)", "",
             "Test ROC AUC of a logistic regression on the frozen encoder's pooled deepest features, "
             "fitted on each label fraction's training scans, before any fine-tuning "
             "(pcrl/evaluation/probe.py; 0.5 is chance). One pretraining run per initialisation: "
             "no interval, so no difference between rows can be told from this table alone.", "",
             "| initialisation | " + " | ".join(fraction_label(f) for f in fractions) + " |",
             "|---|" + "---:|" * len(fractions)]
    for init in inits:
        cells = []
        for f in fractions:
            value = probe[init].get(f)
            text = "—" if value is None else f"{value:.3f}"
            cells.append(text)
        lines.append(f"| {init} | " + " | ".join(cells) + " |")
    return lines + [""]


def _table(fractions: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """Markdown rows: one per initialisation, one column per label fraction."""
    inits = _ordered_inits(i for cells in fractions.values() for i in cells)
    best = {f: max(c["mean"] for c in cells.values()) for f, cells in fractions.items()}
    rows = [
        "| initialisation | " + " | ".join(fraction_label(f) for f in fractions) + " |",
        "|---|" + "---:|" * len(fractions),
    ]
    for init in inits:
        cells = []
        for fraction, by_init in fractions.items():
            cell = by_init.get(init)
            if cell is None:
                cells.append("—")
                continue
            text = f"{_mean_std(cell)} ({cell['n']})"
            cells.append(f"**{text}**" if _same(cell["mean"], best[fraction]) else text)
        rows.append(f"| {init} | " + " | ".join(cells) + " |")
    return rows


def comparison_rows(inits: Sequence[str]) -> list[tuple[str, str]]:
    """The (A, B) rows of a task's paired table, for the inits present in it (table order):
    PCRL − scratch, each other paper init − scratch, PCRL − each other paper init, then each
    external init − scratch and PCRL − each external init."""
    present = set(inits)
    paper = [i for i in INIT_ORDER if i in present and i not in (BASELINE, REFERENCE)]
    external = sorted(present - set(INIT_ORDER))
    rows = [(a, BASELINE) for a in [REFERENCE, *paper]]
    rows += [(REFERENCE, b) for b in paper]
    rows += [(a, BASELINE) for a in external] + [(REFERENCE, b) for b in external]
    return [(a, b) for a, b in rows if a in present and b in present]


def _paired_table(fractions: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """Markdown rows of the paired differences (empty without any comparison)."""
    rows = comparison_rows(_ordered_inits(i for cells in fractions.values() for i in cells))
    if not rows:
        return []
    lines = [
        "| comparison | " + " | ".join(fraction_label(f) for f in fractions) + " |",
        "|---|" + "---:|" * len(fractions),
    ]
    for a, b in rows:
        cells = [_paired_cell(_pair(by_init, a, b)) if a in by_init and b in by_init else "—"
                 for by_init in fractions.values()]
        lines.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
    return lines


def _paired_cell(pair: Mapping[str, Any]) -> str:
    """``+0.052 [+0.010, +0.094] (n=5) ✓``; ``+0.403 (n=1) ?``; ``— (n=0) ?``."""
    mark = MARKS[pair["verdict"]]
    if pair["n"] == 0:
        return f"— (n=0) {mark}"
    interval = f" {_interval(*pair['ci'])}" if pair["ci"] is not None else ""
    return f"{_signed(pair['mean'])}{interval} (n={pair['n']}) {mark}"


def _statistics_note() -> str:
    """How the paired differences and verdicts are computed."""
    return (
        "Two initialisations are compared by pairing their runs by seed (only seeds both ran), "
        "taking the per-seed differences A − B of the headline metric and their mean. The "
        f"{_LEVEL} interval is a percentile bootstrap of that mean: the n paired differences are "
        f"resampled with replacement {BOOTSTRAP_RESAMPLES:,} times (generator seed "
        f"{BOOTSTRAP_SEED}, so the report is reproducible). With few seeds the percentile "
        "bootstrap is too narrow (with 2 paired seeds it is the range of the two differences), "
        "so a comparison is **better** (✓) or **worse** (✗) only with at least "
        f"{MIN_PAIRED_SEEDS} paired seeds and when the Student-t {_LEVEL} interval (df n − 1) "
        "excludes 0 as well; otherwise it is **cannot tell** (?). The seeds are fine-tuning "
        "seeds of one pretraining run per method: the intervals do not include the variation "
        "between pretraining runs, and no correction is made for the number of comparisons."
    )


def _seed_note(summary: Summary) -> str:
    """How many seeds the cells have."""
    counts = sorted({c["n"] for fr in summary.values() for cells in fr.values() for c in cells.values()})
    spread = f"{counts[0]}" if len(counts) == 1 else f"between {counts[0]} and {counts[-1]}"
    note = (f"Each cell is the mean ± sample standard deviation over seeds; (n) is the number of "
            f"seeds, {spread} per cell here.")
    if counts[0] == 1:
        note += (" Cells with a single seed show a std of 0: they are not replicated, and no"
                 " comparison with them can be told.")
    return note


def _plot_csv(fractions: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """``fraction,init,mean,std`` rows of one task."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["fraction", "init", "mean", "std"])
    for fraction, cells in fractions.items():
        for init, cell in cells.items():
            writer.writerow([float(fraction), init, repr(cell["mean"]), repr(cell["std"])])
    return buffer.getvalue()


def _plot_task(task: str, fractions: Mapping[str, Mapping[str, Mapping[str, Any]]], path: Path) -> None:
    """Headline metric vs label fraction, one line per init, error bars = std; PNG, atomic."""
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state

    fig = Figure(figsize=(5.0, 3.6))
    ax = fig.add_subplot()
    for init in _ordered_inits(i for cells in fractions.values() for i in cells):
        points = [(float(f) * 100, c[init]["mean"], c[init]["std"]) for f, c in fractions.items() if init in c]
        x, mean, std = zip(*points)
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=init)
    ticks = [float(f) * 100 for f in fractions]
    ax.set_xscale("log")
    ax.set_xticks(ticks, [fraction_label(f) for f in fractions])
    ax.minorticks_off()
    ax.set_xlabel("labelled training data")
    ax.set_ylabel(_task_metric(fractions))
    ax.set_title(f"{task}: {_task_metric(fractions)} vs label fraction")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
