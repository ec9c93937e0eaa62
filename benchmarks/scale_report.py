"""benchmarks/bench_scale.py's report: checkpoint disk, GPU-hour upper bounds from bench_step.py's
CPU figures, and the markdown tables.

GPU hours: bench_step.py measures seconds per sample of a full pretraining step at the
paper's size; measured on CPU, they are an UPPER BOUND of a GPU's (no GPU was available).
Its JSON (``benchmarks/out/step3d.json``, ``step2d.json``, ``step3d_genesis.json``) is read
when present:

    python benchmarks/bench_step.py --params configs/paper.yaml --batch 2 --steps 2 --out benchmarks/out/step3d.json
    python benchmarks/bench_step.py --params configs/paper.yaml --setting 2d --batch 8 --steps 2 \\
        --out benchmarks/out/step2d.json
    python benchmarks/bench_step.py --params configs/paper.yaml --method genesis --batch 2 --steps 2 \\
        --out benchmarks/out/step3d_genesis.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scale_projection import checkpoint_bytes, gpu_hours_upper_bound

OUT = Path(__file__).resolve().parent / "out"
#: ChestX-ray14's official split: 86,524 train_val and 25,596 test images (Wang et al., 2017).
CHEST_TRAIN_VAL = 86_524
LUNA16_SCANS = 888
LUNA16_NODULES = 1_186  # annotations.csv: the NCC positives (one candidate each, an approximation)
TRAINING_CASES = {"lcs": 131, "bms": 484}  # labelled training volumes of Task03 / Task01
GIB = 2**30


def _parameters(arch: str, base: int, pretraining: bool) -> int:
    from pcrl.networks.factory import pretraining_network, restoration_network

    if pretraining:
        net = pretraining_network(arch, in_channels=1, base=base, norm="batch", proj_dim=128)
    else:
        net = restoration_network(arch, in_channels=1, base=base, norm="batch")
    return sum(p.numel() for p in net.parameters())


def training_runs(paper: dict[str, Any]) -> dict[str, int]:
    """Training runs of the paper config: pretrainings per setting, fine-tunes per setting."""
    finetune = paper["finetune"]
    per_task = len(finetune["inits"]) * len(finetune["fractions"]) * len(finetune["seeds"])
    chest = finetune.get("chest14", {})
    return {"pretrain": len(paper["pretrain"]["methods"]), "pretrain2d": len(paper["pretrain2d"]["methods"]),
            "finetune": 3 * per_task,
            "finetune_chest14": len(chest.get("inits", finetune["inits"])) * len(finetune["fractions"])
            * len(finetune["seeds"])}


def checkpoint_rows(paper: dict[str, Any]) -> list[dict[str, Any]]:
    """Checkpoint disk per training family (3 float32 copies of the parameters per run)."""
    runs = training_runs(paper)
    base3d, base2d = paper["pretrain"]["network"]["base"], paper["pretrain2d"]["settings"]["network"]["base"]
    nets = {"pretrain": ("unet3d", base3d, True), "pretrain2d": ("resnet18_unet2d", base2d, True),
            "finetune": ("unet3d", base3d, False), "finetune_chest14": ("resnet18_unet2d", base2d, False)}
    rows = []
    for family, (arch, base, pretraining) in nets.items():
        parameters = _parameters(arch, base, pretraining)
        rows.append({"family": family, "runs": runs[family], "parameters": parameters,
                     "disk_bytes": checkpoint_bytes(parameters, runs=runs[family])})
    return rows


def _seconds_per_sample(name: str) -> float | None:
    path = OUT / name
    if not path.exists():
        return None
    step = json.loads(path.read_text())["steps"][0]
    return float(step["seconds_per_step"]) / float(step["batch"])


def gpu_rows(paper: dict[str, Any]) -> list[dict[str, Any]]:
    """Pretraining GPU-hours (CPU upper bound) from bench_step.py's JSON, where measured."""
    runs = training_runs(paper)
    pre, pre2d = paper["pretrain"], paper["pretrain2d"]["settings"]
    groups = paper["cubes"]["pretrain"]["groups"]
    train_share = len(groups["train"]) / sum(len(v) for v in groups.values())
    samples3d = round(LUNA16_SCANS * train_share) * paper["cubes"]["pretrain"]["pairs_per_case"]
    samples2d = round(CHEST_TRAIN_VAL * (1 - paper["cubes"]["pretrain2d"]["val"])) \
        * paper["cubes"]["pretrain2d"]["pairs_per_image"]
    rows = []
    runs_of = {**runs, "finetune_ncc": runs["finetune"] // 3, "finetune_lcs": runs["finetune"] // 3,
               "finetune_bms": runs["finetune"] // 3}
    for family, name, samples, epochs in (("pretrain", "step3d.json", samples3d, pre["epochs"]),
                                          ("pretrain2d", "step2d.json", samples2d, pre2d["epochs"]),
                                          *_finetune_samples(paper)):
        seconds = _seconds_per_sample(name)
        if seconds is not None:
            rows.append({"family": family, "seconds_per_sample_cpu": seconds, "samples_per_epoch": samples,
                         "epochs": epochs, "runs": runs_of[family],
                         "gpu_hours_upper_bound": gpu_hours_upper_bound(seconds, samples_per_epoch=samples,
                                                                        epochs=epochs, runs=runs_of[family])})
    return rows


def _finetune_samples(paper: dict[str, Any]) -> list[tuple[str, str, int, int]]:
    """Fine-tunes: (family, bench_step JSON, samples per epoch averaged over the label
    fractions, maximum epochs). One forward and backward of the U-Net a sample (Models
    Genesis' step is the proxy); early stopping ends most runs sooner: an upper bound."""
    f = paper["finetune"]
    share = sum(f["fractions"]) / len(f["fractions"])
    ncc_groups = paper["cubes"]["ncc"]["groups"]
    ncc_train = len(ncc_groups["train"]) / sum(len(v) for v in ncc_groups.values())
    ncc = LUNA16_NODULES * ncc_train * (1 + f["ncc"]["negatives_per_positive"])
    out = [("finetune_ncc", "step3d_genesis.json", round(ncc * share), f["ncc"]["epochs"])]
    for task in ("lcs", "bms"):
        split = paper["cubes"][task]
        volumes = TRAINING_CASES[task] * (1 - split["val"] - split["test"])
        out.append((f"finetune_{task}", "step3d_genesis.json",
                    round(volumes * f[task]["patches_per_volume"] * share), f[task]["epochs"]))
    chest = round(CHEST_TRAIN_VAL * (1 - paper["cubes"]["chest14"]["val"]) * share)
    out.append(("finetune_chest14", "step2d.json", chest, f["chest14"]["epochs"]))
    return out


def _mib(value: float) -> str:
    return f"{value:,.0f}"


def markdown(report: dict[str, Any]) -> str:
    """The report's tables: measured jobs, projection, growth check, checkpoints, GPU hours."""
    m = report["machine"]
    lines = [f"# bench_scale ({'tiny' if report['tiny'] else report['params']}), commit {report['commit']}", "",
             f"{m['cpus']} CPUs, OMP_NUM_THREADS={m['omp_threads']}, load average before "
             f"{m['loadavg_before'][0]:.2f}, after {m['loadavg_after'][0]:.2f}; total {report['total_wall_s']:.0f} s"
             f"; a job's start-up (imports): {report['startup_s']['wall']:.1f} s wall, "
             f"{report['startup_s']['cpu']:.1f} s CPU", "", "## Measured jobs", "",
             "| stage | dataset/task | cases | wall s | CPU s | peak RSS MiB | MiB written |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for j in report["jobs"]:
        lines.append(f"| {j['stage']} | {j.get('task') or j['dataset']} | {j['cases']} | {j['wall_s']:.1f} | "
                     f"{j['cpu_s']:.1f} | {_mib(j['peak_rss_mib'])} | {j['bytes_written'] / 2**20:,.1f} |")
    lines += ["", "## Projected to the paper's data (configs/paper.yaml shard counts)", "",
              "| stage | dataset/task | paper cases | jobs | CPU-h | h per job | peak RSS MiB per job | disk GiB |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in report["projection"]:
        lines.append(f"| {r['stage']} | {r['name']} | {r['paper_cases']:,} | {r['jobs']} | {r['cpu_hours']:.2f} | "
                     f"{r['job_runtime_hours']:.2f} | {_mib(r['peak_rss_mib'])} | {r['disk_bytes'] / GIB:,.1f} |")
    lines += ["", "phantom rows: their disk is the raw data's; their time is this rehearsal's generation, "
              "not a real run's (which downloads)."]
    if report["growth"]:
        lines += ["", "## Peak RSS against cases per job (must not grow with the dataset)", "",
                  "| stage | dataset/task | cases per job | peak RSS MiB |", "|---|---|---|---|"]
        for g in report["growth"]:
            lines.append(f"| {g['stage']} | {g['name']} | {g['cases_per_job'][0]} -> {g['cases_per_job'][1]} | "
                         f"{_mib(g['peak_rss_mib'][0])} -> {_mib(g['peak_rss_mib'][1])} |")
    lines += ["", "## Checkpoints (3 float32 copies of the parameters per run)", "",
              "| family | runs | parameters | disk GiB |", "|---|---:|---:|---:|"]
    for c in report["checkpoints"]:
        lines.append(f"| {c['family']} | {c['runs']} | {c['parameters']:,} | {c['disk_bytes'] / GIB:,.1f} |")
    if report.get("gpu"):
        lines += ["", "## GPU-hours: CPU UPPER BOUND (bench_step.py on CPU, no GPU available)", "",
                  "| family | s/sample (CPU) | samples/epoch | epochs | runs | GPU-h (upper bound) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for g in report["gpu"]:
            lines.append(f"| {g['family']} | {g['seconds_per_sample_cpu']:.2f} | {g['samples_per_epoch']:,} | "
                         f"{g['epochs']} | {g['runs']} | {g['gpu_hours_upper_bound']:,.0f} |")
    return "\n".join(lines) + "\n"
