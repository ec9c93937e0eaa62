"""Tests of pcrl.report.render: report.md's tables, the probe table, summary.json and the
plots."""

from __future__ import annotations

import csv
import json
import math

import pytest
from report_helpers import make_run, markdown_table, seed_runs

from pcrl.report import write_report
from pcrl.report.render import comparison_rows, render_markdown
from pcrl.report.summary import summarise
from pcrl.report.verdicts import verdict


def test_comparison_rows_order():
    assert comparison_rows(["scratch", "genesis", "moco", "pcrl", "imagenet"]) == [
        ("pcrl", "scratch"), ("genesis", "scratch"), ("moco", "scratch"), ("pcrl", "genesis"), ("pcrl", "moco"),
        ("imagenet", "scratch"), ("pcrl", "imagenet")]
    assert comparison_rows(["moco", "pcrl"]) == [("pcrl", "moco")]
    assert comparison_rows(["scratch"]) == []


def test_write_report_table_plots_and_json(tmp_path):
    runs = seed_runs({
        ("pcrl", 0.1): [0.80, 0.86], ("scratch", 0.1): [0.70, 0.72], ("scratch", 1.0): [0.90, 0.90],
        ("pcrl", 1.0): [0.95, 0.97], ("imagenet", 1.0): [0.91],
    })
    summary = summarise(runs)
    out = tmp_path / "report"
    write_report(summary, out)

    text = (out / "report.md").read_text()
    table = markdown_table(text, "ncc")
    assert list(table) == ["scratch", "pcrl", "imagenet"]
    assert table["pcrl"] == {"10%": "0.830 ± 0.042 (2)", "100%": "0.960 ± 0.014 (2)"}
    assert table["scratch"] == {"10%": "0.710 ± 0.014 (2)", "100%": "0.900 ± 0.000 (2)"}
    assert table["imagenet"] == {"10%": "—", "100%": "0.910 ± 0.000 (1)"}
    # the highest means, but two paired seeds cannot tell (verdicts need 3): nothing in bold
    assert "| pcrl | 0.830 ± 0.042 (2) | 0.960 ± 0.014 (2) |" in text and "**0." not in text
    assert "Headline metric: **auc**" in text
    for sentence in verdict(summary):
        assert f"- {sentence}" in text
    assert "between 1 and 2 per cell" in text
    paired = markdown_table(text, "ncc", first="comparison")
    # 10%: seeds 0, 1 give 0.80 - 0.70 = +0.10 and 0.86 - 0.72 = +0.14; imagenet has one seed at 100%
    assert paired == {
        "pcrl − scratch": {"10%": "+0.120 [+0.100, +0.140] (n=2) ?", "100%": "+0.060 [+0.050, +0.070] (n=2) ?"},
        "imagenet − scratch": {"10%": "—", "100%": "+0.010 (n=1) ?"},
        "pcrl − imagenet": {"10%": "—", "100%": "+0.040 (n=1) ?"},
    }
    assert "10,000 times (generator seed 0" in text and "✓" in text.split("## Statistics")[1]

    stored = json.loads((out / "summary.json").read_text())
    assert stored == summary
    assert list(stored) == ["ncc"] and list(stored["ncc"]["1.0"]) == ["scratch", "pcrl", "imagenet"]
    assert set(stored["ncc"]["1.0"]["pcrl"]["paired"]) == {"scratch", "imagenet"}
    assert set(stored["ncc"]["1.0"]["imagenet"]["paired"]) == {"scratch", "pcrl"}
    assert "paired" not in stored["ncc"]["1.0"]["scratch"]
    assert stored["ncc"]["1.0"]["imagenet"]["paired"]["pcrl"] == {
        "n": 1, "seeds": [0], "differences": [pytest.approx(-0.04)], "mean": pytest.approx(-0.04), "ci": None,
        "verdict": "cannot tell", "reason": "n = 1 paired seed"}
    assert (out / "plots" / "ncc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "plots" / "ncc.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["fraction"], r["init"]) for r in rows] == [
        ("0.1", "scratch"), ("0.1", "pcrl"), ("1.0", "scratch"), ("1.0", "pcrl"), ("1.0", "imagenet")]
    assert float(rows[1]["mean"]) == pytest.approx(0.83)
    assert float(rows[1]["std"]) == pytest.approx(0.03 * math.sqrt(2))
    leftovers = [p.name for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_write_report_one_table_per_task(tmp_path):
    runs = seed_runs({("pcrl", 0.5): [0.8]}) + seed_runs({("pcrl", 0.5): [0.6], ("scratch", 0.5): [0.5]}, task="lcs")
    write_report(summarise(runs), tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert markdown_table(text, "lcs") == {"scratch": {"50%": "0.500 ± 0.000 (1)"},
                                            "pcrl": {"50%": "0.600 ± 0.000 (1)"}}
    assert markdown_table(text, "ncc") == {"pcrl": {"50%": "0.800 ± 0.000 (1)"}}
    # ncc has no pair to draw; the learning-curve tables exist (header only) for dvc plots
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "lcs.csv", "lcs.png", "lcs_learning.csv", "lcs_paired.png", "ncc.csv", "ncc.png", "ncc_learning.csv"]


def test_report_adds_the_probe_table_without_claiming_a_difference(tmp_path):
    runs = seed_runs({("scratch", 1.0): [0.6], ("pcrl", 1.0): [0.7]})
    probe = {"scratch": {"0.5": 0.61, "1.0": 0.70}, "pcrl": {"0.5": 0.58, "1.0": 0.80}}
    write_report(summarise(runs), tmp_path, probe)
    text = (tmp_path / "report.md").read_text()
    table = markdown_table(text, "Frozen-encoder probe (NCC)")
    assert table == {"scratch": {"50%": "0.610", "100%": "0.700"}, "pcrl": {"50%": "0.580", "100%": "0.800"}}
    assert "**0.610**" not in text  # descriptive: no row is marked best
    assert "no difference between rows can be told" in text
    write_report(summarise(runs), tmp_path / "without")
    assert "Frozen-encoder probe" not in (tmp_path / "without" / "report.md").read_text()


def test_paired_table_of_two_paired_seeds():
    runs = [make_run("ncc", "pcrl", 0.1, s, v) for s, v in ((0, 0.80), (1, 0.84), (2, 0.90))]
    runs += [make_run("ncc", "scratch", 0.1, s, v) for s, v in ((1, 0.70), (2, 0.78), (3, 0.99))]
    # seeds 1 and 2 only: differences 0.14 and 0.12, interval their range, too few seeds for a verdict
    table = markdown_table(render_markdown(summarise(runs)), "ncc", first="comparison")
    assert table == {"pcrl − scratch": {"10%": "+0.130 [+0.120, +0.140] (n=2) ?"}}


def test_demo_like_single_seed_report_marks_no_win(tmp_path):
    runs = seed_runs({("scratch", 1.0): [0.500], ("genesis", 1.0): [0.61], ("pcrl", 1.0): [0.903]})
    write_report(summarise(runs), tmp_path)
    text = (tmp_path / "report.md").read_text()
    table = markdown_table(text, "ncc", first="comparison")
    assert table["pcrl − scratch"] == {"100%": "+0.403 (n=1) ?"}
    assert "✓" not in "".join(c for row in table.values() for c in row.values())
    assert "beats" not in text


def test_only_a_cell_better_than_every_other_of_its_column_is_bold(tmp_path):
    """pcrl beats scratch and genesis on all 4 paired seeds at 10 % (both intervals exclude 0);
    at 100 % it beats scratch but not genesis (differences of both signs): not bold there."""
    runs = seed_runs({
        ("scratch", 0.1): [0.60, 0.62, 0.61, 0.63], ("genesis", 0.1): [0.70, 0.71, 0.69, 0.72],
        ("pcrl", 0.1): [0.80, 0.82, 0.81, 0.83],
        ("scratch", 1.0): [0.80, 0.81, 0.79, 0.80], ("genesis", 1.0): [0.90, 0.80, 0.95, 0.85],
        ("pcrl", 1.0): [0.88, 0.89, 0.87, 0.90],
    })
    write_report(summarise(runs), tmp_path)
    text = (tmp_path / "report.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| pcrl | "))
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    assert cells[0].startswith("**0.815") and not cells[1].startswith("**"), row
    assert text.count("**0.") == 1  # no other cell of any table is bold
