"""Fine-tuning on the training engine: task module, losses, validation and early stopping.

:func:`pcrl.engine.train` trains any module whose ``forward(x, y, generator)`` returns
``{"loss": ...}`` on a dataset of ``(x, y)`` pairs; :class:`FinetuneModule` is that adapter
around a task network, so fine-tuning inherits the engine's AMP, DDP, exact resume,
SIGTERM checkpointing, NaN stop, progress bar and dvclive log.

Model selection follows the Models Genesis fine-tuning protocol: the network is scored on
the validation cases after every epoch (AUC for NCC, mean Dice for segmentation, mean AUC
over the findings for Chest14), the best epoch's weights are kept, and training stops once
the score has not improved for ``patience`` epochs. :class:`ValidationHook` does this in the engine's ``on_epoch_end``
hook; its state (the score of every epoch) lives in ``checkpoints/validation.json`` and
the best weights in ``checkpoints/best.pt``, next to the engine's ``last.pt``, so a
resumed run continues with the same best and the same patience count.

Losses (MONAI): segmentation uses Dice + binary cross-entropy on independent sigmoid
channels (:class:`DiceBCELoss`) or MONAI's ``DiceFocalLoss(sigmoid=True)``; NCC uses binary
cross-entropy on the logit; Chest14 binary cross-entropy on each finding's logit, averaged
over findings and images (PCRL's 2D fine-tuning, Zhou et al., ICCV 2021).

Augmentation: random flips, along every axis of a CT/MRI cube or patch (Models Genesis),
left-right only for a radiograph (:func:`flip_dims`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch
import torch.distributed as tdist
from torch import Tensor, nn
from torch.utils.data import Dataset

from pcrl.torchfile import load_checked, save_checked
from pcrl.atomic import write_json
from pcrl.distributed import DistInfo
from pcrl.engine import TrainConfig, last_checkpoint, load_checkpoint, train
from pcrl.errors import ConfigError, DataError
from pcrl.tasks import TaskSpec, get_task

__all__ = [
    "BEST_NAME",
    "STATE_NAME",
    "DiceBCELoss",
    "EarlyStopping",
    "FinetuneModule",
    "FinetuneResult",
    "LossName",
    "ValidationHook",
    "build_loss",
    "finetune",
    "flip_dims",
    "random_flips",
]

log = logging.getLogger(__name__)

LossName = Literal["dice_bce", "dice_focal"]
Validator = Callable[[nn.Module], dict[str, float]]

STATE_NAME = "validation.json"
BEST_NAME = "best.pt"


# ------------------------------------------------------------------ losses


class DiceBCELoss(nn.Module):
    """Soft Dice + binary cross-entropy on logits, every channel an independent sigmoid.

    ``loss = DiceLoss(sigmoid=True)(logits, y) + BCEWithLogits(logits, y)`` (MONAI's Dice,
    averaged over samples and channels; BCE averaged over voxels). For one channel this is
    exactly MONAI's ``DiceCELoss(sigmoid=True)``; for several channels MONAI's DiceCE
    applies a softmax cross-entropy across channels, which is wrong for the nested BraTS
    regions (a tumour-core voxel is also whole tumour), hence this combination.

    Args:
        lambda_dice: Weight of the Dice term.
        lambda_bce: Weight of the cross-entropy term.
    """

    def __init__(self, lambda_dice: float = 1.0, lambda_bce: float = 1.0) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(sigmoid=True)
        self.bce = nn.BCEWithLogitsLoss()
        self.lambda_dice = lambda_dice
        self.lambda_bce = lambda_bce

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of (N, C, *spatial) logits against a {0, 1} target of the same shape."""
        if logits.shape != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} "
                             "must have the same shape")
        return (self.lambda_dice * self.dice(logits, target)
                + self.lambda_bce * self.bce(logits, target))


