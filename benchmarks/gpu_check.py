"""The five-minute GPU check: everything to measure on a GPU, in one run, one JSON, one table.

At paper size (the method, network, loss and cube size of ``--params``, default
configs/paper.yaml) on one GPU:

1. the PCRL step, samples/s, with AMP off / bf16 / fp16, then with ``channels_last_3d``
   and with ``torch.compile`` for the fastest AMP mode;
2. the fraction of time the GPU is busy when the real DataLoader (PairsDataset over pair
   files, ``--workers`` processes) feeds it, and the steps that waited for data;
3. peak GPU memory at the params' batch, and the largest batch that fits (doubling);
4. a DDP step through NCCL in a process group of one GPU (samples/s against the plain step);
5. whether a run resumed from its epoch-1 checkpoint ends with the same weights as an
   uninterrupted run under ``deterministic: true`` (the engine, on pair files);
6. the 2D setting's PCRL step (ResNet-18 U-Net, ``cubes.pretrain2d`` crops, the 2D batch
   of ``pretrain2d.settings``), samples/s per AMP mode;
7. the corruption chain with the target's transform (benchmarks/bench_transforms.py,
   batch 16 of 64x64x32) batched on the device, against the per-sample NumPy reference
   on one CPU thread, in the same run.

``--tiny`` runs the same sections on the CPU with a tiny network and cube (gloo instead of
NCCL, no compile, fp16 skipped, one timed step a figure): CI runs it so the script never
rots.

    python benchmarks/gpu_check.py --out gpu_check.json          # on a GPU machine, < 5 min
    python benchmarks/gpu_check.py --tiny --out gpu_check.json   # anywhere
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_transforms  # noqa: E402 - after the path set-up
from steps import build_step, synchronize  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = {"base": 4, "queue_size": 64}  # overrides of the method's mapping for --tiny


def _rate(step: Any, device: torch.device, steps: int) -> float:
    step.run()  # warm-up
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step.run()
    synchronize(device)
    return step.batch * steps / (time.perf_counter() - start)


def _build(args: argparse.Namespace, device: torch.device, **kw: Any) -> Any:
    overrides = TINY if args.tiny else None
    return build_step(args.params, args.method, device, batch=kw.pop("batch", args.batch), overrides=overrides,
                      **kw)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def section_amp(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Samples/s per AMP mode, then channels_last_3d and torch.compile on the fastest."""
    modes = ["off", "bf16", "fp16"] if device.type == "cuda" else ["off", "bf16"]
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        modes.remove("bf16")
    rates = {mode: _rate(_build(args, device, amp=mode), device, args.steps) for mode in modes}
    best = max(rates, key=lambda m: rates[m])
    variants = {f"{best}": rates[best],
                f"{best}+channels_last_3d": _rate(_build(args, device, amp=best, channels_last=True), device,
                                                  args.steps)}
    if args.compile:
        try:
            variants[f"{best}+compile"] = _rate(_build(args, device, amp=best, compile_step=True), device,
                                                args.steps)
        except Exception as exc:  # a compiler missing on the machine: say so, measure the rest
            variants[f"{best}+compile"] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
    numeric = {k: v for k, v in variants.items() if isinstance(v, float)}
    return {"samples_per_s": rates, "fastest_amp": best, "variants": variants,
            "fastest": max(numeric, key=lambda k: numeric[k])}


