"""Benchmark: full PCRL training steps (samples/s, peak memory) and data-loading headroom.

Each configuration runs in a fresh subprocess so that its peak memory (CPU: the process's
maximum resident set; CUDA: ``torch.cuda.max_memory_allocated``) is its own:

- ``demo``: the demo params (base width 4, 32x32x16 cubes, batch 8);
- ``paper``: the paper's network (base width 32, 64x64x32 cubes) at a per-device batch
  (``--paper-batch``, 4 = the release's 16 over 4 GPUs).

On CUDA each configuration is measured with AMP off and on in the same run (the ratio is
the AMP speed-up). The data-loading check times a DataLoader over phantom-sized pair files
alone: when it delivers more samples/s than the step consumes, loading never starves the
device.

    python benchmarks/bench_step.py --device cpu --steps 3 --out benchmarks/out/step.json
    python benchmarks/bench_step.py --device cuda --steps 20
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

CONFIGS = {
    "demo": {"base": 4, "size": (32, 32, 16), "batch": 8, "queue": 256},
    "paper": {"base": 32, "size": (64, 64, 32), "batch": 4, "queue": 16384},
}


def _measure(name: str, device: str, steps: int, amp: str, batch: int | None) -> dict:
    """Run ``steps`` timed PCRL steps (after 1 warm-up) of one configuration, in this process."""
    import torch

    from pcrl.engine import resolve_amp
    from pcrl.methods import PCRL, PCRLConfig

    cfg = dict(CONFIGS[name])
    if batch:
        cfg["batch"] = batch
    torch.manual_seed(0)
    dev = torch.device(device)
    method = PCRL(PCRLConfig(base=cfg["base"], queue_size=cfg["queue"], loss="infonce")).to(dev)
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    gen = torch.Generator(device=dev).manual_seed(0)
    x1 = torch.rand(cfg["batch"], 1, *cfg["size"], device=dev)
    x2 = torch.rand(cfg["batch"], 1, *cfg["size"], device=dev)
    mode = resolve_amp(amp, dev)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype is torch.float16)

    def step() -> None:
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = method(x1, x2, gen)["loss"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        method.after_step()

    step()  # warm-up (allocations, cuDNN autotuning)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if dev.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "config": name, "amp": str(mode), "batch": cfg["batch"], "size": list(cfg["size"]), "base": cfg["base"],
        "seconds_per_step": elapsed / steps, "samples_per_s": cfg["batch"] * steps / elapsed, "peak_mem_mib": peak,
    }


def _loader_throughput(size: tuple[int, int, int], batch: int, workers: int, n_pairs: int = 256) -> float:
    """Samples/s a DataLoader over .npy pair files delivers on its own."""
    import numpy as np
    import torch

    from pcrl.data.pairs import PairsDataset

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        files = []
        for i in range(8):
            path = Path(tmp) / f"case{i}.npy"
            np.save(path, rng.random((n_pairs // 8, 2, *size), dtype=np.float32).astype(np.float16))
            files.append(path)
        loader = torch.utils.data.DataLoader(PairsDataset(files), batch_size=batch, shuffle=True, num_workers=workers)
        start = time.perf_counter()
        count = sum(x1.shape[0] for x1, _ in loader)
        return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--paper-batch", type=int, default=4)
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers of the loading check")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "AMP"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:  # one measurement in a fresh process
        name, amp = args.child
        batch = args.paper_batch if name == "paper" else None
        print(json.dumps(_measure(name, args.device, args.steps, amp, batch)))
        return 0

    amps = ["off", "auto"] if args.device.startswith("cuda") else ["off"]
    rows = []
    for name in args.configs:
        for amp in amps:
            cmd = [sys.executable, __file__, "--device", args.device, "--steps", str(args.steps),
                   "--paper-batch", str(args.paper_batch), "--child", name, amp]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{name:6s} amp={row['amp']:10s} batch {row['batch']:3d}: {row['samples_per_s']:8.2f} samples/s, "
                  f"{row['seconds_per_step']:7.3f} s/step, peak {row['peak_mem_mib']:8.0f} MiB")
    loading = {}
    for name in args.configs:
        cfg = CONFIGS[name]
        batch = args.paper_batch if name == "paper" else cfg["batch"]
        loading[name] = _loader_throughput(cfg["size"], batch, args.workers)
        step_rate = max(r["samples_per_s"] for r in rows if r["config"] == name)
        print(f"{name:6s} loader {loading[name]:8.1f} samples/s vs step {step_rate:8.2f} samples/s: "
              f"{'loading keeps up' if loading[name] > step_rate else 'LOADING STARVES THE DEVICE'} "
              f"(x{loading[name] / step_rate:.1f})")
    result = {"device": args.device, "platform": platform.platform(), "cpus": os.cpu_count(),
              "steps": rows, "loader_samples_per_s": loading}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
