"""Benchmark: batched PCRL corruptions (``pcrl.transforms.corrupt``) against per-sample references.

The reference (``reference_corrupt``) applies the same corruption rules (docs/method.md "Views,
corruptions and targets", Models Genesis) the straightforward way the release does: one
crop at a time in NumPy, local pixel shuffling as a Python loop over 10,000 random blocks
per crop, each block's size, corner and permutation drawn in the loop, painting as a Python
loop over boxes, randomness from ``numpy.random.default_rng``. A second reference
(``reference_shuffle_drawn_at_once``) draws the 10,000 blocks' sizes and corners in two
vectorised calls and is about twice as fast: the stricter baseline.

Chains, timed on the same batch of synthetic chest-like crops and the same seeds, their
repeats interleaved so that the load of a shared machine weighs on all alike:
- ``batched`` / ``reference``: a pretraining view, the corrupted crop and its reconstruction
  target (the clean crop under a random flip and quarter turn: ``apply_spatial`` /
  ``reference_spatial``);
- ``batched_corrupt_only`` / ``reference_corrupt_only`` / ``reference_drawn_at_once``: the
  corruption chain alone;
- ``batched_one_sample_a_call``: the batched code called on one crop at a time;
- ``augment``: the augmentations.

Every chain gets both clocks: wall time and the process's CPU time. The headline
(``speedup``) is the corruption chain alone against the release-style reference in CPU
time on the CPU (wall time on a GPU): the comparison that a loaded machine does not
distort (the README's "Corruption speed" says why it is the fair one).

    python benchmarks/bench_transforms.py --batch 16 --size 64 64 32 --out results.json
    python benchmarks/bench_transforms.py --device cuda

On the CPU the batched version gets one thread by default, like the references: a
per-core comparison.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from pcrl.atomic import write_json
from pcrl.transforms import CorruptionConfig, apply_spatial, augment, corrupt, spatial_codes

# ---------------------------------------------------------------- reference (slow)


def reference_shuffle(x: np.ndarray, rng: np.random.Generator, n_blocks: int = 10_000) -> np.ndarray:
    """Local pixel shuffling as the release: ``n_blocks`` random blocks, one at a time.

    Every block (sides in [1, size // 10]) is taken from the original crop, flattened,
    shuffled and written back, so later blocks overwrite earlier ones where they overlap.
    """
    out = x.copy()
    _, size_x, size_y, size_z = x.shape
    for _ in range(n_blocks):
        bx = int(rng.integers(1, max(1, size_x // 10) + 1))
        by = int(rng.integers(1, max(1, size_y // 10) + 1))
        bz = int(rng.integers(1, max(1, size_z // 10) + 1))
        ox = int(rng.integers(0, size_x - bx + 1))
        oy = int(rng.integers(0, size_y - by + 1))
        oz = int(rng.integers(0, size_z - bz + 1))
        window = x[:, ox : ox + bx, oy : oy + by, oz : oz + bz].reshape(x.shape[0], -1)
        window = window[:, rng.permutation(window.shape[1])]
        out[:, ox : ox + bx, oy : oy + by, oz : oz + bz] = window.reshape(x.shape[0], bx, by, bz)
    return out


def reference_shuffle_drawn_at_once(x: np.ndarray, rng: np.random.Generator, n_blocks: int = 10_000) -> np.ndarray:
    """A second, faster per-sample reference of the same shuffling: the 10,000 blocks' sides
    and corners drawn in two vectorised calls, only the permutations drawn in the loop
    (about 2x faster than :func:`reference_shuffle`; no release does this, but it is the
    stricter baseline)."""
    out = x.copy()
    channels, size_x, size_y, size_z = x.shape
    highest = np.array([max(1, size_x // 10), max(1, size_y // 10), max(1, size_z // 10)])
    sides = rng.integers(1, highest + 1, size=(n_blocks, 3))
    corners = rng.integers(0, np.array([size_x, size_y, size_z]) - sides + 1)
    for (bx, by, bz), (ox, oy, oz) in zip(sides.tolist(), corners.tolist()):
        box = (slice(None), slice(ox, ox + bx), slice(oy, oy + by), slice(oz, oz + bz))
        window = x[box].reshape(channels, -1)
        out[box] = window[:, rng.permutation(window.shape[1])].reshape(channels, bx, by, bz)
    return out


def reference_nonlinear(x: np.ndarray, rng: np.random.Generator, n_points: int = 1000) -> np.ndarray:
    """Models Genesis' Bezier intensity curve, tabulated and interpolated with ``np.interp``."""
    p1, p2 = rng.random(2), rng.random(2)
    t = np.linspace(0.0, 1.0, n_points)
    b1, b2, b3 = 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
    xs, ys = p1[0] * b1 + p2[0] * b2 + b3, p1[1] * b1 + p2[1] * b2 + b3
    if rng.random() < 0.5:
        ys = ys[::-1]
    return np.interp(x, xs, ys).astype(x.dtype)


def _box(rng: np.random.Generator, sizes: tuple[int, ...], sides: list[tuple[int, int]]) -> list[slice]:
    """One random box: sides in the given inclusive ranges, corners 3 voxels from the border."""
    box = []
    for size, (low, high) in zip(sizes, sides):
        side = int(rng.integers(low, high + 1))
        margin = min(3, (size - side) // 2)
        corner = int(rng.integers(margin, size - side - margin + 1))
        box.append(slice(corner, corner + side))
    return box


def reference_in_paint(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Up to 5 boxes (sides size // 6 .. size // 3) filled with uniform noise, one at a time."""
    out = x.copy()
    sizes = x.shape[1:]
    sides = [(max(1, s // 6), max(1, s // 3)) for s in sizes]
    count = 5
    while count > 0 and rng.random() < 0.95:
        box = _box(rng, sizes, sides)
        out[(slice(None), *box)] = rng.random((x.shape[0], *(b.stop - b.start for b in box)))
        count -= 1
    return out


def reference_out_paint(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noise everywhere except 1..5 boxes (sides size - (3 size // 7 .. 4 size // 7)) of ``x``."""
    out = rng.random(x.shape).astype(x.dtype)
    sizes = x.shape[1:]
    sides = [(s - 4 * s // 7, s - 3 * s // 7) for s in sizes]
    box = _box(rng, sizes, sides)
    out[(slice(None), *box)] = x[(slice(None), *box)]
    count = 4
    while count > 0 and rng.random() < 0.95:
        box = _box(rng, sizes, sides)
        out[(slice(None), *box)] = x[(slice(None), *box)]
        count -= 1
    return out


def reference_spatial(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The target's spatial transform for one crop: random flips of x, y, z, then k
    quarter turns in the x-y plane (a copy, as a target must be)."""
    flips = [axis + 1 for axis in range(3) if rng.random() < 0.5]
    out = np.flip(x, axis=flips) if flips else x
    return np.ascontiguousarray(np.rot90(out, int(rng.integers(0, 4)), axes=(1, 2)))


def reference_view(x: np.ndarray, config: CorruptionConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One crop's network input (corrupted) and reconstruction target (transformed)."""
    return reference_corrupt(x, config, rng), reference_spatial(x, rng)


def reference_corrupt(
    x: np.ndarray, config: CorruptionConfig, rng: np.random.Generator, shuffle: Callable = reference_shuffle
) -> np.ndarray:
    """The corruption chain for one crop (C, x, y, z): shuffle -> non-linear -> painting."""
    if rng.random() < config.shuffle_prob:
        x = shuffle(x, rng)
    if config.nonlinear_prob > 0 and rng.random() < config.nonlinear_prob:
        x = reference_nonlinear(x, rng)
    if rng.random() < config.paint_prob:
        x = reference_in_paint(x, rng) if rng.random() < config.inpaint_prob else reference_out_paint(x, rng)
    return x


# ------------------------------------------------------------------------ inputs


def synthetic_crops(batch: int, size: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """(batch, 1, x, y, z) float32 crops in [0, 1]: soft tissue, two lungs, vessels, noise."""
    x, y, z = (np.linspace(-1, 1, n)[(slice(None),) + (None,) * (2 - a)] for a, n in enumerate(size))
    hu = np.full(size, 40.0, dtype=np.float32)
    lungs = ((np.abs(x) - 0.45) / 0.35) ** 2 + (y / 0.6) ** 2 + (z / 0.9) ** 2 < 1
    hu[lungs] = -850.0
    crops = np.repeat(hu[None, None], batch, axis=0)
    crops += rng.normal(0.0, 30.0, size=crops.shape).astype(np.float32)
    crops[(rng.random(crops.shape) < 0.02) & lungs] = 0.0
    return np.clip((crops + 1000.0) / 2000.0, 0.0, 1.0)


# ----------------------------------------------------------------------- timing


def interleaved_seconds(
    fns: dict[str, Callable[[int], object]], repeats: int, sync: Callable[[], None], seed: int = 0
) -> dict[str, dict[str, list[float]]]:
    """Time every function of ``fns`` after one warm-up call each, interleaving their repeats.

    Round r calls each function with the seed ``seed + r``: every function draws its
    randomness afresh from that seed, so the batched and reference chains average over the
    same random draws (how many samples are shuffled, painted, ...), and a change in the
    load of a shared machine affects all of them alike. Returns per name the wall-clock
    seconds (``wall``) and the CPU seconds of this process (``cpu``, every thread's): the
    CPU time leaves out the time another process held the core, which on a loaded machine
    stretches a Python loop's wall time more than a vectorised call's.
    """
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in fns}
    for fn in fns.values():
        fn(seed + repeats)  # warm-up, with a seed of its own
        sync()
    for round_ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn(seed + round_)
            sync()
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
    return times


#: The comparisons reported, as (numerator, denominator) chains: the reference's time over
#: the batched chain's, both on the same crops and seeds.
COMPARISONS = {
    "with_target": ("reference", "batched"),
    "corruption": ("reference_corrupt_only", "batched_corrupt_only"),
    "corruption_vs_drawn_at_once": ("reference_drawn_at_once", "batched_corrupt_only"),
    "corruption_one_sample_a_call": ("reference_corrupt_only", "batched_one_sample_a_call"),
}


def speedups(times: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    """Per clock (``wall``, ``cpu``), each comparison of :data:`COMPARISONS`: the ratio of the
    mean times, the reference's over the batched chain's."""
    return {
        clock: {
            name: statistics.mean(times[slow][clock]) / statistics.mean(times[fast][clock])
            for name, (slow, fast) in COMPARISONS.items()
        }
        for clock in ("wall", "cpu")
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, nargs=3, default=(64, 64, 32), metavar=("X", "Y", "Z"))
    parser.add_argument("--device", default="cpu", help="torch device of the batched version (cpu, cuda, ...)")
    parser.add_argument("--repeats", type=int, default=8, help="timed repeats (seeds) of every chain")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; 1 (default) matches the single-threaded reference, 0 keeps torch's choice",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = CorruptionConfig()
    crops = synthetic_crops(args.batch, tuple(args.size), np.random.default_rng(args.seed))
    batch = torch.from_numpy(crops).to(device)
    generator = torch.Generator(device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def seeded(seed: int) -> torch.Generator:
        return generator.manual_seed(seed)

    def batched_views(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = seeded(seed)
        return corrupt(batch, config, g), apply_spatial(batch, spatial_codes(len(batch), g))

    def reference_views(seed: int) -> list:
        rng = np.random.default_rng(seed)
        return [reference_view(crop, config, rng) for crop in crops]

    def reference_corrupt_only(seed: int) -> list:
        rng = np.random.default_rng(seed)
        return [reference_corrupt(crop, config, rng) for crop in crops]

    def reference_drawn_at_once(seed: int) -> list:
        rng = np.random.default_rng(seed)
        return [reference_corrupt(crop, config, rng, reference_shuffle_drawn_at_once) for crop in crops]

    def batched_one_sample_a_call(seed: int) -> list:
        g = seeded(seed)
        return [corrupt(batch[i : i + 1], config, g) for i in range(len(batch))]

    load_before = os.getloadavg()
    times = interleaved_seconds(
        {
            "batched": batched_views,
            "reference": reference_views,
            "batched_corrupt_only": lambda seed: corrupt(batch, config, seeded(seed)),
            "reference_corrupt_only": reference_corrupt_only,
            "reference_drawn_at_once": reference_drawn_at_once,
            "batched_one_sample_a_call": batched_one_sample_a_call,
            "augment": lambda seed: augment(batch, seeded(seed)),
        },
        args.repeats,
        sync,
        args.seed,
    )
    ratios = speedups(times)
    clock = "wall" if device.type == "cuda" else "cpu"  # on a GPU the CPU time says nothing

    def rate(name: str) -> float:
        return args.batch / statistics.mean(times[name][clock])

    figures = {
        "batch_shape": list(batch.shape),
        "device": str(device),
        "config": asdict(config),
        "clock": clock,
        "batched": {"seconds": times["batched"], "samples_per_s": rate("batched")},
        "reference": {"seconds": times["reference"], "samples_per_s": rate("reference"), "shuffle_blocks": 10_000},
        "chains": {name: {"seconds": t, "samples_per_s": rate(name)} for name, t in times.items()},
        # the headline: the corruption chain alone, against the release-style reference, in
        # CPU time on the CPU (see the README's "Corruption speed" for why this is the fair one)
        "speedup": ratios[clock]["corruption"],
        "speedups": ratios,
        "augment_samples_per_s": rate("augment"),
        "cpu_count": os.cpu_count(),
        "load_average_1min": [load_before[0], os.getloadavg()[0]],  # before and after: a shared machine
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": (
            torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
        ),
    }
    print(f"{tuple(batch.shape)} on {device}, {args.repeats} seeds, {figures['torch_threads']} torch thread(s), "
          f"load {figures['load_average_1min'][0]:.1f} -> {figures['load_average_1min'][1]:.1f}")
    for name in times:
        print(f"  {name:28s} {rate(name):8.1f} samples/s ({clock} time)")
    for name, (slow, fast) in COMPARISONS.items():
        print(f"  {name:28s} {ratios['cpu'][name]:5.1f}x CPU time, {ratios['wall'][name]:5.1f}x wall ({slow} / {fast})")
    if args.out:
        write_json(args.out, figures)
    return figures


if __name__ == "__main__":
    main()
