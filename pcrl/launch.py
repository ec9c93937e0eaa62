"""One process per GPU: re-launch a training command under torchrun when it is given several.

A stage's command is the same for DVC and Snakemake (``pcrl pretrain ...``). When the job
is allotted several GPUs (``CUDA_VISIBLE_DEVICES`` as SLURM sets it, i.e.
``torch.cuda.device_count()``) or several nodes (``SLURM_JOB_NUM_NODES``), the CLI starts
itself again under ``torch.distributed.run`` (torchrun) with one process per GPU; on
several nodes through ``srun`` with one torchrun per node and a c10d rendezvous on the
first node. ``PCRL_NPROC_PER_NODE`` overrides the count (e.g. 2 CPU processes with the
gloo backend, for tests). ``PCRL_NNODES`` overrides the node count: that many torchrun
agents, one per srun task, join one rendezvous; inside an allocation of fewer nodes they
share them (simulated nodes: a two-node launch tested on one machine, tests/test_cluster.py).
A process already started by torchrun or srun runs as it is.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pcrl.distributed import first_host
from pcrl.errors import ConfigError

log = logging.getLogger(__name__)

OVERRIDE = "PCRL_NPROC_PER_NODE"
NODES_OVERRIDE = "PCRL_NNODES"
DEFAULT_PORT = 29500


@dataclass(frozen=True)
class LaunchPlan:
    """How many processes to start: ``nproc_per_node`` on each of ``nnodes`` nodes."""

    nproc_per_node: int
    nnodes: int

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    value = env.get(key, "")
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"environment variable {key}={value!r} is not an integer") from None
    if number < 1:
        raise ConfigError(f"environment variable {key}={value} must be at least 1")
    return number


def already_launched(env: Mapping[str, str]) -> bool:
    """True inside a torchrun worker or an srun step of several tasks."""
    return "LOCAL_RANK" in env or "TORCHELASTIC_RUN_ID" in env or _int(env, "SLURM_STEP_NUM_TASKS", 1) > 1


def plan(env: Mapping[str, str] | None = None, *, gpus: int | None = None) -> LaunchPlan:
    """The processes this job should run (``gpus`` defaults to the visible CUDA devices)."""
    env = os.environ if env is None else env
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count()
    nproc = _int(env, OVERRIDE, max(1, gpus))
    allocated = _int(env, "SLURM_JOB_NUM_NODES", 1) if "SLURM_JOB_ID" in env else 1
    nnodes = _int(env, NODES_OVERRIDE, allocated)
    if nnodes > 1 and "SLURM_JOB_ID" not in env:
        raise ConfigError(f"{NODES_OVERRIDE}={nnodes}: several nodes are launched with srun, "
                          "inside a SLURM allocation (sbatch or salloc)")
    return LaunchPlan(nproc_per_node=nproc, nnodes=nnodes)


def launch_command(argv: Sequence[str], launch: LaunchPlan, env: Mapping[str, str]) -> list[str]:
    """The torchrun (and, across nodes, srun) command that re-runs ``pcrl argv``."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={launch.nproc_per_node}"]
    target = ["-m", "pcrl.cli", *argv]
    if launch.nnodes == 1:
        return [*torchrun, "--standalone", "--nnodes=1", *target]
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise ConfigError("several nodes requested but SLURM_JOB_NODELIST is not set")
    endpoint = f"{first_host(nodelist)}:{_int(env, 'MASTER_PORT', DEFAULT_PORT)}"
    allocated = _int(env, "SLURM_JOB_NUM_NODES", 1)
    if allocated >= launch.nnodes:  # one agent per node
        placement = [f"--nodes={launch.nnodes}", "--ntasks-per-node=1"]
    else:  # agents share the allocation's nodes (simulated nodes)
        log.warning("%d torchrun agents on %d allocated node(s): the agents share nodes",
                    launch.nnodes, allocated)
        placement = [f"--nodes={allocated}", f"--ntasks={launch.nnodes}", "--cpus-per-task=1"]
    return [
        "srun", *placement, "--kill-on-bad-exit=1",
        *torchrun, f"--nnodes={launch.nnodes}", "--rdzv-backend=c10d",
        f"--rdzv-endpoint={endpoint}", f"--rdzv-id={env.get('SLURM_JOB_ID', 'pcrl')}", *target,
    ]


def maybe_relaunch(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int | None:
    """Run ``pcrl argv`` under torchrun when several processes are wanted; its exit code.

    Returns None when this process should do the work itself (one process wanted, or
    already a torchrun/srun worker).
    """
    env = os.environ if env is None else env
    if already_launched(env):
        return None
    launch = plan(env)
    if launch.world_size == 1:
        return None
    cmd = launch_command(argv, launch, env)
    log.info("starting %d processes (%d per node on %d nodes): %s", launch.world_size,
             launch.nproc_per_node, launch.nnodes, " ".join(cmd))
    return subprocess.run(cmd, env=dict(env)).returncode
