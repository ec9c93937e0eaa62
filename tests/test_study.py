"""pcrl.study: the known-answer study's workspace and settings (the study itself takes ~an hour)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from pcrl.config import load_params
from pcrl.errors import ConfigError
from pcrl.study import TARGETS, prepare_workspace, run_study


def test_the_study_config_asks_the_question_it_claims(repo_root: Path) -> None:
    """Scarce labels, plentiful unlabelled scans, >= 5 seeds, every pretrained init vs scratch."""
    study = load_params(repo_root / "configs" / "study.yaml")
    ft = study["finetune"]
    assert len(ft["seeds"]) >= 5 and min(ft["fractions"]) <= 0.1 and max(ft["fractions"]) == 1.0
    assert set(ft["inits"]) == {"scratch", "pcrl", "genesis", "moco"}
    luna = study["data"]["phantom"]["luna16"]
    train_groups = study["cubes"]["ncc"]["groups"]["train"]
    scans_per_subset = luna["scans"] / luna["subsets"]
    labelled_at_low = min(ft["fractions"]) * len(train_groups) * scans_per_subset
    pretraining_scans = len(study["cubes"]["pretrain"]["groups"]["train"]) * scans_per_subset
    assert labelled_at_low <= 3 and pretraining_scans >= 5 * labelled_at_low
    assert set(ft["fractions"]) <= set(study["cubes"]["ncc"]["fractions"])


def test_workspace_is_a_git_copy_with_the_study_params_and_keeps_its_data(tmp_path: Path, repo_root: Path) -> None:
    work = tmp_path / "work"
    prepare_workspace(repo_root / "configs" / "study.yaml", work)
    assert yaml.safe_load((work / "params.yaml").read_text()) == yaml.safe_load(
        (repo_root / "configs" / "study.yaml").read_text())
    assert (work / "dvc.yaml").read_text() == (repo_root / "dvc.yaml").read_text()
    assert (work / "pcrl" / "study.py").is_file() and (work / ".dvc" / "config").is_file()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=work, capture_output=True, text=True, check=True)
    assert status.stdout.strip() == ""  # committed: DVC sees a clean tree
    (work / "data").mkdir()
    (work / "data" / "kept.txt").write_text("from an earlier run")
    prepare_workspace(repo_root / "configs" / "study.yaml", work)  # a rerun resumes
    assert (work / "data" / "kept.txt").read_text() == "from an earlier run"
    stages = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]
    assert all(target in stages for target in TARGETS)


def test_a_bad_study_config_is_refused_before_anything_runs(tmp_path: Path, repo_root: Path) -> None:
    params = yaml.safe_load((repo_root / "configs" / "study.yaml").read_text())
    params["finetune"]["seedz"] = [0]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="seedz"):
        run_study(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
