"""What every plot of the pipeline shares: one colour per initialisation, readable fraction axes.

A method keeps its colour in every figure (the report's PNGs, the probe stage's plot and the
DVC plot template ``workflow/plots/by_init.json``, whose colour scale lists the same pairs;
tests/test_plotting.py checks that they agree), so a reader who learnt that PCRL is red in
one chart does not have to look it up again. The colours are the Okabe-Ito palette, which
stays distinguishable for the common colour-vision deficiencies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

#: The paper's initialisations and their colours (scratch grey: the baseline).
INIT_COLOURS: dict[str, str] = {
    "scratch": "#7f7f7f",
    "genesis": "#0072b2",
    "moco": "#009e73",
    "pcrl": "#d55e00",
}

#: Colours of other initialisations (external checkpoints, the study's arms), in name order.
EXTRA_COLOURS = ("#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442")


def colour_of(init: str, others: Iterable[str] = ()) -> str:
    """The colour of ``init``: its own, or one of :data:`EXTRA_COLOURS` by its rank among
    the sorted names in ``others`` that have no colour of their own."""
    if init in INIT_COLOURS:
        return INIT_COLOURS[init]
    extra = sorted({*others, init} - set(INIT_COLOURS))
    return EXTRA_COLOURS[extra.index(init) % len(EXTRA_COLOURS)]


def percent_label(fraction: float) -> str:
    """``0.1`` -> ``10 %``, ``0.025`` -> ``2.5 %`` (no trailing zeros)."""
    return f"{float(fraction) * 100:g} %"


def fraction_axis(ax: Any, fractions: Sequence[float], label: str = "labelled training data") -> None:
    """A log-scaled x axis in percent with one tick per label fraction and no minor ticks
    (matplotlib's default log ticks read 10^0, 10^1, ...)."""
    ticks = [float(f) * 100 for f in fractions]
    ax.set_xscale("log")
    ax.set_xticks(ticks, [percent_label(f) for f in fractions])
    ax.minorticks_off()
    if ticks:
        ax.set_xlim(min(ticks) / 1.25, max(ticks) * 1.25)
    ax.set_xlabel(label)
