"""Reading and checking the evaluate stage's run metrics (``metrics.json``).

A run record is ``{"task", "init", "fraction", "seed", "metrics": {name: number}, "primary",
"path"}``: which run it is, the numbers it reports, its headline metric and the file it came
from. The evaluate stage writes numbers only (:func:`numbers_run` takes the run's identity from
its folder); earlier versions wrote the full record (:func:`record_run`). Every error names
the file.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pcrl.errors import DataError

__all__ = ["check_run", "numbers_run", "read_metrics_json", "record_run"]

_REQUIRED = ("task", "init", "fraction", "seed", "metrics", "primary")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def read_metrics_json(path: Path) -> Any:
    """A metrics JSON file; DataError naming it when missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: metrics file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable metrics JSON file ({err})") from None


def record_run(obj: Any, source: str) -> dict[str, Any]:
    """A full run record (``{"task", "init", "fraction", "seed", "metrics", "primary"}``),
    checked; ``source`` (the file it came from) is kept as ``path``."""
    run = check_run(obj, source)
    run["path"] = source
    return run


def numbers_run(numbers: Any, source: str, *, task: str, init: str, fraction: float, seed: int,
                primary: str) -> dict[str, Any]:
    """A run from a numbers-only ``metrics.json`` (the evaluate stage's output): which run it
    is comes from its folder (``<task>/<init>/f<fraction>/s<seed>``), the headline metric from
    the task. ``test_cases`` is a count, not a metric."""
    if not isinstance(numbers, Mapping):
        raise DataError(f"{source}: expected a JSON object of numbers, got {type(numbers).__name__}")
    metrics = {k: v for k, v in numbers.items() if k != "test_cases"}
    return record_run({"task": task, "init": init, "fraction": fraction, "seed": seed,
                       "metrics": metrics, "primary": primary}, source)


def check_run(obj: Any, source: str) -> dict[str, Any]:
    """Validate one run's fields and return them normalised (``fraction`` a float, ``seed`` an
    int, every metric a float; no ``path``); DataError naming ``source`` otherwise."""
    if not isinstance(obj, Mapping):
        raise DataError(f"{source}: expected a JSON object, got {type(obj).__name__}")
    missing = [key for key in _REQUIRED if key not in obj]
    if missing:
        raise DataError(f"{source}: missing field(s) {missing}")
    task, init = _check_name(obj["task"], "task", source), _check_name(obj["init"], "init", source)
    fraction = _check_number(obj["fraction"], "fraction", source)
    if not 0.0 < fraction <= 1.0:
        raise DataError(f"{source}: fraction must be in (0, 1], got {fraction}")
    seed = obj["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"{source}: seed must be an integer, got {seed!r}")
    metrics = obj["metrics"]
    if not isinstance(metrics, Mapping) or not metrics:
        raise DataError(f"{source}: 'metrics' must be a non-empty object of numbers")
    values = {str(k): _check_number(v, f"metrics.{k}", source) for k, v in metrics.items()}
    primary = obj["primary"]
    if primary not in values:
        raise DataError(f"{source}: primary metric {primary!r} is not among the metrics {sorted(values)}")
    return {"task": task, "init": init, "fraction": fraction, "seed": seed, "metrics": values, "primary": primary}


def _check_name(value: Any, key: str, source: str) -> str:
    """A task / init name, safe as a file name."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise DataError(f"{source}: {key} must be a simple name (letters, digits, _ . -), got {value!r}")
    return value


def _check_number(value: Any, key: str, source: str) -> float:
    """A finite real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{source}: {key} must be a finite number, got {value!r}")
    return float(value)
