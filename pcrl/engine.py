"""Pretraining loop: SGD with per-epoch cosine decay, AMP, DDP, exact checkpoint/resume.

The engine trains any *method* module (PCRL, Models Genesis, MoCo v2; see
docs/INTERFACES.md): ``method(x1, x2, generator)`` returns a dict of scalar loss terms
with a ``"loss"`` key, the engine backpropagates ``"loss"``, steps the optimiser, then
calls ``method.after_step()`` (momentum update). Defaults follow the release
(PCRL-SPEC "Hyperparameters of the release"): SGD lr 1e-3, momentum 0.9, weight decay
1e-4, cosine decay stepped once per epoch, a checkpoint every 60 epochs, mixed precision.
``TrainConfig.batch_size`` is the *global* batch, divided across the processes.

Reproducibility and resumption (DESIGN principle 5):

- The data order is a function of (seed, epoch) only (a ``DistributedSampler``, also in a
  single process), so a resumed run sees the same batches, and the same global batches
  whatever the number of processes.
- Randomness inside the method comes from one ``torch.Generator`` per process on the
  training device, seeded from (seed, rank); its state is in every checkpoint.
- ``<out_dir>/checkpoints/last.pt`` is rewritten atomically (rank 0) after every epoch and
  copied to ``epoch_XXX.pt`` every ``checkpoint_every`` epochs. It holds tensors and plain
  Python values only and is always loaded with ``weights_only=True``.
- SIGTERM (and SIGUSR1, which ``sbatch --signal=USR1@<s>`` sends before the time limit)
  sets a flag; all processes agree on it, finish the current step, write ``last.pt``
  (mid-epoch if need be) and raise :class:`Preempted`. Rerunning with the same
  ``out_dir`` continues exactly where it stopped: same weights as an uninterrupted run.
- A non-finite loss term stops the run at once with :class:`NonFiniteLossError`, before
  its gradient touches the weights; ``last.pt`` stays the last good checkpoint.
- Early stopping: when the ``on_epoch_end`` hook returns True (e.g. the validation metric
  stopped improving), training ends after that epoch and ``last.pt`` records
  ``early_stopped``, so a rerun with the same ``out_dir`` trains nothing more.

Logging (rank 0): a tqdm bar per epoch, and dvclive under ``<out_dir>/live`` with the
epoch mean of every loss term (``train/<term>``), ``train/lr`` and
``train/samples_per_s``, one dvclive step per epoch (step = epoch number).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as tdist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm.auto import tqdm

from pcrl.atomic import atomic_path
from pcrl.distributed import DistInfo
from pcrl.torchfile import load_checked, save_checked
from pcrl.errors import ConfigError, DataError, PcrlError

__all__ = [
    "AmpMode",
    "AmpSetting",
    "NonFiniteLossError",
    "Preempted",
    "TrainConfig",
    "TrainResult",
    "last_checkpoint",
    "load_checkpoint",
    "resolve_amp",
    "seed_worker",
    "train",
]

log = logging.getLogger(__name__)

AmpSetting = Literal["auto", "off", "bf16", "fp16"]
AmpMode = Literal["off", "bf16", "fp16"]
#: ``hook(epoch, method, live)``; a True result stops training after that epoch.
EpochHook = Callable[[int, nn.Module, Any], "bool | None"]

CHECKPOINT_FORMAT = 1
CHECKPOINT_DIR = "checkpoints"
LAST_NAME = "last.pt"
PREEMPTION_SIGNALS: tuple[int, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name)
)
_AMP_SETTINGS = ("auto", "off", "bf16", "fp16")
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Settings that change the result: a resumed run must use the same values.
_RESUME_FIELDS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "seed",
                  "max_grad_norm")
_CHECKPOINT_KEYS = ("format", "epoch", "step", "method", "optimizer", "scheduler", "scaler",
                    "generator_state", "sampler", "partial_sums", "metrics", "config", "amp")


class Preempted(Exception):
    """Training stopped on a preemption signal after writing a checkpoint.

    The CLI exits with :attr:`exit_code` (128 + signal number, e.g. 143 for SIGTERM), the
    status of a process killed by that signal, so schedulers treat it as preempted.

    Attributes:
        signum: The signal received (SIGTERM when another process received it).
        checkpoint: The checkpoint written, from which a rerun resumes.
        epoch: The epoch in progress when the signal arrived (1-based).
        step: Steps of that epoch completed and saved.
    """

    def __init__(self, signum: int, checkpoint: Path, epoch: int, step: int) -> None:
        self.signum = int(signum)
        self.checkpoint = checkpoint
        self.epoch = epoch
        self.step = step
        name = signal.Signals(signum).name
        super().__init__(f"{name} received: stopped at epoch {epoch} after step {step}; "
                         f"checkpoint {checkpoint}; rerun to resume")

    @property
    def exit_code(self) -> int:
        """128 + the signal number."""
        return 128 + self.signum


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
        find_unused_parameters: Passed to DistributedDataParallel.
        stop_after_epoch: Return after this epoch (checkpoint written) instead of
            running to ``epochs``; a later call with the same ``out_dir`` continues.
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
    find_unused_parameters: bool = False
    stop_after_epoch: int | None = None

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
    """What :func:`train` did.

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


