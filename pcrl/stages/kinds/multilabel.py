"""Chest14, a multi-label classification of whole radiographs (PCRL's 2D setting; Wang et
al., CVPR 2017): every image of the fraction's training patients; the validation and test
patients' images scored by ROC AUC per finding and their mean."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from pcrl.errors import ConfigError, DataError
from pcrl.evaluation.radiographs import score_radiographs
from pcrl.finetune.radiographs import RadiographSet
from pcrl.preprocessing.chest_labels import image_size, open_store, read_image_labels
from pcrl.preprocessing.task_data import TaskSplit
from pcrl.tasks import TaskSpec
from pcrl.settings import setting_of_task
from pcrl.stages.kinds import Validator


def training_data(spec: TaskSpec, task_settings: dict[str, Any], validation: dict[str, Any], split: TaskSplit, *,
                  processed: Path, interim: Path | None, seed: int,
                  device: torch.device) -> tuple[Dataset, Validator, tuple[int, ...]]:
    """The training patients' images, the validation mean AUC (``validation.batch_size`` per
    pass), the radiograph size (the whole image: no patches)."""
    if interim is None:
        raise ConfigError(f"task {spec.name} reads radiographs: give --interim "
                          f"(data/interim/{spec.dataset})")
    store = open_store(interim)
    size = image_size(store)
    stride = setting_of_task(spec.name).stride
    if any(s % stride for s in size):
        raise ConfigError(f"{interim}: radiographs of {size[0]}x{size[1]} pixels; the ResNet-18 "
                          f"needs multiples of {stride} (resample.{spec.dataset}.size)")
    labelled = read_image_labels(processed, store, spec)
    dataset = RadiographSet(labelled.of_patients(split.train))
    val = labelled.of_patients(split.val)
    batch = int(validation["batch_size"])

    def validate(net: torch.nn.Module) -> dict[str, float]:
        return score_radiographs(net, val, spec, device=device, batch_size=batch, split="val")

    return dataset, validate, size


def test_metrics(net: torch.nn.Module, spec: TaskSpec, model: dict[str, Any], ids: list[str],
                 settings: dict[str, Any], *, processed: Path, interim: Path | None, source: Path,
                 device: torch.device) -> dict[str, float]:
    """The AUC per finding and their mean over every image of the test patients.

    Raises:
        DataError: No ``--interim``; radiographs of another size than the model was
            fine-tuned on (``roi_size``); no finding with both classes among the test images
            (one with a single class is left out and named, see
            :func:`pcrl.evaluation.radiographs.score_radiographs`).
    """
    if interim is None:
        raise DataError(f"task {spec.name} reads radiographs: give --interim "
                        f"(data/interim/{spec.dataset})")
    store = open_store(interim)
    size = list(image_size(store))
    if size != [int(s) for s in model["roi_size"]]:
        raise DataError(f"{interim}: radiographs of {size[0]}x{size[1]} pixels, but {source} was "
                        f"fine-tuned on {model['roi_size']}: rerun the finetune stage")
    images = read_image_labels(processed, store, spec).of_patients(ids)
    return score_radiographs(net, images, spec, device=device, batch_size=int(settings["batch_size"]),
                             split="test")
