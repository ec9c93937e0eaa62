"""Provenance: the commit, whether the tree was dirty, and the thread count of a result."""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

from conftest import git
from pcrl.provenance import UNKNOWN, git_commit, git_dirty, params_digest, provenance


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "params.yaml").write_text("a: 1\n")
    git(repo, "add", "params.yaml")
    git(repo, "commit", "-qm", "first")
    return repo


def test_dirty_flag_follows_tracked_changes_only(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    assert git_dirty(repo) is False
    (repo / "untracked.txt").write_text("not part of the code")
    assert git_dirty(repo) is False
    for name in ("dvc.lock", "data/raw/.gitignore"):  # DVC rewrites these as the pipeline runs
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("old\n")
        git(repo, "add", name)
    git(repo, "commit", "-qm", "dvc files")
    (repo / "dvc.lock").write_text("new\n")
    (repo / "data" / "raw" / ".gitignore").write_text("/0\n")
    assert git_dirty(repo) is False
    (repo / "params.yaml").write_text("a: 2\n")
    assert git_dirty(repo) is True
    assert git_dirty(tmp_path / "nowhere") is None  # not a repository (or missing)


def test_record_names_commit_dirty_tree_and_threads(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    record = provenance({"finetune": {"lr": 0.1}}, device="cpu", repo=repo)
    assert record["git_commit"] == head == git_commit(repo)
    assert record["git_dirty"] is False
    assert record["threads"] == torch.get_num_threads()
    assert record["params_sha256"] == params_digest({"finetune": {"lr": 0.1}})
    assert record["params_sha256"] != params_digest({"finetune": {"lr": 0.2}})
    assert git_commit(tmp_path / "nowhere") == UNKNOWN
