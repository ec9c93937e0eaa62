"""workflow/resources.yaml: the CPUs, memory, runtime and GPUs each stage asks for.

Snakemake's rules take their resources from it (:mod:`pcrl.runners.dag`), and the CLI takes
a stage's CPU thread count from it under every runner (``pcrl.cli.configure_threads``),
so CPU results are the same under ``dvc repro``, Snakemake and SLURM.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pcrl.errors import ConfigError


@dataclass(frozen=True)
class StageResources:
    """Cluster resources of one stage (workflow/resources.yaml)."""

    threads: int = 1
    mem_mb: int = 4000
    runtime: int = 60
    gpus: int = 0
    nodes: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def snakemake_resources(self) -> dict[str, Any]:
        """Keyword resources of the rule; ``gpu`` and ``nodes`` only when asked (SLURM plugin)."""
        res: dict[str, Any] = {"mem_mb": self.mem_mb, "runtime": self.runtime, **self.extra}
        if self.gpus > 0:
            res["gpu"] = self.gpus
        if self.nodes > 1:
            res["nodes"] = self.nodes
        return res


_KNOWN = ("threads", "mem_mb", "runtime", "gpus", "nodes")
SET_OVERRIDE = "PCRL_RESOURCES"


@dataclass(frozen=True)
class Resources:
    """Per-stage resources with a default: one set of workflow/resources.yaml."""

    table: dict[str, dict[str, Any]]
    name: str = "default"
    source: str = "workflow/resources.yaml"

    def for_stage(self, group: str) -> StageResources:
        merged = {**self.table.get("default", {}), **self.table.get(group, {})}
        for key in _KNOWN:
            value = merged.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ConfigError(f"{self.source}: set {self.name!r}, stage {group}: {key} must be "
                                  f"a non-negative integer, got {value!r}")
        extra = {k: v for k, v in merged.items() if k not in _KNOWN}
        return StageResources(**{k: v for k, v in merged.items() if k in _KNOWN}, extra=extra)


def _is_table(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, dict) for v in value.values())


def load_resources(path: str | Path, choice: str | None = None) -> Resources:
    """Read the chosen set of workflow/resources.yaml.

    The file holds named ``sets`` and the one in ``use``; ``choice``, else the environment
    variable ``PCRL_RESOURCES``, overrides ``use``. A file without ``sets`` is one table.

    Raises:
        ConfigError: The file is unreadable or malformed, or the chosen set does not exist.
    """
    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read stage resources: {exc}") from None
    if isinstance(content, dict) and "sets" in content:
        sets = content["sets"]
        if not isinstance(sets, dict) or not all(_is_table(t) for t in sets.values()):
            raise ConfigError(f"{path}: 'sets' must map set names to tables of stage -> resources")
        name = choice or os.environ.get(SET_OVERRIDE) or content.get("use")
        if name not in sets:
            where = f"{SET_OVERRIDE}={name}" if not choice and os.environ.get(SET_OVERRIDE) else f"use: {name}"
            raise ConfigError(f"{path}: {where} names no resource set; known: {', '.join(sorted(sets))}")
        return Resources(sets[name], str(name), str(path))
    if not _is_table(content):
        raise ConfigError(f"{path}: expected a mapping of stage name -> resources")
    return Resources(content, "default", str(path))


def available_cpus() -> int:
    """CPUs this job may use: SLURM's allocation, else the process's CPU affinity."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit():
        return max(1, int(slurm))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


RESOURCES_FILE = Path("workflow") / "resources.yaml"


def resource_group(args: Any) -> str:
    """The workflow/resources.yaml entry of a command (its dvc.yaml stage group)."""
    command = args.command.replace("-", "_")
    if command == "init_weights":
        return "init_scratch" if args.init == "scratch" else "init_external"
    if command in ("finetune", "evaluate"):
        return f"{command}_{args.task}"
    return command


def configure_threads(args: Any) -> int:
    """Give the stage the same CPU thread count under every runner, and return it
    (``args``: the CLI's arguments: ``command``, ``params``, and ``task``/``init`` where the
    command takes them).

    CPU results are bit-exact only for a given thread count. Snakemake sets
    ``OMP_NUM_THREADS`` to the rule's threads (from workflow/resources.yaml, capped by
    ``--cores``) and SLURM jobs inherit it; under ``dvc repro`` nothing does, so the stage's
    threads are read from the same file here, capped by the CPUs this process may use. The
    variable is set before torch starts its thread pool (and for DataLoader workers).
    """
    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    if "torch" in sys.modules:  # called in-process (tests, notebooks): leave the pool as it is
        return int(sys.modules["torch"].get_num_threads())
    threads = available_cpus()
    resources = Path(args.params).resolve().parent / RESOURCES_FILE
    if resources.is_file():
        threads = min(threads, load_resources(resources).for_stage(resource_group(args)).threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads


DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def device_option(value: str) -> str:
    """``--device`` of the training stages: refused by the CLI, naming the accepted forms,
    rather than by torch in the middle of a stage."""
    if not DEVICE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a device: use auto, cpu, cuda or cuda:N (e.g. cuda:0)")
    return value
