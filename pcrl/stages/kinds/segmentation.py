"""LCS and BMS, segmentations of resampled volumes (Models Genesis' protocol): random patches
of the fraction's training volumes; whole validation and test volumes scored by
sliding-window inference, Dice and IoU per region averaged over volumes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import torch
from torch.utils.data import Dataset

from pcrl.errors import ConfigError, DataError
from pcrl.evaluation.scoring import SegmentationSettings, score_volumes
from pcrl.preprocessing.task_data import TaskSplit, check_cases, read_volume_cases
from pcrl.finetune.datasets import PatchSet
from pcrl.tasks import TaskSpec
from pcrl.stages.kinds import Validator

log = logging.getLogger(__name__)


def training_data(spec: TaskSpec, task_settings: dict[str, Any], validation: dict[str, Any], split: TaskSplit, *,
                  processed: Path, interim: Path | None, seed: int,
                  device: torch.device) -> tuple[Dataset, Validator, tuple[int, int, int]]:
    """Patches of the training volumes, the validation Dice, the patch size."""
    if interim is None:
        raise ConfigError(f"task {spec.name} reads volumes: give --interim "
                          f"(data/interim/{spec.dataset})")
    patch = cast(tuple[int, int, int], tuple(int(s) for s in task_settings["patch_size"]))
    dataset = PatchSet(read_volume_cases(interim, split.train, spec.dataset), spec, patch,
                       task_settings["patches_per_volume"],
                       task_settings.get("foreground_prob", 0.5), seed)
    val_cases = read_volume_cases(interim, split.val, spec.dataset)
    check_cases(val_cases, spec)
    inference = SegmentationSettings(patch, int(validation["sw_batch_size"]),
                                     float(validation["overlap"]), float(validation["threshold"]))

    def validate(net: torch.nn.Module) -> dict[str, float]:
        return score_volumes(net, val_cases, spec, settings=inference, device=device)[0]

    return dataset, validate, patch


def test_metrics(net: torch.nn.Module, spec: TaskSpec, model: dict[str, Any], ids: list[str],
                 settings: dict[str, Any], *, processed: Path, interim: Path | None, source: Path,
                 device: torch.device) -> dict[str, float]:
    """Dice and IoU per region over the whole test volumes, with the model's patch size."""
    if interim is None:
        raise DataError(f"task {spec.name} reads volumes: give --interim "
                        f"(data/interim/{spec.dataset})")
    inference = SegmentationSettings(tuple(model["roi_size"]), settings["sw_batch_size"],
                                     settings["overlap"], settings["threshold"])
    metrics, per_case = score_volumes(net, read_volume_cases(interim, ids, spec.dataset), spec,
                                      settings=inference, device=device)
    log.info("per case: %s", {k: round(v["dice_mean"], 4) for k, v in per_case.items()})
    return metrics
