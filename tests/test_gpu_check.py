"""benchmarks/gpu_check.py in its CPU form (--tiny), as CI runs it so it never rots.

The figures themselves are machine-dependent; what is asserted is what must hold anywhere:
every section measured, the AMP modes compared, the loader and DDP sections fed, and a run
resumed from its epoch-1 checkpoint ending with the very weights of an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.pipeline


def test_tiny_gpu_check_measures_every_section(repo_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": str(repo_root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(repo_root / "benchmarks" / "gpu_check.py"), "--tiny",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["tiny"]
    assert set(report["amp"]["samples_per_s"]) == {"off", "bf16"}
    assert all(rate > 0 for rate in report["amp"]["samples_per_s"].values())
    assert report["amp"]["fastest"] in report["amp"]["variants"]
    assert 0 < report["feeding"]["busy_fraction"] <= 1 and report["feeding"]["steps"] == 1
    assert report["memory"]["largest_batch_that_fits"] >= report["memory"]["batch"]
    assert report["ddp"]["backend"] == "gloo" and report["ddp"]["samples_per_s"] > 0
    assert report["resume"] == {"resumed_epochs": [2], "identical": True, "differing_tensors": []}
    assert re.search(r"^resume == uninterrupted \(deterministic\) +True", proc.stdout, re.M)  # the table's row
    assert report["amp_2d"]["size"] == [32, 32] and report["amp_2d"]["batch"] == 2  # params.yaml's 2D cubes
    assert set(report["amp_2d"]["samples_per_s"]) == {"off", "bf16"}
    assert all(rate > 0 for rate in report["amp_2d"]["samples_per_s"].values())
    corruptions = report["corruptions"]
    assert corruptions["size"] == [24, 24, 16] and corruptions["batch"] == 4
    assert corruptions["samples_per_s"] > 0 and corruptions["reference_samples_per_s"] > 0
    assert corruptions["speedup"] == pytest.approx(
        corruptions["samples_per_s"] / corruptions["reference_samples_per_s"])
    assert re.search(r"^corruption \+ target, batch 4 of \[24, 24, 16\] +[0-9.]+ samples/s", proc.stdout, re.M)
