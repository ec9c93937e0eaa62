"""``pcrl report``: the paper-style report over every evaluated run.

The runs expected are the product of the ``finetune`` params (initialisations x label
fractions x seeds) for every task evaluated under ``data/evaluate``; their ``metrics.json``
files are read from ``<evaluations>/<task>/<init>/f<fraction>/s<seed>/``, the layout the
DAG gives the evaluate stage. Chest14, the 2D task, is fine-tuned from the 2D pretraining's
initialisations, ``finetune.chest14.inits`` (the same fractions and seeds): its runs are
expected whenever that list is not empty, and never when it is empty or absent. Folders of
runs no longer in the params (left over from an earlier configuration) are ignored; a
missing run is an error unless ``report.require_complete`` is false. The output folder
(``report.md``, ``summary.json``, ``plots/<task>.png|.csv``, see
:func:`pcrl.report.write_report`) is swapped in whole.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pcrl.atomic import atomic_dir, read_json
from pcrl.preprocessing.splits import fraction_key
from pcrl.errors import DataError
from pcrl.tasks import TASKS, get_task
from pcrl.settings import setting_of_task
from pcrl.report import numbers_run, read_metrics_json, record_run, summarise, write_report
from pcrl.report.curves import learning_curves, probe_curves

log = logging.getLogger(__name__)

METRICS_NAME = "metrics.json"


def run_folder(evaluations: Path, task: str, init: str, fraction: float, seed: int) -> Path:
    """Where the evaluate stage of one run writes (``f<fraction>`` as DVC prints the number)."""
    return Path(evaluations) / task / init / f"f{fraction}" / f"s{seed}"


def expected_runs(tasks: Sequence[str], inits: Sequence[str], fractions: Sequence[float],
                  seeds: Sequence[int]) -> list[tuple[str, str, float, int]]:
    """Every (task, init, fraction, seed) of the protocol, in a stable order."""
    return list(itertools.product(tasks, inits, fractions, seeds))


def task_inits(task: str, finetune: dict[str, Any]) -> list[str]:
    """The initialisations ``task`` is fine-tuned from: its setting's list
    (``finetune.inits``, ``finetune.chest14.inits``; [] when absent)."""
    return setting_of_task(task).inits(finetune)


def reported_tasks(finetune: dict[str, Any], evaluations: Path) -> list[str]:
    """The tasks whose runs are expected: a task of a setting with its own list of
    initialisations (2D) whenever it lists some; the others (3D, which share
    ``finetune.inits``) once they have a folder under ``evaluations``."""
    return [t for t in TASKS
            if (task_inits(t, finetune) if setting_of_task(t).finetune_keys else (evaluations / t).is_dir())]


def _read_present(run: tuple[str, str, float, int], path: Path) -> dict[str, Any]:
    """One evaluated run: numbers-only metrics (identity from the folder), or a full record
    (``{"task", ..., "metrics": {...}}``, written by earlier versions) checked against it."""
    task, init, fraction, seed = run
    content = read_metrics_json(path)
    if not isinstance(content, dict) or "metrics" not in content:
        return numbers_run(content, str(path), task=task, init=init, fraction=fraction, seed=seed,
                           primary=get_task(task).primary)
    found = record_run(content, str(path))
    said = (found["task"], found["init"], fraction_key(found["fraction"]), found["seed"])
    if said != (task, init, fraction_key(fraction), seed):
        raise DataError(f"{found['path']}: describes task {said[0]}, init {said[1]}, "
                        f"fraction {said[2]}, seed {said[3]}, not the run of its folder")
    return found


def run_report(finetune: dict[str, Any], settings: dict[str, Any], *, evaluations: Path,
               out: Path, probe: Path | None = None, finetuned: Path | None = None,
               pretrained: Path | None = None, context: dict[str, Any] | None = None) -> Path:
    """Collect the expected runs' metrics and write the report to ``out``.

    Args:
        finetune: The ``finetune`` params section (``inits``, ``fractions``, ``seeds``, and
            ``chest14.inits``).
        settings: The ``report`` params section.
        evaluations: The evaluate stages' parent folder (``data/evaluate``).
        out: Output folder (``results/report``).
        probe: The probe stage's output (``data/probe``), whose table is added; None: none.
        finetuned: The fine-tune stages' parent folder (``data/finetune``): each run's
            learning curve; None: no learning curves.
        pretrained: The 3D pretrain stages' parent folder (``data/pretrain``): the probe's
            curve over pretraining per method; None: none.
        context: The provenance header (:func:`pcrl.report.context.report_context`).

    Raises:
        DataError: No task evaluated; missing runs (when ``require_complete``); a
            metrics file that is malformed or describes another run than its folder.
    """
    evaluations = Path(evaluations)
    tasks = reported_tasks(finetune, evaluations)
    if not tasks:
        raise DataError(f"{evaluations}: no evaluated task (expected folders {list(TASKS)})")
    runs = [run for task in tasks for run in expected_runs(
        [task], task_inits(task, finetune), finetune["fractions"], finetune["seeds"])]
    paths = {run: run_folder(evaluations, *run) / METRICS_NAME for run in runs}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing and settings["require_complete"]:
        raise DataError(f"{len(missing)} of {len(paths)} runs have no metrics: "
                        f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    for path in missing:
        log.warning("no metrics yet: %s", path)
    present = {run: p for run, p in paths.items() if p.is_file()}
    collected = [_read_present(run, path) for run, path in present.items()]
    summary = summarise(collected)
    probe_metrics = None
    if probe is not None:
        probe_metrics = read_json(Path(probe) / "metrics.json", hint="run 'pcrl probe' first")
    learning = {}
    if finetuned is not None:
        for task in tasks:
            runs_of_task = [(i, f, s) for t, i, f, s in present if t == task]
            learning[task] = learning_curves(Path(finetuned), task, runs_of_task, get_task(task).primary)
    methods = [m for m in finetune["inits"] if m != "scratch"]
    curves = probe_curves([Path(pretrained)], methods) if pretrained is not None else {}
    with atomic_dir(out) as tmp:
        write_report(summary, tmp, probe_metrics, context=context, learning=learning, probe_curves=curves)
    log.info("report of %d runs (%d tasks) -> %s", len(collected), len(tasks), out)
    return Path(out)
