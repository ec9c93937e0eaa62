"""Reading back what dvclive logged: one metric's plot file (``<live>/plots/metrics/<name>.tsv``).

The pretraining stage reads its own gauges back from these files (they survive a resumed
job, where dvclive appends to them) and the report draws the probe curves from them: one
reader for both, in the core row so that neither imports the other.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pcrl.errors import DataError

#: ``(steps, values)`` of one metric.
Series = tuple[list[int], list[float]]


def read_series(path: str | Path, field: str | None = None) -> Series:
    """``step`` and ``field`` columns of a dvclive plot file (TSV with a header row).

    Args:
        path: The ``.tsv`` file.
        field: The value column; default: the file's name without ``.tsv`` (dvclive names
            the column after the metric's last path component, e.g. ``val_auc``).

    Raises:
        DataError: naming the file when it is missing, has no such column, or holds a row
            whose step or value is not a number.
    """
    path = Path(path)
    column = field or path.stem
    try:
        with path.open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle, delimiter="\t") if any(row.values())]
    except FileNotFoundError:
        raise DataError(f"{path} is missing: the run that logs {column!r} has not run") from None
    try:
        return [int(r["step"]) for r in rows], [float(r[column]) for r in rows]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: expected numeric 'step' and {column!r} columns ({exc})") from None
