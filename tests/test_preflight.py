"""The SLURM preflight: a request no node can give is refused before anything is queued."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pcrl.resources import StageResources, load_resources
from pcrl.errors import ConfigError
from pcrl.runners.preflight import ACCOUNT_MESSAGES, _AccountNoise, check_cluster, minutes, parse_sinfo, problems

# what `sinfo -h -N -o "%P|%N|%c|%m|%G|%l"` prints on a small cluster (hand-written)
SINFO = """\
cpu*|c01|32|192000|(null)|2-00:00:00
cpu*|c02|32|192000|(null)|2-00:00:00
gpu|g01|64|512000|gpu:a100:4(S:0-1)|1-00:00:00
gpu|g02|96|128000|gpu:2,shard:8|1-00:00:00
debug|c01|32|192000|(null)|30:00
"""


def test_time_limits_in_minutes() -> None:
    assert minutes("30:00") == 30
    assert minutes("2:00:00") == 120
    assert minutes("1-12:00:00") == 36 * 60
    assert minutes("0:30:01") == 31  # a started minute counts
    assert minutes("infinite") is None


def test_sinfo_lines_become_partitions() -> None:
    parts = parse_sinfo(SINFO)
    assert sorted(parts) == ["cpu", "debug", "gpu"]
    assert parts["cpu"].default and not parts["gpu"].default
    assert [(n.name, n.cpus, n.mem_mb, n.gpus) for n in parts["gpu"].nodes] == [
        ("g01", 64, 512000, 4), ("g02", 96, 128000, 2)]
    assert parts["cpu"].max_minutes == 2880 and parts["debug"].max_minutes == 30
    with pytest.raises(ConfigError, match="unexpected sinfo line"):
        parse_sinfo("cpu|c01|32\n")


def test_each_impossible_resource_is_named() -> None:
    parts = parse_sinfo(SINFO)
    requests = {
        "fits": (StageResources(threads=8, mem_mb=64000, runtime=600, gpus=1), "gpu"),
        "too_many_cpus": (StageResources(threads=40, mem_mb=1000), None),
        "no_gpu_there": (StageResources(gpus=1), None),
        "too_long": (StageResources(runtime=60), "debug"),
        "not_together": (StageResources(threads=80, gpus=4, mem_mb=1000), "gpu"),
        "no_partition": (StageResources(), "a100"),
        "three_nodes": (StageResources(nodes=3, gpus=1), "gpu"),
    }
    found = {line.split(" ")[1].rstrip(":"): line for line in problems(requests, parts)}
    assert sorted(found) == ["no_gpu_there", "no_partition", "not_together", "three_nodes",
                             "too_long", "too_many_cpus"]
    assert "threads (CPUs) 40 (the most on one node: 32)" in found["too_many_cpus"]
    assert "partition cpu has 2 node(s), at most 32 CPUs, 192000 MB and 0 GPUs" in found["too_many_cpus"]
    assert "gpus 1 (the most on one node: 0)" in found["no_gpu_there"]
    assert "runtime 60 min (the partition's limit: 30 min)" in found["too_long"]
    assert "together (no single node has all three)" in found["not_together"]
    assert "partition a100 does not exist; sinfo lists cpu, debug, gpu" in found["no_partition"]
    assert "nodes 3 (only 2 node(s) can hold one task)" in found["three_nodes"]


def test_shipped_sets_against_a_two_cpu_node_without_gpu(repo_root: Path) -> None:
    """CI's SLURM: the demo set fits; the paper set is refused, naming stage and resource."""
    node = parse_sinfo("debug*|vm|2|22000|(null)|infinite\n")
    path = repo_root / "workflow" / "resources.yaml"
    groups = ["download", "resample", "cubes", "pretrain", "init_scratch", "finetune_ncc",
              "finetune_lcs", "evaluate_bms", "report"]
    demo = load_resources(path, "demo")
    check_cluster({g: (demo.for_stage(g), "debug") for g in groups}, "demo", node)
    paper = load_resources(path, "paper")
    with pytest.raises(ConfigError) as err:
        check_cluster({g: (paper.for_stage(g), "debug") for g in groups}, "workflow/resources.yaml", node)
    text = str(err.value)
    assert "stage resample asks for threads (CPUs) 8 (the most on one node: 2)" in text
    assert "stage pretrain asks for threads (CPUs) 8" in text and "gpus 1 (the most on one node: 0)" in text
    assert "stage report" not in text and "use: demo | paper" in text


