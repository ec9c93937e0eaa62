"""Before a SLURM run submits anything: refuse a request that no node can give.

SLURM accepts a job whose request exceeds every node of its partition and leaves it
PENDING forever (reason ``PartitionConfig`` or ``Resources``), with no error. The
Snakefile's ``onstart`` calls :func:`check_cluster` under the SLURM executor: it reads the
nodes of each partition from ``sinfo`` and stops the workflow with a message that names the
stage, the resource asked and the most any node offers, before a job is queued.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pcrl.resources import StageResources
from pcrl.errors import ConfigError

#: ``sinfo`` format: one line per (node, partition); see ``man sinfo`` (%P %N %c %m %G %l).
SINFO_FORMAT = "%P|%N|%c|%m|%G|%l"


@dataclass(frozen=True)
class Node:
    """One node as a partition offers it."""

    name: str
    cpus: int
    mem_mb: int
    gpus: int


@dataclass(frozen=True)
class Partition:
    """A partition: its nodes and its time limit in minutes (None: unlimited)."""

    name: str
    nodes: tuple[Node, ...]
    max_minutes: int | None
    default: bool = False


def _gpus(gres: str) -> int:
    """GPU count of a node's GRES (``gpu:a100:4(S:0-1),shard:8`` -> 4; ``(null)`` -> 0)."""
    total = 0
    for item in gres.split(","):
        parts = re.sub(r"\(.*?\)", "", item).split(":")
        if parts[0] == "gpu":
            total += int(parts[-1]) if parts[-1].isdigit() else 1
    return total


def minutes(limit: str) -> int | None:
    """A SLURM time limit in minutes (``infinite``, ``30:00``, ``2:00:00``, ``1-12:00:00``)."""
    if limit in ("infinite", "UNLIMITED", "n/a", ""):
        return None
    days, _, clock = limit.rpartition("-")
    fields = [int(f) for f in clock.split(":")]
    h, m, s = ([0] * (3 - len(fields)) + fields) if len(fields) > 1 else (0, fields[0], 0)
    return (int(days) if days else 0) * 1440 + h * 60 + m + (1 if s else 0)


def parse_sinfo(text: str) -> dict[str, Partition]:
    """Partitions from ``sinfo -h -N -o "%P|%N|%c|%m|%G|%l"`` output."""
    nodes: dict[str, dict[str, Node]] = {}
    limits: dict[str, int | None] = {}
    default = ""
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != 6:
            raise ConfigError(f"unexpected sinfo line {line!r} (format {SINFO_FORMAT})")
        part, name, cpus, mem, gres, limit = (f.strip() for f in fields)
        if part.endswith("*"):
            part = default = part[:-1]
        mem_mb = int(re.sub(r"\D.*", "", mem) or 0)
        nodes.setdefault(part, {})[name] = Node(name, int(cpus), mem_mb, _gpus(gres))
        limits[part] = minutes(limit)
    return {p: Partition(p, tuple(n.values()), limits[p], p == default) for p, n in nodes.items()}


def read_sinfo() -> dict[str, Partition]:
    """The cluster's partitions as ``sinfo`` reports them.

    Raises:
        ConfigError: ``sinfo`` is missing or fails.
    """
    if shutil.which("sinfo") is None:
        raise ConfigError("the SLURM executor is used but 'sinfo' is not on PATH")
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", SINFO_FORMAT], capture_output=True,
                          text=True, timeout=60)
    if proc.returncode != 0:
        raise ConfigError(f"sinfo failed: {proc.stderr.strip()}")
    return parse_sinfo(proc.stdout)


def _describe(part: Partition) -> str:
    most = (max(n.cpus for n in part.nodes), max(n.mem_mb for n in part.nodes),
            max(n.gpus for n in part.nodes))
    return (f"partition {part.name} has {len(part.nodes)} node(s), at most {most[0]} CPUs, "
            f"{most[1]} MB and {most[2]} GPUs on one node")


