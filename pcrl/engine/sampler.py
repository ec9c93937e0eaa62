"""The data order and the seeds of a training run.

- The data order is a function of (seed, epoch) only (a ``DistributedSampler``, also in a
  single process), so a resumed run sees the same batches, and the same global batches
  whatever the number of processes.
- Randomness inside the method comes from one ``torch.Generator`` per process on the
  training device, seeded from (seed, rank) with :func:`_derive_seed`; its state is in
  every checkpoint. DataLoader workers are seeded from (seed, rank, epoch).
"""

from __future__ import annotations

import contextlib
import random
import signal
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
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
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int) -> None:
        self._base: DistributedSampler = DistributedSampler(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
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
