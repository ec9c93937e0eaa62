"""Process-group setup for data-parallel training under torchrun or SLURM's srun.

One process drives one device. :func:`init_distributed` reads the launcher's environment
and returns a :class:`DistInfo` that the engine uses to shard the data, wrap the method in
DistributedDataParallel and pick the rank that writes files.

Launchers, in the order they are recognised:

- **torchrun** (``torchrun --nproc-per-node=4 -m pcrl.cli pretrain ...``): ``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` are set by torchrun;
  the group is initialised with ``init_method="env://"`` (torchrun's own store).
- **srun without torchrun** (``srun --ntasks-per-node=4 --gpus-per-task=1 pcrl pretrain``):
  the rank is ``SLURM_PROCID``, the world size ``SLURM_STEP_NUM_TASKS`` (the tasks of
  *this step*, which only srun sets: a batch script that runs Python directly in a
  multi-task allocation stays a single process instead of waiting for peers that never
  come), the local rank ``SLURM_LOCALID``. The rendezvous address is ``MASTER_ADDR`` if
  set, else the first host of ``SLURM_STEP_NODELIST`` (or ``SLURM_JOB_NODELIST``); the
  port is ``MASTER_PORT`` if set, else derived from the job and step ids (15000-54999) so
  that concurrent steps of one allocation do not collide.
- **neither** (``WORLD_SIZE`` unset and no multi-task srun step) or a world of one: no
  process group is created; a single process on ``cuda`` if available, else ``cpu``.

The backend is NCCL when the process drives a CUDA device, Gloo otherwise.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist

from pcrl.errors import ConfigError

__all__ = ["DistInfo", "LaunchEnv", "barrier", "cleanup", "init_distributed", "is_main",
           "launch_env", "first_host"]

log = logging.getLogger(__name__)

Launcher = Literal["none", "torchrun", "slurm"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the data-parallel group.

    Attributes:
        rank: Global rank, 0..world_size-1.
        world_size: Number of processes (one per device).
        local_rank: Rank on this node; the CUDA device index.
        device: The device this process trains on.
        launcher: Who started the processes ("none", "torchrun" or "slurm").
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    launcher: Launcher = "none"

    @property
    def is_distributed(self) -> bool:
        """True when a process group of more than one process is in use."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes checkpoints and logs."""
        return self.rank == 0


@dataclass(frozen=True)
class LaunchEnv:
    """What the launcher's environment variables say (pure data, no side effect).

    Attributes:
        launcher: "torchrun", "slurm" or "none".
        rank: Global rank.
        world_size: Number of processes.
        local_rank: Rank on this node.
        master_addr: Rendezvous host (None for torchrun, whose env:// store is used).
        master_port: Rendezvous port (None for torchrun).
    """

    launcher: Launcher
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None