def build_loss(task: TaskSpec | str, name: LossName = "dice_bce") -> nn.Module:
    """The task's loss: BCE with logits for NCC and per finding for Chest14 (``name`` is not
    read for them); ``dice_bce`` or ``dice_focal`` for segmentation.

    Raises:
        ConfigError: Unknown loss name.
    """
    spec = get_task(task)
    if spec.kind in ("classification", "multilabel"):
        return nn.BCEWithLogitsLoss()
    if name == "dice_bce":
        return DiceBCELoss()
    if name == "dice_focal":
        from monai.losses import DiceFocalLoss

        return DiceFocalLoss(sigmoid=True)
    raise ConfigError(f"loss must be 'dice_bce' or 'dice_focal', got {name!r}")


# ------------------------------------------------------------------ the engine's module


def flip_dims(task: TaskSpec | str) -> tuple[int, ...] | None:
    """The batch dimensions that augmentation flips: None (every spatial axis of an
    (N, C, x, y, z) batch) for the 3D tasks; ``(3,)``, the width of an (N, 1, H, W)
    radiograph, i.e. left-right flips only, for Chest14 (a radiograph is not flipped
    upside down)."""
    return (3,) if get_task(task).kind == "multilabel" else None


def random_flips(x: Tensor, generator: torch.Generator, *others: Tensor,
                 dims: Sequence[int] | None = None) -> list[Tensor]:
    """Flip each sample of ``x`` along each of ``dims`` with probability 1/2.

    ``dims`` are batch dimensions, by default every spatial one (2, 3, 4 of an (N, C, x, y,
    z) batch); one draw per sample and dimension, ``(N, len(dims))`` uniforms from
    ``generator`` (on the batch's device). The same flips are applied to every tensor of
    ``others`` (e.g. the segmentation target).

    Returns:
        ``[x, *others]`` flipped.
    """
    axes = tuple(range(2, x.ndim)) if dims is None else tuple(int(d) for d in dims)
    if not axes or any(not 2 <= d < x.ndim for d in axes):
        raise ValueError(f"flip dims {list(axes)} are not spatial dimensions of a {x.ndim}-D batch")
    flips = torch.rand((x.shape[0], len(axes)), generator=generator, device=x.device) < 0.5
    out = [x, *others]
    for column, dim in enumerate(axes):
        mask = flips[:, column].view(-1, *([1] * (x.ndim - 1)))
        out = [torch.where(mask, t.flip(dim), t) for t in out]
    return out


