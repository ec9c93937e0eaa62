"""Fine-tuning pretrained encoders on the downstream tasks of the PCRL protocol.

docs/method.md "Protocol" (the Models Genesis benchmark): NCC (lung
nodule false-positive reduction, AUC), LCS (liver segmentation, Dice/IoU) and BMS (brain
tumour segmentation, Dice of the BraTS regions), and in PCRL's 2D setting Chest14 (the 14
ChestX-ray14 findings, mean ROC AUC), each fine-tuned from every initialisation at several
label fractions and seeds.

Modules:
    tasks      the task specifications and label -> region targets
    models     task networks (seeded)
    checkpoints  initialisation records (scratch, pretrained, external) and their loading
    data       splits, NCC candidate cubes, segmentation volumes and patches
    chest14    Chest14's labelled radiographs (images.csv over the 2D preprocessing's shards)
    inference  validation/test scoring (AUC; sliding-window Dice/IoU)
    losses     the loss of each task kind (Dice + BCE, Dice + focal, BCE)
    flips      random flips as augmentation
    selection  validation after every epoch: best weights, early stopping
    train      the engine's task module and the fine-tuning run

Only :mod:`pcrl.tasks` is imported here; the others load torch/MONAI and are
imported where needed.
"""

from pcrl.tasks import TASKS, TaskSpec, get_task, segmentation_target

__all__ = ["TASKS", "TaskSpec", "get_task", "segmentation_target"]
