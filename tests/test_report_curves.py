"""Tests of pcrl.report.curves (learning and probe curves) and the report's headline metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_helpers import seed_runs

from pcrl.errors import DataError
from pcrl.report.curves import curves_csv_rows, learning_curves, probe_curves
from pcrl.report.files import headline_metrics
from pcrl.report.summary import summarise


def _validation(folder: Path, history: dict) -> None:
    folder.mkdir(parents=True)
    (folder / "validation.json").write_text(json.dumps({"monitor": "auc", "history": history}))


def test_learning_curves_in_epoch_order_and_missing_runs_skipped(tmp_path: Path) -> None:
    _validation(tmp_path / "ncc" / "pcrl" / "f0.5" / "s0", {"10": {"auc": 0.9}, "2": {"auc": 0.6}, "1": {"auc": 0.5}})
    found = learning_curves(tmp_path, "ncc", [("pcrl", 0.5, 0), ("scratch", 0.5, 0)], "auc")
    assert found == {("pcrl", 0.5, 0): ([1, 2, 10], [0.5, 0.6, 0.9])}
    assert curves_csv_rows(found)[0] == {"epoch": 1, "value": 0.5, "init": "pcrl", "run": "pcrl f0.5 s0"}


def test_a_history_without_the_metric_is_named(tmp_path: Path) -> None:
    _validation(tmp_path / "ncc" / "pcrl" / "f0.5" / "s0", {"1": {"dice": 0.5}})
    with pytest.raises(DataError, match=r"validation.json: epoch 1 has no 'auc'"):
        learning_curves(tmp_path, "ncc", [("pcrl", 0.5, 0)], "auc")


def test_probe_curves_from_the_dvclive_tsv(tmp_path: Path) -> None:
    tsv = tmp_path / "pcrl" / "live" / "plots" / "metrics" / "probe" / "val_auc.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_text("step\tval_auc\n1\t0.6\n2\t0.7\n")
    assert probe_curves([tmp_path], ["pcrl", "genesis"]) == {"pcrl": ([1, 2], [0.6, 0.7])}
    tsv.write_text("step\tval_auc\n1\tnope\n")
    with pytest.raises(DataError, match="val_auc.tsv"):
        probe_curves([tmp_path], ["pcrl"])


def test_headline_metrics_are_pcrls_means_at_each_tasks_smallest_fraction() -> None:
    runs = seed_runs({("pcrl", 0.1): [0.80, 0.86], ("scratch", 0.1): [0.70, 0.72], ("pcrl", 1.0): [0.95]})
    runs += seed_runs({("pcrl", 0.1): [0.4], ("scratch", 0.1): [0.2]}, task="lcs")
    assert headline_metrics(summarise(runs)) == {"labels": 0.1, "pcrl": {"ncc": 0.83, "lcs": 0.4}}
    # without PCRL, the first pretrained initialisation in the paper's order
    other = seed_runs({("moco", 0.5): [0.6], ("genesis", 0.5): [0.7], ("scratch", 0.5): [0.5]})
    assert headline_metrics(summarise(other)) == {"labels": 0.5, "genesis": {"ncc": 0.7}}
