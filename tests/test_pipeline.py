"""The whole DAG on the phantom, from a fresh copy of the repository, with both runners.

`dvc repro` runs every stage (download -> report) and a second `dvc repro` finds everything
up to date; `snakemake --cores 2` writes the same data stages byte for byte. To keep the
suite short the fan-out is narrowed (one pretraining method, scratch vs PCRL, one label
fraction, one epoch each); the full demo is `make demo`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from conftest import fresh_copy, git, run

pytestmark = pytest.mark.pipeline


def _digest_tree(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (by relative path)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in {".gitignore", ".snakemake_timestamp"}
    }


def narrowed(work: Path) -> Path:
    """Narrow the demo's fan-out in a fresh copy (same stages, fewer runs)."""
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["pretrain"].update(methods=["pcrl"], epochs=1)
    params["finetune"].update(inits=["scratch", "pcrl"], fractions=[1.0], seeds=[0])
    for task in ("ncc", "lcs", "bms"):
        params["finetune"][task]["epochs"] = 1
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(work, "commit", "-qam", "narrow the demo fan-out")
    return work


@pytest.fixture(scope="module")
def dvc_run(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = narrowed(fresh_copy(repo_root, tmp_path_factory.mktemp("dvc_clone")))
    run(["dvc", "repro"], work)
    return work


DATA_TARGETS = ["data/processed/pretrain", "data/processed/ncc", "data/processed/lcs", "data/processed/bms"]


@pytest.fixture(scope="module")
def snakemake_run(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = narrowed(fresh_copy(repo_root, tmp_path_factory.mktemp("smk_clone")))
    run(["snakemake", "--cores", "2", *DATA_TARGETS], work)
    return work


def test_dvc_repro_builds_every_stage(dvc_run: Path) -> None:
    for ds in ("luna16", "msd_liver", "msd_brain"):
        assert (dvc_run / "data" / "raw" / ds / "manifest.json").is_file()
        cases = json.loads((dvc_run / "data" / "interim" / ds / "cases.json").read_text())
        assert all((dvc_run / "data" / "interim" / ds / c["image"]).is_file() for c in cases)
    split = json.loads((dvc_run / "data/processed/pretrain/split.json").read_text())
    assert set(split) == {"train", "val"} and split["train"] and split["val"]
    pairs = json.loads((dvc_run / "data/processed/pretrain/pairs.json").read_text())
    assert {p["id"] for p in pairs} == set(split["train"]) | set(split["val"])
    for task in ("ncc", "lcs", "bms"):
        fractions = json.loads((dvc_run / f"data/processed/{task}/fractions.json").read_text())
        sizes = [len(v) for v in fractions.values()]
        assert sizes == sorted(sizes) and sizes[-1] == len(
            json.loads((dvc_run / f"data/processed/{task}/split.json").read_text())["train"]
        )


def test_dvc_repro_reaches_the_report(dvc_run: Path) -> None:
    for task, metric in (("ncc", "auc"), ("lcs", "dice_liver"), ("bms", "dice_mean")):
        for init in ("scratch", "pcrl"):
            path = dvc_run / "data" / "evaluate" / task / init / "f1.0" / "s0" / "metrics.json"
            result = json.loads(path.read_text())
            assert (result["task"], result["init"], result["seed"]) == (task, init, 0)
            assert result["primary"] == metric
            assert 0.0 <= result["metrics"][result["primary"]] <= 1.0
            assert result["provenance"]["params_sha256"]
    report = (dvc_run / "results" / "report" / "report.md").read_text()
    for task in ("ncc", "lcs", "bms"):
        assert task in report
    assert "PCRL" in report and "scratch" in report
    assert (dvc_run / "results" / "report" / "plots" / "ncc.png").is_file()


def test_second_dvc_repro_is_a_no_op(dvc_run: Path) -> None:
    out = run(["dvc", "status"], dvc_run)
    assert "up to date" in out
    out = run(["dvc", "repro"], dvc_run)
    assert "Running stage" not in out


def test_snakemake_and_dvc_write_identical_outputs(dvc_run: Path, snakemake_run: Path) -> None:
    for folder in ("data/interim/luna16", "data/processed/pretrain", "data/processed/ncc", "data/processed/lcs"):
        a, b = _digest_tree(dvc_run / folder), _digest_tree(snakemake_run / folder)
        assert a and a == b, folder
    logs = sorted(p.name for p in (snakemake_run / "logs").glob("*.log"))
    assert "cubes_pretrain.log" in logs and "download_luna16.log" in logs


def test_dvc_repro_never_deletes_a_dataset_in_the_pipelines_folders(
        repo_root: Path, tmp_path: Path) -> None:
    """DVC deletes a stage's outputs before running it: a dataset that data.local_paths puts
    at data/raw/msd_liver would be gone before `pcrl download` could object. The
    check_params stage runs first and stops the DAG instead."""
    import subprocess

    from pcrl.data.phantom import generate_msd_liver

    work = fresh_copy(repo_root, tmp_path / "clone")
    dataset = work / "data" / "raw" / "msd_liver"
    generate_msd_liver(dataset, cases=2, test_cases=0, seed=0, shape=(48, 48, 20))
    before = _digest_tree(dataset)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["data"].update(source="local", datasets=["msd_liver"],
                          local_paths={"msd_liver": "data/raw/msd_liver"})
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run(["dvc", "repro", "download@msd_liver"], cwd=work, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode != 0
    assert "data.local_paths.msd_liver: data/raw/msd_liver lies inside the pipeline's own data/" \
        in proc.stdout + proc.stderr
    assert _digest_tree(dataset) == before