def section_amp_2d(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The 2D setting's step, samples/s per AMP mode (its batch: ``pretrain2d.settings``)."""
    modes = ["off", "bf16", "fp16"] if device.type == "cuda" else ["off", "bf16"]
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        modes.remove("bf16")
    shape: dict[str, Any] = {"batch": None, "size": None}
    rates: dict[str, Any] = {}
    for mode in modes:
        try:
            step = _build(args, device, amp=mode, batch=2 if args.tiny else None, setting="2d")
            shape = {"batch": step.batch, "size": list(step.size)}
            rates[mode] = _rate(step, device, args.steps)
        except RuntimeError as exc:  # the release's batch 64 at 224 x 224 needs ~22 GB
            if not _is_oom(exc):
                raise
            rates[mode] = "out of memory"
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return {**shape, "samples_per_s": rates}


def section_corruptions(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The batched corruption chain on ``device`` against the NumPy reference (3 seeds;
    --tiny: 2 seeds of a batch of 4)."""
    size = ["24", "24", "16"] if args.tiny else ["64", "64", "32"]
    batch = "4" if args.tiny else "16"  # the reference costs ~0.1 s a crop at any size
    threads = torch.get_num_threads()
    figures = bench_transforms.main(["--device", device.type, "--size", *size, "--batch", batch, "--repeats",
                                     "2" if args.tiny else "3", "--threads", "1" if device.type == "cpu" else "0"])
    torch.set_num_threads(threads)
    return {"size": [int(v) for v in size], "batch": figures["batch_shape"][0],
            "samples_per_s": figures["batched"]["samples_per_s"],
            "reference_samples_per_s": figures["reference"]["samples_per_s"],
            "speedup": figures["speedups"][figures["clock"]]["with_target"]}


def _pair_files(folder: Path, size: tuple[int, ...], count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    files = []
    for i in range(4):
        path = folder / f"case{i}.npy"
        np.save(path, rng.random((count // 4, 2, *size), dtype=np.float32).astype(np.float16))
        files.append(path)
    return files


def section_feeding(args: argparse.Namespace, device: torch.device, amp: str) -> dict[str, Any]:
    """GPU busy fraction with the real loader: compute time / (compute + waiting for data)."""
    from pcrl.preprocessing.pairs import PairsDataset

    step = _build(args, device, amp=amp)
    with tempfile.TemporaryDirectory() as tmp:
        files = _pair_files(Path(tmp), step.size, step.batch * (args.steps + 2) * 2)
        loader = torch.utils.data.DataLoader(PairsDataset(files), batch_size=step.batch, shuffle=True,
                                             num_workers=args.workers, drop_last=True,
                                             pin_memory=device.type == "cuda")
        batches = iter(loader)
        next(batches)  # workers started
        waits, computes = [], []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            x1, x2 = next(batches)
            x1, x2 = x1.to(device, non_blocking=True), x2.to(device, non_blocking=True)
            t1 = time.perf_counter()
            step.run()
            synchronize(device)
            waits.append(t1 - t0)
            computes.append(time.perf_counter() - t1)
    busy = sum(computes) / (sum(computes) + sum(waits))
    starved = sum(w > 0.1 * c for w, c in zip(waits, computes))
    return {"busy_fraction": busy, "steps_waiting_for_data": starved, "steps": args.steps,
            "workers": args.workers, "median_wait_s": float(np.median(waits)),
            "median_step_s": float(np.median(computes))}


def section_memory(args: argparse.Namespace, device: torch.device, amp: str) -> dict[str, Any]:
    """Peak memory at the params' batch, then the largest batch (doubling) that trains."""
    step = _build(args, device, amp=amp)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step.run()
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    largest, batch = step.batch, step.batch * 2
    deadline = time.monotonic() + args.memory_seconds
    while batch <= args.max_batch and time.monotonic() < deadline:
        try:
            trial = _build(args, device, amp=amp, batch=batch)
            trial.run()
            synchronize(device)
            largest, batch = batch, batch * 2
        except Exception as exc:
            if not _is_oom(exc):
                raise
            break
        finally:
            trial = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return {"batch": step.batch, "peak_mib": peak, "largest_batch_that_fits": largest,
            "searched_up_to": min(batch, args.max_batch)}


def _ddp_worker(_rank: int, port: int, args: argparse.Namespace, device_type: str, amp: str, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    backend = "nccl" if device_type == "cuda" else "gloo"
    device = torch.device("cuda", 0) if device_type == "cuda" else torch.device("cpu")
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        ids = [0] if device_type == "cuda" else None
        step = _build(args, device, amp=amp, wrap=lambda m: DistributedDataParallel(m, device_ids=ids))
        rate = _rate(step, device, args.steps)
        Path(out).write_text(json.dumps({"backend": backend, "samples_per_s": rate}))
    finally:
        dist.destroy_process_group()


def section_ddp(args: argparse.Namespace, device: torch.device, amp: str, plain: float) -> dict[str, Any]:
    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ddp.json"
        mp.spawn(_ddp_worker, args=(port, args, device.type, amp, str(out)), nprocs=1, join=True)
        result = json.loads(out.read_text())
    result["vs_plain_step"] = result["samples_per_s"] / plain
    return result


def section_resume(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """deterministic: 2 epochs straight vs 1 epoch, stop, resume: the same weights?"""
    from pcrl.preprocessing.pairs import PairsDataset
    from pcrl.engine import TrainConfig, last_checkpoint, load_checkpoint, train

    def fresh() -> Any:
        return _build(args, device, amp="off").method

    size = _build(args, device, amp="off").size
    with tempfile.TemporaryDirectory() as tmp:
        files = _pair_files(Path(tmp), size, 8 * args.batch)
        data = PairsDataset(files)
        base = {"epochs": 2, "batch_size": args.batch, "lr": 0.01, "deterministic": True, "progress": False}
        train(fresh(), data, TrainConfig(**base), Path(tmp) / "straight", device=device)
        train(fresh(), data, TrainConfig(**base, stop_after_epoch=1), Path(tmp) / "cut", device=device)
        resumed = train(fresh(), data, TrainConfig(**base), Path(tmp) / "cut", device=device)
        a = load_checkpoint(last_checkpoint(Path(tmp) / "straight"))["method"]
        b = load_checkpoint(last_checkpoint(Path(tmp) / "cut"))["method"]
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    return {"resumed_epochs": resumed.epochs_run, "identical": not differing, "differing_tensors": differing[:5]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=REPO / "configs" / "paper.yaml")
    parser.add_argument("--method", default="pcrl", choices=["pcrl", "genesis", "moco"])
    parser.add_argument("--batch", type=int, help="per-GPU batch (default: the file's pretrain.batch_size)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--max-batch", type=int, default=1024)
    parser.add_argument("--memory-seconds", type=float, default=60.0)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also time torch.compile (default: on a GPU)")
    parser.add_argument("--tiny", action="store_true", help="CPU, tiny network and cubes (CI)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.tiny:
        args.params = REPO / "params.yaml"
        args.batch, args.steps, args.workers = args.batch or 2, 1, min(args.workers, 2)
        args.max_batch, args.memory_seconds = min(args.max_batch, 8), min(args.memory_seconds, 20.0)
        torch.set_num_threads(1)
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if args.compile is None:
        args.compile = device.type == "cuda"
    started = time.perf_counter()
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
                              "params": str(args.params), "method": args.method, "tiny": args.tiny,
                              "torch": torch.__version__, "platform": platform.platform()}
    report["amp"] = section_amp(args, device)
    best = report["amp"]["fastest_amp"]
    report["feeding"] = section_feeding(args, device, best)
    report["memory"] = section_memory(args, device, best)
    report["ddp"] = section_ddp(args, device, best, report["amp"]["samples_per_s"][best])
    report["resume"] = section_resume(args, device)
    report["amp_2d"] = section_amp_2d(args, device)
    report["corruptions"] = section_corruptions(args, device)
    report["seconds"] = time.perf_counter() - started
    print_table(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def print_table(report: dict[str, Any]) -> None:
    rows = [(f"step amp={mode}", f"{rate:.2f} samples/s") for mode, rate in report["amp"]["samples_per_s"].items()]
    rows += [(f"step {name}", f"{v:.2f} samples/s" if isinstance(v, float) else v)
             for name, v in report["amp"]["variants"].items()]
    feed = report["feeding"]
    rows += [("GPU busy with the real loader", f"{100 * feed['busy_fraction']:.1f} % "
              f"({feed['steps_waiting_for_data']}/{feed['steps']} steps waited, {feed['workers']} workers)")]
    mem = report["memory"]
    peak = "n/a on CPU" if mem["peak_mib"] is None else f"{mem['peak_mib']:.0f} MiB"
    rows += [(f"peak memory at batch {mem['batch']}", peak),
             ("largest batch that fits", f"{mem['largest_batch_that_fits']} (searched up to {mem['searched_up_to']})")]
    ddp = report["ddp"]
    rows += [(f"DDP step ({ddp['backend']}, 1 process)",
              f"{ddp['samples_per_s']:.2f} samples/s ({ddp['vs_plain_step']:.2f}x plain)")]
    res = report["resume"]
    rows += [("resume == uninterrupted (deterministic)",
              f"{res['identical']} (resumed epochs {res['resumed_epochs']})"),
             ]
    rows += [(f"2D step amp={mode} (batch {report['amp_2d']['batch']}, {report['amp_2d']['size']})",
              f"{rate:.2f} samples/s" if isinstance(rate, float) else rate)
             for mode, rate in report["amp_2d"]["samples_per_s"].items()]
    cor = report["corruptions"]
    rows += [(f"corruption + target, batch {cor['batch']} of {cor['size']}",
              f"{cor['samples_per_s']:.1f} samples/s, {cor['speedup']:.0f}x the NumPy reference "
              f"({cor['reference_samples_per_s']:.1f} samples/s, 1 CPU thread)")]
    rows += [("total time", f"{report['seconds']:.0f} s on {report['device']}")]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
