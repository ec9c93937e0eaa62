"""Tests of pcrl.distributed: launcher environments (torchrun, srun), and a real group."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from pcrl.distributed import (
    DistInfo,
    barrier,
    cleanup,
    first_host,
    init_distributed,
    is_main,
    launch_env,
)
from pcrl.errors import ConfigError

SRUN = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_PROCID": "3",
        "SLURM_STEP_NUM_TASKS": "4", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1",
        "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_JOB_NODELIST": "gpu[07-09]"}


def test_plain_process_is_single_and_creates_no_group() -> None:
    assert launch_env({}).launcher == "none"
    info = init_distributed("cpu", env={})
    assert info == DistInfo(0, 1, 0, torch.device("cpu"), "none")
    assert not info.is_distributed and info.is_main
    assert not tdist.is_initialized()
    assert is_main()
    barrier()   # no-ops without a group
    cleanup()


def test_torchrun_environment() -> None:
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "n1",
           "MASTER_PORT": "29500", **SRUN}  # torchrun inside srun: torchrun wins
    launched = launch_env(env)
    assert (launched.launcher, launched.rank, launched.world_size, launched.local_rank) == \
        ("torchrun", 5, 8, 1)
    assert launched.master_addr is None  # env:// is used, torchrun's own store


def test_srun_environment_without_torchrun() -> None:
    launched = launch_env(SRUN)
    assert (launched.launcher, launched.rank, launched.world_size, launched.local_rank) == \
        ("slurm", 3, 4, 1)
    assert launched.master_addr == "gpu07"  # first host of the step, not of the job
    assert 15000 <= launched.master_port < 55000
    assert launch_env(dict(SRUN)).master_port == launched.master_port  # same on all ranks
    other_step = launch_env({**SRUN, "SLURM_STEP_ID": "1"}).master_port
    assert other_step != launched.master_port
    override = launch_env({**SRUN, "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "1234"})
    assert (override.master_addr, override.master_port) == ("10.0.0.1", 1234)


def test_batch_script_without_srun_stays_single() -> None:
    env = {k: v for k, v in SRUN.items() if k != "SLURM_STEP_NUM_TASKS"}
    assert launch_env(env).launcher == "none"
    assert launch_env({**SRUN, "SLURM_STEP_NUM_TASKS": "1"}).launcher == "none"


@pytest.mark.parametrize(("env", "message"), [
    ({"WORLD_SIZE": "2", "RANK": "2"}, "rank 2 is outside a world of 2"),
    ({"WORLD_SIZE": "two", "RANK": "0"}, "WORLD_SIZE='two' is not an integer"),
    ({"WORLD_SIZE": "2"}, "RANK is required"),
    ({**SRUN, "SLURM_PROCID": "x"}, "SLURM_PROCID"),
])
def test_bad_environment_names_the_variable(env: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        launch_env(env)


@pytest.mark.parametrize(("nodelist", "host"), [
    ("node7", "node7"), ("gpu[01-04,07],cpu3", "gpu01"), ("a,b[1-2]", "a"),
    ("rack[1-2]-node[08-09]", "rack1-node08"), ("gpu[3,5]", "gpu3"),
])
def test_first_host_of_slurm_node_lists(nodelist: str, host: str) -> None:
    assert first_host(nodelist) == host


@pytest.mark.parametrize("nodelist", ["", "gpu[01-02", "gpu]1["])
def test_malformed_node_list_is_refused(nodelist: str) -> None:
    with pytest.raises(ConfigError, match="node list"):
        first_host(nodelist)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_requested_without_cuda() -> None:
    with pytest.raises(ConfigError, match="CUDA is not available"):
        init_distributed("cuda", env={})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _srun_worker(rank: int, port: int, out_dir: str) -> None:
    """A task as srun starts it: SLURM variables only, no torchrun."""
    env = {"SLURM_JOB_ID": "1", "SLURM_STEP_ID": "0", "SLURM_PROCID": str(rank),
           "SLURM_STEP_NUM_TASKS": "2", "SLURM_LOCALID": str(rank),
           "SLURM_STEP_NODELIST": "localhost", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port)}
    info = init_distributed("cpu", env=env)
    total = torch.tensor([float(info.rank + 1)])
    tdist.all_reduce(total)
    barrier()
    record = {"rank": info.rank, "world": info.world_size, "launcher": info.launcher,
              "total": total.item(), "main": is_main(), "backend": tdist.get_backend()}
    cleanup()
    record["after_cleanup"] = tdist.is_initialized()
    torch.save(record, os.path.join(out_dir, f"rank{rank}.pt"))


def test_two_srun_tasks_form_a_gloo_group(tmp_path: Path) -> None:
    mp.spawn(_srun_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    records = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for rank, record in enumerate(records):
        assert record == {"rank": rank, "world": 2, "launcher": "slurm", "total": 3.0,
                          "main": rank == 0, "backend": "gloo", "after_cleanup": False}
