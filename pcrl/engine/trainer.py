"""The training loop: :func:`train` and the :class:`_Trainer` behind it.

The method is trained with SGD and a cosine decay stepped once per epoch, under autocast
when AMP is on, wrapped in DistributedDataParallel with several processes, under
deterministic algorithms when the config asks (:mod:`pcrl.engine.determinism`).

- A non-finite loss term stops the run at once with :class:`NonFiniteLossError`, before
  its gradient touches the weights; ``last.pt`` stays the last good checkpoint.
- Early stopping: when the ``on_epoch_end`` hook returns True (e.g. the validation metric
  stopped improving), training ends after that epoch and ``last.pt`` records
  ``early_stopped``, so a rerun with the same ``out_dir`` trains nothing more.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from collections.abc import Mapping, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as tdist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from pcrl.distributed import DistInfo
from pcrl.engine.checkpoint import (CHECKPOINT_FORMAT, _check_compatible, _write_checkpoint,
                                    last_checkpoint, load_checkpoint)
from pcrl.engine.collectives import _Group
from pcrl.engine.config import (EpochHook, NonFiniteLossError, TrainConfig, TrainResult,
                                amp_dtype, resolve_amp)
from pcrl.engine.determinism import determinism
from pcrl.engine.logging import (close_live, epoch_bar, log, log_epoch, next_live_step,
                                 open_live)
from pcrl.engine.preemption import Preempted, _catch_preemption, _StopFlag
from pcrl.engine.sampler import _closing_workers, _derive_seed, _EpochSampler, seed_worker
from pcrl.errors import ConfigError

__all__ = ["train"]


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


def _local_batch(batch_size: int, world_size: int) -> int:
    """The per-process batch; the global batch must divide evenly."""
    if batch_size % world_size:
        raise ConfigError(f"TrainConfig.batch_size {batch_size} is not divisible by the "
                          f"{world_size} processes")
    return batch_size // world_size


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
        self.group = _Group(info, device)
        self.wrapped = self._wrap(method)
        self.sampler = _EpochSampler(dataset, self.world, info.rank, config.seed,
                                     batch_size=config.batch_size,
                                     min_steps=config.min_steps_per_epoch)
        self.dataset = dataset
        # A multiple of the local batch with min_steps_per_epoch, so drop_last drops nothing.
        self.steps = self.sampler.per_rank() // self.local_batch
        if self.steps == 0:
            raise ConfigError(
                f"TrainConfig.batch_size {config.batch_size} is larger than the "
                f"{len(cast(Sized, dataset))} training pairs (no full batch per epoch; "
                "min_steps_per_epoch fills batches by resampling)")
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

    # -- checkpoints

    def _save(self, position: _Position) -> None:
        """Write ``last.pt`` (rank 0; every rank takes part in gathering the RNG states)."""
        states = self.group.gather(self.generator.get_state())
        if self.info.is_main:
            _write_checkpoint(self._checkpoint(position, states), self.last,
                              self.config.checkpoint_every)
        self.group.barrier()

    def _checkpoint(self, position: _Position, states: list[Tensor]) -> dict[str, Any]:
        """The checkpoint dict of the run at ``position`` (``states``: every rank's RNG)."""
        return {
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
                        "dataset_size": len(cast(Sized, self.dataset))},
            "partial_sums": dict(position.sums),
            "metrics": dict(position.metrics),
            "config": dataclasses.asdict(self.config),
            "amp": self.amp,
            "early_stopped": position.stopped,
        }

    def _restore(self, checkpoint: Mapping[str, Any]) -> _Position:
        """Load the training state of ``checkpoint``; return where to continue."""
        _check_compatible(checkpoint, self.last, self.config, len(cast(Sized, self.dataset)), self.amp)
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

    def _resume(self) -> _Position:
        """Restore the state of ``last.pt`` and log where the run continues."""
        position = self._restore(load_checkpoint(self.last))
        log.info("resuming from %s: epoch %d done, %d steps into the next",
                 self.last, position.epoch, position.step)
        return position

    # -- training

    def _forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """One forward pass under autocast; returns the loss and all scalar terms."""
        x1 = x1.to(self.device, non_blocking=True)
        x2 = x2.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=amp_dtype(self.amp),
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
        cast(Any, self.method).after_step()

    def _step(self, x1: Tensor, x2: Tensor, epoch: int, step: int) -> tuple[dict[str, float], bool]:
        """Train on one batch; return its loss terms and whether to stop after it."""
        loss, terms = self._forward(x1, x2)
        packed = torch.stack([value.float() for value in terms.values()]).cpu()  # one sync
        values = dict(zip(terms, packed.tolist()))
        bad = {name: value for name, value in values.items() if not math.isfinite(value)}
        nonfinite, stop = self.group.agree(bool(bad), self.stop.requested)
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
        bar = epoch_bar(self.steps, step, epoch, self.config.epochs,
                        self.config.progress and self.info.is_main)
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
                    self._preempt_mid_epoch(epoch, step, sums, position.metrics)
        elapsed = max(time.perf_counter() - start, 1e-9)
        return self._epoch_metrics(sums, lr, done, elapsed)

    def _preempt_mid_epoch(self, epoch: int, step: int, sums: dict[str, float],
                           metrics: dict[str, float]) -> None:
        """Checkpoint ``step`` steps into ``epoch`` (with the summed partial loss terms and
        the previous epoch's ``metrics``), then raise :class:`Preempted`."""
        partial = _Position(epoch - 1, step, self.group.sum(sums), metrics)
        self._save(partial)
        raise Preempted(self.stop.signum or signal.SIGTERM, self.last, epoch, step)

    def _epoch_metrics(self, sums: dict[str, float], lr: float, done: int,
                       elapsed: float) -> dict[str, float]:
        """An epoch's metrics: mean loss terms over all ranks, its lr and throughput."""
        totals = self.group.sum(sums)
        metrics = {f"train/{name}": value / (self.steps * self.world)
                   for name, value in totals.items()}
        metrics["train/lr"] = lr
        metrics["train/samples_per_s"] = done * self.config.batch_size / elapsed
        return metrics

    def run(self) -> TrainResult:
        """Resume if a checkpoint exists, then train to the last (or the stop) epoch."""
        resuming = self.last.is_file()
        position = self._resume() if resuming else _Position()
        epochs_run: list[int] = []
        if position.stopped:
            log.info("%s: training stopped early after epoch %d; nothing to resume",
                     self.last, position.epoch)
        if position.epoch >= self.config.epochs or position.stopped:
            return TrainResult(epochs_run, position.metrics, self.last, position.stopped)
        live = open_live(self.out_dir, resuming, self.info.is_main)
        try:
            with _catch_preemption(self.stop):
                position = self._train_epochs(position, live, epochs_run)
        finally:
            close_live(live)
        return TrainResult(epochs_run, position.metrics, self.last, position.stopped)

    def _train_epochs(self, position: _Position, live: Any, epochs_run: list[int]) -> _Position:
        """Train the epochs after ``position``, appending each one done to ``epochs_run``;
        return the final position.

        Raises:
            Preempted: When a preemption signal arrived (after checkpointing).
        """
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
            if self.group.agree(self.stop.requested)[0] and epoch < self.config.epochs:
                raise Preempted(self.stop.signum or signal.SIGTERM, self.last, epoch, 0)
            if epoch == self.config.stop_after_epoch:
                break
        return position

    def _end_epoch(self, epoch: int, metrics: Mapping[str, float], live: Any) -> bool:
        """Log, checkpoint, then run the hook (rank 0) for a completed epoch.

        Returns True when the hook asked to stop; the checkpoint is then rewritten with
        ``early_stopped`` so that a rerun does not train past the stop. Every process
        takes part in the decision (the hook runs on rank 0 only).
        """
        log_epoch(live, epoch, self.config.epochs, metrics)
        self._save(_Position(epoch, 0, {}, dict(metrics)))
        stop = False
        if self.hook is not None and self.info.is_main:
            stop = bool(self.hook(epoch, self.method, live))
            self.method.train()
        if self.hook is not None:
            stop = self.group.agree(stop)[0]
        if stop:
            self._save(_Position(epoch, 0, {}, dict(metrics), stopped=True))
        next_live_step(live)
        return stop


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
    """Train ``method`` on ``dataset``, resuming from ``out_dir`` if it holds a checkpoint.

    Args:
        method: A method module: ``method(x1, x2, generator)`` returns a dict of scalar
            tensors with a "loss" key; ``method.after_step()`` runs after each SGD step.
            It is moved to ``device`` and trained in place.
        dataset: Yields pairs of tensors: two views ``(x1, x2)`` (1, X, Y, Z) for
            pretraining (a PairsDataset), ``(image, target)`` for fine-tuning.
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
    with determinism(config.deterministic):
        trainer = _Trainer(method, dataset, config, Path(out_dir), device, info, on_epoch_end)
        return trainer.run()