# --------------------------------------------------------------------------- helpers


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


def _derive_seed(*keys: int) -> int:
    """A 64-bit seed mixing the non-negative integers ``keys`` (numpy's SeedSequence)."""
    low, high = np.random.SeedSequence(list(keys)).generate_state(2, dtype=np.uint32)
    return int(high) << 32 | int(low)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed third-party RNGs, leave preemption to the parent.

    Torch seeds each worker from the loader's generator (base seed + worker id); the
    global ``random`` and NumPy RNGs are seeded from it so that any library transform
    relying on them does not repeat across workers (a defect of the release). Preemption
    signals are ignored in workers: the training process handles them and shuts the
    workers down, instead of a dying worker aborting the checkpoint.
    """
    del worker_id
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeding, not drawing, for third-party code
    for signum in PREEMPTION_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def last_checkpoint(out_dir: str | Path) -> Path:
    """The path of the checkpoint a run in ``out_dir`` resumes from."""
    return Path(out_dir) / CHECKPOINT_DIR / LAST_NAME


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a training checkpoint on the CPU, never executing code (``weights_only=True``).

    Args:
        path: A checkpoint written by :func:`train`.

    Returns:
        The checkpoint dict ("method", "optimizer", "scheduler", "scaler", "epoch",
        "step", "generator_state", "sampler", "metrics", "config", ...).

    Raises:
        DataError: Naming the file if it is missing, truncated, not a checkpoint of this
            engine, or would need code execution to load.
    """
    path = Path(path)
    checkpoint = load_checked(path, "training checkpoint")
    missing = [key for key in _CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise DataError(f"{path}: not a pcrl training checkpoint (missing {missing})")
    if checkpoint["format"] != CHECKPOINT_FORMAT:
        raise DataError(f"{path}: checkpoint format {checkpoint['format']} is not "
                        f"{CHECKPOINT_FORMAT}")
    return checkpoint


class _StopFlag:
    """Signal handler that only records the signal; the loop acts on it between steps."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: object) -> None:
        del frame
        if self.signum is None:
            log.warning("%s received: checkpointing after the current step",
                        signal.Signals(signum).name)
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def _catch_preemption(flag: _StopFlag) -> Iterator[None]:
    """Route the preemption signals to ``flag`` for the block; restore the handlers after."""
    if threading.current_thread() is not threading.main_thread():
        log.warning("not in the main thread: preemption signals are not handled")
        yield
        return
    previous = {signum: signal.signal(signum, flag) for signum in PREEMPTION_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


@contextlib.contextmanager
def _closing_workers(batches: Iterator[Any]) -> Iterator[None]:
    """Shut the loader's worker processes down when the epoch ends, also on an exception.

    Workers ignore SIGTERM (:func:`seed_worker`), so the ``terminate()`` fallbacks of the
    DataLoader and of multiprocessing's exit handler cannot stop them: without an orderly
    shutdown, a process leaving on an exception waits for them forever.
    """
    try:
        yield
    finally:
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


class _EpochSampler(Sampler[int]):
    """The indices of one epoch for this rank, starting at a given offset.

    Wraps ``DistributedSampler`` (used also with one process) so the order is a pure
    function of (seed, epoch); ``start`` skips the samples of the steps already done when
    resuming mid-epoch.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int) -> None:
        self._base = DistributedSampler(dataset, num_replicas=num_replicas, rank=rank,
                                        shuffle=True, seed=seed, drop_last=False)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """Select the epoch's permutation and skip its first ``start`` samples."""
        self._base.set_epoch(epoch)
        self.start = start

    def per_rank(self) -> int:
        """Samples per rank and epoch."""
        return len(self._base)

    def __iter__(self) -> Iterator[int]:
        indices = list(self._base)
        return iter(indices[self.start:])

    def __len__(self) -> int:
        return len(self._base) - self.start


