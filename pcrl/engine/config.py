"""Settings and results of a training run, and the choice of mixed precision.

Defaults follow the release (docs/method.md "Hyperparameters of the release"): SGD lr 1e-3,
momentum 0.9, weight decay 1e-4, cosine decay stepped once per epoch, a checkpoint every
60 epochs, mixed precision. ``TrainConfig.batch_size`` is the *global* batch, divided
across the processes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from pcrl.errors import ConfigError, PcrlError

__all__ = [
    "AmpMode",
    "AmpSetting",
    "EpochHook",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "resolve_amp",
]

AmpSetting = Literal["auto", "off", "bf16", "fp16"]
AmpMode = Literal["off", "bf16", "fp16"]
#: ``hook(epoch, method, live)``; a True result stops training after that epoch.
EpochHook = Callable[[int, nn.Module, Any], "bool | None"]

_AMP_SETTINGS = ("auto", "off", "bf16", "fp16")
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(PcrlError):
    """A loss term became NaN or infinite; no weight was updated with it.

    Attributes:
        epoch: Epoch of the failing step (1-based).
        step: Step within the epoch (1-based).
        terms: The non-finite terms of this process and their values (empty when the
            failure happened on another process).
    """

    def __init__(self, epoch: int, step: int, terms: Mapping[str, float],
                 checkpoint: Path | None) -> None:
        self.epoch = epoch
        self.step = step
        self.terms = dict(terms)
        where = (", ".join(f"{name}={value}" for name, value in self.terms.items())
                 or "on another process")
        kept = f"last good checkpoint kept: {checkpoint}" if checkpoint else "no checkpoint yet"
        super().__init__(f"non-finite loss at epoch {epoch}, step {step}: {where} ({kept})")


@dataclass
class TrainConfig:
    """Optimisation settings of one pretraining run (the CLI builds it from params.yaml).

    Attributes:
        epochs: Number of epochs; also the period of the cosine decay.
        batch_size: Global batch size, divided evenly across the processes.
        lr: Initial SGD learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay (L2).
        checkpoint_every: Copy ``last.pt`` to ``epoch_XXX.pt`` every that many epochs.
        amp: Mixed precision: "auto" (bf16 on CUDA if supported, else fp16 with a
            GradScaler; off on CPU), "off", "bf16" or "fp16" (CUDA only).
        seed: Seed of the data order and of the method's generator.
        num_workers: DataLoader worker processes per training process.
        max_grad_norm: Clip the gradient norm to this value; None disables clipping.
        progress: Show a tqdm progress bar (rank 0).
        deterministic: Use only deterministic algorithms (``torch.use_deterministic_algorithms``,
            cuDNN's deterministic mode, no cuDNN benchmarking): bit-exact reruns on a GPU at a
            speed cost. CPU runs are bit-exact for a given thread count without it.
        find_unused_parameters: Passed to DistributedDataParallel.
        stop_after_epoch: Return after this epoch (checkpoint written) instead of
            running to ``epochs``; a later call with the same ``out_dir`` continues.
        min_steps_per_epoch: None: an epoch is one pass over the data in full batches, the
            incomplete last batch dropped (pretraining; a dataset smaller than a batch is an
            error). An integer: an epoch is at least this many full batches and never drops
            an item: the sampler fills it with further seeded permutations of the data, so
            every item is seen at least once (:class:`~pcrl.engine.sampler._EpochSampler`).
            For fine-tuning on few labels: 12 NCC cubes at batch 8 were one SGD step an
            epoch, so a 10-epoch run on 10 % labels was 10 SGD steps in all.
    """

    epochs: int
    batch_size: int
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    checkpoint_every: int = 60
    amp: AmpSetting = "auto"
    seed: int = 0
    num_workers: int = 0
    max_grad_norm: float | None = None
    progress: bool = True
    deterministic: bool = False
    find_unused_parameters: bool = False
    stop_after_epoch: int | None = None
    min_steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        _require_int(self, "epochs", 1)
        _require_int(self, "batch_size", 1)
        _require_int(self, "checkpoint_every", 1)
        _require_int(self, "seed", 0)
        _require_int(self, "num_workers", 0)
        _require(self, "lr", isinstance(self.lr, (int, float)) and self.lr > 0, "> 0")
        _require(self, "momentum", isinstance(self.momentum, (int, float))
                 and 0 <= self.momentum < 1, "in [0, 1)")
        _require(self, "weight_decay", isinstance(self.weight_decay, (int, float))
                 and self.weight_decay >= 0, ">= 0")
        _require(self, "amp", self.amp in _AMP_SETTINGS, f"one of {_AMP_SETTINGS}")
        _require(self, "max_grad_norm", self.max_grad_norm is None or (
            isinstance(self.max_grad_norm, (int, float)) and self.max_grad_norm > 0),
            "None or > 0")
        if self.stop_after_epoch is not None:
            _require_int(self, "stop_after_epoch", 1)
        if self.min_steps_per_epoch is not None:
            _require_int(self, "min_steps_per_epoch", 1)


def _require(config: TrainConfig, name: str, ok: bool, what: str) -> None:
    """Raise a ConfigError naming the field unless ``ok``."""
    if not ok:
        raise ConfigError(f"TrainConfig.{name} must be {what}, got {getattr(config, name)!r}")


def _require_int(config: TrainConfig, name: str, minimum: int) -> None:
    """Require an integer field (not a bool) of at least ``minimum``."""
    value = getattr(config, name)
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    _require(config, name, ok, f"an integer >= {minimum}")


@dataclass(frozen=True)
class TrainResult:
    """What :func:`~pcrl.engine.train` did.

    Attributes:
        epochs_run: The epochs completed by this call (1-based), in order; a resumed
            run lists only the epochs it finished, never one finished before.
        final_metrics: Metrics of the last completed epoch (``train/loss``, ...).
        checkpoint: ``<out_dir>/checkpoints/last.pt``.
        stopped_early: The ``on_epoch_end`` hook asked to stop (in this call or in the
            run this call resumed), before ``config.epochs``.
    """

    epochs_run: list[int]
    final_metrics: dict[str, float]
    checkpoint: Path
    stopped_early: bool = False


# ------------------------------------------------------------------ mixed precision


def resolve_amp(mode: AmpSetting, device: torch.device) -> AmpMode:
    """Turn an AMP setting into the mode used on ``device``.

    Args:
        mode: "auto", "off", "bf16" or "fp16".
        device: The training device.

    Returns:
        "off", "bf16" or "fp16". "auto" gives bf16 on a CUDA device that supports it
        natively, fp16 (with a GradScaler) on older GPUs, and "off" elsewhere.

    Raises:
        ConfigError: For an unknown mode, fp16 without CUDA, or bf16 on a GPU without it.
    """
    device = torch.device(device)
    if mode not in _AMP_SETTINGS:
        raise ConfigError(f"amp must be one of {_AMP_SETTINGS}, got {mode!r}")
    cuda = device.type == "cuda"
    if mode == "auto":
        return ("bf16" if _cuda_bf16() else "fp16") if cuda else "off"
    if mode == "fp16" and not cuda:
        raise ConfigError(f"amp 'fp16' needs a CUDA device (loss scaling); the device is "
                          f"{device}: use 'bf16', 'off' or 'auto'")
    if mode == "bf16" and cuda and not _cuda_bf16():
        raise ConfigError("amp 'bf16' is not supported by this GPU: use 'fp16' or 'auto'")
    return mode


def _cuda_bf16() -> bool:
    """True when the current CUDA device computes in bfloat16 natively."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch without the keyword
        return torch.cuda.is_bf16_supported()


def amp_dtype(mode: AmpMode) -> torch.dtype | None:
    """The autocast dtype of a resolved AMP mode (None for "off")."""
    return _AMP_DTYPES.get(mode)
