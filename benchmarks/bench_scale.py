"""Benchmark: the data stages at real volume sizes (configs/scale.yaml), costed at the paper's size.

Every stage runs through the pipeline's CLI (``python -m pcrl.cli``), one fresh process
per job, exactly as the DAG runs it; each job's wall time, CPU time (user + system) and
peak RSS come from ``os.wait4`` on that process, and its bytes written are the sizes of
the files under its output folder. Steps:

1. ``phantom``: the phantom datasets, generated once, whole (its cost is this rehearsal's,
   not a real run's: a real run downloads these files);
2. ``download``: each download shard verified as ``data.source: local`` on that copy (as the
   paper config does for ChestX-ray14), writing its manifest;
3. ``resample`` per dataset and shard (``--workers 1``: one case at a time, its memory);
4. ``cubes`` per task (pretrain, ncc, lcs, bms) and the 2D store's tasks (pretrain2d, chest14).

Memory must grow with one case, not the dataset: ``growth`` reruns the jobs with twice the
cases per job (download and resample in one shard instead of two; the pretraining and NCC
cubes on half the LUNA16 subsets against all of them) and compares their peaks.

The measured jobs are projected (benchmarks/scale_projection.py) to 888 LUNA16 scans, 131
LiTS and 484 BraTS training cases and 112,120 radiographs at configs/paper.yaml's shard
counts. Output: ``<out>/bench_scale.json`` and ``<out>/bench_scale.md`` (also printed).

    python benchmarks/bench_scale.py                  # configs/scale.yaml, ~20-25 min on 2 cores
    python benchmarks/bench_scale.py --tiny           # small shapes, ~1-2 min (development)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_projection import Job, project_family  # noqa: E402
from scale_report import checkpoint_rows, gpu_rows, markdown  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: The paper's data (training cases each dataset's download holds; docs and PCRL-SPEC).
PAPER_CASES = {"luna16": 888, "msd_liver": 131, "msd_brain": 484, "chestxray14": 112_120}
CUBES_TASKS = {"pretrain": "luna16", "ncc": "luna16", "lcs": "msd_liver", "bms": "msd_brain",
               "pretrain2d": "chestxray14", "chest14": "chestxray14"}


# ---------------------------------------------------------------- params variants


def _groups(subsets: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Pretrain and NCC groups over subsets 0..subsets-1 in the paper's proportions (10: 7/3, 6/1/3)."""
    names = [f"subset{k}" for k in range(subsets)]
    held = max(1, 3 * subsets // 10)
    pretrain = {"train": names[:-held], "val": names[-held:]}
    ncc = {"train": names[:-held - 1], "val": names[-held - 1:-held], "test": names[-held:]}
    return pretrain, ncc


def tiny_params(params: dict[str, Any]) -> dict[str, Any]:
    """The scale config shrunk for development: fixed small shapes, few radiographs."""
    p = copy.deepcopy(params)
    p["data"]["phantom"] = {"seed": 0, "luna16": {"scans": 10, "subsets": 10, "shape": [160, 160, 80]},
                            "msd_liver": {"cases": 4, "test_cases": 1, "shape": [96, 96, 64]},
                            "msd_brain": {"cases": 4, "test_cases": 1, "shape": [64, 64, 48]},
                            "chestxray14": {"patients": 12, "images_per_patient": [1, 2], "size": [256, 256],
                                            "test_fraction": 0.25}}
    p["resample"]["chestxray14"]["expected_size"] = [256, 256]
    p["resample"]["chestxray14"]["size"] = [128, 128]
    p["cubes"]["pretrain2d"]["crop_sizes"] = [[64, 64, 1], [96, 96, 1], [112, 112, 1], [128, 128, 1]]
    p["cubes"]["pretrain2d"]["cube_size"] = [64, 64, 1]
    return p


def half_luna16(params: dict[str, Any]) -> dict[str, Any]:
    """The pretrain and NCC cubes over half of LUNA16's subsets (the growth check)."""
    p = copy.deepcopy(params)
    subsets = p["data"]["phantom"]["luna16"].get("subsets", 10)
    pretrain, ncc = _groups(subsets)
    keep = {f"subset{k}" for k in range(0, subsets, 2)}
    p["cubes"]["pretrain"]["groups"] = {g: [s for s in v if s in keep] or v[:1] for g, v in pretrain.items()}
    p["cubes"]["ncc"]["groups"] = {g: [s for s in v if s in keep] or v[:1] for g, v in ncc.items()}
    return p


def _write(params: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


# ---------------------------------------------------------------- jobs


def _bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.exists() else 0


def run_job(params: Path | None, args: list[str], out: Path, *, cases: int, log: Path) -> dict[str, Any]:
    """``pcrl <args>`` in a fresh process (``OMP_NUM_THREADS`` as set, else 2): its wall and
    CPU seconds, peak RSS (os.wait4) and the bytes under ``out``. ``params`` None: ``args``
    is a Python command line (the start-up measurement)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    command = ([sys.executable, *args] if params is None
               else [sys.executable, "-m", "pcrl.cli", "--params", str(params), *args, "--no-progress"])
    start = time.perf_counter()
    with log.open("a") as fh:
        fh.write(" ".join(command) + "\n")
        fh.flush()
        proc = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench_scale: {' '.join(args)} failed (exit {proc.returncode}); see {log}")
    return {"args": " ".join(args), "cases": cases, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mib": usage.ru_maxrss / 1024, "bytes_written": _bytes(out)}


def _manifest_cases(folder: Path) -> int:
    return len(json.loads((folder / "manifest.json").read_text())["cases"])


def _interim_cases(folder: Path) -> int:
    cases = folder / "cases.json"
    if cases.exists():
        return len(json.loads(cases.read_text()))
    return len(json.loads((folder / "index.json").read_text()))


def _verify_and_resample(params: dict[str, Any], phantom: Path, work: Path, shards: list[int], tag: str,
                         datasets: list[str], log: Path) -> list[dict[str, Any]]:
    """Download (verify the phantom as a local copy) and resample jobs, one per dataset and shard."""
    p = copy.deepcopy(params)
    p["data"].update(source="local", sources={}, shards=shards, datasets=datasets,
                     local_paths={d: str(phantom / d) for d in datasets})
    path = _write(p, work / "params" / f"{tag}.yaml")
    jobs = []
    for dataset in datasets:
        for k in shards:
            raw = work / tag / "raw" / dataset / str(k)
            job = run_job(path, ["download", "--dataset", dataset, "--shard", str(k), "--out", str(raw)], raw,
                          cases=0, log=log)
            jobs.append({"stage": "download", "dataset": dataset, **job, "cases": _manifest_cases(raw)})
        for k in shards:
            interim = work / tag / "interim" / dataset / str(k)
            job = run_job(path, ["resample", "--dataset", dataset, "--shard", str(k), "--raw",
                                 str(work / tag / "raw" / dataset), "--out", str(interim), "--workers", "1"],
                          interim, cases=0, log=log)
            jobs.append({"stage": "resample", "dataset": dataset, **job, "cases": _interim_cases(interim)})
    return jobs


def _cubes(params: dict[str, Any], work: Path, tag: str, tasks: list[str], log: Path,
           source: str) -> list[dict[str, Any]]:
    path = _write(params, work / "params" / f"{tag}.yaml")
    jobs = []
    for task in tasks:
        dataset = CUBES_TASKS[task]
        out = work / tag / "processed" / task
        job = run_job(path, ["cubes", "--task", task, "--raw", str(work / source / "raw" / dataset),
                             "--interim", str(work / source / "interim" / dataset), "--out", str(out)],
                      out, cases=0, log=log)
        jobs_cases = _cubes_cases(task, out)
        stage = "cubes2d" if dataset == "chestxray14" else "cubes"
        jobs.append({"stage": stage, "task": task, "dataset": dataset, **job, "cases": jobs_cases})
    return jobs


def _cubes_cases(task: str, out: Path) -> int:
    """Cases a cubes job served: radiographs paired (pretrain2d) or listed (chest14), else the split's scans."""
    if task == "pretrain2d":
        return sum(len(e["images"]) for e in json.loads((out / "pairs.json").read_text()))
    if task == "chest14":
        return sum(1 for _ in (out / "images.csv").open()) - 1
    return sum(len(v) for v in json.loads((out / "split.json").read_text()).values())


def _phantoms(params: dict[str, Any], work: Path, datasets: list[str], log: Path, reuse: bool) -> list[dict]:
    """Each dataset's phantom, whole, in one job (``data.shards: [0]``)."""
    p = copy.deepcopy(params)
    p["data"].update(source="phantom", sources={}, local_paths={}, shards=[0])
    path = _write(p, work / "params" / "phantom.yaml")
    jobs = []
    for dataset in datasets:
        out = work / "phantom" / dataset
        stamp = out / "params.json"
        wanted = json.dumps(p["data"]["phantom"], sort_keys=True)
        if reuse and stamp.exists() and stamp.read_text() == wanted:
            continue
        job = run_job(path, ["download", "--dataset", dataset, "--out", str(out)], out, cases=0, log=log)
        stamp.write_text(wanted)
        jobs.append({"stage": "phantom", "dataset": dataset, **job, "cases": _manifest_cases(out)})
    return jobs


# ---------------------------------------------------------------- projection


def _paper_jobs(paper: dict[str, Any]) -> int:
    return len(paper["data"]["shards"])


#: What every job runs before its first case: the interpreter, torch, SimpleITK and the CLI.
STARTUP = ["-c", "import torch, SimpleITK, pcrl.cli, pcrl.stages.resample, pcrl.stages.cubes"]


def startup(work: Path, log: Path, repeats: int = 3) -> tuple[float, float]:
    """Fastest (wall, CPU) seconds of a process that only imports what the stages import."""
    runs = [run_job(None, STARTUP, work, cases=0, log=log) for _ in range(repeats)]
    return min(r["wall_s"] for r in runs), min(r["cpu_s"] for r in runs)


def project(jobs: list[dict[str, Any]], paper: dict[str, Any], start: tuple[float, float]) -> list[dict[str, Any]]:
    """One row per (stage, dataset or task) of the measured run, at the paper's size."""
    shards = _paper_jobs(paper)
    rows = []
    # phantom rows: their disk is the raw data's; their time is this rehearsal's only (a real run downloads)
    keys = sorted({(j["stage"], j.get("task") or j["dataset"], j["dataset"]) for j in jobs})
    for stage, name, dataset in keys:
        mine = [Job(j["cases"], j["wall_s"], j["cpu_s"], j["peak_rss_mib"], j["bytes_written"])
                for j in jobs if j["stage"] == stage and (j.get("task") or j["dataset"]) == name and j["cases"]]
        if not mine:
            continue
        per_job = shards if stage in ("download", "resample") else 1
        result = project_family(mine, paper_cases=PAPER_CASES[dataset], jobs=per_job, startup=start)
        rows.append({"stage": stage, "name": name, "measured_cases": sum(m.cases for m in mine),
                     **result.__dict__})
    return rows


def growth(base: list[dict[str, Any]], doubled: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Peak RSS of each stage family with N and 2N cases per job."""
    rows = []
    def pick(jobs: list[dict[str, Any]], stage: str, name: str) -> list[dict[str, Any]]:
        return [j for j in jobs if j["stage"] == stage and (j.get("task") or j["dataset"]) == name]

    for stage, name in sorted({(j["stage"], j.get("task") or j["dataset"]) for j in doubled}):
        small, large = pick(base, stage, name), pick(doubled, stage, name)
        if small and large:
            rows.append({"stage": stage, "name": name,
                         "cases_per_job": [max(j["cases"] for j in small), max(j["cases"] for j in large)],
                         "peak_rss_mib": [max(j["peak_rss_mib"] for j in small),
                                          max(j["peak_rss_mib"] for j in large)]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=REPO / "configs" / "scale.yaml")
    parser.add_argument("--paper", type=Path, default=REPO / "configs" / "paper.yaml")
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "out" / "scale")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    parser.add_argument("--tiny", action="store_true", help="small shapes, for development (~1-2 min)")
    parser.add_argument("--reuse-phantom", action="store_true", help="keep phantoms generated with the same params")
    parser.add_argument("--no-growth", action="store_true", help="skip the memory growth check")
    args = parser.parse_args()

    from pcrl.config import load_params

    params = load_params(args.params)
    paper = load_params(args.paper)
    if args.tiny:
        params = tiny_params(params)
    work = args.work / ("tiny" if args.tiny else "full")
    for folder in ("run", "double", "half"):
        shutil.rmtree(work / folder, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "jobs.log"
    log.write_text("")
    datasets = list(params["data"]["datasets"])
    load_before = os.getloadavg()
    started = time.perf_counter()
    start = startup(work / "params", log)
    jobs = _phantoms(params, work, datasets, log, args.reuse_phantom)
    jobs += _verify_and_resample(params, work / "phantom", work, list(params["data"]["shards"]), "run", datasets, log)
    jobs += _cubes(params, work, "run", list(CUBES_TASKS), log, "run")
    checks: list[dict[str, Any]] = []
    if not args.no_growth:
        # twice the cases per job: one shard for download and resample (LUNA16, the largest
        # volumes, and the radiograph store); the cubes on all LUNA16 subsets against half
        doubled = _verify_and_resample(params, work / "phantom", work, [0], "double",
                                       [d for d in datasets if d in ("luna16", "chestxray14")], log)
        half = _cubes(half_luna16(params), work, "half", ["pretrain", "ncc"], log, "run")
        full_cubes = [j for j in jobs if j["stage"] == "cubes" and j["task"] in ("pretrain", "ncc")]
        checks = growth([j for j in jobs if j["stage"] in ("download", "resample")], doubled) + growth(half, full_cubes)
    report = {
        "params": str(args.params), "paper": str(args.paper), "tiny": args.tiny,
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 cwd=REPO).stdout.strip(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "omp_threads": os.environ.get("OMP_NUM_THREADS", "2"),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "total_wall_s": time.perf_counter() - started,
        "startup_s": {"wall": start[0], "cpu": start[1]},
        "jobs": jobs, "projection": project(jobs, paper, start), "growth": checks,
        "checkpoints": checkpoint_rows(paper), "gpu": gpu_rows(paper),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "bench_scale_tiny" if args.tiny else "bench_scale"
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    (args.out / f"{name}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