def problems(requests: Mapping[str, tuple[StageResources, str | None]],
             partitions: Mapping[str, Partition]) -> list[str]:
    """What no node can give: one line per stage, naming the resource.

    Args:
        requests: Stage name -> (its resources, its partition; None for the default one).
        partitions: The cluster (:func:`parse_sinfo`).
    """
    default = next((p for p in partitions.values() if p.default), None)
    found = []
    for stage, (res, name) in requests.items():
        part = partitions.get(name) if name else default
        if part is None:
            found.append(f"stage {stage}: partition {name or '(default)'} does not exist; "
                         f"sinfo lists {', '.join(sorted(partitions)) or 'none'}")
            continue
        asked = {"threads (CPUs)": (res.threads, "cpus"), "mem_mb": (res.mem_mb, "mem_mb"),
                 "gpus": (res.gpus, "gpus")}
        lacking = [f"{key} {value} (the most on one node: {max(getattr(n, attr) for n in part.nodes)})"
                   for key, (value, attr) in asked.items()
                   if not any(getattr(n, attr) >= value for n in part.nodes)]
        fits = [n for n in part.nodes
                if n.cpus >= res.threads and n.mem_mb >= res.mem_mb and n.gpus >= res.gpus]
        if not lacking and not fits:
            lacking.append(f"threads {res.threads}, mem_mb {res.mem_mb} and gpus {res.gpus} "
                           "together (no single node has all three)")
        if res.nodes > len(fits) and fits:
            lacking.append(f"nodes {res.nodes} (only {len(fits)} node(s) can hold one task)")
        if part.max_minutes is not None and res.runtime > part.max_minutes:
            lacking.append(f"runtime {res.runtime} min (the partition's limit: {part.max_minutes} min)")
        if lacking:
            found.append(f"stage {stage} asks for {'; '.join(lacking)}; {_describe(part)}")
    return found


def check_cluster(requests: Mapping[str, tuple[StageResources, str | None]], source: str,
                  partitions: Mapping[str, Partition] | None = None) -> None:
    """Raise ConfigError listing every stage whose request no node can give.

    Args:
        requests: Stage name -> (resources, partition or None).
        source: Where the requests come from (named in the message).
        partitions: The cluster; read from ``sinfo`` when None.
    """
    found = problems(requests, read_sinfo() if partitions is None else partitions)
    if found:
        raise ConfigError(
            f"{source}: {len(found)} stage(s) would wait in the SLURM queue forever:\n  "
            + "\n  ".join(found)
            + "\nChoose a resource set that fits (use: demo | paper, or PCRL_RESOURCES=...) "
              "or lower these requests.")


def partition_of(resources: Iterable[tuple[str, object]]) -> str | None:
    """The ``slurm_partition`` among a profile's default resources, if it is a plain string."""
    for key, value in resources:
        if key == "slurm_partition":
            raw = getattr(value, "raw", value)
            return raw if isinstance(raw, str) else None
    return None


#: Messages of snakemake-executor-plugin-slurm 2.x about guessing an account, printed on
#: every run where SLURM keeps no accounting; its ``--slurm-no-account`` flag is parsed but
#: not consulted, so the Snakefile filters them instead (where ``sacct`` answers, they stay).
ACCOUNT_MESSAGES = ("No SLURM account given", "not able to get a SLURM account",
                    "Unable to guess SLURM account")


class _AccountNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(m in str(record.getMessage()) for m in ACCOUNT_MESSAGES)


def accounting_enabled() -> bool:
    """Whether SLURM records jobs (``scontrol show config``: AccountingStorageType)."""
    proc = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=60)
    match = re.search(r"^AccountingStorageType\s*=\s*(\S+)", proc.stdout, re.M)
    if proc.returncode != 0 or match is None:
        return False
    return match.group(1) != "accounting_storage/none"


def quiet_account_warnings(logger: logging.Logger) -> bool:
    """Drop the plugin's account-guessing warnings from ``logger`` when SLURM has no
    accounting (nothing to guess from); returns whether it did."""
    if shutil.which("scontrol") is None or accounting_enabled():
        return False
    logger.addFilter(_AccountNoise())
    return True
