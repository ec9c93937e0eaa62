"""Momentum-contrast parts: EMA update, key queue, shuffled batch norm.

MoCo (He et al., CVPR 2020, Sec. 3.2 and Algorithm 1), reused by PCRL (docs/method.md
"Networks" and "One training step"):

* :func:`update_momentum`: the momentum (key) encoder follows the student as an
  exponential moving average, ``theta_k <- m theta_k + (1 - m) theta_q`` (m = 0.999);
* :class:`MomentumSchedule`: the EMA coefficient per step, constant (the release) or a
  cosine ramp from ``m0`` to 1 (BYOL, Grill et al. 2020, Sec. 3.2; MoCo v3), counting its
  steps in a buffer so that a resumed run continues the ramp;
* :class:`KeyQueue`: a FIFO dictionary of the last ``K`` keys (16384 x 128), held as a
  registered buffer so that it is saved with checkpoints and moved with ``.to(device)``;
  keys are enqueued once per training step (the release enqueued three times: docs/method.md
  "Known defects of the release");
* :func:`batch_shuffle` / :func:`batch_unshuffle`: "shuffling BN", which keeps the
  key encoder's batch statistics from leaking which sample is the positive. On several
  processes the global batch is permuted across them (MoCo's cross-GPU shuffle); on one
  device the permutation leaves batch-norm statistics unchanged, so it is harmless and
  keeps the code path identical.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Literal, get_args

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from pcrl.errors import ConfigError
from pcrl.networks.blocks import require_positive_int
from pcrl.momentum_rule import TIME_CONSTANT_SHARE, momentum_time_constant, recommended_momentum

log = logging.getLogger(__name__)

__all__ = [
    "MOMENTUM_SCHEDULES",
    "TIME_CONSTANT_SHARE",
    "KeyQueue",
    "MomentumSchedule",
    "MomentumScheduleName",
    "batch_shuffle",
    "batch_unshuffle",
    "check_momentum_settings",
    "concat_all_gather",
    "forward_shuffled",
    "is_distributed",
    "momentum_at",
    "momentum_time_constant",
    "recommended_momentum",
    "update_momentum",
]

MomentumScheduleName = Literal["constant", "cosine"]
MOMENTUM_SCHEDULES: tuple[str, ...] = get_args(MomentumScheduleName)


def momentum_at(step: int, total_steps: int | None, m0: float, schedule: str = "constant") -> float:
    """The EMA coefficient after ``step`` optimiser steps.

    ``constant``: ``m0`` at every step (MoCo, the release). ``cosine``:
    ``1 - (1 - m0) * (cos(pi * step / total_steps) + 1) / 2`` (BYOL Sec. 3.2), ``m0`` at the
    first step rising to 1 at the last; 1 beyond it.

    Raises:
        ValueError: unknown schedule, ``m0`` outside [0, 1], or ``cosine`` without a
            positive ``total_steps``.
    """
    if schedule not in MOMENTUM_SCHEDULES:
        raise ValueError(f"momentum schedule must be one of {MOMENTUM_SCHEDULES}, got {schedule!r}")
    if not 0.0 <= m0 <= 1.0:
        raise ValueError(f"momentum must lie in [0, 1], got {m0}")
    if schedule == "constant":
        return m0
    if total_steps is None or total_steps < 1:
        raise ValueError(f"the cosine momentum schedule needs the run's total steps, got {total_steps!r}")
    t = min(max(step, 0), total_steps) / total_steps
    return 1.0 - (1.0 - m0) * (math.cos(math.pi * t) + 1.0) / 2.0


def check_momentum_settings(owner: str, m0: float, schedule: str, total_steps: int | None) -> None:
    """Validate a method config's momentum fields (PCRL's and MoCo v2's).

    Raises:
        ConfigError: naming ``<owner>.<field>``: ``momentum`` outside [0, 1],
            ``momentum_steps`` not a positive integer, or an unknown schedule (or ``cosine``
            without steps) under ``momentum_schedule``.
    """
    if not 0.0 <= m0 <= 1.0:
        raise ConfigError(f"{owner}.momentum must lie in [0, 1], got {m0!r}")
    if total_steps is not None:
        require_positive_int(f"{owner}.momentum_steps", total_steps)
    try:
        momentum_at(0, total_steps, m0, schedule)
    except ValueError as exc:
        raise ConfigError(f"{owner}.momentum_schedule: {exc}") from None


class MomentumSchedule(nn.Module):
    """The EMA coefficient of a momentum encoder, step by step (see :func:`momentum_at`).

    The number of updates done is a registered buffer (``steps``), so that it is saved with
    the method's checkpoint and a resumed run continues the ramp where it stopped.

    Args:
        m0: the base momentum (the constant one, or the ramp's start).
        schedule: ``"constant"`` or ``"cosine"``.
        total_steps: the run's optimiser steps (required by ``cosine``).
    """

    steps: Tensor

    def __init__(self, m0: float, schedule: str = "constant", total_steps: int | None = None) -> None:
        super().__init__()
        momentum_at(0, total_steps, m0, schedule)  # validates
        self.m0, self.schedule, self.total_steps = float(m0), schedule, total_steps
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        """Checkpoints written before the schedule existed resume at step 0 (with a warning)."""
        key = f"{prefix}steps"
        if key not in state_dict:
            log.warning("%s missing from the checkpoint (written by an older version): the momentum "
                        "schedule restarts at step 0", key)
            state_dict[key] = torch.zeros((), dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    @property
    def current(self) -> float:
        """The coefficient of the next update."""
        return momentum_at(int(self.steps), self.total_steps, self.m0, self.schedule)

    @torch.no_grad()
    def update(self, student: nn.Module, teacher: nn.Module) -> float:
        """One EMA update of ``teacher`` towards ``student`` with :attr:`current`; returns it."""
        m = self.current
        update_momentum(student, teacher, m)
        self.steps.add_(1)
        return m

    def extra_repr(self) -> str:
        return f"m0={self.m0}, schedule={self.schedule}, total_steps={self.total_steps}"


def is_distributed() -> bool:
    """True when torch.distributed is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def update_momentum(student: nn.Module, teacher: nn.Module, m: float) -> None:
    """EMA update of ``teacher`` towards ``student`` (MoCo Eq. 2).

    Every parameter becomes ``m * teacher + (1 - m) * student``; every buffer (batch-norm
    running statistics, ``num_batches_tracked``) is copied from the student, so the
    momentum encoder in eval mode uses the student's statistics.

    Args:
        student: the network trained by SGD.
        teacher: its momentum copy, same architecture (same parameter and buffer names).
        m: momentum in [0, 1]; 1 leaves the teacher's parameters unchanged, 0 copies.

    Raises:
        ValueError: if ``m`` is outside [0, 1] or the two networks differ in names or shapes.
    """
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"update_momentum: m must lie in [0, 1], got {m}")
    s_params = dict(student.named_parameters())
    t_params = dict(teacher.named_parameters())
    s_buffers = dict(student.named_buffers())
    t_buffers = dict(teacher.named_buffers())
    if s_params.keys() != t_params.keys() or s_buffers.keys() != t_buffers.keys():
        diff = sorted((s_params.keys() ^ t_params.keys()) | (s_buffers.keys() ^ t_buffers.keys()))
        raise ValueError(f"update_momentum: student and teacher differ in names: {diff[:8]}")
    for name, t in t_params.items():
        s = s_params[name]
        if s.shape != t.shape:
            raise ValueError(
                f"update_momentum: {name} has shape {tuple(s.shape)} in the student and "
                f"{tuple(t.shape)} in the teacher"
            )
        t.mul_(m).add_(s.detach(), alpha=1.0 - m)
    for name, buffer in t_buffers.items():
        buffer.copy_(s_buffers[name])


