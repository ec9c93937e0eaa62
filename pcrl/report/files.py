"""Every file of the report folder, written atomically.

::

    report.md                 the report (pcrl/report/render.py), figures linked
    report.html               the same, one self-contained page (images embedded)
    summary.json              every cell over seeds with its comparisons (pcrl/report/summary.py)
    metrics.json              the headline for `dvc metrics show` / `dvc exp show`: PCRL's mean
                              per task at the smallest label fraction (one row, a handful of columns)
    plots/<task>.png          metric vs label fraction, means and every seed
    plots/<task>_paired.png   each pretrained init − scratch with its 95 % interval
    plots/<task>_learning.png validation metric per fine-tuning epoch, one line per run
    plots/probe_curves.png    the frozen-encoder probe during pretraining, per method
    plots/<task>.csv          fraction, init, mean, std        (dvc plots: one chart per task)
    plots/<task>_learning.csv epoch, value, init, run          (dvc plots: learning curves)
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pcrl.atomic import write_json, write_text
from pcrl.report.context import header_lines
from pcrl.report.curves import Curve, curves_csv_rows
from pcrl.report.figures import plot_learning, plot_paired, plot_probe_curves, plot_task
from pcrl.report.html import markdown_to_html
from pcrl.report.render import render_markdown
from pcrl.report.statistics import Summary, task_metric
from pcrl.report.summary import ordered_inits
from pcrl.report.verdicts import BASELINE, REFERENCE

LearningCurves = Mapping[str, Mapping[tuple[str, float, int], Curve]]


def headline_metrics(summary: Summary) -> dict[str, Any]:
    """The headline for ``dvc metrics show`` and ``dvc exp show``: one row, a handful of
    columns. ``{"labels": f, "<init>": {task: mean}}``: the reproduced method's (PCRL, else
    the first pretrained initialisation present) mean over seeds at the smallest label
    fraction ``f`` of each task (where pretraining is meant to matter most), rounded to 4
    digits. Every other number is in ``summary.json`` and ``report.html``."""
    cells = [(task, min(fractions, key=float), fractions[min(fractions, key=float)])
             for task, fractions in summary.items()]
    present = {init for _, _, by_init in cells for init in by_init}
    pretrained = [i for i in ordered_inits(present) if i != BASELINE]
    init = REFERENCE if REFERENCE in present else (pretrained[0] if pretrained else BASELINE)
    headline: dict[str, Any] = {"labels": min(float(f) for _, f, _ in cells)} if cells else {}
    headline[init] = {task: round(float(by_init[init]["mean"]), 4) for task, _, by_init in cells if init in by_init}
    return headline


def _csv(rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _cells_csv(fractions: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    rows = [{"fraction": float(f), "init": init, "mean": repr(cell["mean"]), "std": repr(cell["std"])}
            for f, cells in fractions.items() for init, cell in cells.items()]
    return _csv(rows, ["fraction", "init", "mean", "std"])


def write_report(summary: Summary, out_dir: str | Path, probe: Mapping[str, Mapping[str, float]] | None = None, *,
                 context: Mapping[str, Any] | None = None, learning: LearningCurves | None = None,
                 probe_curves: Mapping[str, Curve] | None = None) -> None:
    """Write the report folder (module docstring) into ``out_dir``.

    Args:
        summary: :func:`pcrl.report.summarise`'s result.
        probe: The probe stage's ``{init: {fraction: AUC}}``; None: no probe section.
        context: The provenance header (:func:`pcrl.report.context.report_context`); None: none.
        learning: Per task, the runs' learning curves (:func:`pcrl.report.curves.learning_curves`).
        probe_curves: Per method, the probe's AUC over pretraining (:func:`pcrl.report.curves.probe_curves`).
    """
    out = Path(out_dir)
    figures: dict[str, list[str]] = {}
    for task, fractions in summary.items():
        metric = task_metric(fractions)
        plot_task(task, metric, fractions, out / "plots" / f"{task}.png")
        figures[task] = [f"plots/{task}.png"]
        if plot_paired(task, metric, fractions, out / "plots" / f"{task}_paired.png"):
            figures[task].append(f"plots/{task}_paired.png")
        curves = (learning or {}).get(task, {})
        if plot_learning(task, metric, curves, out / "plots" / f"{task}_learning.png"):
            figures[task].append(f"plots/{task}_learning.png")
        write_text(out / "plots" / f"{task}.csv", _cells_csv(fractions))
        write_text(out / "plots" / f"{task}_learning.csv",
                   _csv(curves_csv_rows(dict(curves)), ["epoch", "value", "init", "run"]))
    if plot_probe_curves(probe_curves or {}, out / "plots" / "probe_curves.png"):
        figures["probe"] = ["plots/probe_curves.png"]
    markdown = render_markdown(summary, probe, header=header_lines(context) if context else (), figures=figures)
    write_text(out / "report.md", markdown)
    write_text(out / "report.html", markdown_to_html(markdown, out))
    write_json(out / "summary.json", summary)
    write_json(out / "metrics.json", headline_metrics(summary))
