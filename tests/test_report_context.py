"""Tests of pcrl.report.context: the report's provenance header."""

from __future__ import annotations

import datetime
import hashlib
import subprocess
from pathlib import Path

import yaml

from pcrl.report.context import data_source, header_lines, input_stages, inputs_digest, report_context

LOCK = {"schema": "2.0", "stages": {
    "download@luna16-0": {"cmd": "x", "outs": [{"path": "data/raw/luna16/0", "hash": "md5", "md5": "aa.dir"}]},
    "download@luna16-1": {"cmd": "x", "outs": [{"path": "data/raw/luna16/1", "hash": "md5", "md5": "bb.dir"}]},
    "download@luna16": {"cmd": "old", "outs": [{"path": "data/raw/luna16", "md5": "zz.dir"}]},  # no longer a stage
    "resample@luna16-0": {"cmd": "x", "outs": [{"path": "data/interim/luna16/0", "md5": "cc.dir"}]},
}}
DATA = {"source": "phantom", "datasets": ["luna16"], "shards": [0, 1], "sources": {}}


def test_inputs_digest_covers_the_configured_downloads_only(tmp_path: Path) -> None:
    lock = tmp_path / "dvc.lock"
    lock.write_text(yaml.safe_dump(LOCK))
    expected = hashlib.sha256(b"data/raw/luna16/0 aa.dir\ndata/raw/luna16/1 bb.dir").hexdigest()
    assert input_stages(DATA) == ["download@luna16-0", "download@luna16-1"]
    assert inputs_digest(lock, input_stages(DATA)) == (expected, 2)
    # a shard dvc.lock does not record yet, or no dvc.lock: said, not guessed
    assert inputs_digest(lock, ["download@luna16-0", "download@luna16-2"]) == ("not recorded", 0)
    assert inputs_digest(tmp_path / "missing.lock", input_stages(DATA)) == ("not recorded", 0)


def test_data_source_names_each_source_and_its_datasets() -> None:
    data = {"source": "download", "datasets": ["luna16", "msd_liver", "chestxray14"],
            "sources": {"chestxray14": "local"}}
    assert data_source(data) == "downloaded: luna16, msd_liver; a local copy: chestxray14"


def test_header_states_commit_digests_and_date(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    params = tmp_path / "params.yaml"
    params.write_text("data: {}\n")
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(LOCK))
    context = report_context(DATA, params_file=params, lock_file=tmp_path / "dvc.lock", repo=tmp_path,
                             today=datetime.date(2026, 12, 6))
    assert context["params_sha256"] == hashlib.sha256(b"data: {}\n").hexdigest()
    assert context["commit"] == "unknown" and context["date"] == "2026-12-06" and context["phantom"]
    text = "\n".join(header_lines(context))
    assert f"sha256 {context['params_sha256'][:16]}" in text and "over the 2 download outputs" in text
    assert "| written | 2026-12-06 (UTC) |" in text
    assert "synthetic phantom data" in text
