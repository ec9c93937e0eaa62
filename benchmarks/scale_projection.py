"""The arithmetic of benchmarks/bench_scale.py: measured jobs on a few cases -> the paper's data.

A stage family (e.g. ``resample luna16``) was measured as jobs, each over some cases. Every
job pays a start-up (Python, torch and the package imported: ``startup``, measured apart);
the rest is per case: the jobs' sums over the cases they held, less their start-ups, of
CPU seconds (user + system) and wall seconds, and the bytes written. The paper run has
``paper_cases`` cases in ``jobs`` jobs (a dataset's download and resample: one per shard of
``data.shards``; cubes: one job over every case), so

    CPU-h          = (startup_cpu_s * jobs + cpu_s_per_case * paper_cases) / 3600
    runtime of one job (h) = (startup_wall_s + wall_s_per_case * ceil(paper_cases / jobs)) / 3600
    disk (bytes)   = bytes_per_case * paper_cases
    peak memory of a job = the largest peak RSS measured (it must not grow with the cases:
                           bench_scale.py checks that on two dataset sizes)

Checkpoint disk: every training run keeps ``copies`` float32 copies of its network's
parameters (weights, SGD momentum, and the momentum encoder or best weights), so
``bytes = parameters * 4 * copies * runs``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["FamilyProjection", "Job", "checkpoint_bytes", "project_family"]

FLOAT32_BYTES = 4


@dataclass(frozen=True)
class Job:
    """One measured job: cases it held, wall and CPU seconds, peak RSS (MiB), bytes written."""

    cases: int
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    bytes_written: int


@dataclass(frozen=True)
class FamilyProjection:
    """A stage family at the paper's size."""

    paper_cases: int
    jobs: int
    cpu_hours: float
    job_runtime_hours: float
    peak_rss_mib: float
    disk_bytes: int


def project_family(measured: Sequence[Job], *, paper_cases: int, jobs: int,
                   startup: tuple[float, float] = (0.0, 0.0)) -> FamilyProjection:
    """Project the measured jobs of one stage family to ``paper_cases`` cases in ``jobs`` jobs;
    ``startup``: (wall, CPU) seconds every job spends before its first case.

    Raises:
        ValueError: no job measured, a job without cases, or ``paper_cases``/``jobs`` < 1.
    """
    if not measured or any(j.cases < 1 for j in measured):
        raise ValueError("project_family: every measured job must hold at least one case")
    if paper_cases < 1 or jobs < 1:
        raise ValueError(f"project_family: paper_cases and jobs must be >= 1, got {paper_cases}, {jobs}")
    cases = sum(j.cases for j in measured)
    start_wall, start_cpu = startup
    cpu_per_case = max(0.0, sum(j.cpu_s - start_cpu for j in measured)) / cases
    wall_per_case = max(0.0, sum(j.wall_s - start_wall for j in measured)) / cases
    bytes_per_case = sum(j.bytes_written for j in measured) / cases
    per_job = math.ceil(paper_cases / jobs)
    return FamilyProjection(
        paper_cases=paper_cases,
        jobs=jobs,
        cpu_hours=(start_cpu * jobs + cpu_per_case * paper_cases) / 3600.0,
        job_runtime_hours=(start_wall + wall_per_case * per_job) / 3600.0,
        peak_rss_mib=max(j.peak_rss_mib for j in measured),
        disk_bytes=round(bytes_per_case * paper_cases),
    )


def checkpoint_bytes(parameters: int, *, runs: int, copies: int = 3) -> int:
    """Disk of the training runs' checkpoints: ``parameters`` float32 values, ``copies`` each, per run."""
    if parameters < 0 or runs < 0 or copies < 1:
        raise ValueError(f"checkpoint_bytes: got parameters {parameters}, runs {runs}, copies {copies}")
    return parameters * FLOAT32_BYTES * copies * runs


def gpu_hours_upper_bound(seconds_per_sample: float, *, samples_per_epoch: int, epochs: int, runs: int) -> float:
    """Hours of ``runs`` trainings of ``epochs`` x ``samples_per_epoch`` samples at the measured
    seconds per sample (measured on CPU here: an upper bound of a GPU's)."""
    return seconds_per_sample * samples_per_epoch * epochs * runs / 3600.0