def _int_env(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    """Read an integer environment variable, with a ConfigError naming it when invalid."""
    value = env.get(name)
    if value is None or value == "":
        if default is None:
            raise ConfigError(f"environment variable {name} is required but not set")
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def first_host(nodelist: str) -> str:
    """First host name of a SLURM node list (what ``scontrol show hostnames`` prints first).

    Args:
        nodelist: A compressed SLURM host list such as ``"gpu[01-04,07],cpu3"`` or
            ``"rack[1-2]-node[08-09]"``.

    Returns:
        The first host, zero padding kept (``"gpu01"``, ``"rack1-node08"``).

    Raises:
        ConfigError: If the list is empty or its brackets are unbalanced.
    """
    depth = 0
    end = len(nodelist)
    for i, char in enumerate(nodelist):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            end = i
            break
    entry = nodelist[:end].strip()
    host = re.sub(r"\[([^\[\]]*)\]", lambda m: m.group(1).split(",")[0].split("-")[0], entry)
    if not host or "[" in host or "]" in host:
        raise ConfigError(f"cannot parse the SLURM node list {nodelist!r}")
    return host


def _slurm_port(env: Mapping[str, str]) -> int:
    """A rendezvous port derived from the SLURM job and step ids (15000-54999)."""
    key = f"{env.get('SLURM_JOB_ID', '0')}.{env.get('SLURM_STEP_ID', '0')}"
    return 15000 + zlib.crc32(key.encode()) % 40000


def launch_env(env: Mapping[str, str] | None = None) -> LaunchEnv:
    """Decode the launcher's environment variables (see the module docstring).

    Args:
        env: The environment to read; ``os.environ`` when None.

    Returns:
        A :class:`LaunchEnv`; ``launcher == "none"`` for a plain single process.

    Raises:
        ConfigError: If a variable is malformed or a rank is outside the world.
    """
    env = os.environ if env is None else env
    if env.get("WORLD_SIZE"):
        launched = LaunchEnv(
            launcher="torchrun",
            rank=_int_env(env, "RANK"),
            world_size=_int_env(env, "WORLD_SIZE"),
            local_rank=_int_env(env, "LOCAL_RANK", 0),
        )
    elif env.get("SLURM_STEP_NUM_TASKS") and _int_env(env, "SLURM_STEP_NUM_TASKS") > 1:
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or ""
        addr = env.get("MASTER_ADDR") or (first_host(nodelist) if nodelist else "127.0.0.1")
        launched = LaunchEnv(
            launcher="slurm",
            rank=_int_env(env, "SLURM_PROCID"),
            world_size=_int_env(env, "SLURM_STEP_NUM_TASKS"),
            local_rank=_int_env(env, "SLURM_LOCALID", 0),
            master_addr=addr,
            master_port=_int_env(env, "MASTER_PORT", _slurm_port(env)),
        )
    else:
        return LaunchEnv(launcher="none")
    if not 0 <= launched.rank < launched.world_size:
        raise ConfigError(
            f"rank {launched.rank} is outside a world of {launched.world_size} processes "
            f"(launcher {launched.launcher})"
        )
    return launched


def _pick_device(device_type: str | None, local_rank: int) -> torch.device:
    """The device of this process: ``cuda:<local_rank>`` when CUDA is used, else the type."""
    kind = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind != "cuda":
        return torch.device(kind)
    if not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ConfigError(
            f"local rank {local_rank} has no GPU: only {count} visible on this node "
            "(start one process per GPU)"
        )
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init_distributed(
    device_type: str | None = None,
    *,
    backend: str | None = None,
    timeout: datetime.timedelta | None = None,
    env: Mapping[str, str] | None = None,
) -> DistInfo:
    """Join the process group described by the launcher's environment, if any.

    Args:
        device_type: "cuda", "cpu", ... ; None picks CUDA when available.
        backend: Overrides the backend ("nccl" on CUDA, "gloo" otherwise).
        timeout: Collective timeout (torch's default when None).
        env: Environment to read instead of ``os.environ`` (tests).

    Returns:
        This process's :class:`DistInfo`. Without a launcher (or with a world of one) no
        process group is created and rank 0 of 1 is returned.

    Raises:
        ConfigError: If the environment is inconsistent or the device is missing.
    """
    launched = launch_env(env)
    device = _pick_device(device_type, launched.local_rank)
    info = DistInfo(launched.rank, launched.world_size, launched.local_rank, device,
                    launched.launcher)
    if not info.is_distributed or dist.is_initialized():
        return info
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    kwargs: dict = {"backend": backend, "rank": info.rank, "world_size": info.world_size}
    if timeout is not None:
        kwargs["timeout"] = timeout
    if device.type == "cuda":
        kwargs["device_id"] = device
    if launched.launcher == "torchrun":
        kwargs["init_method"] = "env://"
    else:
        kwargs["init_method"] = f"tcp://{launched.master_addr}:{launched.master_port}"
    log.info("joining process group: rank %d of %d via %s (%s, %s)", info.rank,
             info.world_size, launched.launcher, backend, device)
    dist.init_process_group(**kwargs)
    return info


def is_main() -> bool:
    """True on rank 0 of the initialised process group, or without one."""
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    """Wait for every process of the group; a no-op without a process group."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def cleanup() -> None:
    """Leave and destroy the process group, if one was created."""
    if dist.is_initialized():
        dist.destroy_process_group()