def test_resource_set_is_chosen_in_one_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "res.yaml"
    path.write_text("use: small\nsets:\n  small: {default: {threads: 1}}\n  big: {default: {threads: 9}}\n")
    monkeypatch.delenv("PCRL_RESOURCES", raising=False)
    assert load_resources(path).for_stage("x").threads == 1
    monkeypatch.setenv("PCRL_RESOURCES", "big")
    assert load_resources(path).for_stage("x").threads == 9
    monkeypatch.setenv("PCRL_RESOURCES", "huge")
    with pytest.raises(ConfigError, match="PCRL_RESOURCES=huge names no resource set; known: big, small"):
        load_resources(path)
    monkeypatch.delenv("PCRL_RESOURCES")
    path.write_text("use: small\nsets:\n  small: {default: {threads: -1}}\n")
    with pytest.raises(ConfigError, match="set 'small', stage x: threads must be a non-negative integer"):
        load_resources(path).for_stage("x")


def test_account_guessing_noise_is_filtered_only() -> None:
    noise = _AccountNoise()

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("snakemake", logging.WARNING, __file__, 1, message, None, None)

    assert not any(noise.filter(record(m + " ...")) for m in ACCOUNT_MESSAGES)
    assert noise.filter(record("Job 3 has been submitted with SLURM jobid 41"))


SLURM_COMMANDS = ("sinfo", "sbatch", "squeue", "scontrol", "sacct", "srun", "scancel")


def _path_without_slurm(tmp_path: Path) -> str:
    """A PATH with this venv and every command of the machine's PATH but SLURM's."""
    import os
    import shutil
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        if not Path(folder).is_dir():
            continue
        for entry in Path(folder).iterdir():
            target = bin_dir / entry.name
            if entry.name not in SLURM_COMMANDS and not target.exists() and os.access(entry, os.X_OK):
                target.symlink_to(entry)
    assert shutil.which("sinfo", path=str(bin_dir)) is None
    return os.pathsep.join([str(Path(sys.executable).parent), str(bin_dir)])


@pytest.mark.pipeline
def test_a_slurm_run_without_slurm_says_so_in_one_line(repo_root: Path, tmp_path: Path) -> None:
    """`snakemake --profile slurm -n` warns that SLURM is unreachable instead of planning
    silently; a real run stops before submitting anything, naming the missing command,
    without a traceback."""
    import subprocess

    from conftest import fresh_copy

    work = fresh_copy(repo_root, tmp_path / "clone")
    env = {"PATH": _path_without_slurm(tmp_path), "HOME": str(tmp_path), "PCRL_NO_DVC_COMMIT": "1"}
    dry = subprocess.run(["snakemake", "--profile", "slurm", "-n"], cwd=work, env=env, capture_output=True,
                         text=True, timeout=600)
    out = dry.stdout + dry.stderr
    assert dry.returncode == 0, out[-3000:]
    assert "SLURM is not reachable from here" in out and "'sinfo' is not on PATH" in out, out[-3000:]
    real = subprocess.run(["snakemake", "--profile", "slurm"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=600)
    out = real.stdout + real.stderr
    assert real.returncode != 0 and "'sinfo' is not on PATH" in out, out[-3000:]
    assert "Traceback" not in out and not (work / "data" / "params").exists(), out[-3000:]
