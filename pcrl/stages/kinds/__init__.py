"""What the finetune and evaluate stages do differently per task kind, one module per
:data:`pcrl.tasks.TaskKind`:

- :mod:`.classification`: NCC's candidate cubes (ROC AUC);
- :mod:`.segmentation`: LCS's and BMS's resampled volumes (sliding-window Dice and IoU);
- :mod:`.multilabel`: Chest14's radiographs (ROC AUC per finding).

Each offers ``training_data`` (the training set, the validation function and the network's
input size) and ``test_metrics`` (the test split's scores). The stages import the module of
their task's kind by name (:func:`kind_module`), so a 3D fine-tune neither runs nor depends
on (dvc.yaml) the 2D setting's code, and the other way round.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, cast

import torch
from torch.utils.data import Dataset

from pcrl.preprocessing.task_data import TaskSplit
from pcrl.tasks import TaskSpec

#: A validation pass: the network -> its validation metrics.
Validator = Callable[[torch.nn.Module], dict[str, float]]


class TaskKindModule(Protocol):
    """The functions each kind module offers."""

    def training_data(self, spec: TaskSpec, task_settings: dict[str, Any], validation: dict[str, Any],
                      split: TaskSplit, *, processed: Path, interim: Path | None, seed: int,
                      device: torch.device) -> tuple[Dataset, Validator, tuple[int, ...]]: ...

    def test_metrics(self, net: torch.nn.Module, spec: TaskSpec, model: dict[str, Any], ids: list[str],
                     settings: dict[str, Any], *, processed: Path, interim: Path | None, source: Path,
                     device: torch.device) -> dict[str, float]: ...


def kind_module(spec: TaskSpec) -> TaskKindModule:
    """The module of ``spec.kind`` (imported on first use)."""
    module: ModuleType = importlib.import_module(f"{__name__}.{spec.kind}")
    return cast(TaskKindModule, module)
