"""The text of ``report.md`` (:mod:`pcrl.report.files` writes it with the figures).

``report.md`` opens with where its numbers come from (:mod:`pcrl.report.context`) and the
verdict sentences (:func:`pcrl.report.verdicts.verdict`): which initialisation is better on
which task, and how sure. Then, per task, a table in the paper's layout, a table of paired
differences and the task's figures; the frozen-encoder probe's table and curves when given;
notes on the statistics and seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pcrl.tasks import get_task
from pcrl.report.statistics import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, Summary, task_metric
from pcrl.report.summary import INIT_ORDER, ordered_inits
from pcrl.report.verdicts import (
    BASELINE,
    LEVEL,
    MIN_PAIRED_SEEDS,
    REFERENCE,
    comparison,
    fraction_label,
    interval_text,
    mean_std,
    signed,
    verdict,
)

__all__ = ["MARKS", "comparison_rows", "render_markdown"]


#: Marks of the paired-difference table.
MARKS = {"better": "✓", "worse": "✗", "cannot tell": "?"}


def render_markdown(summary: Summary, probe: Mapping[str, Mapping[str, float]] | None = None, *,
                    header: Sequence[str] = (), figures: Mapping[str, Sequence[str]] | None = None) -> str:
    """The text of ``report.md`` (with the probe stage's table when ``probe`` is given).

    ``header`` lines come first (:func:`pcrl.report.context.header_lines`), then the verdict.
    ``figures`` maps a task (or ``"probe"``) to the image paths shown after its tables.
    Each task's paired table has one row per comparison A − B (each pretrained init − scratch,
    then PCRL − each other pretrained init) and one column per label fraction; a cell reads
    ``+0.052 [+0.010, +0.094] (n=5) ✓``: mean paired difference, 95 % bootstrap interval (absent
    below 2 paired seeds), number of paired seeds and the verdict's mark (:data:`MARKS`).
    A table cell is bold only where its initialisation is *better* than every other one of
    its column (:func:`pcrl.report.verdicts.judge`); a higher mean alone marks nothing.
    """
    figures = figures or {}
    lines = ["# PCRL fine-tuning report", "", *header]
    lines += ["## Verdict", "", "Which initialisation is better on which task, and how sure we are:", ""]
    lines += [f"- {s}" for s in verdict(summary)] + [""]
    for task, fractions in summary.items():
        metric = task_metric(fractions)
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
        lines += [f"![{task}]({image})" for image in figures.get(task, [])] + [""]
    if probe:
        lines += _probe_section(probe)
    lines += [f"![probe]({image})" for image in figures.get("probe", [])] + [""]
    lines += ["## Statistics", "", _statistics_note(), ""]
    lines += ["## Seeds", "", _seed_note(summary), ""]
    return "\n".join(lines)


def _probe_section(probe: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The frozen-encoder probe (``pcrl probe``): NCC test AUC per initialisation and fraction.

    One pretraining run per initialisation, so the rows carry no interval: differences
    between them are stated as "cannot tell" by construction and the table is descriptive.
    """
    fractions = sorted({f for by_f in probe.values() for f in by_f}, key=float)
    inits = ordered_inits(probe)
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
    inits = ordered_inits(i for cells in fractions.values() for i in cells)
    rows = [
        "| initialisation | " + " | ".join(fraction_label(f) for f in fractions) + " |",
        "|---|" + "---:|" * len(fractions),
    ]
    for init in inits:
        cells = []
        for by_init in fractions.values():
            cell = by_init.get(init)
            if cell is None:
                cells.append("—")
                continue
            text = f"{mean_std(cell)} ({cell['n']})"
            cells.append(f"**{text}**" if _better_than_all(init, by_init) else text)
        rows.append(f"| {init} | " + " | ".join(cells) + " |")
    return rows


def _better_than_all(init: str, by_init: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether the paired verdict says ``init`` is better than every other init of the column."""
    others = [o for o in by_init if o != init]
    return bool(others) and all(comparison(by_init, init, o)["verdict"] == "better" for o in others)


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
    rows = comparison_rows(ordered_inits(i for cells in fractions.values() for i in cells))
    if not rows:
        return []
    lines = [
        "| comparison | " + " | ".join(fraction_label(f) for f in fractions) + " |",
        "|---|" + "---:|" * len(fractions),
    ]
    for a, b in rows:
        cells = [_paired_cell(comparison(by_init, a, b)) if a in by_init and b in by_init else "—"
                 for by_init in fractions.values()]
        lines.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
    return lines


def _paired_cell(pair: Mapping[str, Any]) -> str:
    """``+0.052 [+0.010, +0.094] (n=5) ✓``; ``+0.403 (n=1) ?``; ``— (n=0) ?``."""
    mark = MARKS[pair["verdict"]]
    if pair["n"] == 0:
        return f"— (n=0) {mark}"
    interval = f" {interval_text(*pair['ci'])}" if pair["ci"] is not None else ""
    return f"{signed(pair['mean'])}{interval} (n={pair['n']}) {mark}"


def _statistics_note() -> str:
    """How the paired differences and verdicts are computed."""
    return (
        "Two initialisations are compared by pairing their runs by seed (only seeds both ran), "
        "taking the per-seed differences A − B of the headline metric and their mean. The "
        f"{LEVEL} interval is a percentile bootstrap of that mean: the n paired differences are "
        f"resampled with replacement {BOOTSTRAP_RESAMPLES:,} times (generator seed "
        f"{BOOTSTRAP_SEED}, so the report is reproducible). With few seeds the percentile "
        "bootstrap is too narrow (with 2 paired seeds it is the range of the two differences), "
        "so a comparison is **better** (✓) or **worse** (✗) only with at least "
        f"{MIN_PAIRED_SEEDS} paired seeds and when the Student-t {LEVEL} interval (df n − 1) "
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
