"""The downstream tasks of the PCRL protocol (the Models Genesis benchmark).

docs/method.md "Protocol": pretrained encoders are fine-tuned on

- **NCC**, lung nodule false-positive reduction on the LUNA16 candidates: a binary
  classifier of the cubes centred on each candidate; metric ROC AUC.
- **LCS**, liver segmentation on LiTS 2017 = Medical Segmentation Decathlon Task03_Liver,
  whose labels are 0 background, 1 liver, 2 tumour: the liver is labels {1, 2} (the tumour
  lies inside the liver, as in Models Genesis' LCS); metrics Dice and IoU.
- **BMS**, brain tumour segmentation on BraTS 2018 = MSD Task01_BrainTumour (4 MRI
  channels FLAIR, T1w, T1gd, T2w; labels 0 background, 1 oedema, 2 non-enhancing tumour,
  3 enhancing tumour): the three nested BraTS evaluation regions, one sigmoid output
  each: whole tumour {1, 2, 3}, tumour core {2, 3}, enhancing tumour {3} (Menze et al.,
  IEEE TMI 2015; Bakas et al., 2018). Metric Dice per region.

PCRL's 2D setting (Zhou et al., ICCV 2021) adds

- **Chest14**, multi-label classification of the 14 findings of NIH ChestX-ray14 (Wang et
  al., "ChestX-ray8: Hospital-scale chest X-ray database and benchmarks on weakly-supervised
  classification and localization of common thorax diseases", CVPR 2017) on whole
  radiographs: PCRL fine-tunes its pretrained ResNet-18 with one logit and a binary
  cross-entropy per finding; metric ROC AUC per finding and their mean (``auc_mean``). Its
  splits are patient-wise (a patient's images stay together); the class names are the
  findings in Wang et al.'s order, lower-case (:data:`pcrl.settings.CHEST14_FINDINGS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pcrl.errors import ConfigError, DataError
from pcrl.settings import CHEST14_FINDINGS

__all__ = ["TASKS", "TaskKind", "TaskSpec", "check_label_values", "get_task", "segmentation_target"]

TaskKind = Literal["classification", "segmentation", "multilabel"]


@dataclass(frozen=True)
class TaskSpec:
    """What the pipeline needs to know about one downstream task.

    Attributes:
        name: Task name (``ncc``, ``lcs``, ``bms``, ``chest14``), also its folder name.
        kind: ``"classification"`` (one logit per cube), ``"segmentation"`` (one
            sigmoid channel per region) or ``"multilabel"`` (one logit per finding of a
            2D radiograph).
        dataset: The dataset the task reads (``pcrl.datasets.registry`` name).
        in_channels: Image channels (4 for BraTS).
        out_channels: Network outputs: 1 for NCC, one per region for segmentation, one
            per finding for Chest14.
        class_names: One name per output, used in metric names (``dice_<name>``,
            ``auc_<name>``).
        regions: Segmentation only: the label values that make up each output channel.
        label_values: The values a label volume (the NCC ``class`` column, a Chest14
            finding column) may hold.
        primary: The headline metric of the task in reports.
    """

    name: str
    kind: TaskKind
    dataset: str
    in_channels: int
    out_channels: int
    class_names: tuple[str, ...]
    regions: tuple[tuple[int, ...], ...] = ()
    label_values: tuple[int, ...] = (0, 1)
    primary: str = "auc"

    def __post_init__(self) -> None:
        if len(self.class_names) != self.out_channels:
            raise ValueError(f"task {self.name}: {len(self.class_names)} class names for "
                             f"{self.out_channels} outputs")
        if self.kind == "segmentation" and len(self.regions) != self.out_channels:
            raise ValueError(f"task {self.name}: {len(self.regions)} regions for "
                             f"{self.out_channels} outputs")


TASKS: dict[str, TaskSpec] = {
    "ncc": TaskSpec("ncc", "classification", "luna16", in_channels=1, out_channels=1,
                    class_names=("nodule",), primary="auc"),
    "lcs": TaskSpec("lcs", "segmentation", "msd_liver", in_channels=1, out_channels=1,
                    class_names=("liver",), regions=((1, 2),), label_values=(0, 1, 2),
                    primary="dice_liver"),
    "bms": TaskSpec("bms", "segmentation", "msd_brain", in_channels=4, out_channels=3,
                    class_names=("wt", "tc", "et"), regions=((1, 2, 3), (2, 3), (3,)),
                    label_values=(0, 1, 2, 3), primary="dice_mean"),
    "chest14": TaskSpec("chest14", "multilabel", "chestxray14", in_channels=1, out_channels=len(CHEST14_FINDINGS),
                        class_names=tuple(name.lower() for name in CHEST14_FINDINGS),
                        label_values=(0, 1), primary="auc_mean"),
}


def get_task(task: TaskSpec | str) -> TaskSpec:
    """The :class:`TaskSpec` of ``task`` (a spec is returned as it is).

    Raises:
        ConfigError: Unknown task name.
    """
    if isinstance(task, TaskSpec):
        return task
    try:
        return TASKS[task]
    except KeyError:
        raise ConfigError(f"unknown task {task!r}; known: {', '.join(TASKS)}") from None


def check_label_values(values: Sequence[int] | np.ndarray, task: TaskSpec | str,
                       source: str = "labels") -> None:
    """Raise DataError naming ``source`` if ``values`` holds a value outside the task's classes."""
    spec = get_task(task)
    present = np.unique(np.asarray(values))
    bad = present[~np.isin(present, spec.label_values)]
    if bad.size:
        shown = ", ".join(f"{v:g}" for v in bad[:10].tolist())
        raise DataError(f"{source}: label value(s) {shown} are not classes of task {spec.name} "
                        f"(expected {list(spec.label_values)})")