@torch.no_grad()
def concat_all_gather(t: Tensor) -> Tensor:
    """Concatenate ``t`` from every process along dim 0, in rank order (no gradient).

    Every process must pass a tensor of the same shape. Without torch.distributed (or
    with one process) ``t`` itself is returned.

    Args:
        t: (B, ...) local tensor.

    Returns:
        (world_size * B, ...) tensor, rows of rank 0 first.
    """
    if not is_distributed():
        return t
    gathered = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, t.contiguous())
    return torch.cat(gathered, dim=0)


@torch.no_grad()
def batch_shuffle(x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Shuffle a batch before the key encoder (MoCo's shuffling BN).

    On one process: ``x[perm]`` with ``perm`` drawn from ``generator``. With
    torch.distributed: the batches of all processes are gathered (same size on each), rank
    0's permutation of the global batch is broadcast, and every process keeps its slice,
    so that each process normalises a random subset of the global batch. Every rank draws
    a permutation so that the generators stay in step.

    Args:
        x: (B, ...) local batch.
        generator: torch.Generator on ``x``'s device.

    Returns:
        ``(shuffled, idx_unshuffle)``: the shuffled local batch and the indices that
        :func:`batch_unshuffle` needs.
    """
    gathered = concat_all_gather(x)
    perm = torch.randperm(gathered.shape[0], generator=generator, device=x.device)
    if not is_distributed():
        return gathered[perm], torch.argsort(perm)
    dist.broadcast(perm, src=0)
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = perm.view(world, -1)[rank]
    return gathered[mine], torch.argsort(perm)


@torch.no_grad()
def batch_unshuffle(x: Tensor, idx_unshuffle: Tensor) -> Tensor:
    """Undo :func:`batch_shuffle` on the key encoder's output (any (B, ...) tensor).

    Args:
        x: (B, ...) output computed on the shuffled local batch.
        idx_unshuffle: second value returned by :func:`batch_shuffle`.

    Returns:
        (B, ...) rows back in the original order of this process's batch.
    """
    if not is_distributed():
        return x[idx_unshuffle]
    gathered = concat_all_gather(x)
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = idx_unshuffle.view(world, -1)[rank]
    return gathered[mine]


@torch.no_grad()
def forward_shuffled(
    fn: Callable[[Tensor], Sequence[Tensor]], x: Tensor, generator: torch.Generator
) -> list[Tensor]:
    """Run ``fn`` on the shuffled batch and unshuffle each of its outputs (shuffling BN).

    Args:
        fn: maps a (B, ...) batch to a sequence of (B, ...) tensors (keys, feature maps).
        x: (B, ...) local batch.
        generator: torch.Generator on ``x``'s device (draws the permutation).

    Returns:
        ``fn``'s outputs, rows in the order of ``x``; no gradient.
    """
    shuffled, idx = batch_shuffle(x, generator)
    return [batch_unshuffle(out, idx) for out in fn(shuffled)]


class KeyQueue(nn.Module):
    """FIFO queue of momentum keys, the negatives of the contrastive loss (MoCo Sec. 3.1).

    The queue starts full of random unit vectors (as MoCo), so the loss always sees ``K``
    negatives; they are pushed out after ``K / B`` steps (``filled`` counts the real keys).

    Args:
        size: number of keys ``K`` (16384 in PCRL).
        dim: key dimension ``D`` (128).
        generator: draws the initial keys; None uses a CPU generator seeded with 0, so a
            freshly built queue is deterministic.

    Attributes:
        keys: buffer (K, D) of unit rows.
        ptr: buffer () long, the row the next key is written to.
        filled: buffer () long, how many rows hold enqueued keys (not initial random ones),
            at most ``K``; :attr:`fill` is its share, logged so a user sees the queue warm up.

    Raises:
        ValueError: if ``size`` or ``dim`` is not positive.
    """

    keys: Tensor
    ptr: Tensor
    filled: Tensor

    def __init__(self, size: int, dim: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"KeyQueue: size and dim must be positive, got size={size}, dim={dim}")
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        keys = torch.randn(size, dim, generator=generator, device=generator.device)
        self.register_buffer("keys", F.normalize(keys, dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long, device=generator.device))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long, device=generator.device))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        """Checkpoints written before ``filled`` existed resume as a full queue (with a warning)."""
        key = f"{prefix}filled"
        if key not in state_dict and f"{prefix}keys" in state_dict:
            log.warning("%s missing from the checkpoint (written by an older version): the queue counts as full",
                        key)
            state_dict[key] = torch.tensor(self.size, dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    @property
    def size(self) -> int:
        """Number of keys ``K``."""
        return self.keys.shape[0]

    @property
    def fill(self) -> Tensor:
        """0-d float tensor: the share of the ``K`` rows that hold enqueued keys."""
        return self.filled.float() / self.size

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write a batch of keys over the oldest ones, gathered over processes first.

        The rows ``ptr, ptr + 1, ...`` (modulo ``K``) are overwritten, so a batch crossing
        the end of the buffer wraps to its start; ``ptr`` advances by the (global) batch
        size modulo ``K``. If more than ``K`` keys arrive, only the last ``K`` are kept.

        Args:
            keys: (B, D) keys of this step (detached; cast to the queue's dtype).

        Raises:
            ValueError: if ``keys`` is not (B, D) with the queue's ``D``.
        """
        if keys.ndim != 2 or keys.shape[1] != self.keys.shape[1]:
            raise ValueError(
                f"KeyQueue.enqueue: expected keys (B, {self.keys.shape[1]}), got {tuple(keys.shape)}"
            )
        keys = concat_all_gather(keys.detach())
        n, size = keys.shape[0], self.size
        start = max(0, n - size)
        rows = (self.ptr + torch.arange(start, n, device=self.keys.device)) % size
        self.keys[rows] = keys[start:].to(self.keys.dtype)
        self.ptr.copy_((self.ptr + n) % size)
        self.filled.copy_(torch.clamp(self.filled + n, max=size))

    def extra_repr(self) -> str:
        return f"size={self.keys.shape[0]}, dim={self.keys.shape[1]}"
