"""Tests of pcrl.plotting: one colour per initialisation everywhere, readable fraction ticks."""

from __future__ import annotations

import json
from pathlib import Path

from pcrl.plotting import EXTRA_COLOURS, INIT_COLOURS, colour_of, fraction_axis, percent_label


def test_each_init_keeps_its_colour_and_others_get_distinct_ones() -> None:
    assert colour_of("pcrl") == colour_of("pcrl", ["imagenet", "zoo"]) == INIT_COLOURS["pcrl"]
    assert [colour_of(n, ["zoo", "imagenet", "pcrl"]) for n in ("imagenet", "zoo")] == list(EXTRA_COLOURS[:2])
    assert len(set(INIT_COLOURS.values()) | set(EXTRA_COLOURS)) == len(INIT_COLOURS) + len(EXTRA_COLOURS)


def test_the_dvc_plot_template_uses_the_same_colours(repo_root: Path) -> None:
    template = json.loads((repo_root / "workflow" / "plots" / "by_init.json").read_text())
    scale = template["encoding"]["color"]["scale"]
    assert dict(zip(scale["domain"], scale["range"])) == INIT_COLOURS


def test_fraction_ticks_are_percentages() -> None:
    from matplotlib.figure import Figure

    assert [percent_label(f) for f in (0.1, 0.025, 1.0)] == ["10 %", "2.5 %", "100 %"]
    ax = Figure().add_subplot()
    fraction_axis(ax, [0.1, 0.5, 1.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["10 %", "50 %", "100 %"]
    assert list(ax.get_xticks()) == [10.0, 50.0, 100.0] and ax.get_xscale() == "log"
