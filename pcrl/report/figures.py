"""The report's figures (PNG, atomic), one colour per initialisation (:mod:`pcrl.plotting`).

- :func:`plot_task`: the headline metric against the label fraction; a line through the
  means, every seed's run as a point, error bars (std) only where a cell has two seeds or more;
- :func:`plot_paired`: each pretrained initialisation minus scratch per label fraction,
  the mean paired difference with its 95 % bootstrap interval; filled where the verdict is
  better or worse, hollow where it cannot tell, with n on every row;
- :func:`plot_learning`: the validation metric after each fine-tuning epoch, one line per run;
- :func:`plot_probe_curves`: the frozen-encoder probe's validation AUC over pretraining.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pcrl.atomic import atomic_path
from pcrl.plotting import colour_of, fraction_axis, percent_label
from pcrl.report.curves import Curve
from pcrl.report.summary import ordered_inits
from pcrl.report.verdicts import BASELINE

LINESTYLES = ("-", "--", ":", "-.")


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _integer_ticks(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _figure(width: float = 5.6, height: float = 3.8) -> tuple[Any, Any]:
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state

    fig = Figure(figsize=(width, height))
    return fig, fig.add_subplot()


def plot_task(task: str, metric: str, fractions: Mapping[str, Mapping[str, Mapping[str, Any]]], path: Path) -> None:
    """Means (lines), each seed's value (points, spread a little sideways) and the std as
    error bars where n >= 2 (a single seed has no spread to show)."""
    fig, ax = _figure()
    inits = ordered_inits(i for cells in fractions.values() for i in cells)
    for k, init in enumerate(inits):
        colour = colour_of(init, inits)
        cells = [(float(f), c[init]) for f, c in fractions.items() if init in c]
        shift = 1 + 0.03 * (k - (len(inits) - 1) / 2)  # side by side on the log axis
        xs = [f * 100 * shift for f, _ in cells]
        ax.plot(xs, [c["mean"] for _, c in cells], marker="o", color=colour, label=init)
        for x, (_, cell) in zip(xs, cells):
            ax.scatter([x] * len(cell["values"]), cell["values"], s=12, color=colour, alpha=0.45, zorder=3)
            if cell["n"] >= 2:
                ax.errorbar([x], [cell["mean"]], yerr=[cell["std"]], color=colour, capsize=3)
    fraction_axis(ax, [float(f) for f in fractions])
    ax.set_ylabel(metric)
    ax.set_title(f"{task}: {metric} (line: mean; points: seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    _save(fig, path)


def plot_paired(task: str, metric: str, fractions: Mapping[str, Mapping[str, Mapping[str, Any]]],
                path: Path) -> bool:
    """Forest plot of each pretrained initialisation − scratch; False (nothing written)
    when the task has no such comparison."""
    rows = []
    for fraction, cells in fractions.items():
        for init in ordered_inits(cells):
            pair = cells[init].get("paired", {}).get(BASELINE)
            if init != BASELINE and pair and pair["n"]:
                rows.append((init, fraction, pair))
    if not rows:
        return False
    inits = ordered_inits({init for init, _, _ in rows})
    fig, ax = _figure(6.8, 1.3 + 0.38 * len(rows))
    labels = []
    for y, (init, fraction, pair) in enumerate(reversed(rows)):
        colour = colour_of(init, inits)
        told = pair["verdict"] in ("better", "worse")
        if pair["ci"] is not None:
            ax.plot(pair["ci"], [y, y], color=colour, lw=2)
        ax.scatter([pair["mean"]], [y], s=40, color=colour if told else "white", edgecolors=colour, zorder=3)
        labels.append(f"{init} {percent_label(float(fraction))} (n={pair['n']}): {pair['verdict']}")
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), labels, fontsize="small")
    ax.set_xlabel(f"{metric}: init − scratch (bar: 95 % interval, n ≥ 2)")
    ax.set_title(f"{task}: paired difference to scratch (filled: better/worse; hollow: cannot tell)",
                 fontsize="medium")
    ax.grid(alpha=0.3, axis="x")
    _save(fig, path)
    return True


def plot_learning(task: str, metric: str, curves: Mapping[tuple[str, float, int], Curve], path: Path) -> bool:
    """Validation ``metric`` per epoch, one line per run (colour: init; style: fraction);
    False when no run logged validation."""
    if not curves:
        return False
    fig, ax = _figure()
    inits = ordered_inits({init for init, _, _ in curves})
    fractions = sorted({fraction for _, fraction, _ in curves})
    labelled = set()
    for (init, fraction, _seed), (epochs, values) in curves.items():
        style = LINESTYLES[fractions.index(fraction) % len(LINESTYLES)]
        label = f"{init} {percent_label(fraction)}"
        ax.plot(epochs, values, ls=style, marker=".", color=colour_of(init, inits), alpha=0.8,
                label=None if label in labelled else label)
        labelled.add(label)
    _integer_ticks(ax)
    ax.set_xlabel("fine-tuning epoch")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"{task}: learning curves (one line per run)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", ncol=2)
    _save(fig, path)
    return True


def plot_probe_curves(curves: Mapping[str, Curve], path: Path) -> bool:
    """Probe validation AUC per pretraining epoch, one line per method; chance dashed."""
    if not curves:
        return False
    fig, ax = _figure()
    for method, (epochs, values) in curves.items():
        ax.plot(epochs, values, marker="o", color=colour_of(method, curves), label=method)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--", label="chance")
    _integer_ticks(ax)
    ax.set_xlabel("pretraining epoch")
    ax.set_ylabel("probe validation AUC (NCC)")
    ax.set_title("Frozen-encoder probe during pretraining")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    _save(fig, path)
    return True
