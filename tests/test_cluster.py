"""Cluster execution and DVC bookkeeping, on a real SLURM (started by .ci/slurm-localhost.sh).

- a Snakemake run is recorded in dvc.lock (the Snakefile's onsuccess runs `dvc commit`),
  so `dvc status` is clean and `dvc metrics diff` compares a params change with the
  previous commit; `dvc push` then `dvc pull` in a fresh clone restores checkpoints and
  metrics (a small slice of the DAG, run locally);
- `snakemake --profile slurm` runs every stage of the (narrowed) demo DAG as sbatch jobs
  with the shipped demo resources, survives a preemption signal sent to the pretraining
  job (checkpoint, retry, resume), and gives the numbers of a local `dvc repro`;
- the preflight refuses the paper's resources on this 2-CPU node before queueing a job;
- a two-node launch (two srun tasks, each a torchrun agent, one c10d rendezvous) inside
  one allocation trains exactly as two processes on one node.

Without a SLURM the SLURM tests are skipped, unless PCRL_REQUIRE_SLURM=1 (as in CI).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import fresh_copy, git, narrowed, run, without_2d
from pcrl.runners.dag import load_stages

pytestmark = [pytest.mark.pipeline, pytest.mark.cluster]

TARGET = "data/pretrain/pcrl"
SMALL_RESOURCES = {"default": {"threads": 1, "mem_mb": 1500, "runtime": 30, "gpus": 0}}


def _slurm_up() -> bool:
    if not shutil.which("sinfo") or not shutil.which("sbatch"):
        return False
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return proc.returncode == 0 and any(s in proc.stdout for s in ("idle", "mix", "alloc"))


def _small_copy(repo: Path, dest: Path) -> Path:
    """A fresh copy whose params train 1 epoch of PCRL only, with resources a 2-CPU node has."""
    work = fresh_copy(repo, dest)
    params = without_2d(yaml.safe_load((work / "params.yaml").read_text()))
    params["pretrain"].update(epochs=1, methods=["pcrl"])
    params["finetune"]["inits"] = ["scratch", "pcrl"]
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (work / "workflow" / "resources.yaml").write_text(yaml.safe_dump(SMALL_RESOURCES))
    git(work, "commit", "-qam", "small demo slice")
    return work


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def local_run(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = _small_copy(repo_root, tmp_path_factory.mktemp("local"))
    run(["snakemake", "--cores", "2", TARGET], work)
    return work


@pytest.fixture(scope="module")
def local_result(local_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the first local run's pretraining output (later tests change params)."""
    snapshot = tmp_path_factory.mktemp("local_result") / "pcrl"
    shutil.copytree(local_run / TARGET, snapshot)
    return snapshot


def _stdout(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_snakemake_run_is_recorded_in_dvc_lock(local_run: Path) -> None:
    lock = yaml.safe_load((local_run / "dvc.lock").read_text())
    assert {"download@luna16-0", "download@luna16-1", "resample@luna16-1", "cubes@pretrain",
            "pretrain@pcrl"} <= set(lock["stages"])
    out = run(["dvc", "status", "pretrain@pcrl", "cubes@pretrain"], local_run)
    assert "up to date" in out


def test_metrics_diff_after_a_params_change(local_run: Path, local_result: Path, tmp_path: Path) -> None:
    git(local_run, "add", "-A")
    git(local_run, "commit", "-qm", "first run")
    before = json.loads((local_run / TARGET / "live" / "metrics.json").read_text())["train"]["loss"]
    params = yaml.safe_load((local_run / "params.yaml").read_text())
    params["pretrain"]["lr"] = params["pretrain"]["lr"] * 3
    (local_run / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["snakemake", "--cores", "2", TARGET], local_run)
    after = json.loads((local_run / TARGET / "live" / "metrics.json").read_text())["train"]["loss"]
    assert after != before
    # the pretraining's numbers are not a declared metric (the report's headline is): name the file
    diff = json.loads(_stdout(["dvc", "metrics", "diff", "--json", "--targets", f"{TARGET}/live/metrics.json"],
                              local_run))
    entry = diff[f"{TARGET}/live/metrics.json"]["train.loss"]
    assert entry["old"] == pytest.approx(before) and entry["new"] == pytest.approx(after)

    # push to a DVC remote; a fresh clone pulls back the very same files
    remote = tmp_path / "remote"
    run(["dvc", "remote", "modify", "--local", "storage", "url", str(remote)], local_run)
    git(local_run, "add", "-A")
    git(local_run, "commit", "-qm", "second run")
    run(["dvc", "push"], local_run)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(local_run), str(clone)], check=True)
    run(["dvc", "remote", "modify", "--local", "storage", "url", str(remote)], clone)
    run(["dvc", "pull", "--with-deps", "pretrain@pcrl"], clone)
    for rel in ("weights.pt", "checkpoint.pt", "live/metrics.json"):
        assert _digest(clone / TARGET / rel) == _digest(local_run / TARGET / rel), rel
    assert "up to date" in run(["dvc", "status", "pretrain@pcrl"], clone)