def _loss_terms(out: Any) -> dict[str, Tensor]:
    """The scalar tensors of a method's output, detached, "loss" first.

    Raises:
        TypeError: If the output is not a mapping with a scalar "loss" tensor.
    """
    if not isinstance(out, Mapping) or not isinstance(out.get("loss"), Tensor) \
            or out["loss"].numel() != 1:
        raise TypeError("method(x1, x2, generator) must return a dict with a scalar "
                        f"'loss' tensor, got {type(out).__name__}")
    terms = {"loss": out["loss"].detach().reshape(())}
    for name, value in out.items():
        if name != "loss" and isinstance(value, Tensor) and value.numel() == 1:
            terms[name] = value.detach().reshape(())
    return terms


@dataclass
class _Position:
    """Where the run stands: ``epoch`` epochs done and ``step`` steps of the next one.

    ``stopped``: the epoch hook asked to stop after ``epoch`` (early stopping).
    """

    epoch: int = 0
    step: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    stopped: bool = False


# ---------------------------------------------------------------------------- trainer


class _Trainer:
    """State of one training run; :func:`train` is its public face."""

    def __init__(self, method: nn.Module, dataset: Dataset, config: TrainConfig,
                 out_dir: Path, device: torch.device, info: DistInfo,
                 hook: EpochHook | None) -> None:
        self.config = config
        self.out_dir = out_dir
        self.device = device
        self.info = info
        self.hook = hook
        self.world = info.world_size
        self.local_batch = _local_batch(config.batch_size, self.world)
        self.amp = resolve_amp(config.amp, device)
        self.method = method.to(device).train()
        self.params = [p for p in method.parameters() if p.requires_grad]
        if not self.params:
            raise ConfigError("the method has no parameter that requires a gradient")
        self.optimizer = torch.optim.SGD(self.params, lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer,
                                                                    T_max=config.epochs)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp == "fp16")
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(_derive_seed(config.seed, info.rank, 0))
        self.wrapped = self._wrap(method)
        self.sampler = _EpochSampler(dataset, self.world, info.rank, config.seed)
        self.dataset = dataset
        self.steps = self.sampler.per_rank() // self.local_batch
        if self.steps == 0:
            raise ConfigError(
                f"TrainConfig.batch_size {config.batch_size} is larger than the "
                f"{len(dataset)} training pairs (no full batch per epoch)")
        self.stop = _StopFlag()
        self.last = last_checkpoint(out_dir)

    # -- setup

    def _wrap(self, method: nn.Module) -> nn.Module:
        """DistributedDataParallel around the method when several processes train."""
        if not self.info.is_distributed:
            return method
        if not tdist.is_initialized() or tdist.get_world_size() != self.world:
            raise ConfigError(f"DistInfo says {self.world} processes but the process group "
                              "is not initialised with that size (use init_distributed)")
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(method, device_ids=device_ids,
                                       find_unused_parameters=self.config.find_unused_parameters)

    def _loader(self, epoch: int) -> DataLoader:
        """This epoch's DataLoader; worker seeds derive from (seed, rank, epoch)."""
        generator = torch.Generator().manual_seed(
            _derive_seed(self.config.seed, self.info.rank, epoch, 1))
        workers = self.config.num_workers
        return DataLoader(self.dataset, batch_size=self.local_batch, sampler=self.sampler,
                          num_workers=workers, drop_last=True, generator=generator,
                          worker_init_fn=seed_worker if workers else None,
                          pin_memory=self.device.type == "cuda")

    # -- collectives (no-ops with one process)

    def _comm_device(self) -> torch.device:
        """Where collective tensors live: the GPU for NCCL, the CPU for Gloo."""
        return self.device if tdist.get_backend() == "nccl" else torch.device("cpu")

    def _agree(self, *flags: bool) -> list[bool]:
        """Each flag OR-ed over all processes."""
        if not self.info.is_distributed:
            return list(flags)
        packed = torch.tensor([float(f) for f in flags], device=self._comm_device())
        tdist.all_reduce(packed, op=tdist.ReduceOp.MAX)
        return [bool(v) for v in packed.tolist()]

    def _sum_over_ranks(self, sums: dict[str, float]) -> dict[str, float]:
        """Loss-term sums added over all processes."""
        if not self.info.is_distributed:
            return dict(sums)
        names = sorted(sums)
        packed = torch.tensor([sums[n] for n in names], dtype=torch.float64,
                              device=self._comm_device())
        tdist.all_reduce(packed)
        return dict(zip(names, packed.tolist()))

    def _generator_states(self) -> list[Tensor]:
        """The method generator's state of every rank (index = rank), on the CPU."""
        state = self.generator.get_state()
        if not self.info.is_distributed:
            return [state]
        local = state.to(self._comm_device())
        gathered = [torch.empty_like(local) for _ in range(self.world)]
        tdist.all_gather(gathered, local)
        return [s.cpu() for s in gathered]

    def _barrier(self) -> None:
        """Wait for every process (no-op with one)."""
        if self.info.is_distributed:
            tdist.barrier()

    # -- checkpoints

    def _save(self, position: _Position) -> None:
        """Write ``last.pt`` (rank 0; every rank takes part in gathering the RNG states)."""
        states = self._generator_states()
        if self.info.is_main:
            checkpoint = {
                "format": CHECKPOINT_FORMAT,
                "epoch": position.epoch,
                "step": position.step,
                "method": self.method.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "generator_state": states,
                "sampler": {"seed": self.config.seed, "epoch": position.epoch + 1,
                            "step": position.step, "world_size": self.world,
                            "dataset_size": len(self.dataset)},
                "partial_sums": dict(position.sums),
                "metrics": dict(position.metrics),
                "config": dataclasses.asdict(self.config),
                "amp": self.amp,
                "early_stopped": position.stopped,
            }
            save_checked(checkpoint, self.last)
            if position.step == 0 and position.epoch % self.config.checkpoint_every == 0:
                with atomic_path(self.last.with_name(f"epoch_{position.epoch:03d}.pt")) as tmp:
                    shutil.copyfile(self.last, tmp)
        self._barrier()

    def _restore(self, checkpoint: Mapping[str, Any]) -> _Position:
        """Load the training state of ``checkpoint``; return where to continue."""
        self._check_compatible(checkpoint)
        self.method.load_state_dict(checkpoint["method"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if self.scaler.is_enabled():
            self.scaler.load_state_dict(checkpoint["scaler"])
        states = checkpoint["generator_state"]
        epoch, step = int(checkpoint["epoch"]), int(checkpoint["step"])
        if len(states) == self.world:
            self.generator.set_state(states[self.info.rank])
        else:
            log.warning("checkpoint written by %d processes, resuming with %d: the method's "
                        "random streams are reseeded", len(states), self.world)
            self.generator.manual_seed(_derive_seed(self.config.seed, self.info.rank, epoch + 1))
        # Rank 0 carries the partial sums of all ranks; the epoch-end reduction adds them.
        sums = dict(checkpoint["partial_sums"]) if self.info.is_main else {}
        stopped = bool(checkpoint.get("early_stopped", False))  # absent from checkpoints of older runs
        return _Position(epoch, step, sums, dict(checkpoint["metrics"]), stopped)

    def _check_compatible(self, checkpoint: Mapping[str, Any]) -> None:
        """Refuse to resume with settings that would change the result."""
        saved = checkpoint["config"]
        differ = [f"{name}: {saved.get(name)!r} -> {getattr(self.config, name)!r}"
                  for name in _RESUME_FIELDS if saved.get(name) != getattr(self.config, name)]
        saved_size = checkpoint["sampler"].get("dataset_size")
        if saved_size != len(self.dataset):
            differ.append(f"training pairs: {saved_size} -> {len(self.dataset)}")
        if checkpoint["amp"] != self.amp:
            differ.append(f"amp (resolved): {checkpoint['amp']!r} -> {self.amp!r}")
        if differ:
            raise ConfigError(f"{self.last}: cannot resume with changed settings ("
                              + "; ".join(differ) + "); delete the checkpoints to restart")

    # -- training

    def _forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """One forward pass under autocast; returns the loss and all scalar terms."""
        x1 = x1.to(self.device, non_blocking=True)
        x2 = x2.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=_AMP_DTYPES.get(self.amp),
                            enabled=self.amp != "off"):
            out = self.wrapped(x1, x2, self.generator)
        terms = _loss_terms(out)
        return out["loss"], terms

    def _optimise(self, loss: Tensor) -> None:
        """Backward, optional clipping, SGD step, then the method's ``after_step``."""
        self.scaler.scale(loss).backward()
        if self.config.max_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.method.after_step()

    def _step(self, x1: Tensor, x2: Tensor, epoch: int, step: int) -> tuple[dict[str, float], bool]:
        """Train on one batch; return its loss terms and whether to stop after it."""
        loss, terms = self._forward(x1, x2)
        packed = torch.stack([value.float() for value in terms.values()]).cpu()  # one sync
        values = dict(zip(terms, packed.tolist()))
        bad = {name: value for name, value in values.items() if not math.isfinite(value)}
        nonfinite, stop = self._agree(bool(bad), self.stop.requested)
        if nonfinite:
            raise NonFiniteLossError(epoch, step, bad,
                                     self.last if self.last.is_file() else None)
        self._optimise(loss)
        # With one process a signal that arrived during backward counts at once; with
        # several, every process must take the same decision, made before backward.
        return values, stop or (not self.info.is_distributed and self.stop.requested)

    def _epoch(self, epoch: int, position: _Position) -> dict[str, float]:
        """Train epoch ``epoch`` from ``position.step``; return its metrics.

        Raises:
            Preempted: After checkpointing, when a preemption signal arrived mid-epoch.
        """
        self.sampler.set_position(epoch, position.step * self.local_batch)
        lr = self.optimizer.param_groups[0]["lr"]
        sums, step, done = dict(position.sums), position.step, 0
        bar = tqdm(total=self.steps, initial=step, desc=f"epoch {epoch}/{self.config.epochs}",
                   disable=not (self.config.progress and self.info.is_main),
                   leave=False, dynamic_ncols=True)
        start = time.perf_counter()
        batches = iter(self._loader(epoch))
        with bar, _closing_workers(batches):
            for x1, x2 in batches:
                values, stop = self._step(x1, x2, epoch, step + 1)
                step, done = step + 1, done + 1
                for name, value in values.items():
                    sums[name] = sums.get(name, 0.0) + value
                bar.update()
                bar.set_postfix(loss=f"{values['loss']:.4g}")
                if stop and step < self.steps:
                    partial = _Position(epoch - 1, step, self._sum_over_ranks(sums),
                                        position.metrics)
                    self._save(partial)
                    raise Preempted(self.stop.signum or signal.SIGTERM, self.last, epoch, step)
        elapsed = max(time.perf_counter() - start, 1e-9)
        totals = self._sum_over_ranks(sums)
        metrics = {f"train/{name}": value / (self.steps * self.world)
                   for name, value in totals.items()}
        metrics["train/lr"] = lr
        metrics["train/samples_per_s"] = done * self.config.batch_size / elapsed
        return metrics

    def run(self) -> TrainResult:
        """Resume if a checkpoint exists, then train to the last (or the stop) epoch."""
        resuming = self.last.is_file()
        position = self._restore(load_checkpoint(self.last)) if resuming else _Position()
        if resuming:
            log.info("resuming from %s: epoch %d done, %d steps into the next",
                     self.last, position.epoch, position.step)
        epochs_run: list[int] = []
        if position.stopped:
            log.info("%s: training stopped early after epoch %d; nothing to resume",
                     self.last, position.epoch)
        if position.epoch >= self.config.epochs or position.stopped:
            return TrainResult(epochs_run, position.metrics, self.last, position.stopped)
        live = self._open_live(resuming)
        try:
            with _catch_preemption(self.stop):
                for epoch in range(position.epoch + 1, self.config.epochs + 1):
                    metrics = self._epoch(epoch, position)
                    self.scheduler.step()
                    position = _Position(epoch, 0, {}, metrics)
                    stopped = self._end_epoch(epoch, metrics, live)
                    epochs_run.append(epoch)
                    if stopped:
                        position.stopped = True
                        if epoch < self.config.epochs:
                            log.info("early stop after epoch %d/%d", epoch, self.config.epochs)
                        break
                    if self._agree(self.stop.requested)[0] and epoch < self.config.epochs:
                        raise Preempted(self.stop.signum or signal.SIGTERM, self.last, epoch, 0)
                    if epoch == self.config.stop_after_epoch:
                        break
        finally:
            if live is not None:
                live.end()
        return TrainResult(epochs_run, position.metrics, self.last, position.stopped)

    def _open_live(self, resuming: bool) -> Any:
        """The dvclive logger on rank 0 (None elsewhere)."""
        if not self.info.is_main:
            return None
        from dvclive import Live  # heavy import, only where logging happens

        return Live(dir=str(self.out_dir / "live"), resume=resuming, save_dvc_exp=False,
                    dvcyaml=None)

    def _end_epoch(self, epoch: int, metrics: Mapping[str, float], live: Any) -> bool:
        """Log, checkpoint, then run the hook (rank 0) for a completed epoch.

        Returns True when the hook asked to stop; the checkpoint is then rewritten with
        ``early_stopped`` so that a rerun does not train past the stop. Every process
        takes part in the decision (the hook runs on rank 0 only).
        """
        if live is not None:
            live.step = epoch
            for name, value in metrics.items():
                live.log_metric(name, value)
        log.info("epoch %d/%d: %s", epoch, self.config.epochs,
                 ", ".join(f"{k}={v:.5g}" for k, v in metrics.items()))
        self._save(_Position(epoch, 0, {}, dict(metrics)))
        stop = False
        if self.hook is not None and self.info.is_main:
            stop = bool(self.hook(epoch, self.method, live))
            self.method.train()
        if self.hook is not None:
            stop = self._agree(stop)[0]
        if stop:
            self._save(_Position(epoch, 0, {}, dict(metrics), stopped=True))
        if live is not None:
            live.next_step()
        return stop


def _local_batch(batch_size: int, world_size: int) -> int:
    """The per-process batch; the global batch must divide evenly."""
    if batch_size % world_size:
        raise ConfigError(f"TrainConfig.batch_size {batch_size} is not divisible by the "
                          f"{world_size} processes")
    return batch_size // world_size


def train(
    method: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    device: torch.device | str,
    dist: DistInfo | None = None,  # noqa: A002 - the name of the contract
    on_epoch_end: EpochHook | None = None,
) -> TrainResult:
    """Pretrain ``method`` on ``dataset``, resuming from ``out_dir`` if it holds a checkpoint.

    Args:
        method: A method module: ``method(x1, x2, generator)`` returns a dict of scalar
            tensors with a "loss" key; ``method.after_step()`` runs after each SGD step.
            It is moved to ``device`` and trained in place.
        dataset: Yields pairs ``(x1, x2)`` of tensors (1, X, Y, Z), e.g. a PairsDataset.
        config: Optimisation settings.
        out_dir: Folder for ``checkpoints/`` and the dvclive log ``live/``.
        device: The device this process trains on.
        dist: This process's place in the group (from ``init_distributed``); None for a
            single process. With more than one process the method is wrapped in
            DistributedDataParallel and the data sharded.
        on_epoch_end: ``hook(epoch, method, live)`` called on rank 0 after each epoch's
            checkpoint (e.g. to save previews, or to validate with ``live``); it must not
            change the method's state. The method is put back in training mode
            afterwards. Returning True stops training after this epoch (early
            stopping), recorded in the checkpoint.

    Returns:
        A :class:`TrainResult`.

    Raises:
        Preempted: SIGTERM/SIGUSR1 received; a checkpoint was written first.
        NonFiniteLossError: A loss term became NaN or infinite.
        ConfigError: Invalid settings, or settings changed since the checkpoint.
        DataError: The checkpoint to resume from is unreadable.
    """
    device = torch.device(device)
    info = dist if dist is not None else DistInfo(device=device)
    trainer = _Trainer(method, dataset, config, Path(out_dir), device, info, on_epoch_end)
    return trainer.run()
