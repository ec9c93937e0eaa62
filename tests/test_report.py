"""Tests of pcrl.report: reading runs, statistics over seeds, verdict wording, written report."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import pytest

from pcrl.errors import DataError
from pcrl.report import collect_runs, compare, fraction_label, summarise, verdict, write_report


def _run(task: str, init: str, fraction: float, seed: int, value: float, primary: str = "auc", **extra) -> dict:
    return {"task": task, "init": init, "fraction": fraction, "seed": seed,
            "metrics": {primary: value, **extra}, "primary": primary, "provenance": {"git": "abc"}}


def _write(root: Path, run: dict) -> Path:
    path = root / run["task"] / run["init"] / f"f{run['fraction']}" / f"s{run['seed']}" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run))
    return path


def _runs(values: dict[tuple[str, float], list[float]], task: str = "ncc") -> list[dict]:
    """(init, fraction) -> one value per seed (seeds 0, 1, ...)."""
    return [_run(task, init, f, seed, v) for (init, f), vs in values.items() for seed, v in enumerate(vs)]


# ---------------------------------------------------------------------- collect_runs


def test_collect_runs_reads_and_normalises(tmp_path):
    path = _write(tmp_path, _run("ncc", "pcrl", 1, 7, 0.9, n=40))
    (run,) = collect_runs([path])
    assert run == {"task": "ncc", "init": "pcrl", "fraction": 1.0, "seed": 7,
                   "metrics": {"auc": 0.9, "n": 40.0}, "primary": "auc", "path": str(path)}
    assert isinstance(run["fraction"], float)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"task": "ncc", "init": ', "not a readable metrics JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({k: v for k, v in _run("ncc", "pcrl", 0.1, 0, 0.8).items() if k != "seed"}), r"missing.*seed"),
        (json.dumps({**_run("ncc", "pcrl", 0.1, 0, 0.8), "primary": "dice"}), "primary metric 'dice'"),
        (json.dumps(_run("ncc", "pcrl", 0.0, 0, 0.8)), r"fraction must be in \(0, 1\]"),
        (json.dumps(_run("ncc", "pcrl", 0.1, 0, float("nan"))), "metrics.auc must be a finite number"),
        (json.dumps(_run("ncc", "../up", 0.1, 0, 0.8)), "init must be a simple name"),
    ],
    ids=["truncated", "not-object", "no-seed", "bad-primary", "zero-fraction", "nan", "path-like-init"],
)
def test_collect_runs_names_the_bad_file(tmp_path, content, message):
    good = _write(tmp_path, _run("ncc", "scratch", 0.1, 0, 0.7))
    bad = tmp_path / "bad" / "metrics.json"
    bad.parent.mkdir()
    bad.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        collect_runs([good, bad])
    assert str(bad) in str(info.value)


def test_collect_runs_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found") as info:
        collect_runs([tmp_path / "nope" / "metrics.json"])
    assert str(tmp_path / "nope" / "metrics.json") in str(info.value)


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
    a = _write(tmp_path / "a", _run("ncc", "pcrl", 0.1, 0, 0.8))
    b = _write(tmp_path / "b", _run("ncc", "pcrl", 0.1, 0, 0.9))
    with pytest.raises(DataError, match="seed 0") as info:
        summarise(collect_runs([a, b]))
    assert str(a) in str(info.value) and str(b) in str(info.value)
    with pytest.raises(DataError, match="primary metric 'auc'.*'acc'"):
        summarise([_run("ncc", "pcrl", 0.1, 0, 0.8), _run("ncc", "moco", 0.1, 0, 0.8, primary="acc")])
    with pytest.raises(DataError, match="no evaluate"):
        summarise([])


def test_fraction_labels():
    assert [fraction_label(f) for f in ("0.1", 0.2, 0.5, "1.0", 0.125)] == ["10%", "20%", "50%", "100%", "12.5%"]


# ---------------------------------------------------------------------- verdict


def test_verdict_win_loss_and_tie():
    runs = _runs({
        ("scratch", 1.0): [0.69, 0.71],  # 0.70 +- 0.014: PCRL wins by 0.10
        ("genesis", 1.0): [0.88, 0.92],  # 0.90 +- 0.028: PCRL loses by 0.10
        ("moco", 1.0): [0.78, 0.80],     # 0.79 +- 0.014: diff 0.01 < PCRL's std 0.028 -> tie
        ("pcrl", 1.0): [0.78, 0.82],     # 0.80 +- 0.028
    })
    (sentence, best) = verdict(summarise(runs))
    assert sentence == (
        "ncc (auc, 100% labels): PCRL 0.800 ± 0.028 beats scratch by +0.100, loses to genesis by -0.100 "
        "and ties with moco (+0.010, within the larger std)."
    )
    assert best == "ncc (auc): PCRL is not best at every label fraction: it loses at 100% to genesis."


def test_tie_rule_is_the_larger_std_and_exact_equality_without_spread():
    cell = lambda mean, std: {"mean": mean, "std": std}  # noqa: E731
    assert compare(cell(0.80, 0.05), cell(0.76, 0.01)) == "ties with"  # 0.04 < 0.05
    assert compare(cell(0.80, 0.01), cell(0.74, 0.05)) == "beats"      # 0.06 >= 0.05
    assert compare(cell(0.70, 0.0), cell(0.7000001, 0.0)) == "loses to"
    assert compare(cell(0.1 + 0.2, 0.0), cell(0.3, 0.0)) == "ties with"  # equal but for rounding


def test_verdict_best_at_every_fraction_and_single_seed_equality():
    runs = _runs({("scratch", 0.1): [0.6], ("pcrl", 0.1): [0.7], ("scratch", 1.0): [0.8], ("pcrl", 1.0): [0.9]})
    lines = verdict(summarise(runs))
    assert lines[0] == "ncc (auc, 10% labels): PCRL 0.700 ± 0.000 beats scratch by +0.100."
    assert lines[-1] == "ncc (auc): PCRL is best at every label fraction (10% and 100%)."
    tied = _runs({("scratch", 0.5): [0.8], ("pcrl", 0.5): [0.8]})
    lines = verdict(summarise(tied))
    assert lines[0].endswith("ties with scratch (equal means).")
    assert lines[-1] == "ncc (auc): PCRL is best or tied for best at every label fraction (50%)."


def test_verdict_states_missing_pcrl_and_scratch():
    runs = _runs({("scratch", 0.1): [0.6], ("moco", 0.1): [0.7], ("pcrl", 1.0): [0.9], ("moco", 1.0): [0.8]})
    lines = verdict(summarise(runs))
    assert lines[0] == "ncc (auc, 10% labels): no PCRL run, so PCRL cannot be compared (runs: scratch, moco)."
    assert lines[1] == ("ncc (auc, 100% labels): PCRL 0.900 ± 0.000 beats moco by +0.100. "
                        "No scratch run, so the gain over random initialisation cannot be stated.")
    assert lines[2].startswith("ncc (auc): PCRL has no run at 10%, so whether it is best")
    assert not any("beats scratch" in line for line in lines)


# ---------------------------------------------------------------------- write_report


def _markdown_table(text: str, task: str) -> dict[str, dict[str, str]]:
    """Parse the table under ``## <task>``: init -> column header -> cell text (bold stripped)."""
    lines = text.splitlines()
    after = lines[lines.index(f"## {task}") + 1:]
    first = next(i for i, line in enumerate(after) if line.startswith("|"))
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

    assert json.loads((out / "summary.json").read_text()) == summary
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
