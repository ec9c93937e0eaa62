"""Provenance of a result: which code, which settings, which libraries, which device.

Every metrics file the pipeline writes carries a ``provenance`` dict so that a number in a
report can be traced back without the machine that produced it: the git commit of the
code, the sha256 of the params sections the stage used (canonical JSON, so key order and
YAML formatting do not matter), the versions of the libraries that compute the result,
and the device it ran on. Nothing time-dependent is recorded, so rerunning a stage on the
same inputs gives byte-identical outputs.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "UNKNOWN",
    "canonical_json",
    "device_name",
    "git_commit",
    "library_versions",
    "params_digest",
    "provenance",
]

UNKNOWN = "unknown"

#: Distributions whose versions change results (import name is not always the same).
LIBRARIES = ("torch", "monai", "SimpleITK", "numpy", "pcrl")


def canonical_json(obj: Any) -> str:
    """``obj`` as JSON with sorted keys and no whitespace (the input of :func:`params_digest`).

    Raises:
        TypeError: ``obj`` holds something JSON cannot represent (e.g. a set).
        ValueError: ``obj`` holds NaN or an infinity (not JSON).
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def params_digest(params: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of ``params`` (e.g. ``{"finetune": {...}}``)."""
    return hashlib.sha256(canonical_json(dict(params)).encode()).hexdigest()


def git_commit(repo: str | Path = ".") -> str:
    """``git rev-parse HEAD`` in ``repo``, or :data:`UNKNOWN` (no git, not a repository)."""
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    commit = proc.stdout.strip()
    return commit if proc.returncode == 0 and commit else UNKNOWN


#: Tracked files that DVC itself rewrites while the pipeline runs (its record of what was
#: built, and the .gitignore files listing its outputs): no change of code or settings.
DVC_BOOKKEEPING = ("dvc.lock", ".gitignore")


def git_dirty(repo: str | Path = ".") -> bool | None:
    """Whether ``repo`` has uncommitted changes to tracked files (``git status
    --porcelain --untracked-files=no``) other than DVC's bookkeeping (:data:`DVC_BOOKKEEPING`),
    so that a result cannot be traced to its commit alone; None without git or outside a
    repository."""
    try:
        proc = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                              capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    changed = [line[3:].strip().strip('"') for line in proc.stdout.splitlines() if line.strip()]
    return any(Path(path).name not in DVC_BOOKKEEPING for path in changed)


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Installed versions of ``names`` (:data:`UNKNOWN` for one that is not installed)."""
    versions: dict[str, str] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = UNKNOWN
    return versions


def device_name(device: torch.device | str) -> str:
    """A human name of ``device``: the GPU model for CUDA, the processor type for the CPU."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type == "cpu":
        return f"cpu: {platform.machine() or UNKNOWN}"
    return str(device)


def provenance(params: Mapping[str, Any], *, device: torch.device | str,
               repo: str | Path = ".") -> dict[str, Any]:
    """The provenance record of a result.

    Args:
        params: The params sections the stage used, by name (e.g. ``{"finetune": ...,
            "evaluate": ...}``); only their digest is recorded.
        device: The device that computed the result.
        repo: The repository whose commit is recorded.

    Returns:
        ``{"git_commit", "git_dirty", "params_sha256", "params_sections", "versions",
        "device", "threads"}``; ``threads`` is torch's intra-op thread count, on which CPU
        results depend bit for bit.
    """
    return {
        "git_commit": git_commit(repo),
        "git_dirty": git_dirty(repo),
        "params_sha256": params_digest(params),
        "params_sections": sorted(params),
        "versions": library_versions(),
        "device": device_name(device),
        "threads": torch.get_num_threads(),
    }
