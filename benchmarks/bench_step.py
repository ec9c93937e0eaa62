"""Benchmark: full pretraining steps configured by a params file (samples/s, peak memory,
the share of the step outside convolutions) and data-loading headroom.

The method's whole configuration (width, loss, target mode, ablations, corruption,
augmentation) is read from ``--params``, as the pretrain stage reads it
(benchmarks/steps.py), so ``--params configs/paper.yaml --method pcrl`` measures the
release-faithful configuration of the paper (NCE loss, base 32, 64x64x32 cubes).
Each measurement runs in a fresh subprocess so that its peak memory (CPU: maximum resident
set; CUDA: ``torch.cuda.max_memory_allocated``) is its own; on CUDA with AMP off and as the
params say (the ratio is the AMP speed-up). The loading check times a DataLoader over pair
files alone: when it delivers more samples/s than the step consumes, loading never starves
the device.

    python benchmarks/bench_step.py --params configs/paper.yaml --batch 2 --steps 3
    python benchmarks/bench_step.py --params configs/paper.yaml --setting 2d --steps 1   # ResNet-18, 64 x 224^2
    python benchmarks/bench_step.py --params params.yaml --params configs/paper.yaml --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _measure(params: Path, method: str, device: str, steps: int, amp: str | None, batch: int | None,
             setting: str = "3d") -> dict:
    """``steps`` timed steps (after 1 warm-up) in this process, then a profiled pair."""
    import torch

    from steps import build_step, outside_convolutions, synchronize

    dev = torch.device(device)
    step = build_step(params, method, dev, amp=amp, batch=batch, setting=setting)
    step.run()  # warm-up (allocations, cuDNN autotuning)
    synchronize(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step.run()
    synchronize(dev)
    elapsed = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {
        "params": str(params), "setting": setting, "method": method, "amp": step.amp, "batch": step.batch,
        "size": list(step.size),
        "seconds_per_step": elapsed / steps, "samples_per_s": step.batch * steps / elapsed,
        "peak_mem_mib": peak, "outside_conv_share": outside_convolutions(step, dev, steps=1),
        "torch_threads": torch.get_num_threads(),
    }


def loader_throughput(size: tuple[int, ...], batch: int, workers: int, n_pairs: int = 256) -> float:
    """Samples/s a DataLoader over .npy pair files (float16, as the cubes stage writes) delivers."""
    import numpy as np
    import torch

    from pcrl.preprocessing.pairs import PairsDataset

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        files = []
        for i in range(8):
            path = Path(tmp) / f"case{i}.npy"
            shape = (*size, 1) if len(size) == 2 else size  # 2D pairs are stored as (x, y, 1)
            np.save(path, rng.random((n_pairs // 8, 2, *shape), dtype=np.float32).astype(np.float16))
            files.append(path)
        loader = torch.utils.data.DataLoader(PairsDataset(files, spatial_dims=len(size)), batch_size=batch,
                                             shuffle=True, num_workers=workers)
        start = time.perf_counter()
        count = sum(x1.shape[0] for x1, _ in loader)
        return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, action="append", help="params file(s); default params.yaml")
    parser.add_argument("--method", default="pcrl", choices=["pcrl", "genesis", "moco"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, help="per-device batch (default: the file's pretrain.batch_size)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the loading check")
    parser.add_argument("--setting", choices=["3d", "2d"], default="3d",
                        help="3d: pretrain (LUNA16 cubes); 2d: pretrain2d (ChestX-ray14, ResNet-18 U-Net)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", nargs=2, metavar=("PARAMS", "AMP"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:  # one measurement in a fresh process
        path, amp = args.child
        print(json.dumps(_measure(Path(path), args.method, args.device, args.steps,
                                  None if amp == "params" else amp, args.batch, args.setting)))
        return 0

    files = args.params or [Path("params.yaml")]
    amps = ["off", "params"] if args.device.startswith("cuda") else ["params"]
    rows = []
    for path in files:
        for amp in amps:
            cmd = [sys.executable, __file__, "--method", args.method, "--device", args.device,
                   "--steps", str(args.steps), "--setting", args.setting, "--child", str(path), amp]
            if args.batch:
                cmd += ["--batch", str(args.batch)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{path} {args.method} amp={row['amp']:4s} batch {row['batch']:3d} {row['size']}: "
                  f"{row['samples_per_s']:8.2f} samples/s, {row['seconds_per_step']:7.3f} s/step, "
                  f"peak {row['peak_mem_mib']:8.0f} MiB, {100 * row['outside_conv_share']:4.1f} % outside "
                  "convolutions")
    loading = {}
    for row in rows:
        key = f"{row['params']}:{row['batch']}"
        if key not in loading:
            loading[key] = loader_throughput(tuple(row["size"]), row["batch"], args.workers)
        print(f"{row['params']} loader {loading[key]:8.1f} samples/s vs step {row['samples_per_s']:8.2f}: "
              f"{'loading keeps up' if loading[key] > row['samples_per_s'] else 'LOADING STARVES THE DEVICE'}")
    result = {"device": args.device, "platform": platform.platform(), "cpus": os.cpu_count(),
              "steps": rows, "loader_samples_per_s": loading}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
