"""Helpers shared by the report's tests (tests/test_report_*.py): hand-made run records and
a reader of the markdown tables of ``report.md``."""

from __future__ import annotations

import itertools


def make_run(task: str, init: str, fraction: float, seed: int, value: float, primary: str = "auc",
             **extra: float) -> dict:
    """A full run record, as earlier versions of the evaluate stage wrote it."""
    return {"task": task, "init": init, "fraction": fraction, "seed": seed,
            "metrics": {primary: value, **extra}, "primary": primary, "provenance": {"git": "abc"}}


def seed_runs(values: dict[tuple[str, float], list[float]], task: str = "ncc") -> list[dict]:
    """(init, fraction) -> one value per seed (seeds 0, 1, ...)."""
    return [make_run(task, init, f, seed, v) for (init, f), vs in values.items() for seed, v in enumerate(vs)]


def markdown_table(text: str, task: str, first: str = "initialisation") -> dict[str, dict[str, str]]:
    """Parse the table under ``## <task>`` whose header starts with ``first`` (the means table by
    default, ``"comparison"`` for the paired one): row name -> column header -> cell (bold stripped)."""
    lines = text.splitlines()
    after = lines[lines.index(f"## {task}") + 1:]
    after = after[:next((i for i, line in enumerate(after) if line.startswith("## ")), len(after))]
    start = next(i for i, line in enumerate(after) if line.startswith(f"| {first} |"))
    rows = list(itertools.takewhile(lambda line: line.startswith("|"), after[start:]))
    header, *body = ([c.strip() for c in row.strip("|").split("|")] for row in rows)
    assert set("".join(body[0])) <= set("-:"), "second row must be the markdown separator"
    return {cells[0]: dict(zip(header[1:], (c.replace("**", "") for c in cells[1:]))) for cells in body[1:]}