class FinetuneModule(nn.Module):
    """A task network as an engine *method*: ``forward(x, y, generator) -> {"loss": ...}``.

    Segmentation batches arrive as (B, K, C, x, y, z), K patches per volume, and are
    folded to (B*K, C, x, y, z); Chest14 batches are (B, 1, H, W) radiographs with (B, 14)
    targets. The loss is computed in float32 (outside autocast's reduced precision).

    Args:
        net: The task network (logits).
        loss: The task's loss.
        flip: Random flips as augmentation (image and segmentation target alike).
        flip_dims: The batch dimensions flipped (:func:`flip_dims`); None: every spatial one.
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


# ------------------------------------------------------------------ early stopping


@dataclass
class EarlyStopping:
    """Validation scores of every epoch, and the decisions derived from them.

    The state is the history only; the best epoch and the stop decision are recomputed
    from it, so recording the same epoch twice (a replay after a crash) changes nothing.
    Higher is better; NaN never counts as an improvement; ties keep the earlier epoch.

    Attributes:
        monitor: The metric that selects the checkpoint (``auc``, ``dice_mean``,
            ``auc_mean``).
        patience: Stop once this many epochs passed without improving on the best.
        history: epoch -> validation metrics.
    """

    monitor: str
    patience: int
    history: dict[int, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) \
                or self.patience < 1:
            raise ConfigError(f"patience must be an integer >= 1, got {self.patience!r}")

    def record(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Store the validation metrics of ``epoch``.

        Raises:
            KeyError: ``metrics`` lacks the monitored metric.
        """
        if self.monitor not in metrics:
            raise KeyError(f"validation metrics {sorted(metrics)} lack {self.monitor!r}")
        self.history[int(epoch)] = {k: float(v) for k, v in metrics.items()}

    @property
    def best_epoch(self) -> int | None:
        """The first epoch with the highest finite score; None before any."""
        best: tuple[float, int] | None = None
        for epoch in sorted(self.history):
            value = self.history[epoch][self.monitor]
            if math.isfinite(value) and (best is None or value > best[0]):
                best = (value, epoch)
        return None if best is None else best[1]

    @property
    def last_epoch(self) -> int:
        """The last validated epoch (0 before any)."""
        return max(self.history, default=0)

    def should_stop(self) -> bool:
        """True once ``patience`` epochs passed since the best one (or since the start)."""
        best = self.best_epoch or 0
        return self.last_epoch - best >= self.patience

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable state (derived values included for readers)."""
        return {"monitor": self.monitor, "patience": self.patience,
                "best_epoch": self.best_epoch, "stopped": self.should_stop(),
                "history": {str(e): m for e, m in sorted(self.history.items())}}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> EarlyStopping:
        """Inverse of :meth:`to_json`."""
        history = {int(e): dict(m) for e, m in obj.get("history", {}).items()}
        return cls(str(obj["monitor"]), int(obj["patience"]), history)


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


class ValidationHook:
    """The engine's ``on_epoch_end``: validate, keep the best weights, decide to stop.

    Args:
        validate: Scores the task network (``net -> metrics``).
        state_dir: The run's state folder (the engine's ``out_dir``).
        monitor: The metric to maximise.
        patience: See :class:`EarlyStopping`.

    Raises:
        ConfigError: A state file of another monitor or patience is found.
    """

    def __init__(self, validate: Validator, state_dir: str | Path, *, monitor: str,
                 patience: int) -> None:
        self.validate = validate
        folder = Path(state_dir) / "checkpoints"
        self.state_path = folder / STATE_NAME
        self.best_path = folder / BEST_NAME
        self.state = EarlyStopping(monitor, patience)
        if self.state_path.is_file():
            try:
                saved = EarlyStopping.from_json(json.loads(self.state_path.read_text()))
            except (OSError, ValueError, KeyError) as exc:
                raise DataError(f"{self.state_path}: unreadable validation state ({exc})") from None
            if (saved.monitor, saved.patience) != (monitor, patience):
                raise ConfigError(f"{self.state_path}: written for monitor {saved.monitor!r}, "
                                  f"patience {saved.patience}; delete the state folder to restart")
            self.state = saved

    def __call__(self, epoch: int, method: nn.Module, live: Any) -> bool:
        """Validate ``method.net`` after ``epoch``; True to stop training."""
        net = cast(nn.Module, getattr(method, "module", method).net)
        return self.record(epoch, net, self.validate(net), live)

    def record(self, epoch: int, net: nn.Module, metrics: Mapping[str, float],
               live: Any = None) -> bool:
        """Store ``metrics`` of ``epoch``; save ``net`` if best; return whether to stop.

        The best weights are written before the state that points to them (both
        atomically), so a crash in between leaves a consistent pair.
        """
        self.state.record(epoch, metrics)
        if self.state.best_epoch == epoch:
            state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            save_checked({"state_dict": state, "epoch": epoch, "metrics": dict(metrics)},
                         self.best_path)
        write_json(self.state_path, self.state.to_json())
        if live is not None:
            for name, value in metrics.items():
                live.log_metric(f"val/{name}", value)
        log.info("epoch %d: validation %s (best epoch %s)", epoch,
                 ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()), self.state.best_epoch)
        return self.state.should_stop()

    def best(self) -> dict[str, Any]:
        """The saved best checkpoint ``{"state_dict", "epoch", "metrics"}``.

        Raises:
            DataError: No epoch was validated with a finite score.
        """
        if self.state.best_epoch is None or not self.best_path.is_file():
            raise DataError(f"{self.state_path}: no epoch has a finite validation "
                            f"{self.state.monitor}; nothing to keep")
        return load_checked(self.best_path, "best-epoch checkpoint")


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
