"""The collective operations of the training processes (no-ops with one process).

Every process must call them in the same order: they are how the processes agree on
stopping (preemption, non-finite loss, early stop), add up the loss terms of an epoch and
gather the RNG states that go into a checkpoint.
"""

from __future__ import annotations

import torch
import torch.distributed as tdist
from torch import Tensor

from pcrl.distributed import DistInfo

__all__: list[str] = []


class _Group:
    """The processes training together, as seen from this one."""

    def __init__(self, info: DistInfo, device: torch.device) -> None:
        self.info = info
        self.device = device
        self.world = info.world_size

    def _comm_device(self) -> torch.device:
        """Where collective tensors live: the GPU for NCCL, the CPU for Gloo."""
        return self.device if tdist.get_backend() == "nccl" else torch.device("cpu")

    def agree(self, *flags: bool) -> list[bool]:
        """Each flag OR-ed over all processes."""
        if not self.info.is_distributed:
            return list(flags)
        packed = torch.tensor([float(f) for f in flags], device=self._comm_device())
        tdist.all_reduce(packed, op=tdist.ReduceOp.MAX)
        return [bool(v) for v in packed.tolist()]

    def sum(self, sums: dict[str, float]) -> dict[str, float]:
        """Loss-term sums added over all processes."""
        if not self.info.is_distributed:
            return dict(sums)
        names = sorted(sums)
        packed = torch.tensor([sums[n] for n in names], dtype=torch.float64,
                              device=self._comm_device())
        tdist.all_reduce(packed)
        return dict(zip(names, packed.tolist()))

    def gather(self, state: Tensor) -> list[Tensor]:
        """``state`` (e.g. a generator's state) of every rank (index = rank), on the CPU."""
        if not self.info.is_distributed:
            return [state]
        local = state.to(self._comm_device())
        gathered = [torch.empty_like(local) for _ in range(self.world)]
        tdist.all_gather(gathered, local)
        return [s.cpu() for s in gathered]

    def barrier(self) -> None:
        """Wait for every process (no-op with one)."""
        if self.info.is_distributed:
            tdist.barrier()
