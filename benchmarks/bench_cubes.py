"""Benchmark: vectorised PCRL pair sampling against a per-voxel reference of the same rule.

The reference (``reference_sample_pair``) follows the sampling rule of ``pcrl.preprocessing.pair_sampling``
step by step with Python loops, as the release did: one candidate pair at a time, IoU and
foreground fraction counted voxel by voxel, crops copied voxel by voxel. Both share the
foreground mask and the trilinear resize (the release also resized with a library call), so
the ratio measures the candidate search and the cropping.

    python benchmarks/bench_cubes.py --pairs 8 --volume 160 160 120 --out bench.json
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from pcrl.atomic import write_json
from pcrl.preprocessing.boxes import foreground_mask
from pcrl.preprocessing.pair_config import PairConfig
from pcrl.preprocessing.pair_sampling import resize_crops, sample_pairs
from pcrl.errors import DataError

HU_LOW, HU_HIGH = -1000.0, 1000.0


# ---------------------------------------------------------------- reference (slow)


def reference_iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """IoU of two half-open boxes by visiting every voxel of ``a`` and testing it against ``b``."""
    inter = 0
    for i in range(a[0], a[3]):
        for j in range(a[1], a[4]):
            for k in range(a[2], a[5]):
                if b[0] <= i < b[3] and b[1] <= j < b[4] and b[2] <= k < b[5]:
                    inter += 1
    volume_a = (a[3] - a[0]) * (a[4] - a[1]) * (a[5] - a[2])
    volume_b = (b[3] - b[0]) * (b[4] - b[1]) * (b[5] - b[2])
    union = volume_a + volume_b - inter
    return inter / union if union else 0.0


def reference_fraction(mask: np.ndarray, box: tuple[int, ...]) -> float:
    """Foreground fraction of a box, counting its voxels one by one."""
    count = total = 0
    for i in range(box[0], box[3]):
        for j in range(box[1], box[4]):
            for k in range(box[2], box[5]):
                total += 1
                if mask[i, j, k]:
                    count += 1
    return count / total


def reference_crop(volume: np.ndarray, box: tuple[int, ...]) -> np.ndarray:
    """Copy a box out of the volume voxel by voxel."""
    out = np.empty((box[3] - box[0], box[4] - box[1], box[5] - box[2]), dtype=np.float32)
    for i in range(box[0], box[3]):
        for j in range(box[1], box[4]):
            for k in range(box[2], box[5]):
                out[i - box[0], j - box[1], k - box[2]] = volume[i, j, k]
    return out


def _reference_size_pairs(config: PairConfig, shape: tuple[int, ...]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Size pairs (clipped to the volume) whose corner-aligned boxes have IoU > min_iou."""
    sizes = [tuple(min(s, n) for s, n in zip(size, shape)) for size in config.crop_sizes]
    pairs = []
    for s1 in sizes:
        for s2 in sizes:
            inter = min(s1[0], s2[0]) * min(s1[1], s2[1]) * min(s1[2], s2[2])
            union = s1[0] * s1[1] * s1[2] + s2[0] * s2[1] * s2[2] - inter
            if inter / union > config.min_iou:
                pairs.append((s1, s2))
    return pairs


