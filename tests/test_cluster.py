"""Cluster execution and DVC bookkeeping on a real SLURM (started by .ci/slurm-localhost.sh).

- `snakemake --profile slurm` submits every job through sbatch and gives the same results
  as a local run with the same seeds;
- a Snakemake run is recorded in dvc.lock (the Snakefile's onsuccess runs `dvc commit`),
  so `dvc status` is clean and `dvc metrics diff` compares a params change with the
  previous commit;
- `dvc push` then `dvc pull` in a fresh clone restores checkpoints and metrics.

Runs a small slice of the demo DAG (LUNA16 phantom -> pairs -> PCRL, 1 epoch). Without a
SLURM the SLURM test is skipped, unless PCRL_REQUIRE_SLURM=1 (as in CI).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import fresh_copy, git, run

pytestmark = pytest.mark.pipeline

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
    params = yaml.safe_load((work / "params.yaml").read_text())
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
    assert {"download@luna16", "resample@luna16", "cubes@pretrain", "pretrain@pcrl"} <= set(lock["stages"])
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
    diff = json.loads(_stdout(["dvc", "metrics", "diff", "--json"], local_run))
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


def test_slurm_profile_submits_jobs_and_matches_local_run(
    repo_root: Path, local_result: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if not _slurm_up():
        if os.environ.get("PCRL_REQUIRE_SLURM") == "1":
            pytest.fail("PCRL_REQUIRE_SLURM=1 but no SLURM answers (start it with .ci/slurm-localhost.sh start)")
        pytest.skip("no SLURM on this machine (.ci/slurm-localhost.sh start)")
    work = _small_copy(repo_root, tmp_path_factory.mktemp("slurm"))
    run(["snakemake", "--profile", "slurm", TARGET], work, timeout=1500)
    logs = sorted((work / ".snakemake" / "slurm_logs").rglob("*.log"))
    rules = {p.relative_to(work / ".snakemake" / "slurm_logs").parts[0] for p in logs}
    assert {"rule_download_luna16", "rule_resample_luna16", "rule_cubes_pretrain", "rule_pretrain_pcrl"} <= rules
    ids = {p.stem for p in logs}
    assert all(i.isdigit() for i in ids) and len(ids) >= 4, ids
    for rule in ("download_luna16", "resample_luna16", "cubes_pretrain", "pretrain_pcrl"):
        logged = re.findall(r"SLURM job (\d+)", (work / "logs" / f"{rule}.log").read_text())
        assert logged and logged[0] in ids, rule
    # same seeds, same results as the local run
    for rel in ("live/metrics.json", "weights.pt"):
        if rel.endswith(".json"):
            a = json.loads((work / TARGET / rel).read_text())["train"]
            b = json.loads((local_result / rel).read_text())["train"]
            assert a.keys() == b.keys()
            for key in a:
                if key != "samples_per_s":
                    assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key
        else:
            import torch

            sa = torch.load(work / TARGET / rel, weights_only=True)["state_dict"]
            sb = torch.load(local_result / rel, weights_only=True)["state_dict"]
            for key in sb:
                torch.testing.assert_close(sa[key], sb[key], rtol=1e-5, atol=1e-6, msg=key)
    assert "up to date" in run(["dvc", "status", "pretrain@pcrl"], work)
