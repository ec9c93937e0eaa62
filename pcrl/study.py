"""The known-answer study: does pretraining help where labels are scarce? (``make study``)

PCRL's claim (Zhou et al., ICCV 2021) is that pretrained initialisations transfer, most
visibly with few labels. The study asks it of this pipeline on a phantom where the answer
should be yes: many unlabelled scans for pretraining, few labelled ones for fine-tuning,
NCC candidates that are not trivially separable (solid nodules of 3-10 mm and +30..+100 HU
against vessel points and junctions), several fine-tuning seeds, and the frozen-encoder
probe. Its settings are a params file (``configs/study.yaml``, the schema of params.yaml).

The study runs the pipeline itself, not a copy of it: the repository's files are copied
into ``<out>/work`` (a git repository of its own, like a fresh clone), the study's params
become its params.yaml, and ``dvc repro`` builds the NCC evaluations and the probe of every
initialisation; ``pcrl report`` then writes the paired statistics. Outputs::

    <out>/report.md    the report (paired differences to scratch with 95 % intervals)
    <out>/probe.json   the probe's test AUC per initialisation and fraction
    <out>/study.json   the settings' digest, the elapsed time, the commands

Usage: ``python -m pcrl.study [--config configs/study.yaml] [--out results/study]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pcrl.atomic import write_text
from pcrl.config import load_params

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
#: What the study's workspace needs of the repository (copied, not linked: DVC hashes them).
WORKSPACE_FILES = ("dvc.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore", ".gitignore", "pyproject.toml")
WORKSPACE_DIRS = ("pcrl", "workflow")
#: The DVC targets: every NCC evaluation and the probe (with everything they depend on).
TARGETS = ("evaluate_ncc", "probe")
#: The study's results in ``out``, written when every stage has run (study.json last).
RESULTS = ("report.md", "probe.json", "study.json")
GIT_ENV = {"GIT_AUTHOR_NAME": "pcrl study", "GIT_AUTHOR_EMAIL": "study@example.invalid",
           "GIT_COMMITTER_NAME": "pcrl study", "GIT_COMMITTER_EMAIL": "study@example.invalid"}


def prepare_workspace(config: Path, work: Path) -> None:
    """Copy the pipeline into ``work`` with ``config`` as its params.yaml; a git repository.

    An existing workspace is updated in place (its ``data/`` and DVC cache are kept, so a
    rerun resumes: DVC skips what is up to date).
    """
    work.mkdir(parents=True, exist_ok=True)
    for name in WORKSPACE_FILES:
        if (REPO / name).is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, work / name)
    for name in WORKSPACE_DIRS:  # mirrored: a module deleted here is deleted there
        shutil.rmtree(work / name, ignore_errors=True)
        shutil.copytree(REPO / name, work / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(config, work / "params.yaml")
    env = {**os.environ, **GIT_ENV}
    if not (work / ".git").is_dir():
        subprocess.run(["git", "init", "-q"], cwd=work, check=True, env=env)
    subprocess.run(["git", "add", "-A", "--", *WORKSPACE_FILES, *WORKSPACE_DIRS, "params.yaml"],
                   cwd=work, check=True, env=env, capture_output=True)
    subprocess.run(["git", "commit", "-qm", "study workspace", "--allow-empty"], cwd=work, check=True, env=env,
                   capture_output=True)


def _run(cmd: list[str], cwd: Path) -> None:
    """Run ``cmd`` in the workspace with the workspace's copy of the package first on the path,
    so the code that runs is the code DVC hashed (not an installed or edited copy)."""
    log.info("study: %s", " ".join(cmd))
    path = os.pathsep.join([str(cwd), *filter(None, [os.environ.get("PYTHONPATH")])])
    subprocess.run(cmd, cwd=cwd, check=True, env={**os.environ, "PCRL_NO_DVC_COMMIT": "1", "PYTHONPATH": path})


def _git_head() -> str:
    """The repository's commit (and ``-dirty`` when its tracked files differ), or ``unknown``."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def run_study(config: Path, out: Path) -> dict:
    """Run the study of ``config`` into ``out`` (see the module docstring); its summary."""
    config, out = Path(config).resolve(), Path(out).resolve()
    load_params(config)  # validate before anything runs: a bad key is named here
    start = time.monotonic()
    for name in RESULTS:  # a failed rerun must not leave an earlier run's results looking current
        (out / name).unlink(missing_ok=True)
    work = out / "work"
    prepare_workspace(config, work)
    _run(["dvc", "repro", *TARGETS], work)
    _run([sys.executable, "-m", "pcrl.cli", "report", "--evaluations", "data/evaluate", "--probe", "data/probe",
          "--out", "results/report"], work)
    elapsed = time.monotonic() - start
    summary = {
        "config": str(config),
        "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest(),
        "code": _git_head(),
        "elapsed_s": round(elapsed, 1),
        "commands": [f"dvc repro {' '.join(TARGETS)}", "pcrl report --evaluations data/evaluate --probe data/probe"],
    }
    write_text(out / "report.md", (work / "results" / "report" / "report.md").read_text())
    write_text(out / "probe.json", (work / "data" / "probe" / "metrics.json").read_text())
    write_text(out / "study.json", json.dumps(summary, indent=2) + "\n")  # last: the run is complete
    log.info("study done in %.1f min: %s", elapsed / 60, out / "report.md")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pcrl.study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "study.yaml"), help="the study's params file")
    parser.add_argument("--out", default="results/study", help="output folder (its work/ subfolder is the pipeline)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_study(Path(args.config), Path(args.out))
    except subprocess.CalledProcessError as exc:
        print(f"study: {' '.join(map(str, exc.cmd))} failed with exit code {exc.returncode}", file=sys.stderr)
        return 1
    print((Path(args.out) / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