@pytest.fixture(scope="module")
def slurm() -> None:
    if not _slurm_up():
        if os.environ.get("PCRL_REQUIRE_SLURM") == "1":
            pytest.fail("PCRL_REQUIRE_SLURM=1 but no SLURM answers (start it with .ci/slurm-localhost.sh start)")
        pytest.skip("no SLURM on this machine (.ci/slurm-localhost.sh start)")


STATE_LOSS = Path("data/state/pretrain/pcrl/live/plots/metrics/train/loss.tsv")


def _rows(tsv: Path) -> list[list[str]]:
    """The data rows of a dvclive plot file (none while it does not exist)."""
    try:
        return [line.split("\t") for line in tsv.read_text().splitlines()[1:] if line.strip()]
    except OSError:
        return []


def _job_ids(work: Path, rule: str) -> list[str]:
    folder = work / ".snakemake" / "slurm_logs" / f"rule_{rule}"
    return sorted((p.stem for p in folder.glob("*.log")), key=int) if folder.is_dir() else []


@pytest.fixture(scope="module")
def slurm_run(slurm: None, repo_root: Path, tmp_path_factory: pytest.TempPathFactory,
              request: pytest.FixtureRequest) -> tuple[Path, str]:
    """`snakemake --profile slurm` over the whole narrowed demo DAG with the shipped (demo)
    resources; once pretraining has logged its first epoch, its job gets SIGUSR1, as
    `--signal` sends it before a time limit. Returns the copy and that job's id.

    The local `dvc repro` these results must equal (``dvc_run``) is built while the jobs
    run: the SLURM executor waits 1 s, then 10 s longer each round, between status checks,
    so the 2 CPUs are idle for much of this run (the results are the same under load:
    stages are deterministic for a given thread count)."""
    work = narrowed(fresh_copy(repo_root, tmp_path_factory.mktemp("slurm")))
    log = (work / "snakemake.log").open("w")
    # first status check 1 s after a submission (the profile waits 5 s)
    proc = subprocess.Popen(["snakemake", "--profile", "slurm", "--slurm-init-seconds-before-status-checks", "1"],
                            cwd=work, stdout=log, stderr=subprocess.STDOUT)
    signalled: dict[str, int] = {}  # job id -> scancel's exit status

    def preempt_after_the_first_epoch() -> None:
        deadline = time.monotonic() + 1800
        while proc.poll() is None and time.monotonic() < deadline:
            if not signalled and _rows(work / STATE_LOSS) and _job_ids(work, "pretrain_pcrl"):
                job = _job_ids(work, "pretrain_pcrl")[0]
                signalled[job] = subprocess.run(["scancel", "--signal=USR1", job]).returncode
            time.sleep(0.2)

    watcher = threading.Thread(target=preempt_after_the_first_epoch, daemon=True)
    watcher.start()
    try:
        request.getfixturevalue("dvc_run")
        watcher.join()
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    tail = (work / "snakemake.log").read_text()[-5000:]
    assert proc.returncode == 0, tail
    assert signalled, f"pretraining never logged an epoch:\n{tail}"
    (job, status), = signalled.items()
    assert status == 0, f"scancel --signal=USR1 {job} failed"
    return work, job


def test_slurm_runs_every_stage_as_a_job_with_the_demo_resources(slurm_run: tuple[Path, str]) -> None:
    work, _ = slurm_run
    lock = yaml.safe_load((work / "dvc.lock").read_text())["stages"]
    dvc_stages = {s.rule_name for s in load_stages(work)}
    ran = {p.name.removeprefix("rule_") for p in (work / ".snakemake" / "slurm_logs").iterdir()}
    assert ran == dvc_stages  # every stage of the DAG was an sbatch job
    for rule in ("download_luna16_1", "resample_msd_brain_0", "pretrain_pcrl", "report"):
        logged = re.findall(r"SLURM job (\d+)", (work / "logs" / f"{rule}.log").read_text())
        assert logged and logged[-1] in _job_ids(work, rule), rule
    assert "report" in lock and "up to date" in run(["dvc", "status"], work)
    text = (work / "snakemake.log").read_text()
    assert "No SLURM account given" not in text and "Unable to guess SLURM account" not in text


