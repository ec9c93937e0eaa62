"""Re-launching a training command with one process per GPU (torchrun / srun)."""

from __future__ import annotations

import sys

import pytest

from pcrl.errors import ConfigError
from pcrl.launch import LaunchPlan, already_launched, launch_command, maybe_relaunch, plan


def test_plan_counts_gpus_and_nodes() -> None:
    assert plan({}, gpus=0) == LaunchPlan(1, 1)
    assert plan({}, gpus=4) == LaunchPlan(4, 1)
    assert plan({"PCRL_NPROC_PER_NODE": "2"}, gpus=0) == LaunchPlan(2, 1)
    slurm = {"SLURM_JOB_ID": "77", "SLURM_JOB_NUM_NODES": "3"}
    assert plan(slurm, gpus=4).world_size == 12
    # outside a SLURM job a stray node count is ignored
    assert plan({"SLURM_JOB_NUM_NODES": "3"}, gpus=2) == LaunchPlan(2, 1)


def test_bad_override_is_named() -> None:
    with pytest.raises(ConfigError, match="PCRL_NPROC_PER_NODE='two'"):
        plan({"PCRL_NPROC_PER_NODE": "two"}, gpus=0)
    with pytest.raises(ConfigError, match="PCRL_NPROC_PER_NODE=0 must be at least 1"):
        plan({"PCRL_NPROC_PER_NODE": "0"}, gpus=0)


def test_workers_are_not_relaunched() -> None:
    assert already_launched({"LOCAL_RANK": "0"})
    assert already_launched({"SLURM_STEP_NUM_TASKS": "4"})
    assert not already_launched({"SLURM_STEP_NUM_TASKS": "1", "SLURM_JOB_ID": "5"})
    assert maybe_relaunch(["pretrain"], {"LOCAL_RANK": "1", "PCRL_NPROC_PER_NODE": "4"}) is None
    assert maybe_relaunch(["pretrain"], {"PCRL_NPROC_PER_NODE": "1"}) is None


def test_single_node_command() -> None:
    cmd = launch_command(["pretrain", "--method", "pcrl"], LaunchPlan(4, 1), {})
    assert cmd == [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=4", "--standalone",
        "--nnodes=1", "-m", "pcrl.cli", "pretrain", "--method", "pcrl",
    ]


def test_multi_node_command_uses_srun_and_the_first_host() -> None:
    env = {"SLURM_JOB_ID": "991", "SLURM_JOB_NODELIST": "gpu[07-09,12]", "SLURM_JOB_NUM_NODES": "4",
           "MASTER_PORT": "29611"}
    cmd = launch_command(["finetune"], LaunchPlan(2, 4), env)
    assert cmd[:4] == ["srun", "--nodes=4", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    assert "--rdzv-endpoint=gpu07:29611" in cmd and "--rdzv-id=991" in cmd and "--nnodes=4" in cmd
    assert cmd[-3:] == ["-m", "pcrl.cli", "finetune"]
    with pytest.raises(ConfigError, match="SLURM_JOB_NODELIST"):
        launch_command(["x"], LaunchPlan(1, 2), {"SLURM_JOB_ID": "1"})


def test_more_agents_than_allocated_nodes_share_them() -> None:
    """PCRL_NNODES=2 in a one-node allocation: two srun tasks, each a torchrun agent of a
    two-node rendezvous on that node (the simulated two-node launch of tests/test_cluster.py)."""
    env = {"SLURM_JOB_ID": "12", "SLURM_JOB_NODELIST": "vm", "SLURM_JOB_NUM_NODES": "1",
           "PCRL_NNODES": "2"}
    launch = plan(env, gpus=0)
    assert launch == LaunchPlan(1, 2)
    cmd = launch_command(["pretrain"], launch, env)
    assert cmd[:5] == ["srun", "--nodes=1", "--ntasks=2", "--cpus-per-task=1", "--kill-on-bad-exit=1"]
    assert "--nnodes=2" in cmd and "--rdzv-endpoint=vm:29500" in cmd and "--nproc-per-node=1" in cmd


def test_several_nodes_outside_slurm_are_refused() -> None:
    with pytest.raises(ConfigError, match="PCRL_NNODES=2.*SLURM allocation"):
        plan({"PCRL_NNODES": "2"}, gpus=0)
