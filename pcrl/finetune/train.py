"""Fine-tuning on the training engine: the task module and the run with model selection.

:func:`pcrl.engine.train` trains any module whose ``forward(x, y, generator)`` returns
``{"loss": ...}`` on a dataset of ``(x, y)`` pairs; :class:`FinetuneModule` is that adapter
around a task network, so fine-tuning inherits the engine's AMP, DDP, exact resume,
SIGTERM checkpointing, NaN stop, progress bar and dvclive log. :func:`finetune` runs it
with the validation hook of :mod:`pcrl.finetune.selection` (best epoch, early stopping),
resuming where a previous job stopped.

The pieces it combines, by job: the losses (:mod:`pcrl.finetune.losses`), the random
flips (:mod:`pcrl.finetune.flips`) and the model selection
(:mod:`pcrl.finetune.selection`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as tdist
from torch import Tensor, nn
from torch.utils.data import Dataset

from pcrl.distributed import DistInfo
from pcrl.engine import TrainConfig, last_checkpoint, load_checkpoint, train
from pcrl.finetune.flips import random_flips
from pcrl.finetune.selection import ValidationHook, Validator

__all__ = ["FinetuneModule", "FinetuneResult", "finetune"]

log = logging.getLogger(__name__)


class FinetuneModule(nn.Module):
    """A task network as an engine *method*: ``forward(x, y, generator) -> {"loss": ...}``.

    Segmentation batches arrive as (B, K, C, x, y, z), K patches per volume, and are
    folded to (B*K, C, x, y, z); Chest14 batches are (B, 1, H, W) radiographs with (B, 14)
    targets. The loss is computed in float32 (outside autocast's reduced precision).

    Args:
        net: The task network (logits).
        loss: The task's loss.
        flip: Random flips as augmentation (image and segmentation target alike).
        flip_dims: The batch dimensions flipped (:func:`pcrl.finetune.flips.flip_dims`); None:
            every spatial one.
    """

    def __init__(self, net: nn.Module, loss: nn.Module, *, flip: bool = True,
                 flip_dims: Sequence[int] | None = None) -> None:
        super().__init__()
        self.net = net
        self.loss = loss
        self.flip = flip
        self.flip_dims = None if flip_dims is None else tuple(flip_dims)

    def forward(self, x: Tensor, y: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """The training loss of one batch."""
        if x.ndim == 6:
            x, y = x.flatten(0, 1), y.flatten(0, 1)
        if self.flip:
            segmentation = y.ndim == x.ndim
            x, *rest = random_flips(x, generator, *([y] if segmentation else []),
                                    dims=self.flip_dims)
            y = rest[0] if segmentation else y
        logits = self.net(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            loss = self.loss(logits.float(), y.float())
        return {"loss": loss}

    def after_step(self) -> None:
        """Nothing to update after an SGD step (the engine's method interface)."""


@dataclass(frozen=True)
class FinetuneResult:
    """The outcome of :func:`finetune`.

    Attributes:
        best_state: The best epoch's network weights (CPU tensors).
        best_epoch: Its epoch number.
        best_metrics: Its validation metrics.
        epochs_done: Epochs trained in total (this call and any it resumed).
        stopped_early: Training stopped on patience before the last epoch.
        history: Validation metrics of every epoch.
    """

    best_state: dict[str, Tensor]
    best_epoch: int
    best_metrics: dict[str, float]
    epochs_done: int
    stopped_early: bool
    history: dict[int, dict[str, float]]


def _catch_up(hook: ValidationHook, module: FinetuneModule, state_dir: Path) -> int:
    """Validate the checkpointed epoch if a crash lost its validation; return epochs done.

    The engine checkpoints an epoch before calling the hook; a job killed in between
    (e.g. SIGKILL after the scheduler's grace period) resumes past an epoch that was never
    validated. Its weights are in ``last.pt``: validate them now.
    """
    path = last_checkpoint(state_dir)
    if not path.is_file():
        return 0
    checkpoint = load_checkpoint(path)
    epoch, step = int(checkpoint["epoch"]), int(checkpoint["step"])
    if step == 0 and epoch > hook.state.last_epoch and not checkpoint.get("early_stopped"):
        log.info("epoch %d was checkpointed but not validated: validating it now", epoch)
        module.load_state_dict(checkpoint["method"])
        hook.record(epoch, module.net, hook.validate(module.net))
    return epoch


def _broadcast(flag: bool, info: DistInfo) -> bool:
    """Rank 0's ``flag`` on every process."""
    if not info.is_distributed:
        return flag
    box = [flag]
    tdist.broadcast_object_list(box, src=0)
    return bool(box[0])


def finetune(module: FinetuneModule, dataset: Dataset, validate: Validator,
             config: TrainConfig, state_dir: str | Path, *, monitor: str, patience: int,
             device: torch.device, dist: DistInfo | None = None) -> FinetuneResult | None:
    """Fine-tune with validation, early stopping and the best checkpoint, resuming if possible.

    Args:
        module: The task module (its ``net`` already initialised).
        dataset: Training ``(image, target)`` items.
        validate: Scores the network on the validation cases (rank 0 only).
        config: Optimisation settings; ``config.epochs`` is the maximum.
        state_dir: Resumable state: the engine's checkpoints, dvclive log, validation state.
        monitor: Validation metric to maximise.
        patience: Epochs without improvement before stopping.
        device: This process's device.
        dist: This process's place in a data-parallel group (None: one process).

    Returns:
        The result on rank 0; None on the other ranks.
    """
    state_dir = Path(state_dir)
    info = dist if dist is not None else DistInfo(device=torch.device(device))
    hook = ValidationHook(validate, state_dir, monitor=monitor, patience=patience)
    stopped = False
    if info.is_main:
        _catch_up(hook, module, state_dir)
        stopped = hook.state.should_stop()
    if not _broadcast(stopped, info):
        train(module, dataset, config, state_dir, device=device,
              dist=dist if info.is_distributed else None, on_epoch_end=hook)
    if not info.is_main:
        return None
    best = hook.best()
    epochs_done = hook.state.last_epoch
    return FinetuneResult(
        best_state=best["state_dict"], best_epoch=int(best["epoch"]),
        best_metrics=dict(best["metrics"]), epochs_done=epochs_done,
        stopped_early=hook.state.should_stop() and epochs_done < config.epochs,
        history=dict(hook.state.history))