def segmentation_target(task: TaskSpec | str, label: np.ndarray, *,
                        source: str = "label") -> np.ndarray:
    """Binary region masks of a label volume, one channel per output of the task.

    LCS: liver = label in {1, 2}; BMS: whole tumour {1, 2, 3}, tumour core {2, 3},
    enhancing tumour {3} (the BraTS regions). One table lookup for all channels.

    Args:
        task: A segmentation task (name or spec).
        label: (x, y, z) integer-valued label volume (any numeric dtype).
        source: What to name in errors (the label file).

    Returns:
        (out_channels, x, y, z) uint8 array of 0/1.

    Raises:
        ConfigError: ``task`` is not a segmentation task.
        DataError: ``label`` is not 3-D, holds non-integer values, or values outside the
            task's classes (the message names ``source`` and the values).
    """
    spec = get_task(task)
    if spec.kind != "segmentation":
        raise ConfigError(f"task {spec.name} is not a segmentation task")
    label = np.asarray(label)
    if label.ndim != 3:
        raise DataError(f"{source}: expected an (x, y, z) label volume, got shape {label.shape}")
    if not np.issubdtype(label.dtype, np.integer):
        if not np.all(np.isfinite(label)) or not np.array_equal(label, np.round(label)):
            raise DataError(f"{source}: label values must be integers")
    # unsigned labels (uint8 from the arrays) index the table as they are: no int64 copy
    values = label if label.dtype.kind == "u" else label.astype(np.int64, copy=False)
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > max(spec.label_values):
        check_label_values(np.unique(values), spec, source)
    table = np.zeros((spec.out_channels, max(spec.label_values) + 1), dtype=np.uint8)
    for channel, region in enumerate(spec.regions):
        table[channel, list(region)] = 1
    if set(spec.label_values) != set(range(table.shape[1])):  # a gap: count what is there
        present = np.flatnonzero(np.bincount(values.ravel(), minlength=table.shape[1]))
        check_label_values(present, spec, source)
    return np.take(table, values, axis=1)  # (values in 0..max checked above)
