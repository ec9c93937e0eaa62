"""The data order and the seeds of a training run.

- The data order is a function of (seed, epoch) only (a ``DistributedSampler``, also in a
  single process), so a resumed run sees the same batches, and the same global batches
  whatever the number of processes.
- ``TrainConfig.min_steps_per_epoch`` (fine-tuning on few labels) pads an epoch with more
  seeded permutations to at least that many full batches, none dropped; None keeps the
  single pass with the incomplete last batch dropped (:class:`_EpochSampler`).
- Randomness inside the method comes from one ``torch.Generator`` per process on the
  training device, seeded from (seed, rank) with :func:`_derive_seed`; its state is in
  every checkpoint. DataLoader workers are seeded from (seed, rank, epoch).
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
from collections.abc import Iterator, Sized
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler, Sampler

from pcrl.seeding import mix_seed
from pcrl.engine.preemption import PREEMPTION_SIGNALS

__all__ = ["seed_worker"]


def _derive_seed(*keys: int) -> int:
    """A 64-bit seed mixing the non-negative integers ``keys`` (:func:`pcrl.seeding.mix_seed`)."""
    return mix_seed(*keys)


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

    With ``min_steps`` (:attr:`TrainConfig.min_steps_per_epoch`) an epoch is
    ``max(ceil(N / batch_size), min_steps)`` full global batches: the seeded permutations
    of (seed, epoch) are concatenated until they fill them, the first being the
    ``DistributedSampler``'s, and rank ``r`` of ``w`` takes every ``w``-th index from the
    ``r``-th. Every item is thus seen at least once an epoch, none is dropped, and every
    rank runs the same number of steps. Why: with the last batch dropped, 12 NCC cubes at
    batch 8 were one SGD step an epoch (10 % labels were 10 SGD steps in all), and fewer
    items than a batch were no step at all. Without ``min_steps`` nothing changes
    (pretraining is bit-identical to the engine before this option).

    Args:
        dataset: The training items.
        num_replicas: Number of processes.
        rank: This process.
        seed: Seed of the data order.
        batch_size: The global batch (a multiple of ``num_replicas``); read with
            ``min_steps`` only.
        min_steps: None, or the least number of full batches an epoch.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, *,
                 batch_size: int = 1, min_steps: int | None = None) -> None:
        self._base: DistributedSampler = DistributedSampler(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.start = 0
        self._size = len(cast(Sized, dataset))
        self._min_steps = min_steps
        self._filled_per_rank = 0
        if min_steps is not None and self._size:
            steps = max(math.ceil(self._size / batch_size), min_steps)
            self._filled_per_rank = steps * batch_size // num_replicas

    def set_position(self, epoch: int, start: int) -> None:
        """Select the epoch's permutation and skip its first ``start`` samples."""
        self._base.set_epoch(epoch)
        self.start = start

    def per_rank(self) -> int:
        """Samples per rank and epoch."""
        if self._min_steps is None:
            return len(self._base)
        return self._filled_per_rank

    def _filled(self) -> list[int]:
        """This rank's indices of a ``min_steps`` epoch (see the class docstring)."""
        base = self._base
        total = self._filled_per_rank * base.num_replicas
        generator = torch.Generator()
        generator.manual_seed(base.seed + base.epoch)  # as DistributedSampler: same first pass
        chunks: list[Tensor] = []
        drawn = 0
        while drawn < total:
            chunks.append(torch.randperm(self._size, generator=generator))
            drawn += self._size
        indices = torch.cat(chunks)[:total] if chunks else torch.zeros(0, dtype=torch.long)
        return cast(list[int], indices[base.rank:total:base.num_replicas].tolist())

    def __iter__(self) -> Iterator[int]:
        indices = list(self._base) if self._min_steps is None else self._filled()
        return iter(indices[self.start:])

    def __len__(self) -> int:
        return self.per_rank() - self.start
