"""Shared fixtures: repository paths, the demo params, one torch thread."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

if TYPE_CHECKING:
    import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture()
def demo_params() -> dict:
    """A fresh copy of the repository's params.yaml (the demo configuration)."""
    return copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text()))


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a whole test module (``pytestmark =
    pytest.mark.usefixtures("one_thread")``): tiny convolutions run several times faster on
    shared cores, and results compared bit for bit must use the same thread count. The
    previous count is restored after the module."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


GIT_ENV = {
    "GIT_AUTHOR_NAME": "pcrl tests", "GIT_AUTHOR_EMAIL": "tests@example.invalid",
    "GIT_COMMITTER_NAME": "pcrl tests", "GIT_COMMITTER_EMAIL": "tests@example.invalid",
}


def fresh_copy(repo: Path, dest: Path) -> Path:
    """Copy what git would clone (tracked + untracked, not ignored, no data) into a new git repo."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=repo, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = repo / rel
        if not src.is_file() or rel.startswith("data/") or rel == "dvc.lock":
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "fresh copy")
    return dest


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", *args], cwd=cwd, check=True, env=env, capture_output=True, text=True).stdout


def run(cmd: list[str], cwd: Path, timeout: int = 1500, env: dict | None = None) -> str:
    """Run a command; fail with its output tail when it fails."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def without_2d(params: dict) -> dict:
    """The demo's params without the 2D setting: no ChestX-ray14 download, 2D tasks, 2D
    pretraining or Chest14 runs (tests/test_pipeline.py runs the 2D setting on its own)."""
    params["data"]["datasets"] = [d for d in params["data"]["datasets"] if d != "chestxray14"]
    params["cubes"]["tasks2d"] = {}
    params["pretrain2d"]["methods"] = []
    params["finetune"]["chest14"]["inits"] = []
    return params


def narrowed(work: Path) -> Path:
    """Narrow the demo's fan-out in a fresh copy (same stages, fewer runs): the 3D setting
    only (:func:`without_2d`), one pretraining method for 2 epochs (a preemption test stops
    it after the first) over half the demo's pairs (8 a scan: 7 steps an epoch), scratch vs
    PCRL, one label fraction, one fine-tuning epoch."""
    params = without_2d(yaml.safe_load((work / "params.yaml").read_text()))
    params["cubes"]["pretrain"]["pairs_per_case"] = 8
    params["pretrain"].update(methods=["pcrl"], epochs=2)
    params["finetune"].update(inits=["scratch", "pcrl"], fractions=[1.0], seeds=[0])
    for task in ("ncc", "lcs", "bms"):
        params["finetune"][task]["epochs"] = 1
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(work, "commit", "-qam", "narrow the demo fan-out")
    return work


@pytest.fixture(scope="session")
def dvc_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dvc repro` of the narrowed demo in a fresh copy: the local reference that the
    Snakemake and SLURM runs (tests/test_pipeline.py, tests/test_cluster.py) must equal."""
    work = narrowed(fresh_copy(REPO, tmp_path_factory.mktemp("dvc_clone")))
    run(["dvc", "repro"], work)
    return work


RESAMPLE_3D = {"spacing": [1.0, 1.0, 1.0], "normalization": {"kind": "window", "min": -1000, "max": 1000}}


def export_pretrained(tmp_path: Path, dims: int, *, parts: tuple[str, ...] = ("encoder", "decoder"),
                      summary: dict | None = None) -> tuple[Path, torch.nn.Module]:
    """A pretrain folder of a seeded network (2D: ResNet-18 U-Net width 8; 3D: U-Net base 4),
    exported by :func:`pcrl.stages.export.run_export`; returns the export and the network."""
    from pcrl.networks.resnet_unet2d import ResNetUNet2D
    from pcrl.networks.unet3d import UNet3D
    from pcrl.stages.export import run_export
    from pcrl.torchfile import save_checked

    import torch

    torch.manual_seed(dims)
    net: torch.nn.Module = ResNetUNet2D(width=8) if dims == 2 else UNet3D(base=4)
    from net_helpers import randomise_batch_norms

    randomise_batch_norms(net, dims)
    weights = tmp_path / f"pretrain{dims}"
    weights.mkdir()
    save_checked({"state_dict": net.state_dict(), "method": "genesis", "parts": list(parts),
                  "config": json.dumps({"base": 8 if dims == 2 else 4, "norm": "batch"})}, weights / "weights.pt")
    if summary is not None:
        (weights / "summary.json").write_text(json.dumps(summary))
    pairs = tmp_path / f"pairs{dims}"
    pairs.mkdir()
    (pairs / "split.json").write_text(json.dumps({"train": ["a", "b", "c"], "val": ["d"]}))
    from pcrl.records import write_contents

    write_contents(pairs, {"stage": "cubes", "task": "pretrain2d" if dims == 2 else "pretrain",
                           "dataset": "chestxray14" if dims == 2 else "luna16"})
    out = run_export("genesis", setting="2d" if dims == 2 else "3d", weights=weights,
                     out=tmp_path / f"export{dims}", resample={"size": [64, 64]} if dims == 2 else RESAMPLE_3D,
                     cube_size=[32, 32, 1] if dims == 2 else [32, 32, 16], source="phantom", pairs=pairs,
                     lock=tmp_path / "dvc.lock")
    return out, net


@pytest.fixture()
def export(tmp_path: Path) -> Callable[..., tuple[Path, torch.nn.Module]]:
    """``export(dims, parts=..., summary=...)``: :func:`export_pretrained` in ``tmp_path``."""
    return lambda dims, **kw: export_pretrained(tmp_path, dims, **kw)
