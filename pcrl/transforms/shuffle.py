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
            for every channel; the other voxels keep their values. An id of x*y*z (one past
            the end) is the padding of a block cut by the border: a write to a spare slot,
            dropped.
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


class _BlockGrid(NamedTuple):
    """A grid of blocks tiling a volume: block ``(a, b, c)`` holds the voxels ``(i, j, l)`` with
    ``(i + phase_x) // side_x == a`` (alike for y, z). Rows are the blocks in raster order
    (``a * count_y * count_z + b * count_z + c``), columns a block's places in raster order."""

    volume: int
    counts: tuple[int, int, int]
    width: int
    #: per axis, (block, place in block) -> flat offset of the voxel, -volume outside
    offsets: tuple[Tensor, Tensor, Tensor]
    #: (rows,) voxels of each block inside the volume
    sizes: Tensor
    #: (rows,) flat id of each block's first place (its corner; outside for a cut block)
    corner: Tensor
    #: (width,) flat offset of each place from the corner
    place: Tensor


def _block_grid(sizes: Sequence[int], sides: Sequence[int], phases: Sequence[int], device: torch.device) -> _BlockGrid:
    """The grid of ``sides`` blocks shifted by ``phases`` over a volume of ``sizes``."""
    volume = math.prod(sizes)
    counts = tuple(-(-(size + phase) // side) for size, side, phase in zip(sizes, sides, phases))
    strides = (sizes[1] * sizes[2], sizes[2], 1)
    offsets, inside, corners, places = [], [], [], []
    for size, side, phase, count, stride in zip(sizes, sides, phases, counts, strides):
        start = torch.arange(count, device=device) * side - phase
        coord = start[:, None] + torch.arange(side, device=device)
        inside_axis = (coord >= 0) & (coord < size)
        offsets.append(torch.where(inside_axis, coord * stride, -volume))
        inside.append(inside_axis.sum(dim=1))
        corners.append(start * stride)
        places.append(torch.arange(side, device=device) * stride)
    (nx, ny, nz), (cx, cy, cz), (px, py, pz) = inside, corners, places
    return _BlockGrid(
        volume, cast(tuple[int, int, int], counts), math.prod(sides),
        cast(tuple[Tensor, Tensor, Tensor], tuple(offsets)),
        (nx[:, None, None] * ny[None, :, None] * nz[None, None, :]).view(-1),
        (cx[:, None, None] + cy[None, :, None] + cz[None, None, :]).view(-1),
        (px[:, None, None] + py[None, :, None] + pz[None, None, :]).view(-1),
    )  # fmt: skip


def _cut_rows(grid: _BlockGrid, rows: Tensor) -> Tensor:
    """The voxel ids of the blocks ``rows``, -1 where a block reaches outside the volume."""
    ox, oy, oz = grid.offsets
    per_plane = grid.counts[1] * grid.counts[2]
    a = rows // per_plane
    b = (rows - a * per_plane) // grid.counts[2]
    c = rows - a * per_plane - b * grid.counts[2]
    voxels = ox[a][:, :, None, None] + oy[b][:, None, :, None] + oz[c][:, None, None, :]
    return voxels.view(len(rows), grid.width).clamp_(min=-1)  # a term of -volume: negative


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

    Only what moves is built: the rows of the moving blocks (not the whole grid), and the
    raster ranks only for the cut blocks at the border (in a whole block the rank of a
    voxel is its column). Written by hand for speed on the CPU, where this function is
    most of a pretraining view's cost (benchmarks/bench_transforms.py).

    Returns:
        ``(targets, sources, block, shuffled)``: the flat ids of the voxels that move and of
        the voxels whose values they take (every other voxel keeps its own); with ``layout``
        also the (x, y, z) block ids and the (x, y, z) mask of voxels in shuffled blocks.
    """
    grid = _block_grid(sizes, sides, phases, device)
    volume, width, n_rows = grid.volume, grid.width, int(grid.sizes.numel())
    picked = _rand((n_rows, 1), generator, device) < coverage
    # only the picked rows of 2 voxels or more move: draw keys and sort those rows alone;
    # every other voxel keeps its own value (the identity), so only the moving rows are written
    moving = (picked[:, 0] & (grid.sizes > 1)).nonzero().squeeze(1)
    if moving.numel():
        # a whole block's voxels are its corner plus the places (one fast broadcast); the
        # blocks cut by the border are built place by place, their padding -1
        voxels = grid.corner.index_select(0, moving)[:, None] + grid.place
        key = _uniform((int(moving.numel()), width), generator, device, torch.float32)
        cut = (grid.sizes.index_select(0, moving) < width).nonzero().squeeze(1)
        if cut.numel():
            cut_voxels = _cut_rows(grid, moving.index_select(0, cut))
            inside = cut_voxels >= 0
            # the padding of a cut block targets a spare slot past the end (dropped there);
            # it is never a source (a row's first keys in key order are its voxels inside)
            voxels.index_copy_(0, cut, cut_voxels.masked_fill_(~inside, volume))
            key.index_copy_(0, cut, key.index_select(0, cut).masked_fill_(~inside, 2.0))  # padding last
        # the bits of non-negative floats order as their int32 view does, and int32 keys
        # sort about 25 % faster on the CPU (benchmarks/bench_transforms.py)
        order = key.view(torch.int32).argsort(dim=1)
        if cut.numel():
            # a cut block: its k-th voxel in raster order among those inside takes the k-th
            # in key order (in a whole block the raster rank is the column)
            rank = (inside.cumsum(dim=1) - 1).clamp_(min=0)
            order.index_copy_(0, cut, order.index_select(0, cut).gather(1, rank))
        sources = voxels.gather(1, order).view(-1)
        targets = voxels.view(-1)
    else:
        targets = sources = torch.zeros(0, dtype=torch.long, device=device)
    if not layout:
        return targets, sources, None, None
    rows = _cut_rows(grid, torch.arange(n_rows, device=device))
    valid = rows >= 0
    target = torch.where(valid, rows, volume).flatten()  # padding goes to a spare slot
    block_id = torch.arange(n_rows, device=device)[:, None].expand(n_rows, width).flatten()
    block = torch.empty(volume + 1, dtype=torch.long, device=device).scatter_(0, target, block_id)
    moved = (picked & (grid.sizes[:, None] > 1)).expand(n_rows, width).flatten()
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
    volume = flat_in.shape[-1]
    # one spare voxel past the end takes the writes of the padding, dropping them without
    # a pass to find and remove the padding's entries
    spare = torch.empty(x.shape[1], volume + 1, dtype=x.dtype, device=x.device)
    for sample, targets, sources in zip(plan.samples.tolist(), plan.targets, plan.sources):
        spare[:, :volume].copy_(flat_in[sample])
        spare.index_copy_(1, targets, flat_in[sample].index_select(1, sources))
        flat_out[sample].copy_(spare[:, :volume])
    return out
