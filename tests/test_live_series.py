"""pcrl.live_series: one reader of dvclive's plot files for the pretrain stage and the report."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcrl.errors import DataError
from pcrl.live_series import read_series
from pcrl.stages.pretrain import logged_series


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_steps_and_values_of_the_column_named_after_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "val_auc.tsv", "timestamp\tstep\tval_auc\n17\t0\t0.5\n18\t1\t0.625\n\n19\t2\t0.75\n")
    assert read_series(path) == ([0, 1, 2], [0.5, 0.625, 0.75])
    assert read_series(path, "timestamp") == ([0, 1, 2], [17.0, 18.0, 19.0])


def test_the_pretrain_stage_reads_its_gauges_by_epoch(tmp_path: Path) -> None:
    live = tmp_path / "live"
    _write(live / "plots" / "metrics" / "gauges" / "effective_rank.tsv",
           "timestamp\tstep\teffective_rank\n1\t0\t3.25\n2\t1\t1.5\n")
    assert logged_series(live, "gauges/effective_rank") == {"0": 3.25, "1": 1.5}
    assert logged_series(live, "gauges/retrieval_top1") == {}  # not logged (yet): nothing


@pytest.mark.parametrize(("text", "what"), [
    ("timestamp\tstep\tval_auc\n1\t0\tnan-ish\n", "val_auc"),  # a value that is no number
    ("timestamp\tstep\tval_auc\n1\tzero\t0.5\n", "step"),  # a step that is no number
    ("timestamp\tstep\tloss\n1\t0\t0.5\n", "val_auc"),  # the column is missing
    ("timestamp\tstep\tval_auc\n1\t0\n", "val_auc"),  # a row cut short
])
def test_a_malformed_file_is_named(tmp_path: Path, text: str, what: str) -> None:
    path = _write(tmp_path / "val_auc.tsv", text)
    with pytest.raises(DataError, match=r"val_auc\.tsv: expected numeric 'step' and 'val_auc'"):
        read_series(path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"val_auc\.tsv is missing"):
        read_series(tmp_path / "val_auc.tsv")
