"""Models Genesis local pixel shuffling, batched (docs/method.md "Views, corruptions and targets").

How the block grid differs from the release's sequential, possibly overlapping blocks is
described under "Deviations" in the :mod:`pcrl.transforms` docstring.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple, cast

import torch
from torch import Tensor

from pcrl.transforms._checks import (
    _check_batch,
    _check_generator,
    _check_prob,
    _floor_fraction,
    _rand,
    _randint,
    _uniform,
)

__all__ = ["ShufflePlan", "local_pixel_shuffle"]


class ShufflePlan(NamedTuple):
    """The random layout of one :func:`local_pixel_shuffle` call.

    Attributes:
        samples: (M,) int64 indices of the samples that are shuffled (the others are copied).
        targets: M (K_i,) int64 tensors, flat voxel ids (of x*y*z) of the voxels that move in
            shuffled sample i: ``out[samples[i]].flat[targets[i]] = x[samples[i]].flat[sources[i]]``
            for every channel; the other voxels keep their values.
        sources: M (K_i,) int64 tensors, the voxels whose values the targets take.
        block: (M, x, y, z) int64 block id of every voxel (unique within a sample), or
            ``None`` unless asked for.
        shuffled: (M, x, y, z) bool, True where the voxel's block (of 2 voxels or more) was
            picked for shuffling (voxels elsewhere keep their value), or ``None``.
    """

    samples: Tensor
    targets: tuple[Tensor, ...]
    sources: tuple[Tensor, ...]
    block: Tensor | None
    shuffled: Tensor | None


def _block_shuffle_index(
    sizes: Sequence[int],
    sides: Sequence[int],
    phases: Sequence[int],
    coverage: float,
    generator: torch.Generator,
    device: torch.device,
    *,
    layout: bool = False,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """One sample's shuffling: a grid of ``sides`` blocks shifted by ``phases``, permuted inside.

    Block ``(a, b, c)`` holds the voxels ``(i, j, l)`` with ``(i + phase_x) // side_x == a`` (and
    alike for y, z): blocks tile the volume, those at the border may be cut. Voxel ids are
    laid out one block per row, the padding outside the volume marked -1. A picked row is
    ordered by random keys (a uniform permutation of its voxels), padding last; the k-th
    voxel of the row in raster order then takes the value of the k-th voxel in key order.
    Rows not picked (or of one voxel) keep their voxels, without keys drawn or sorted.

    Returns:
        ``(targets, sources, block, shuffled)``: the flat ids of the voxels that move and of
        the voxels whose values they take (every other voxel keeps its own); with ``layout``
        also the (x, y, z) block ids and the (x, y, z) mask of voxels in shuffled blocks.
    """
    volume = math.prod(sizes)
    counts = [-(-(size + phase) // side) for size, side, phase in zip(sizes, sides, phases)]
    strides = [sizes[1] * sizes[2], sizes[2], 1]
    offsets = []  # per axis, (block, place in block) -> flat offset of the voxel, -volume outside
    for size, side, phase, count, stride in zip(sizes, sides, phases, counts, strides):
        coord = torch.arange(count * side, device=device).view(count, side) - phase
        offsets.append(torch.where((coord >= 0) & (coord < size), coord * stride, -volume))
    ox, oy, oz = offsets
    # the voxel ids in one pass: a sum with a term of -volume is negative (padding)
    grid = ox[:, None, None, :, None, None] + oy[None, :, None, None, :, None] + oz[None, None, :, None, None, :]
    rows = grid.clamp_(min=-1).view(math.prod(counts), math.prod(sides))
    n_rows, width = rows.shape
    valid = rows >= 0
    sizes_per_row = valid.sum(dim=1)
    picked = _rand((n_rows, 1), generator, device) < coverage
    # only the picked rows of 2 voxels or more move: draw keys and sort those rows alone;
    # every other voxel keeps its own value (the identity), so only the moving rows are written
    moving = (picked[:, 0] & (sizes_per_row > 1)).nonzero().squeeze(1)
    if moving.numel():
        voxels = rows.index_select(0, moving)
        inside = voxels >= 0
        key = _uniform((int(moving.numel()), width), generator, device, torch.float32)
        key = key.masked_fill_(~inside, 2.0)  # padding last (ties there are harmless)
        # the bits of non-negative floats order as their int32 view does, and int32 keys
        # sort about 25 % faster on the CPU (benchmarks/bench_transforms.py)
        order = key.view(torch.int32).argsort(dim=1)
        rank = (inside.cumsum(dim=1) - 1).clamp_(min=0)  # raster rank among the row's voxels
        source = voxels.gather(1, order.gather(1, rank))
        kept = inside.view(-1).nonzero().squeeze(1)  # the padding dropped (faster than a bool index)
        targets, sources = voxels.view(-1).index_select(0, kept), source.view(-1).index_select(0, kept)
    else:
        targets = sources = torch.zeros(0, dtype=torch.long, device=device)
    if not layout:
        return targets, sources, None, None
    target = torch.where(valid, rows, volume).flatten()  # padding goes to a spare slot
    block_id = torch.arange(n_rows, device=device)[:, None].expand(n_rows, width).flatten()
    block = torch.empty(volume + 1, dtype=torch.long, device=device).scatter_(0, target, block_id)
    moved = (picked & (sizes_per_row[:, None] > 1)).expand(n_rows, width).flatten()
    shuffled = torch.empty(volume + 1, dtype=torch.bool, device=device).scatter_(0, target, moved)
    return targets, sources, block[:volume].view(*sizes), shuffled[:volume].view(*sizes)


def _shuffle_plan(
    shape: Sequence[int],
    generator: torch.Generator,
    device: torch.device,
    *,
    prob: float = 0.5,
    coverage: float = 0.8,
    max_block_fraction: float = 0.1,
    layout: bool = False,
) -> ShufflePlan:
    """Draw the blocks and permutations of :func:`local_pixel_shuffle` for a batch shape.

    Per shuffled sample: block sides uniform in [1, max(1, floor(size * max_block_fraction))]
    per axis, a grid phase uniform in [0, side) per axis, then :func:`_block_shuffle_index`.
    The Python loop runs over the shuffled samples (each of its steps is vectorised over the
    sample's voxels). ``layout`` adds the block ids and shuffled mask (for tests); the
    random draws do not depend on it.
    """
    n = int(shape[0])
    sizes = [int(s) for s in shape[-3:]]
    chosen = (_rand((n,), generator, device) < prob).nonzero().squeeze(1)
    m = int(chosen.numel())
    max_sides = torch.tensor([max(1, _floor_fraction(s, max_block_fraction)) for s in sizes], device=device)
    sides = _randint(torch.ones_like(max_sides).expand(m, 3), max_sides.expand(m, 3), generator)
    phases = _randint(torch.zeros_like(sides), sides - 1, generator)
    plans = [
        _block_shuffle_index(sizes, side, phase, coverage, generator, device, layout=layout)
        for side, phase in zip(sides.tolist(), phases.tolist())
    ]
    targets, sources = tuple(p[0] for p in plans), tuple(p[1] for p in plans)
    if not layout:
        return ShufflePlan(chosen, targets, sources, None, None)
    empty = torch.zeros((0, *sizes), dtype=torch.long, device=device)
    block = torch.stack([cast(Tensor, p[2]) for p in plans]) if plans else empty
    shuffled = torch.stack([cast(Tensor, p[3]) for p in plans]) if plans else empty.bool()
    return ShufflePlan(chosen, targets, sources, block, shuffled)


def local_pixel_shuffle(
    x: Tensor,
    generator: torch.Generator,
    *,
    prob: float = 0.5,
    coverage: float = 0.8,
    max_block_fraction: float = 0.1,
) -> Tensor:
    """Models Genesis local pixel shuffling, batched (docs/method.md "Views, corruptions and targets").

    With probability ``prob`` a sample is cut into a grid of non-overlapping blocks of one
    random shape, each side uniform in [1, floor(size * max_block_fraction)] (Models
    Genesis: size // 10), shifted by a random phase per axis; each block, with probability
    ``coverage``, has its voxels permuted uniformly at random (the same permutation for
    every channel). Every block keeps its multiset of values; local texture is destroyed.
    See "Deviations" in the :mod:`pcrl.transforms` docstring for how this differs from the
    release's sequential blocks.

    Args:
        x: (N, C, x, y, z) batch in [0, 1].
        generator: randomness, on ``x.device``.
        prob: probability that a sample is shuffled (release: 0.5).
        coverage: probability that a block is shuffled (about the fraction of voxels moved).
        max_block_fraction: largest block side as a fraction of the volume's side.

    Returns:
        The shuffled batch (a new tensor).
    """
    _check_batch(x)
    _check_generator(generator, x.device)
    _check_prob(prob, "prob")
    _check_prob(coverage, "coverage")
    _check_prob(max_block_fraction, "max_block_fraction")
    plan = _shuffle_plan(
        x.shape, generator, x.device, prob=prob, coverage=coverage, max_block_fraction=max_block_fraction
    )
    out = x.clone(memory_format=torch.contiguous_format)  # viewable whatever the strides of x
    flat_in, flat_out = x.reshape(*x.shape[:2], -1), out.view(*x.shape[:2], -1)
    for sample, targets, sources in zip(plan.samples.tolist(), plan.targets, plan.sources):
        # only the moving voxels are read and written: the rest of the clone stays
        flat_out[sample].index_copy_(1, targets, flat_in[sample].index_select(1, sources))
    return out
