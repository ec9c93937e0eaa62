"""benchmarks/bench_scale.py's arithmetic against hand computations: the projection of measured
jobs to the paper's data, checkpoint disk, GPU-hour upper bounds, the paper's run counts
and the LUNA16 groups of the growth check."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from pcrl.config import load_params

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _module(name: str):
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


projection = _module("scale_projection")


def test_projection_of_two_jobs_matches_a_hand_computation() -> None:
    jobs = [projection.Job(cases=2, wall_s=10.0, cpu_s=16.0, peak_rss_mib=500.0, bytes_written=300),
            projection.Job(cases=4, wall_s=20.0, cpu_s=28.0, peak_rss_mib=700.0, bytes_written=900)]
    result = projection.project_family(jobs, paper_cases=25, jobs=10, startup=(1.0, 2.0))
    # per case: CPU (14 + 26) / 6 s, wall (9 + 19) / 6 s, 1200 / 6 = 200 bytes; 3 cases per job (ceil 25/10)
    assert result.cpu_hours == pytest.approx((2.0 * 10 + 40 / 6 * 25) / 3600)
    assert result.cpu_hours == pytest.approx(0.0518519, rel=1e-5)
    assert result.job_runtime_hours == pytest.approx((1.0 + 28 / 6 * 3) / 3600)
    assert result.job_runtime_hours == pytest.approx(15 / 3600)
    assert result.peak_rss_mib == 700.0
    assert result.disk_bytes == 5000
    assert (result.paper_cases, result.jobs) == (25, 10)


def test_projection_without_startup_is_per_case_times_cases() -> None:
    jobs = [projection.Job(cases=3, wall_s=6.0, cpu_s=9.0, peak_rss_mib=1.0, bytes_written=30)]
    result = projection.project_family(jobs, paper_cases=888, jobs=1)
    assert result.cpu_hours == pytest.approx(3.0 * 888 / 3600)
    assert result.job_runtime_hours == pytest.approx(2.0 * 888 / 3600)
    assert result.disk_bytes == 10 * 888


@pytest.mark.parametrize("jobs, paper_cases, n", [([], 10, 1), ("zero", 10, 1), ("one", 0, 1), ("one", 10, 0)])
def test_projection_refuses_what_it_cannot_project(jobs, paper_cases: int, n: int) -> None:
    job = projection.Job(cases=0 if jobs == "zero" else 1, wall_s=1.0, cpu_s=1.0, peak_rss_mib=1.0, bytes_written=1)
    with pytest.raises(ValueError, match="project_family"):
        projection.project_family([] if jobs == [] else [job], paper_cases=paper_cases, jobs=n)


def test_checkpoint_and_gpu_hours_match_hand_computations() -> None:
    assert projection.checkpoint_bytes(1000, runs=7) == 1000 * 4 * 3 * 7
    assert projection.checkpoint_bytes(1000, runs=7, copies=1) == 28_000
    assert projection.gpu_hours_upper_bound(2.0, samples_per_epoch=100, epochs=3, runs=2) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        projection.checkpoint_bytes(-1, runs=1)


def test_paper_runs_and_growth_groups(repo_root: Path) -> None:
    report = _module("scale_report")
    bench = _module("bench_scale")
    paper = load_params(repo_root / "configs" / "paper.yaml")
    # 3 tasks x 4 inits x 4 fractions x 5 seeds; chest14 4 x 4 x 5: the 320 fine-tunes
    assert report.training_runs(paper) == {"pretrain": 3, "pretrain2d": 3, "finetune": 240, "finetune_chest14": 80}
    pretrain, ncc = bench._groups(10)
    assert pretrain == paper["cubes"]["pretrain"]["groups"] and ncc == paper["cubes"]["ncc"]["groups"]
    half = bench.half_luna16(paper)["cubes"]
    assert half["pretrain"]["groups"] == {"train": ["subset0", "subset2", "subset4", "subset6"],
                                          "val": ["subset8"]}
    assert half["ncc"]["groups"] == {"train": ["subset0", "subset2", "subset4"], "val": ["subset6"],
                                     "test": ["subset8"]}
    rows = bench.growth([{"stage": "resample", "dataset": "luna16", "cases": 6, "peak_rss_mib": 900.0}],
                        [{"stage": "resample", "dataset": "luna16", "cases": 12, "peak_rss_mib": 910.0}])
    assert rows == [{"stage": "resample", "name": "luna16", "cases_per_job": [6, 12], "peak_rss_mib": [900.0, 910.0]}]


def test_finetune_samples_per_epoch_match_a_hand_count(repo_root: Path) -> None:
    report = _module("scale_report")
    paper = load_params(repo_root / "configs" / "paper.yaml")
    samples = {family: (n, epochs) for family, _, n, epochs in report._finetune_samples(paper)}
    share = (0.1 + 0.2 + 0.5 + 1.0) / 4  # the mean label fraction
    assert samples["finetune_ncc"] == (round(1186 * 6 / 10 * 2 * share), 200) == (640, 200)
    assert samples["finetune_lcs"] == (round(131 * 0.5 * 4 * share), 200) == (118, 200)
    assert samples["finetune_bms"] == (round(484 * 0.5 * 4 * share), 200) == (436, 200)
    assert samples["finetune_chest14"] == (round(86524 * 0.9 * share), 100) == (35042, 100)
