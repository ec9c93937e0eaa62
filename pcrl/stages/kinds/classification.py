"""NCC, a classification of candidate cubes (docs/method.md "Protocol"): the cubes of the
fraction's training scans, validated and tested by ROC AUC over every candidate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from pcrl.evaluation.scoring import score_candidates
from pcrl.preprocessing.task_data import TaskSplit, read_candidate_rows
from pcrl.finetune.datasets import CandidateCubeSet
from pcrl.tasks import TaskSpec
from pcrl.stages.kinds import Validator


def training_data(spec: TaskSpec, task_settings: dict[str, Any], validation: dict[str, Any], split: TaskSplit, *,
                  processed: Path, interim: Path | None, seed: int,
                  device: torch.device) -> tuple[Dataset, Validator, tuple[int, ...]]:
    """The training cubes (``negatives_per_positive`` per epoch), the validation AUC, the cube size."""
    train_rows = read_candidate_rows(processed, split.train, spec)
    val_rows = read_candidate_rows(processed, split.val, spec)
    cubes = CandidateCubeSet(train_rows, task_settings.get("negatives_per_positive"), seed)
    batch = int(validation["batch_size"])

    def validate(net: torch.nn.Module) -> dict[str, float]:
        return score_candidates(net, val_rows, device=device, batch_size=batch)

    cube = tuple(int(s) for s in cubes.store.cubes(cubes.positives[:1]).shape[1:])
    return cubes, validate, cube


def test_metrics(net: torch.nn.Module, spec: TaskSpec, model: dict[str, Any], ids: list[str],
                 settings: dict[str, Any], *, processed: Path, interim: Path | None, source: Path,
                 device: torch.device) -> dict[str, float]:
    """ROC AUC over every candidate of the test scans."""
    rows = read_candidate_rows(processed, ids, spec)
    return score_candidates(net, rows, device=device, batch_size=settings["batch_size"])
