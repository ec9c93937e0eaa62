"""Where a report's numbers come from: the header a reader checks before trusting them.

The data source (the embedded phantom, a download or a local copy, and which datasets), the
commit the report was written at (and whether the working tree differed from it), a digest
of params.yaml, a digest of the pipeline's inputs — the download stages' outputs as dvc.lock
records them — and the date. The digests let two reports be told apart (or matched) without
the machine that wrote them.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pcrl.config import source_of
from pcrl.provenance import UNKNOWN, git_commit, git_dirty

#: dvc.lock's stages whose outputs are the pipeline's inputs (``download@<dataset>-<shard>``).
INPUT_STAGE = "download"

SOURCES = {"phantom": "the embedded phantom (synthetic, generated here)",
           "download": "downloaded", "local": "a local copy"}


def input_stages(data: Mapping[str, Any]) -> list[str]:
    """The download stages of the configured datasets and shards (dvc.yaml's matrix names)."""
    return [f"{INPUT_STAGE}@{d}-{k}" for d in data.get("datasets", []) for k in data.get("shards", [0])]


def inputs_digest(lock_file: Path, stages: list[str]) -> tuple[str, int]:
    """(sha256 over the output hashes ``lock_file`` records for ``stages``, how many outputs);
    (``"not recorded"``, 0) when dvc.lock is absent or lacks one of them (a Snakemake run
    records it at its end). Entries of stages no longer in the pipeline are not counted."""
    try:
        lock = yaml.safe_load(Path(lock_file).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return "not recorded", 0
    recorded = lock.get("stages") or {}
    if not stages or any(name not in recorded for name in stages):
        return "not recorded", 0
    lines = []
    for name in sorted(stages):
        for out in recorded[name].get("outs") or []:
            lines.append(f"{out.get('path')} {out.get('md5') or out.get('hash') or UNKNOWN}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest(), len(lines)


def data_source(data: Mapping[str, Any]) -> str:
    """``the embedded phantom (...): luna16, msd_liver`` — one clause per source in use."""
    by_source: dict[str, list[str]] = {}
    for name in data.get("datasets", []):
        by_source.setdefault(source_of(dict(data), name), []).append(name)
    return "; ".join(f"{SOURCES.get(src, src)}: {', '.join(names)}" for src, names in by_source.items())


def report_context(data: Mapping[str, Any], *, params_file: Path, lock_file: Path, repo: Path,
                   today: datetime.date | None = None) -> dict[str, Any]:
    """The header's facts (JSON-serialisable; :func:`header_lines` writes them)."""
    digest, outputs = inputs_digest(lock_file, input_stages(data))
    return {
        "data": data_source(data),
        "phantom": any(source_of(dict(data), d) == "phantom" for d in data.get("datasets", [])),
        "commit": git_commit(repo),
        "dirty": git_dirty(repo),
        "params_sha256": hashlib.sha256(Path(params_file).read_bytes()).hexdigest(),
        "inputs_sha256": digest,
        "inputs_count": outputs,
        "date": (today or datetime.datetime.now(datetime.timezone.utc).date()).isoformat(),
    }


def header_lines(context: Mapping[str, Any]) -> list[str]:
    """The report's provenance table (markdown)."""
    commit = str(context["commit"])
    if context["dirty"]:
        commit += " (with uncommitted changes: the commit alone does not reproduce it)"
    inputs = (f"sha256 {context['inputs_sha256'][:16]}… over the {context['inputs_count']} download "
              "outputs recorded in dvc.lock" if context["inputs_count"] else "not recorded in dvc.lock yet")
    lines = ["| provenance | |", "|---|---|",
             f"| data | {context['data']} |",
             f"| commit | {commit} |",
             f"| params.yaml | sha256 {context['params_sha256'][:16]}… |",
             f"| inputs | {inputs} |",
             f"| written | {context['date']} (UTC) |", ""]
    if context["phantom"]:
        lines += ["These numbers come from synthetic phantom data: they test the pipeline, not the method.", ""]
    return lines
