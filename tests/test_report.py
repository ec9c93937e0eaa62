"""Tests of pcrl.report: reading runs, statistics over seeds, paired bootstrap comparisons,
verdict wording, written report."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pcrl.errors import DataError
from pcrl.report import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    bootstrap_interval,
    comparison_rows,
    fraction_label,
    paired_difference,
    read_metrics_json,
    summarise,
    verdict,
    write_report,
)


def _run(task: str, init: str, fraction: float, seed: int, value: float, primary: str = "auc", **extra) -> dict:
    return {"task": task, "init": init, "fraction": fraction, "seed": seed,
            "metrics": {primary: value, **extra}, "primary": primary, "provenance": {"git": "abc"}}


def _runs(values: dict[tuple[str, float], list[float]], task: str = "ncc") -> list[dict]:
    """(init, fraction) -> one value per seed (seeds 0, 1, ...)."""
    return [_run(task, init, f, seed, v) for (init, f), vs in values.items() for seed, v in enumerate(vs)]


# ---------------------------------------------------------------------- reading runs (the report stage)


def _stage_world(root: Path) -> dict[Path, object]:
    """ncc, scratch and pcrl at 100 % labels, seeds 0 and 7: the evaluate stage's numbers-only
    files, and one full record as earlier versions wrote it. Returns path -> content."""
    files: dict[Path, object] = {}
    for init, seed, value in (("pcrl", 0, 0.9), ("pcrl", 7, 0.8), ("scratch", 0, 0.7)):
        files[root / "ncc" / init / "f1.0" / f"s{seed}" / "metrics.json"] = {"auc": value, "n": 40, "test_cases": 3}
    files[root / "ncc" / "scratch" / "f1.0" / "s7" / "metrics.json"] = _run("ncc", "scratch", 1, 7, 0.7, n=40)
    for path, content in files.items():
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(content))
    return files


_STAGE_PARAMS = {"inits": ["scratch", "pcrl"], "fractions": [1.0], "seeds": [0, 7]}


def test_report_stage_reads_numbers_only_files_and_full_records(tmp_path):
    from pcrl.stages.report import run_report

    _stage_world(tmp_path / "evaluate")
    run_report(_STAGE_PARAMS, {"require_complete": True}, evaluations=tmp_path / "evaluate", out=tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    # by hand: pcrl 0.9 and 0.8 (mean 0.85, sample std 0.05 * sqrt(2)); scratch 0.7 twice;
    # paired differences 0.2 (seed 0) and 0.1 (seed 7): mean 0.15, bootstrap interval = their range,
    # Student-t half width t(0.975, df 1) * 0.05 * sqrt(2) / sqrt(2) = 12.7062047 * 0.05
    half = 12.706204736174698 * 0.05
    assert summary == {"ncc": {"1.0": {
        "scratch": {"metric": "auc", "mean": 0.7, "std": 0.0, "n": 2, "values": [0.7, 0.7], "seeds": [0, 7],
                    "metrics": {"auc": 0.7, "n": 40.0}},
        "pcrl": {"metric": "auc", "mean": pytest.approx(0.85), "std": pytest.approx(0.05 * math.sqrt(2)), "n": 2,
                 "values": [0.9, 0.8], "seeds": [0, 7], "metrics": {"auc": pytest.approx(0.85), "n": 40.0},
                 "paired": {"scratch": {
                     "n": 2, "seeds": [0, 7], "differences": pytest.approx([0.2, 0.1]), "mean": pytest.approx(0.15),
                     "ci": pytest.approx([0.1, 0.2]), "t_ci": pytest.approx([0.15 - half, 0.15 + half]),
                     "verdict": "cannot tell",
                     "reason": "the 95 % interval [+0.100, +0.200] excludes 0, but 2 paired seeds are too few "
                               "(at least 3)"}}},
    }}}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"auc": ', "not a readable metrics JSON"),
        ("[1, 2]", "expected a JSON object of numbers, got list"),
        (json.dumps({k: v for k, v in _run("ncc", "pcrl", 1.0, 0, 0.8).items() if k != "seed"}), r"missing.*seed"),
        (json.dumps({"dice": 0.8, "test_cases": 3}), "primary metric 'auc' is not among the metrics"),
        (json.dumps(_run("ncc", "pcrl", 0.0, 0, 0.8)), r"fraction must be in \(0, 1\]"),
        (json.dumps({"auc": float("nan")}), "metrics.auc must be a finite number"),
        (json.dumps(_run("ncc", "../up", 1.0, 0, 0.8)), "init must be a simple name"),
        (json.dumps(_run("ncc", "pcrl", 1.0, 3, 0.8)), "describes task ncc, init pcrl, fraction 1.0, seed 3, not"),
    ],
    ids=["truncated", "not-object", "no-seed", "bad-primary", "zero-fraction", "nan", "path-like-init",
         "another-run"],
)
def test_report_stage_names_the_bad_file(tmp_path, content, message):
    from pcrl.stages.report import run_report

    _stage_world(tmp_path / "evaluate")
    bad = tmp_path / "evaluate" / "ncc" / "pcrl" / "f1.0" / "s0" / "metrics.json"
    bad.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        run_report(_STAGE_PARAMS, {"require_complete": True}, evaluations=tmp_path / "evaluate",
                   out=tmp_path / "out")
    assert str(bad) in str(info.value)
    assert not (tmp_path / "out").exists()


def test_read_metrics_json_names_a_missing_file(tmp_path):
    missing = tmp_path / "nope" / "metrics.json"
    with pytest.raises(DataError, match="metrics file not found") as info:
        read_metrics_json(missing)
    assert str(missing) in str(info.value)


# ---------------------------------------------------------------------- summarise


def test_summarise_mean_and_sample_std_over_two_seeds():
    runs = [_run("ncc", "pcrl", 0.1, 1, 0.86, n=50), _run("ncc", "pcrl", 0.1, 0, 0.80, n=40),
            _run("ncc", "scratch", 0.1, 0, 0.70, n=40)]
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
    runs = [_run("ncc", i, f, 0, 0.5) for f in (1.0, 0.1, 0.5) for i in ("imagenet", "pcrl", "moco", "scratch")]
    runs.append(_run("bms", "pcrl", 0.2, 0, 0.6, primary="dice_mean"))
    summary = summarise(runs)
    assert list(summary) == ["bms", "ncc"]
    assert list(summary["ncc"]) == ["0.1", "0.5", "1.0"]
    assert list(summary["ncc"]["0.1"]) == ["scratch", "moco", "pcrl", "imagenet"]
    assert summary["bms"]["0.2"]["pcrl"]["metric"] == "dice_mean"


def test_summarise_rejects_duplicates_mixed_primaries_and_nothing(tmp_path):
    a, b = tmp_path / "a" / "metrics.json", tmp_path / "b" / "metrics.json"
    with pytest.raises(DataError, match="seed 0") as info:
        summarise([{**_run("ncc", "pcrl", 0.1, 0, 0.8), "path": str(a)},
                   {**_run("ncc", "pcrl", 0.1, 0, 0.9), "path": str(b)}])
    assert str(a) in str(info.value) and str(b) in str(info.value)
    with pytest.raises(DataError, match="primary metric 'auc'.*'acc'"):
        summarise([_run("ncc", "pcrl", 0.1, 0, 0.8), _run("ncc", "moco", 0.1, 0, 0.8, primary="acc")])
    with pytest.raises(DataError, match="no evaluate"):
        summarise([])


def test_fraction_labels():
    assert [fraction_label(f) for f in ("0.1", 0.2, 0.5, "1.0", 0.125)] == ["10%", "20%", "50%", "100%", "12.5%"]


# ---------------------------------------------------------------------- paired statistics


def test_bootstrap_interval_of_two_or_three_differences_is_their_range():
    # n = 2: the resampled means are d1, (d1+d2)/2 and d2 with probabilities 1/4, 1/2, 1/4, so the
    # 2.5 % and 97.5 % quantiles are d1 and d2; n = 3: all-min / all-max has probability 1/27 > 2.5 %
    assert bootstrap_interval([0.3, 0.1]) == pytest.approx((0.1, 0.3))
    assert bootstrap_interval([0.02, -0.01, 0.05]) == pytest.approx((-0.01, 0.05))
    assert bootstrap_interval([0.25, 0.25, 0.25]) == pytest.approx((0.25, 0.25))


def test_bootstrap_interval_agrees_with_an_independent_bootstrap():
    diffs = [0.052, 0.010, 0.094, 0.031, 0.075, -0.004, 0.060, 0.041]
    rng = np.random.default_rng(2024)  # another stream, drawn another way: only Monte Carlo error is shared
    means = sorted(sum(rng.choice(diffs, size=len(diffs), replace=True)) / len(diffs)
                   for _ in range(BOOTSTRAP_RESAMPLES))
    reference = (means[int(0.025 * BOOTSTRAP_RESAMPLES)], means[int(0.975 * BOOTSTRAP_RESAMPLES) - 1])
    spread = np.std(diffs) / math.sqrt(len(diffs))  # sd of the bootstrap distribution of the mean
    low, high = bootstrap_interval(diffs)
    assert low == pytest.approx(reference[0], abs=0.15 * spread)
    assert high == pytest.approx(reference[1], abs=0.15 * spread)
    assert low < np.mean(diffs) < high


def test_bootstrap_interval_for_many_differences_is_close_to_the_normal_interval():
    diffs = np.random.default_rng(7).normal(0.05, 0.1, size=400)
    half = 1.96 * diffs.std(ddof=1) / math.sqrt(diffs.size)
    low, high = bootstrap_interval(diffs.tolist())
    assert low == pytest.approx(diffs.mean() - half, abs=0.1 * half)
    assert high == pytest.approx(diffs.mean() + half, abs=0.1 * half)


def test_bootstrap_interval_is_reproducible_and_uses_its_seed():
    diffs = [0.05, -0.02, 0.11, 0.03, 0.07]
    assert bootstrap_interval(diffs) == bootstrap_interval(diffs)
    assert bootstrap_interval(diffs, seed=BOOTSTRAP_SEED + 1) != bootstrap_interval(diffs)
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_interval([])


def test_pairing_by_seed_leaves_out_seeds_missing_in_one_cell(tmp_path):
    runs = [_run("ncc", "pcrl", 0.1, s, v) for s, v in ((0, 0.80), (1, 0.84), (2, 0.90))]
    runs += [_run("ncc", "scratch", 0.1, s, v) for s, v in ((1, 0.70), (2, 0.78), (3, 0.99))]
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
    write_report(summary, tmp_path)
    table = _markdown_table((tmp_path / "report.md").read_text(), "ncc", first="comparison")
    assert table == {"pcrl − scratch": {"10%": "+0.130 [+0.120, +0.140] (n=2) ?"}}


def test_one_paired_seed_cannot_tell():
    pair = paired_difference({"seeds": [0, 1], "values": [0.9, 0.8]}, {"seeds": [1, 5], "values": [0.6, 0.1]})
    assert (pair["n"], pair["seeds"], pair["ci"]) == (1, [1], None)
    assert pair["mean"] == pytest.approx(0.2)
    assert (pair["verdict"], pair["reason"]) == ("cannot tell", "n = 1 paired seed")
    none = paired_difference({"seeds": [0], "values": [0.9]}, {"seeds": [1], "values": [0.6]})
    assert (none["n"], none["mean"], none["verdict"]) == (0, None, "cannot tell")


def test_interval_containing_zero_cannot_tell():
    runs = _runs({("scratch", 0.5): [0.70, 0.60], ("pcrl", 0.5): [0.68, 0.65]})  # differences -0.02, +0.05
    summary = summarise(runs)
    pair = summary["ncc"]["0.5"]["pcrl"]["paired"]["scratch"]
    assert pair["ci"] == pytest.approx([-0.02, 0.05])
    assert (pair["verdict"], pair["reason"]) == ("cannot tell", "the 95 % interval [-0.020, +0.050] contains 0")
    sentence, best = verdict(summary)
    assert sentence.endswith("Against scratch: +0.015 over 2 paired seeds; cannot tell "
                             "(the 95 % interval [-0.020, +0.050] contains 0).")
    assert best == ("ncc (auc): whether PCRL is best at every label fraction cannot be told; "
                    "undecided at 50% against scratch.")
    # an interval that touches 0 (differences 0 and +0.05: interval [0, +0.05]) does not exclude it
    touching = paired_difference({"seeds": [0, 1], "values": [0.7, 0.75]}, {"seeds": [0, 1], "values": [0.7, 0.7]})
    assert touching["ci"] == pytest.approx([0.0, 0.05])
    assert (touching["verdict"], touching["reason"]) == ("cannot tell", "the 95 % interval [+0.000, +0.050] contains 0")


def test_clear_differences_over_five_seeds_are_better_and_worse():
    runs = _runs({
        ("scratch", 1.0): [0.70, 0.72, 0.69, 0.71, 0.70],
        ("genesis", 1.0): [0.90, 0.91, 0.89, 0.92, 0.90],
        ("pcrl", 1.0): [0.80, 0.83, 0.79, 0.82, 0.80],  # scratch + (0.10, 0.11, 0.10, 0.11, 0.10)
    })
    summary = summarise(runs)
    cells = summary["ncc"]["1.0"]
    up, down = cells["pcrl"]["paired"]["scratch"], cells["pcrl"]["paired"]["genesis"]
    assert (up["n"], up["verdict"], down["verdict"]) == (5, "better", "worse")
    assert up["mean"] == pytest.approx(0.104)
    assert 0.10 - 1e-12 <= up["ci"][0] <= up["mean"] <= up["ci"][1] <= 0.11 + 1e-12
    assert down["ci"][1] < 0
    assert set(cells["genesis"]["paired"]) == {"scratch", "pcrl"} and "paired" not in cells["scratch"]
    sentence, best = verdict(summary)
    assert "Against scratch: +0.104 over 5 paired seeds, 95 % interval [" in sentence
    assert "; PCRL is better (the interval excludes 0). Against genesis: -0.096" in sentence
    assert "PCRL is worse (the interval excludes 0)." in sentence
    assert best == "ncc (auc): PCRL is not best at every label fraction: it is worse at 100% than genesis."


def test_best_at_every_fraction_only_when_every_comparison_is_better():
    better = {("scratch", f): [0.6, 0.62, 0.61] for f in (0.1, 1.0)}
    better |= {("pcrl", f): [0.7, 0.73, 0.70] for f in (0.1, 1.0)}
    assert verdict(summarise(_runs(better)))[-1] == (
        "ncc (auc): PCRL is best at every label fraction (10% and 100%): better than every other initialisation.")
    mixed = better | {("moco", 1.0): [0.71, 0.70, 0.74], ("genesis", 0.1): [0.8, 0.81, 0.82]}
    assert verdict(summarise(_runs(mixed)))[-1] == (
        "ncc (auc): PCRL is not best at every label fraction: it is worse at 10% than genesis; "
        "undecided at 100% against moco.")


def test_demo_like_single_seed_never_claims_a_win(tmp_path):
    runs = _runs({("scratch", 1.0): [0.500], ("genesis", 1.0): [0.61], ("pcrl", 1.0): [0.903]})
    summary = summarise(runs)
    lines = verdict(summary)
    for line in lines:
        assert not any(word in line.lower() for word in ("beat", "better", "best at every label fraction (")), line
    assert lines[0] == ("ncc (auc, 100% labels): PCRL 0.903 ± 0.000 over 1 seed. Against scratch: +0.403 over "
                        "1 paired seed; cannot tell (n = 1 paired seed). Against genesis: +0.293 over 1 paired "
                        "seed; cannot tell (n = 1 paired seed).")
    assert lines[1] == ("ncc (auc): whether PCRL is best at every label fraction cannot be told; "
                        "undecided at 100% against scratch and genesis.")
    write_report(summary, tmp_path)
    text = (tmp_path / "report.md").read_text()
    table = _markdown_table(text, "ncc", first="comparison")
    assert table["pcrl − scratch"] == {"100%": "+0.403 (n=1) ?"}
    assert "✓" not in "".join(c for row in table.values() for c in row.values())
    assert "beats" not in text


def test_verdict_states_missing_pcrl_and_scratch():
    runs = _runs({("scratch", 0.1): [0.6], ("moco", 0.1): [0.7], ("pcrl", 1.0): [0.9, 0.92], ("moco", 1.0): [0.8, 0.8]})
    lines = verdict(summarise(runs))
    assert lines[0] == "ncc (auc, 10% labels): no PCRL run, so PCRL cannot be compared (runs: scratch, moco)."
    assert lines[1].startswith("ncc (auc, 100% labels): PCRL 0.910 ± 0.014 over 2 seeds. Against moco: +0.110 "
                               "over 2 paired seeds; cannot tell (the 95 % interval [+0.100, +0.120] excludes 0, "
                               "but 2 paired seeds are too few (at least 3)).")
    assert lines[1].endswith("No scratch run, so the gain over random initialisation cannot be stated.")
    assert lines[2].startswith("ncc (auc): PCRL has no run at 10%, so whether it is best")
    assert not any("Against scratch" in line for line in lines)


def test_comparison_rows_order():
    assert comparison_rows(["scratch", "genesis", "moco", "pcrl", "imagenet"]) == [
        ("pcrl", "scratch"), ("genesis", "scratch"), ("moco", "scratch"), ("pcrl", "genesis"), ("pcrl", "moco"),
        ("imagenet", "scratch"), ("pcrl", "imagenet")]
    assert comparison_rows(["moco", "pcrl"]) == [("pcrl", "moco")]
    assert comparison_rows(["scratch"]) == []


# ---------------------------------------------------------------------- write_report


def _markdown_table(text: str, task: str, first: str = "initialisation") -> dict[str, dict[str, str]]:
    """Parse the table under ``## <task>`` whose header starts with ``first`` (the means table by
    default, ``"comparison"`` for the paired one): row name -> column header -> cell (bold stripped)."""
    lines = text.splitlines()
    after = lines[lines.index(f"## {task}") + 1:]
    after = after[:next((i for i, line in enumerate(after) if line.startswith("## ")), len(after))]
    first = next(i for i, line in enumerate(after) if line.startswith(f"| {first} |"))
    rows = list(itertools.takewhile(lambda line: line.startswith("|"), after[first:]))
    header, *body = ([c.strip() for c in row.strip("|").split("|")] for row in rows)
    assert set("".join(body[0])) <= set("-:"), "second row must be the markdown separator"
    return {cells[0]: dict(zip(header[1:], (c.replace("**", "") for c in cells[1:]))) for cells in body[1:]}


def test_write_report_table_plots_and_json(tmp_path):
    runs = _runs({
        ("pcrl", 0.1): [0.80, 0.86], ("scratch", 0.1): [0.70, 0.72], ("scratch", 1.0): [0.90, 0.90],
        ("pcrl", 1.0): [0.95, 0.97], ("imagenet", 1.0): [0.91],
    })
    summary = summarise(runs)
    out = tmp_path / "report"
    write_report(summary, out)

    text = (out / "report.md").read_text()
    table = _markdown_table(text, "ncc")
    assert list(table) == ["scratch", "pcrl", "imagenet"]
    assert table["pcrl"] == {"10%": "0.830 ± 0.042 (2)", "100%": "0.960 ± 0.014 (2)"}
    assert table["scratch"] == {"10%": "0.710 ± 0.014 (2)", "100%": "0.900 ± 0.000 (2)"}
    assert table["imagenet"] == {"10%": "—", "100%": "0.910 ± 0.000 (1)"}
    assert "| pcrl | **0.830 ± 0.042 (2)** | **0.960 ± 0.014 (2)** |" in text  # best of each column in bold
    assert "Headline metric: **auc**" in text
    for sentence in verdict(summary):
        assert f"- {sentence}" in text
    assert "between 1 and 2 per cell" in text
    paired = _markdown_table(text, "ncc", first="comparison")
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
    runs = _runs({("pcrl", 0.5): [0.8]}) + _runs({("pcrl", 0.5): [0.6], ("scratch", 0.5): [0.5]}, task="lcs")
    write_report(summarise(runs), tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert _markdown_table(text, "lcs") == {"scratch": {"50%": "0.500 ± 0.000 (1)"},
                                            "pcrl": {"50%": "0.600 ± 0.000 (1)"}}
    assert _markdown_table(text, "ncc") == {"pcrl": {"50%": "0.800 ± 0.000 (1)"}}
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["lcs.csv", "lcs.png", "ncc.csv", "ncc.png"]


def test_report_adds_the_probe_table_without_claiming_a_difference(tmp_path):
    runs = _runs({("scratch", 1.0): [0.6], ("pcrl", 1.0): [0.7]})
    probe = {"scratch": {"0.5": 0.61, "1.0": 0.70}, "pcrl": {"0.5": 0.58, "1.0": 0.80}}
    write_report(summarise(runs), tmp_path, probe)
    text = (tmp_path / "report.md").read_text()
    table = _markdown_table(text, "Frozen-encoder probe (NCC)")
    assert table == {"scratch": {"50%": "0.610", "100%": "0.700"}, "pcrl": {"50%": "0.580", "100%": "0.800"}}
    assert "**0.610**" not in text  # descriptive: no row is marked best
    assert "no difference between rows can be told" in text
    write_report(summarise(runs), tmp_path / "without")
    assert "Frozen-encoder probe" not in (tmp_path / "without" / "report.md").read_text()


def test_the_t_interval_guards_the_bootstrap_and_matches_its_formula():
    from scipy import stats

    from pcrl.report import t_interval

    diffs = [0.30, 0.01, 0.02, 0.015, 0.012]  # all positive, but one outlier: the bootstrap excludes 0
    low, high = t_interval(diffs)
    half = stats.t.ppf(0.975, 4) * np.std(diffs, ddof=1) / np.sqrt(5)
    assert (low, high) == pytest.approx((np.mean(diffs) - half, np.mean(diffs) + half))
    pair = paired_difference({"seeds": list(range(5)), "values": [0.5 + d for d in diffs]},
                             {"seeds": list(range(5)), "values": [0.5] * 5})
    assert pair["ci"][0] > 0 and low < 0
    assert pair["verdict"] == "cannot tell" and "Student-t interval" in pair["reason"]


# ---------------------------------------------------------------------- the report stage (Chest14)


def _evaluated(root: Path, task: str, init: str, fraction: float, seed: int, numbers: dict) -> None:
    """A numbers-only metrics.json where the evaluate stage writes it."""
    folder = root / task / init / f"f{fraction}" / f"s{seed}"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({**numbers, "test_cases": 3}))


def _chest_numbers(mean: float) -> dict:
    from pcrl.finetune.tasks import get_task

    names = get_task("chest14").class_names
    return {**{f"auc_{n}": mean for n in names}, "auc_mean": mean, "labels_scored": 14, "n": 6}


def _ncc_world(root: Path) -> None:
    for init, value in (("scratch", 0.6), ("pcrl", 0.7)):
        _evaluated(root, "ncc", init, 1.0, 0, {"auc": value, "n": 9, "positives": 3})


def _finetune(chest_inits: list[str] | None) -> dict:
    section = {"inits": ["scratch", "pcrl"], "fractions": [1.0], "seeds": [0]}
    if chest_inits is not None:
        section["chest14"] = {"inits": chest_inits, "network": {"base": 8}}
    return section


def test_report_stage_gives_chest14_its_table_and_plot(tmp_path):
    from pcrl.stages.report import run_report

    evaluations = tmp_path / "evaluate"
    _ncc_world(evaluations)
    for init, value in (("scratch", 0.55), ("moco", 0.62)):  # chest14's own inits
        _evaluated(evaluations, "chest14", init, 1.0, 0, _chest_numbers(value))
    out = tmp_path / "report"
    run_report(_finetune(["scratch", "moco"]), {"require_complete": True}, evaluations=evaluations, out=out)
    text = (out / "report.md").read_text()
    assert "## chest14" in text and "Headline metric: **auc_mean**" in text
    assert "the findings with both classes among the test images: 14 of 14 here" in text
    assert text.count("both classes among the test images") == 1  # not said of ncc
    assert _markdown_table(text, "chest14") == {"scratch": {"100%": "0.550 ± 0.000 (1)"},
                                                "moco": {"100%": "0.620 ± 0.000 (1)"}}
    assert "| moco | **0.620 ± 0.000 (1)** |" in text
    assert _markdown_table(text, "ncc") == {"scratch": {"100%": "0.600 ± 0.000 (1)"},
                                            "pcrl": {"100%": "0.700 ± 0.000 (1)"}}
    summary = json.loads((out / "summary.json").read_text())
    cell = summary["chest14"]["1.0"]["moco"]
    assert (cell["metric"], cell["mean"], cell["metrics"]["auc_hernia"]) == ("auc_mean", 0.62, 0.62)
    assert "test_cases" not in cell["metrics"]
    assert (out / "plots" / "chest14.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "plots" / "chest14.csv", newline="") as fh:
        assert [(r["init"], float(r["mean"])) for r in csv.DictReader(fh)] == [("scratch", 0.55), ("moco", 0.62)]


def test_report_stage_without_chest14_inits_is_unchanged(tmp_path):
    """``finetune.chest14.inits: []`` (or no chest14 section): no chest14 run is expected,
    and a left-over chest14 folder is ignored, as the runs of any init no longer listed."""
    from pcrl.stages.report import run_report

    evaluations = tmp_path / "evaluate"
    _ncc_world(evaluations)
    outputs = {}
    for name, section in (("absent", _finetune(None)), ("empty", _finetune([]))):
        run_report(section, {"require_complete": True}, evaluations=evaluations, out=tmp_path / name)
        outputs[name] = {p.relative_to(tmp_path / name): p.read_bytes()
                         for p in sorted((tmp_path / name).rglob("*")) if p.is_file()}
    assert outputs["absent"] == outputs["empty"]
    assert json.loads(outputs["empty"][Path("summary.json")]).keys() == {"ncc"}
    _evaluated(evaluations, "chest14", "scratch", 1.0, 0, _chest_numbers(0.5))  # stale
    run_report(_finetune([]), {"require_complete": True}, evaluations=evaluations, out=tmp_path / "stale")
    assert json.loads((tmp_path / "stale" / "summary.json").read_text()).keys() == {"ncc"}


def test_report_stage_refuses_missing_chest14_runs(tmp_path, caplog):
    from pcrl.stages.report import run_report

    evaluations = tmp_path / "evaluate"
    _ncc_world(evaluations)  # no chest14 folder at all
    with pytest.raises(DataError, match=r"2 of 4 runs have no metrics: .*chest14/scratch/f1.0/s0/metrics.json"):
        run_report(_finetune(["scratch", "pcrl"]), {"require_complete": True}, evaluations=evaluations,
                   out=tmp_path / "report")
    assert not (tmp_path / "report").exists()
    _evaluated(evaluations, "chest14", "pcrl", 1.0, 0, _chest_numbers(0.7))
    with pytest.raises(DataError, match=r"1 of 4 runs have no metrics: .*chest14/scratch/f1.0/s0"):
        run_report(_finetune(["scratch", "pcrl"]), {"require_complete": True}, evaluations=evaluations,
                   out=tmp_path / "report")
    run_report(_finetune(["scratch", "pcrl"]), {"require_complete": False}, evaluations=evaluations,
               out=tmp_path / "report")
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert set(summary) == {"chest14", "ncc"} and set(summary["chest14"]["1.0"]) == {"pcrl"}
    assert "no metrics yet" in caplog.text and "chest14/scratch" in caplog.text