def test_a_preempted_pretraining_resumes_and_equals_the_local_run(
        slurm_run: tuple[Path, str], dvc_run: Path) -> None:
    """SIGUSR1 after epoch 1: the job checkpoints and stops, Snakemake submits it again, the
    new job resumes where the first stopped; no finished epoch is trained twice, and the
    weights equal those of the uninterrupted local `dvc repro`."""
    import torch

    work, signalled = slurm_run
    jobs = _job_ids(work, "pretrain_pcrl")
    assert len(jobs) == 2 and jobs[0] == signalled, jobs
    # the retry's log (the shell rewrites logs/<rule>.log for each attempt)
    assert re.search(r"resuming from \S+last.pt: epoch 1 done, \d+ steps into the next",
                     (work / "logs" / "pretrain_pcrl.log").read_text())
    out = work / "data" / "pretrain" / "pcrl"
    summary = json.loads((out / "summary.json").read_text())
    assert 1 not in summary["epochs_run_by_this_job"]  # epoch 1 was not trained again
    steps = [row[0] for row in _rows(out / "live" / "plots" / "metrics" / "train" / "loss.tsv")]
    assert len(steps) == 2 and len(set(steps)) == 2, steps
    mine = torch.load(out / "weights.pt", weights_only=True)["state_dict"]
    ref = torch.load(dvc_run / "data" / "pretrain" / "pcrl" / "weights.pt", weights_only=True)["state_dict"]
    for key in ref:
        torch.testing.assert_close(mine[key], ref[key], rtol=1e-5, atol=1e-6, msg=key)


def test_slurm_numbers_equal_a_local_dvc_repro(slurm_run: tuple[Path, str], dvc_run: Path) -> None:
    work, _ = slurm_run
    paths = sorted((dvc_run / "data" / "evaluate").rglob("metrics.json"))
    assert len(paths) == 6
    for path in paths:
        rel = path.relative_to(dvc_run)
        assert json.loads((work / rel).read_text()) == pytest.approx(json.loads(path.read_text()), rel=1e-5), rel


def test_preflight_refuses_the_paper_resources_before_queueing(
        slurm: None, repo_root: Path, tmp_path: Path) -> None:
    work = fresh_copy(repo_root, tmp_path / "paper")
    proc = subprocess.run(["snakemake", "--profile", "slurm"], cwd=work, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PCRL_RESOURCES": "paper"})
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "stage resample asks for threads (CPUs) 8" in text and "set paper" in text
    assert "gpus 1 (the most on one node: 0)" in text
    assert not (work / ".snakemake" / "slurm_logs").exists()  # nothing was submitted


def test_two_node_launch_in_one_allocation_equals_two_processes_on_one_node(
        slurm: None, dvc_run: Path, tmp_path: Path) -> None:
    """PCRL_NNODES=2 inside `sbatch --ntasks=2`: the launcher runs two srun tasks, each a
    torchrun agent of one c10d rendezvous (two simulated nodes on this machine). The result
    equals two processes on one node (the same ranks, data shards and random streams);
    a single process with the same global batch differs by per-rank batch norm, within the
    tolerance of tests/test_pretrain_stage.py."""
    import torch

    params = yaml.safe_load((dvc_run / "params.yaml").read_text())
    params["pretrain"]["epochs"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    def command(name: str) -> list[str]:
        return [sys.executable, "-m", "pcrl.cli", "--params", str(tmp_path / "params.yaml"), "pretrain",
                "--method", "pcrl", "--pairs", str(dvc_run / "data" / "processed" / "pretrain"),
                "--out", str(tmp_path / name), "--state", str(tmp_path / f"{name}_state"),
                "--device", "cpu", "--workers", "0", "--no-progress"]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PCRL_NPROC_PER_NODE", None)
    log = tmp_path / "two_nodes.log"
    wrapped = " ".join(["PCRL_NNODES=2", *command("two_nodes")])
    subprocess.run(["sbatch", "--wait", "--ntasks=2", "--cpus-per-task=1", "--mem=4000", "--time=20",
                    f"--output={log}", f"--chdir={tmp_path}", f"--wrap={wrapped}"],
                   env=env, check=True, timeout=1200, capture_output=True)
    text = log.read_text()
    assert "--nnodes=2" in text and "--rdzv-backend=c10d" in text and "--ntasks=2" in text, text[-3000:]
    subprocess.run(command("one_node"), env={**env, "PCRL_NPROC_PER_NODE": "2"}, check=True, timeout=1200,
                   capture_output=True)
    for name in ("two_nodes", "one_node"):
        assert json.loads((tmp_path / name / "summary.json").read_text())["world_size"] == 2, name
    two = torch.load(tmp_path / "two_nodes" / "weights.pt", weights_only=True)["state_dict"]
    one = torch.load(tmp_path / "one_node" / "weights.pt", weights_only=True)["state_dict"]
    assert two.keys() == one.keys()
    for key in one:
        assert torch.equal(two[key], one[key]), key
