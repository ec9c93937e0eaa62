"""Benchmark: the fine-tuning patch loader at real volume sizes, NIfTI against arrays.

Writes synthetic resampled volumes of the typical sizes at 1 mm (assumed shapes, stated in
the output: LiTS ~384x384x432 one channel; BraTS 240x240x155, four channels) once as the
resample stage writes them without ``arrays`` (``.nii.gz``) and once with (``.npy``), then
times :class:`pcrl.finetune.datasets.PatchSet` in a DataLoader with ``--workers`` processes
on each: patches/s of ``--patch`` (64x64x32), K = ``--per-volume`` patches per item. Both are
measured in the same run; the ratio is what the arrays buy. The GPU side is the figure to
beat: a PCRL-sized 3D U-Net fine-tuning step consumes ``--gpu-patches-per-s`` patches/s
(an assumption unless measured by benchmarks/gpu_check.py; the default is stated in the
output).

    python benchmarks/bench_loader.py --out loader.json
    python benchmarks/bench_loader.py --dataset brats --volumes 4 --workers 2
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from pcrl.atomic import write_json
from pcrl.preprocessing.arrays import write_arrays
from pcrl.preprocessing.task_data import VolumeCase
from pcrl.finetune.datasets import PatchSet

#: Typical shapes after resampling to 1 mm (x, y, z) and channels: assumptions of the
#: benchmark, not measured here (no real data on this machine).
SHAPES = {"lits": ((384, 384, 432), 1, "lcs"), "brats": ((240, 240, 155), 4, "bms")}


def _write(folder: Path, index: int, shape: tuple[int, int, int], channels: int, rng: np.random.Generator,
           arrays: bool) -> VolumeCase:
    """One synthetic case: smooth-ish intensities, a blob of foreground labels."""
    from pcrl.io.images import array_to_image, write_image

    image = rng.random((channels, *shape), dtype=np.float32)
    label = np.zeros(shape, np.uint8)
    cx, cy, cz = (s // 2 for s in shape)
    label[cx - 40:cx + 40, cy - 40:cy + 40, cz - 30:cz + 30] = 1
    label[cx - 10:cx + 10, cy - 10:cy + 10, cz - 8:cz + 8] = 2
    case_id = f"case{index}"
    if arrays:
        return VolumeCase(case_id, folder / f"{case_id}.nii.gz", folder / f"{case_id}_label.nii.gz",
                          write_arrays(folder, case_id, image, label), folder)
    grid = {"spacing": (1.0, 1.0, 1.0), "origin": (0.0, 0.0, 0.0), "direction": tuple(np.eye(3).ravel())}
    if channels == 1:
        write_image(folder / f"{case_id}.nii.gz", array_to_image(image[0], **grid))
    else:  # 4D, channels as the last axis, as MSD Task01 ships them
        import SimpleITK as sitk

        vol = sitk.JoinSeries([array_to_image(channel, **grid) for channel in image])
        write_image(folder / f"{case_id}.nii.gz", vol)
    write_image(folder / f"{case_id}_label.nii.gz", array_to_image(label, **grid))
    return VolumeCase(case_id, folder / f"{case_id}.nii.gz", folder / f"{case_id}_label.nii.gz")


def _rate(cases: list[VolumeCase], task: str, patch: tuple[int, int, int], per_volume: int,
          workers: int, items: int) -> float:
    """Patches per second of the loader over ``items`` items (after the workers started)."""
    dataset = PatchSet(cases, task, patch, per_volume, foreground_prob=0.5, check=False)
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=items + workers)
    loader = DataLoader(dataset, batch_size=1, sampler=sampler, num_workers=workers,
                        persistent_workers=False, prefetch_factor=2 if workers else None)
    stream = iter(loader)
    for _ in range(workers or 1):  # start-up (process spawn, imports) is not the steady rate
        next(stream)
    start = time.perf_counter()
    count = 0
    for images, _ in stream:
        count += images.shape[1]
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(SHAPES), default="lits")
    parser.add_argument("--volumes", type=int, default=3)
    parser.add_argument("--patch", type=int, nargs=3, default=[64, 64, 32])
    parser.add_argument("--per-volume", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--items", type=int, default=200, help="items timed on the arrays")
    parser.add_argument("--nifti-items", type=int, default=8, help="items timed on .nii.gz")
    parser.add_argument("--gpu-patches-per-s", type=float, default=500.0,
                        help="patches/s a GPU fine-tuning step consumes (assumed unless measured)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    shape, channels, task = SHAPES[args.dataset]
    patch = tuple(args.patch)
    rng = np.random.default_rng(0)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "nifti").mkdir()
        (folder / "arrays").mkdir()
        print(f"writing {args.volumes} synthetic {args.dataset} volumes {shape} x {channels} ch ...", flush=True)
        nifti = [_write(folder / "nifti", i, shape, channels, rng, False) for i in range(args.volumes)]
        arrays = [_write(folder / "arrays", i, shape, channels, rng, True) for i in range(args.volumes)]
        from_nifti = _rate(nifti, task, patch, args.per_volume, args.workers, args.nifti_items)
        from_arrays = _rate(arrays, task, patch, args.per_volume, args.workers, args.items)
    result = {
        "dataset": args.dataset, "assumed_shape_1mm": list(shape), "channels": channels,
        "patch": list(patch), "patches_per_item": args.per_volume, "workers": args.workers,
        "patches_per_s": {"nifti": from_nifti, "arrays": from_arrays},
        "speedup": from_arrays / from_nifti,
        "gpu_patches_per_s": args.gpu_patches_per_s,
        "gpu_figure": "assumed" if args.gpu_patches_per_s == 500.0 else "given",
        "keeps_up": from_arrays >= args.gpu_patches_per_s,
        "cpus": len(os.sched_getaffinity(0)), "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    print(f"{args.dataset} {shape}x{channels}, patch {list(patch)}, {args.workers} workers:")
    print(f"  .nii.gz  {from_nifti:9.1f} patches/s")
    print(f"  arrays   {from_arrays:9.1f} patches/s   ({result['speedup']:.0f}x)")
    print(f"  a GPU step consumes {args.gpu_patches_per_s:.0f} patches/s ({result['gpu_figure']}): "
          f"{'keeps up' if result['keeps_up'] else 'the GPU would wait'}")
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