def reference_sample_pair(
    volume: np.ndarray, config: PairConfig, rng: np.random.Generator, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One pair by the module's rule, one candidate at a time with per-voxel counting.

    Returns cubes (2, *cube_size) float32 and boxes (2, 6).
    """
    mask = foreground_mask(volume, config) if mask is None else mask
    pairs = _reference_size_pairs(config, volume.shape)
    for _ in range(config.max_tries):
        s1, s2 = pairs[int(rng.integers(len(pairs)))]
        start1 = [int(rng.integers(0, n - s + 1)) for n, s in zip(volume.shape, s1)]
        start2 = [
            int(rng.integers(max(0, a - t + 1), min(n - t, a + s - 1) + 1))
            for n, a, s, t in zip(volume.shape, start1, s1, s2)
        ]
        box1 = (*start1, *(a + s for a, s in zip(start1, s1)))
        box2 = (*start2, *(a + s for a, s in zip(start2, s2)))
        if reference_iou(box1, box2) <= config.min_iou:
            continue
        if all(config.min_fraction <= reference_fraction(mask, b) <= config.max_fraction for b in (box1, box2)):
            crops = [torch.from_numpy(reference_crop(volume, b))[None] for b in (box1, box2)]
            cubes = [resize_crops(crop, config.cube_size)[0] for crop in crops]
            return torch.stack(cubes).numpy(), np.array([box1, box2])
    raise DataError(f"reference: no valid pair in {config.max_tries} candidates")


# ------------------------------------------------------------------------ inputs


def synthetic_chest(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """A lung-like CT volume (x, y, z), HU scaled from [-1000, 1000] to [0, 1].

    Air outside an elliptic body (soft tissue, 40 HU), two lungs (-850 HU) with small dense
    vessels, a spine (700 HU) and 20 HU noise.
    """
    x, y, z = (np.linspace(-1, 1, n)[(slice(None),) + (None,) * (2 - a)] for a, n in enumerate(shape))
    hu = np.full(shape, -1000.0, dtype=np.float32)
    body = (x / 0.9) ** 2 + (y / 0.7) ** 2 < 1
    hu[np.broadcast_to(body, shape)] = 40.0
    lungs = ((np.abs(x) - 0.42) / 0.3) ** 2 + (y / 0.5) ** 2 + (z / 0.85) ** 2 < 1
    hu[lungs] = -850.0
    vessels = lungs & (rng.random(shape) < 0.03)
    hu[vessels] = 0.0
    spine = (x / 0.1) ** 2 + ((y + 0.55) / 0.1) ** 2 < 1
    hu[np.broadcast_to(spine, shape)] = 700.0
    hu += rng.normal(0.0, 20.0, size=shape).astype(np.float32)
    return np.clip((hu - HU_LOW) / (HU_HIGH - HU_LOW), 0.0, 1.0)


def read_case(path: Path) -> np.ndarray:
    """A resampled case (NIfTI) as an (x, y, z) float32 array."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(2, 1, 0).astype(np.float32)


# ----------------------------------------------------------------------- timing


def time_vectorised(volume: np.ndarray, n_pairs: int, config: PairConfig, seed: int) -> float:
    """Seconds for one ``sample_pairs`` call drawing ``n_pairs`` pairs."""
    start = time.perf_counter()
    sample_pairs(volume, n_pairs, config, np.random.default_rng(seed), case_id="benchmark")
    return time.perf_counter() - start


def time_reference(volume: np.ndarray, n_pairs: int, config: PairConfig, seed: int) -> float:
    """Seconds for ``n_pairs`` reference pairs (mask computed once, as the vectorised call does)."""
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    mask = foreground_mask(volume, config)
    for _ in range(n_pairs):
        reference_sample_pair(volume, config, rng, mask)
    return time.perf_counter() - start


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8, help="pairs drawn by the vectorised sampler")
    parser.add_argument("--ref-pairs", type=int, default=4, help="pairs drawn by the per-voxel reference")
    parser.add_argument("--volume", type=int, nargs=3, default=(160, 160, 120), metavar=("X", "Y", "Z"))
    parser.add_argument("--case", type=Path, help="a resampled case (.nii.gz) instead of the synthetic volume")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    volume = read_case(args.case) if args.case else synthetic_chest(tuple(args.volume), rng)
    config = PairConfig()
    time_vectorised(volume, 1, config, args.seed)  # warm-up (torch kernels, allocations)
    vec_s = time_vectorised(volume, args.pairs, config, args.seed)
    ref_s = time_reference(volume, args.ref_pairs, config, args.seed)
    figures = {
        "volume_shape": list(volume.shape),
        "source": str(args.case) if args.case else "synthetic",
        "vectorised": {"pairs": args.pairs, "seconds": vec_s, "pairs_per_s": args.pairs / vec_s},
        "reference": {"pairs": args.ref_pairs, "seconds": ref_s, "pairs_per_s": args.ref_pairs / ref_s},
        "speedup": (args.pairs / vec_s) / (args.ref_pairs / ref_s),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    print(
        f"volume {tuple(volume.shape)}: vectorised {figures['vectorised']['pairs_per_s']:.2f} pairs/s "
        f"({args.pairs} pairs, {vec_s:.2f} s); reference {figures['reference']['pairs_per_s']:.3f} pairs/s "
        f"({args.ref_pairs} pairs, {ref_s:.2f} s); speed-up {figures['speedup']:.0f}x"
    )
    if args.out:
        write_json(args.out, figures)
    return figures


if __name__ == "__main__":
    main()
