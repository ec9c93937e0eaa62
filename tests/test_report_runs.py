"""Tests of reading runs: pcrl.report.runs and the report stage's reading of the evaluate
stage's tree (pcrl.stages.report.run_report: which runs are expected, numbers-only files and
full records, each malformed file named)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from report_helpers import make_run, markdown_table

from pcrl.errors import DataError
from pcrl.report.runs import read_metrics_json
from pcrl.stages.report import run_report


def _stage_world(root: Path) -> dict[Path, object]:
    """ncc, scratch and pcrl at 100 % labels, seeds 0 and 7: the evaluate stage's numbers-only
    files, and one full record as earlier versions wrote it. Returns path -> content."""
    files: dict[Path, object] = {}
    for init, seed, value in (("pcrl", 0, 0.9), ("pcrl", 7, 0.8), ("scratch", 0, 0.7)):
        files[root / "ncc" / init / "f1.0" / f"s{seed}" / "metrics.json"] = {"auc": value, "n": 40, "test_cases": 3}
    files[root / "ncc" / "scratch" / "f1.0" / "s7" / "metrics.json"] = make_run("ncc", "scratch", 1, 7, 0.7, n=40)
    for path, content in files.items():
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(content))
    return files


_STAGE_PARAMS = {"inits": ["scratch", "pcrl"], "fractions": [1.0], "seeds": [0, 7]}


def test_report_stage_reads_numbers_only_files_and_full_records(tmp_path):
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
        (json.dumps({k: v for k, v in make_run("ncc", "pcrl", 1.0, 0, 0.8).items() if k != "seed"}), r"missing.*seed"),
        (json.dumps({"dice": 0.8, "test_cases": 3}), "primary metric 'auc' is not among the metrics"),
        (json.dumps(make_run("ncc", "pcrl", 0.0, 0, 0.8)), r"fraction must be in \(0, 1\]"),
        (json.dumps({"auc": float("nan")}), "metrics.auc must be a finite number"),
        (json.dumps(make_run("ncc", "../up", 1.0, 0, 0.8)), "init must be a simple name"),
        (json.dumps(make_run("ncc", "pcrl", 1.0, 3, 0.8)), "describes task ncc, init pcrl, fraction 1.0, seed 3, not"),
    ],
    ids=["truncated", "not-object", "no-seed", "bad-primary", "zero-fraction", "nan", "path-like-init",
         "another-run"],
)
def test_report_stage_names_the_bad_file(tmp_path, content, message):
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


def _evaluated(root: Path, task: str, init: str, fraction: float, seed: int, numbers: dict) -> None:
    """A numbers-only metrics.json where the evaluate stage writes it."""
    folder = root / task / init / f"f{fraction}" / f"s{seed}"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({**numbers, "test_cases": 3}))


def _chest_numbers(mean: float) -> dict:
    from pcrl.tasks import get_task

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
    assert markdown_table(text, "chest14") == {"scratch": {"100%": "0.550 ± 0.000 (1)"},
                                                "moco": {"100%": "0.620 ± 0.000 (1)"}}
    assert "| moco | 0.620 ± 0.000 (1) |" in text  # one seed: the higher mean is not bold
    assert markdown_table(text, "ncc") == {"scratch": {"100%": "0.600 ± 0.000 (1)"},
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
