"""The curves a report plots beside its tables, read from what the training stages wrote.

- fine-tuning learning curves: each run's ``validation.json`` (``history``: epoch -> the
  validation metrics scored after that epoch, :mod:`pcrl.finetune.selection`), under
  ``<finetuned>/<task>/<init>/f<fraction>/s<seed>/``;
- pretraining probe curves: each method's ``live/plots/metrics/probe/val_auc.tsv`` (the
  frozen-encoder probe's validation AUC per epoch, written by dvclive) under
  ``<pretrained>/<method>/``.

A missing file gives no curve (a run trained without validation, a method without the probe);
a malformed one is an error naming it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pcrl.atomic import read_json
from pcrl.errors import DataError
from pcrl.live_series import read_series

#: One learning curve: (epochs, values) of a run's validation headline metric.
Curve = tuple[list[int], list[float]]

PROBE_CURVE = Path("live") / "plots" / "metrics" / "probe" / "val_auc.tsv"


def learning_curve(folder: Path, metric: str) -> Curve | None:
    """Epochs and validation ``metric`` of one fine-tuning run (None: no validation.json)."""
    path = Path(folder) / "validation.json"
    if not path.is_file():
        return None
    record = read_json(path, hint="the fine-tune stage writes it")
    history = record.get("history") if isinstance(record, dict) else None
    if not isinstance(history, dict):
        raise DataError(f"{path}: no 'history' mapping of epochs to validation metrics")
    epochs, values = [], []
    for epoch, scores in sorted(history.items(), key=lambda kv: int(kv[0])):
        if not isinstance(scores, dict) or metric not in scores:
            raise DataError(f"{path}: epoch {epoch} has no {metric!r} (has {sorted(scores or {})})")
        epochs.append(int(epoch))
        values.append(float(scores[metric]))
    return epochs, values


def learning_curves(finetuned: Path, task: str, runs: Iterable[tuple[str, float, int]], metric: str
                    ) -> dict[tuple[str, float, int], Curve]:
    """``(init, fraction, seed) -> curve`` for the runs of ``task`` that have one."""
    found = {}
    for init, fraction, seed in runs:
        curve = learning_curve(Path(finetuned) / task / init / f"f{fraction}" / f"s{seed}", metric)
        if curve is not None:
            found[(init, fraction, seed)] = curve
    return found


def probe_curves(pretrained: Sequence[Path], methods: Iterable[str]) -> dict[str, Curve]:
    """``method -> (epochs, probe validation AUC)`` for the methods that logged the probe."""
    found = {}
    for method in methods:
        for root in pretrained:
            path = Path(root) / method / PROBE_CURVE
            if path.is_file():
                found[method] = read_series(path, "val_auc")
                break
    return found


def curves_csv_rows(curves: dict[tuple[str, float, int], Curve]) -> list[dict[str, Any]]:
    """Long rows (``epoch, value, init, run``) for ``dvc plots`` (one line per run)."""
    rows = []
    for (init, fraction, seed), (epochs, values) in curves.items():
        for epoch, value in zip(epochs, values):
            rows.append({"epoch": epoch, "value": value, "init": init, "run": f"{init} f{fraction} s{seed}"})
    return rows
