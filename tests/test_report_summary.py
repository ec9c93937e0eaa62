"""Tests of pcrl.report.summary: runs reduced over seeds into cells, ordered, checked, and
paired by seed."""

from __future__ import annotations

import math

import pytest
from report_helpers import make_run

from pcrl.errors import DataError
from pcrl.report.summary import summarise


def test_summarise_mean_and_sample_std_over_two_seeds():
    runs = [make_run("ncc", "pcrl", 0.1, 1, 0.86, n=50), make_run("ncc", "pcrl", 0.1, 0, 0.80, n=40),
            make_run("ncc", "scratch", 0.1, 0, 0.70, n=40)]
    cell = summarise(runs)["ncc"]["0.1"]["pcrl"]
    # mean 0.83; sample std sqrt(((0.80-0.83)^2 + (0.86-0.83)^2) / (2-1)) = 0.03 * sqrt(2)
    assert cell["metric"] == "auc"
    assert cell["mean"] == pytest.approx(0.83)
    assert cell["std"] == pytest.approx(0.03 * math.sqrt(2))
    assert (cell["n"], cell["values"], cell["seeds"]) == (2, [0.80, 0.86], [0, 1])
    assert cell["metrics"] == pytest.approx({"auc": 0.83, "n": 45.0})
    single = summarise(runs)["ncc"]["0.1"]["scratch"]
    assert (single["mean"], single["std"], single["n"]) == (0.70, 0.0, 1)


def test_summarise_orders_tasks_fractions_and_inits():
    inits = ("imagenet", "pcrl", "moco", "genesis", "scratch")
    runs = [make_run("ncc", i, f, 0, 0.5) for f in (1.0, 0.1, 0.5) for i in inits]
    runs.append(make_run("bms", "pcrl", 0.2, 0, 0.6, primary="dice_mean"))
    summary = summarise(runs)
    assert list(summary) == ["bms", "ncc"]
    assert list(summary["ncc"]) == ["0.1", "0.5", "1.0"]
    assert list(summary["ncc"]["0.1"]) == ["scratch", "genesis", "moco", "pcrl", "imagenet"]
    assert summary["bms"]["0.2"]["pcrl"]["metric"] == "dice_mean"


def test_summarise_rejects_duplicates_mixed_primaries_and_nothing(tmp_path):
    a, b = tmp_path / "a" / "metrics.json", tmp_path / "b" / "metrics.json"
    with pytest.raises(DataError, match="seed 0") as info:
        summarise([{**make_run("ncc", "pcrl", 0.1, 0, 0.8), "path": str(a)},
                   {**make_run("ncc", "pcrl", 0.1, 0, 0.9), "path": str(b)}])
    assert str(a) in str(info.value) and str(b) in str(info.value)
    with pytest.raises(DataError, match="primary metric 'auc'.*'acc'"):
        summarise([make_run("ncc", "pcrl", 0.1, 0, 0.8), make_run("ncc", "moco", 0.1, 0, 0.8, primary="acc")])
    with pytest.raises(DataError, match="no evaluate"):
        summarise([])


def test_pairing_by_seed_leaves_out_seeds_missing_in_one_cell():
    runs = [make_run("ncc", "pcrl", 0.1, s, v) for s, v in ((0, 0.80), (1, 0.84), (2, 0.90))]
    runs += [make_run("ncc", "scratch", 0.1, s, v) for s, v in ((1, 0.70), (2, 0.78), (3, 0.99))]
    summary = summarise(runs)
    pair = summary["ncc"]["0.1"]["pcrl"]["paired"]["scratch"]
    # seeds 1 and 2 only: differences 0.84 - 0.70 = 0.14 and 0.90 - 0.78 = 0.12
    assert (pair["n"], pair["seeds"]) == (2, [1, 2])
    assert pair["differences"] == pytest.approx([0.14, 0.12])
    assert pair["mean"] == pytest.approx(0.13)
    assert pair["ci"] == pytest.approx([0.12, 0.14])
    # the bootstrap interval of 2 differences is their range: too few seeds for a verdict
    assert pair["verdict"] == "cannot tell"
    assert pair["reason"] == ("the 95 % interval [+0.120, +0.140] excludes 0, but 2 paired seeds are too few "
                              "(at least 3)")
