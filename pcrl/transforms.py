"""PCRL views: spatial codes, corruptions and augmentation, batched on the batch's device.

Every function takes a batch ``x`` of shape (N, C, x, y, z) (docs/CONVENTIONS.md) holding
intensities in [0, 1], and returns a new tensor of the same dtype on the same device; the
input is never modified. Randomness comes only from the ``generator`` argument, a
``torch.Generator`` living on the batch's device: the global RNGs are never touched, so
the same generator state gives the same output whatever else the process draws.

What is implemented and where each rule comes from:

* **Spatial codes** (PCRL-SPEC "Transformation-conditioned attention"): a 7-vector per
  sample, flips of x, y, z as 0/1, then a one-hot of k = 0..3 quarter turns in the x-y
  plane (dims -3, -2). :func:`apply_spatial` flips first, then turns; :func:`invert_spatial`
  undoes it exactly. Both gather voxels by index, so they are exact for any dtype.
* **Corruptions** of Models Genesis (Zhou et al., MICCAI 2019 / MedIA 2021), kept by PCRL
  (PCRL-SPEC "Views, corruptions and targets"): local pixel shuffling
  (:func:`local_pixel_shuffle`), the non-linear Bezier intensity transform
  (:func:`bezier_intensity`), in-painting and out-painting (:func:`in_paint`,
  :func:`out_paint`, :func:`paint`), chained by :func:`corrupt`.
* **Augmentation** before corruption (:func:`augment`): random flips, a small random affine
  and a Gaussian blur, the three transforms the release applies to each crop (with the
  defaults of the library it calls: rotations up to 10 degrees, scales 0.9..1.1, blur
  standard deviation 0..2 voxels).

Deviations from the release, all deliberate (PCRL-SPEC "Known defects of the release"):

* Local pixel shuffling cuts a shuffled sample into a grid of non-overlapping blocks (one
  block shape per sample, each side uniform in [1, size // 10] as Models Genesis draws
  them, the grid shifted by a random phase per axis) and permutes the voxels of a random
  ``coverage`` fraction of the blocks uniformly at random, with one row-wise sort of
  random keys and one gather per sample. The release instead loops in Python over 10,000
  blocks of independent shapes and positions, which may overlap. The default coverage
  (0.8) is about the fraction of a 64x64x32 crop those 10,000 blocks cover (0.82,
  measured). Unlike the release, where a later block can overwrite part of an earlier
  one, every block keeps its multiset of values, and so does the whole crop.
* Multi-channel volumes: shuffling moves whole voxels (the same permutation for every
  channel) and painting noise is drawn per channel; the release handles one channel.
* :func:`corrupt` draws the painting decision per sample; the release draws it once per
  pair of views.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from pcrl.errors import ConfigError

__all__ = [
    "CODE_SIZE",
    "CorruptionConfig",
    "apply_spatial",
    "augment",
    "bezier_intensity",
    "corrupt",
    "decode_spatial",
    "encode_spatial",
    "in_paint",
    "invert_spatial",
    "local_pixel_shuffle",
    "out_paint",
    "paint",
    "spatial_codes",
]

#: Length of a spatial code: 3 flip bits (x, y, z) and a one-hot of k = 0..3 quarter turns.
CODE_SIZE = 7

_DeviceLike = torch.device | str | None


# --------------------------------------------------------------------------- checks


def _check_batch(x: Tensor, name: str = "x") -> None:
    """Raise ``ValueError`` unless ``x`` is a floating-point batch (N, C, x, y, z)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if x.ndim != 5:
        raise ValueError(f"{name} must be a batch (N, C, x, y, z); got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point; got {x.dtype} with shape {tuple(x.shape)}")


def _check_generator(generator: torch.Generator, device: torch.device) -> None:
    """Raise ``ValueError`` unless ``generator`` lives on ``device`` (type and index)."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator; got {type(generator).__name__}")
    gen = generator.device
    if gen.type != device.type or (gen.index is not None and device.index is not None and gen.index != device.index):
        raise ValueError(f"generator lives on {gen} but the batch is on {device}; create it there")


def _check_prob(value: float, name: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a probability."""
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]; got {value}")


def _check_fraction_range(value: Sequence[float], name: str) -> tuple[float, float]:
    """Return ``value`` as a (low, high) pair with 0 <= low <= high <= 1, else raise ``ValueError``."""
    low, high = (float(v) for v in value)
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"{name} must be (low, high) with 0 <= low <= high <= 1; got {tuple(value)}")
    return low, high


def _floor_fraction(size: int, fraction: float) -> int:
    """``floor(size * fraction)`` robust to rounding (``size // 10`` for ``fraction = 0.1``)."""
    return int(math.floor(size * fraction + 1e-9))


# --------------------------------------------------------------------- random draws


def _rand(shape: Sequence[int], generator: torch.Generator, device: torch.device) -> Tensor:
    """Uniform [0, 1) float32 numbers of ``shape`` on ``device`` from ``generator``."""
    return torch.rand(tuple(shape), generator=generator, device=device)


def _randint(low: Tensor, high: Tensor, generator: torch.Generator) -> Tensor:
    """Integers uniform in [low, high] (both inclusive, element-wise, broadcast) as int64.

    Like Python's ``random.randint`` used by Models Genesis, but for whole tensors of bounds.
    """
    low, high = torch.broadcast_tensors(low.long(), high.long())
    u = torch.rand(low.shape, generator=generator, device=low.device, dtype=torch.float32)
    value = low + (u * (high - low + 1).to(torch.float32)).long()
    return torch.minimum(value, high)  # float rounding of u * n can reach n


# -------------------------------------------------------------------- spatial codes


def encode_spatial(flips: Tensor, k: Tensor) -> Tensor:
    """Spatial codes from flip bits and quarter-turn counts (PCRL-SPEC, TCA).

    Args:
        flips: (N, 3) bool or 0/1, flips of x, y, z.
        k: (N,) integers in 0..3, quarter turns in the x-y plane.

    Returns:
        (N, 7) float32 codes: flips, then the one-hot of ``k``.
    """
    if flips.ndim != 2 or flips.shape[1] != 3 or k.shape != flips.shape[:1]:
        raise ValueError(f"flips must be (N, 3) and k (N,); got {tuple(flips.shape)} and {tuple(k.shape)}")
    k = k.long()
    if k.numel() and (int(k.min()) < 0 or int(k.max()) > 3):
        raise ValueError(f"k must be in 0..3; got values in [{int(k.min())}, {int(k.max())}]")
    return torch.cat([flips.to(torch.float32), F.one_hot(k, 4).to(torch.float32)], dim=1)


def decode_spatial(codes: Tensor) -> tuple[Tensor, Tensor]:
    """Flip bits and quarter-turn counts of spatial codes, after checking they are valid.

    Args:
        codes: (N, 7) codes: three 0/1 flip bits, then a one-hot of k = 0..3.

    Returns:
        ``(flips, k)``: (N, 3) bool and (N,) int64.

    Raises:
        ValueError: if the shape is not (N, 7), an entry is not 0/1, or the last four
            entries of a row are not a one-hot.
    """
    if codes.ndim != 2 or codes.shape[1] != CODE_SIZE:
        raise ValueError(f"codes must be (N, {CODE_SIZE}); got shape {tuple(codes.shape)}")
    binary = (codes == 0) | (codes == 1)
    one_hot = codes[:, 3:].sum(dim=1) == 1
    if not bool(binary.all() & one_hot.all()):
        bad = int((~(binary.all(dim=1) & one_hot)).nonzero()[0, 0])
        raise ValueError(
            f"codes must hold 3 flip bits then a one-hot of k = 0..3; row {bad} is {codes[bad].tolist()}"
        )
    return codes[:, :3] > 0.5, codes[:, 3:].argmax(dim=1)


def spatial_codes(n: int, generator: torch.Generator, device: _DeviceLike = None) -> Tensor:
    """Random spatial transforms as codes, one per sample (PCRL-SPEC, TCA).

    Each flip has probability 1/2 and k is uniform in 0..3, as in the release.

    Args:
        n: number of codes.
        generator: source of randomness, on ``device``.
        device: where the codes are created; the generator's device when ``None``.

    Returns:
        (n, 7) float32 codes (see :func:`encode_spatial`).
    """
    device = generator.device if device is None else torch.device(device)
    _check_generator(generator, device)
    flips = _rand((n, 3), generator, device) < 0.5
    k = torch.randint(0, 4, (n,), generator=generator, device=device)
    return encode_spatial(flips, k)


def _turn_source(i: Tensor, j: Tensor, k: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Source indices of ``torch.rot90(a, k, dims=(0, 1))`` for output indices ``(i, j)``.

    ``a`` has shape (height, width); ``i``, ``j`` and ``k`` broadcast. The four cases:
    k=0 ``a[i, j]``; k=1 ``a[j, W-1-i]``; k=2 ``a[H-1-i, W-1-j]``; k=3 ``a[H-1-j, i]``.
    """
    src_i = torch.where(k == 0, i, torch.where(k == 1, j, torch.where(k == 2, height - 1 - i, height - 1 - j)))
    src_j = torch.where(k == 0, j, torch.where(k == 1, width - 1 - i, torch.where(k == 2, width - 1 - j, i)))
    return src_i, src_j


def _gather_xyz(x: Tensor, xs: Tensor, ys: Tensor, zs: Tensor) -> Tensor:
    """``out[n, c, i, j, l] = x[n, c, xs[n, i, j], ys[n, i, j], zs[n, l]]``."""
    n = torch.arange(x.shape[0], device=x.device)[:, None, None, None]
    out = x.permute(0, 2, 3, 4, 1)[n, xs[..., None], ys[..., None], zs[:, None, None, :]]
    return out.permute(0, 4, 1, 2, 3).contiguous()


def _spatial(x: Tensor, codes: Tensor, *, inverse: bool) -> Tensor:
    """Apply (``inverse=False``) or undo (``inverse=True``) the transforms of ``codes``."""
    _check_batch(x)
    if codes.shape[:1] != x.shape[:1]:
        raise ValueError(f"codes {tuple(codes.shape)} do not match the batch {tuple(x.shape)}")
    flips, k = decode_spatial(codes.to(x.device))
    n, _, size_x, size_y, size_z = x.shape
    odd = k % 2 == 1
    if size_x != size_y and n and bool(odd.any()) and not bool(odd.all()):
        raise ValueError(
            f"batch {tuple(x.shape)}: quarter turns with odd and even k in one batch need x and y "
            f"of equal size ({size_x} != {size_y})"
        )
    swap = bool(odd[0]) if n else False
    out_x, out_y = (size_y, size_x) if swap else (size_x, size_y)
    fx, fy, fz = (flips[:, a, None, None] for a in range(3))
    kk = k[:, None, None]
    i = torch.arange(out_x, device=x.device)[:, None]
    j = torch.arange(out_y, device=x.device)[None, :]
    if not inverse:
        # out = rot_k(flip(x)): turn back to the flipped volume's indices, then unflip them.
        p, q = _turn_source(i, j, kk, size_x, size_y)
        xs = torch.where(fx, size_x - 1 - p, p)
        ys = torch.where(fy, size_y - 1 - q, q)
    else:
        # out = flip(rot_{-k}(x)), x of shape (size_x, size_y): flips are involutions.
        p = torch.where(fx, out_x - 1 - i, i)
        q = torch.where(fy, out_y - 1 - j, j)
        xs, ys = _turn_source(p, q, (4 - kk) % 4, size_x, size_y)
    ls = torch.arange(size_z, device=x.device)[None, :]
    zs = torch.where(flips[:, 2, None], size_z - 1 - ls, ls)
    xs, ys = torch.broadcast_tensors(xs, ys)
    return _gather_xyz(x, xs.expand(n, out_x, out_y), ys.expand(n, out_x, out_y), zs.expand(n, size_z))


def apply_spatial(x: Tensor, codes: Tensor) -> Tensor:
    """Apply each sample's spatial transform: flips of x, y, z, then k quarter turns in x-y.

    Equals ``torch.rot90(torch.flip(x[i], flipped_dims), k, dims=(-3, -2))`` sample by
    sample (the release's ``np.flip`` then ``np.rot90(axes=(1, 2))``), computed for the whole
    batch by one gather. PCRL-SPEC "Views, corruptions and targets": targets are T(view).

    Args:
        x: (N, C, x, y, z) batch.
        codes: (N, 7) codes (:func:`spatial_codes`).

    Returns:
        The transformed batch; x and y sizes are swapped when k is odd.

    Raises:
        ValueError: on invalid codes, or odd and even k in one batch whose x and y sizes
            differ (the outputs would not share a shape).
    """
    return _spatial(x, codes, inverse=False)


def invert_spatial(x: Tensor, codes: Tensor) -> Tensor:
    """Exact inverse of :func:`apply_spatial`: ``invert_spatial(apply_spatial(x, c), c) == x``.

    Args:
        x: (N, C, x, y, z) batch of transformed volumes.
        codes: the (N, 7) codes they were transformed with.

    Returns:
        The batch before the transform.
    """
    return _spatial(x, codes, inverse=True)


# ----------------------------------------------------------- local pixel shuffling


class ShufflePlan(NamedTuple):
    """The random layout of one :func:`local_pixel_shuffle` call.

    Attributes:
        samples: (M,) int64 indices of the samples that are shuffled (the others are copied).
        index: (M, V) int64, V = x*y*z: ``out[samples[i]].flat[v] = x[samples[i]].flat[index[i, v]]``
            for every channel.
        block: (M, x, y, z) int64 block id of every voxel (unique within a sample), or
            ``None`` unless asked for.
        shuffled: (M, x, y, z) bool, True where the voxel's block (of 2 voxels or more) was
            picked for shuffling (voxels elsewhere keep their value), or ``None``.
    """

    samples: Tensor
    index: Tensor
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
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """One sample's shuffling: a grid of ``sides`` blocks shifted by ``phases``, permuted inside.

    Block ``(a, b, c)`` holds the voxels ``(i, j, l)`` with ``(i + phase_x) // side_x == a`` (and
    alike for y, z): blocks tile the volume, those at the border may be cut. Voxel ids are
    laid out one block per row, the padding outside the volume marked -1. A picked row is
    ordered by random keys (a uniform permutation of its voxels), another by position,
    padding last either way; the k-th voxel of a row in raster order then takes the value
    of the k-th voxel in key order.

    Returns:
        ``(index, block, shuffled)``: (V,) source of every voxel; with ``layout`` also the
        (x, y, z) block ids and the (x, y, z) mask of voxels in shuffled blocks.
    """
    volume = math.prod(sizes)
    counts = [-(-(size + phase) // side) for size, side, phase in zip(sizes, sides, phases)]
    pad: list[int] = []
    for size, side, phase, count in reversed(list(zip(sizes, sides, phases, counts))):
        pad += [phase, count * side - size - phase]  # F.pad lists the last dim first
    ids = torch.arange(volume, device=device).view(*sizes)
    grid = F.pad(ids, pad, value=-1).view(counts[0], sides[0], counts[1], sides[1], counts[2], sides[2])
    rows = grid.permute(0, 2, 4, 1, 3, 5).reshape(math.prod(counts), math.prod(sides))
    n_rows, width = rows.shape
    valid = rows >= 0
    picked = _rand((n_rows, 1), generator, device) < coverage
    position = torch.arange(width, device=device, dtype=torch.float32)
    key = torch.where(valid & picked, _rand((n_rows, width), generator, device) * width, position)
    key = key.masked_fill_(~valid, 2.0 * width)  # padding last (ties there are harmless)
    order = key.argsort(dim=1)
    rank = (valid.cumsum(dim=1) - 1).clamp_(min=0)  # raster rank among the row's voxels
    source = rows.gather(1, order.gather(1, rank))
    target = torch.where(valid, rows, volume).flatten()  # padding goes to a spare slot
    index = torch.empty(volume + 1, dtype=torch.long, device=device).scatter_(0, target, source.flatten())
    if not layout:
        return index[:volume], None, None
    block_id = torch.arange(n_rows, device=device)[:, None].expand(n_rows, width).flatten()
    block = torch.empty(volume + 1, dtype=torch.long, device=device).scatter_(0, target, block_id)
    moved = (picked & (valid.sum(dim=1, keepdim=True) > 1)).expand(n_rows, width).flatten()
    shuffled = torch.empty(volume + 1, dtype=torch.bool, device=device).scatter_(0, target, moved)
    return index[:volume], block[:volume].view(*sizes), shuffled[:volume].view(*sizes)


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
    empty = torch.zeros((0, *sizes), dtype=torch.long, device=device)
    index = torch.stack([p[0] for p in plans]) if plans else empty.reshape(0, math.prod(sizes))
    if not layout:
        return ShufflePlan(chosen, index, None, None)
    block = torch.stack([p[1] for p in plans]) if plans else empty
    shuffled = torch.stack([p[2] for p in plans]) if plans else empty.bool()
    return ShufflePlan(chosen, index, block, shuffled)


def local_pixel_shuffle(
    x: Tensor,
    generator: torch.Generator,
    *,
    prob: float = 0.5,
    coverage: float = 0.8,
    max_block_fraction: float = 0.1,
) -> Tensor:
    """Models Genesis local pixel shuffling, batched (PCRL-SPEC "Views, corruptions and targets").

    With probability ``prob`` a sample is cut into a grid of non-overlapping blocks of one
    random shape, each side uniform in [1, floor(size * max_block_fraction)] (Models
    Genesis: size // 10), shifted by a random phase per axis; each block, with probability
    ``coverage``, has its voxels permuted uniformly at random (the same permutation for
    every channel). Every block keeps its multiset of values; local texture is destroyed.
    See the module docstring for how this differs from the release's sequential blocks.

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
    out = x.clone()
    if plan.samples.numel():
        flat = x[plan.samples].reshape(plan.samples.numel(), x.shape[1], -1)
        shuffled = flat.gather(2, plan.index[:, None, :].expand_as(flat))
        out.index_copy_(0, plan.samples, shuffled.view(-1, *x.shape[1:]))
    return out


# ------------------------------------------------------------------------ painting


class _Boxes(NamedTuple):
    """Half-open boxes ``[low, high)`` per sample: (N, B, 3) int64 bounds, (N, B) bool active."""

    low: Tensor
    high: Tensor
    active: Tensor


def _draw_boxes(
    n: int,
    sizes: Sequence[int],
    generator: torch.Generator,
    device: torch.device,
    *,
    side_low: Sequence[int],
    side_high: Sequence[int],
    max_boxes: int,
    continue_prob: float,
    first_always: bool,
    margin: int,
) -> _Boxes:
    """Random boxes as Models Genesis' painting draws them, for a whole batch at once.

    Box ``b`` of a sample exists if boxes ``0..b-1`` do and a uniform draw is below
    ``continue_prob`` (Models Genesis' ``while cnt > 0 and random.random() < 0.95``; with
    ``first_always`` box 0 always exists, as in out-painting). Sides are uniform in
    ``[side_low, side_high]`` per axis and corners uniform in
    ``[margin, size - side - margin]`` (the margin shrinks when the volume is too small).
    """
    shape = torch.tensor(list(sizes), dtype=torch.long, device=device)
    lo = torch.tensor([max(1, min(int(s), v)) for s, v in zip(side_low, sizes)], dtype=torch.long, device=device)
    hi = torch.tensor([max(1, min(int(s), v)) for s, v in zip(side_high, sizes)], dtype=torch.long, device=device)
    side = _randint(lo.expand(n, max_boxes, 3), torch.maximum(lo, hi).expand(n, max_boxes, 3), generator)
    edge = torch.minimum(torch.full_like(side, margin), (shape - side) // 2)  # margin that fits
    corner = _randint(edge, shape - side - edge, generator)
    go = _rand((n, max_boxes), generator, device) < continue_prob
    if first_always:
        go[:, 0] = True
    active = go.long().cumprod(dim=1).bool()
    return _Boxes(corner, corner + side, active)


def _box_mask(sizes: Sequence[int], boxes: _Boxes) -> Tensor:
    """(N, x, y, z) bool: voxels inside at least one active box.

    The number of boxes holding voxel (i, j, l) is ``sum_b [i, j in b] [l in b]``: a batched
    matrix product of the (x*y, B) and (B, z) indicator matrices, built by broadcasting
    aranges against the box bounds.
    """
    device = boxes.low.device
    inside = [
        (ar >= boxes.low[..., a, None]) & (ar < boxes.high[..., a, None])  # (N, B, size_a)
        for a, ar in enumerate(torch.arange(s, device=device) for s in sizes)
    ]
    in_xy = inside[0][:, :, :, None] & inside[1][:, :, None, :] & boxes.active[:, :, None, None]
    n, b = in_xy.shape[:2]
    plane = int(sizes[0]) * int(sizes[1])
    count = torch.bmm(
        in_xy.reshape(n, b, plane).transpose(1, 2).to(torch.float32), inside[2].to(torch.float32)
    )  # (N, x*y, z), small exact integers
    return (count > 0).view(n, *sizes)


def _inpaint_boxes(
    shape: Sequence[int],
    generator: torch.Generator,
    device: torch.device,
    *,
    max_boxes: int = 5,
    continue_prob: float = 0.95,
    size_fraction: Sequence[float] = (1 / 6, 1 / 3),
    margin: int = 3,
) -> _Boxes:
    """The boxes of :func:`in_paint`: 0..``max_boxes``, sides ``floor(size / 6)..floor(size / 3)``."""
    low, high = _check_fraction_range(size_fraction, "size_fraction")
    sizes = [int(s) for s in shape[-3:]]
    return _draw_boxes(
        int(shape[0]), sizes, generator, device,
        side_low=[_floor_fraction(s, low) for s in sizes],
        side_high=[_floor_fraction(s, high) for s in sizes],
        max_boxes=max_boxes, continue_prob=continue_prob, first_always=False, margin=margin,
    )  # fmt: skip


def _outpaint_boxes(
    shape: Sequence[int],
    generator: torch.Generator,
    device: torch.device,
    *,
    max_boxes: int = 5,
    continue_prob: float = 0.95,
    size_fraction: Sequence[float] = (3 / 7, 4 / 7),
    margin: int = 3,
) -> _Boxes:
    """The boxes :func:`out_paint` keeps: 1..``max_boxes``, sides ``size - randint(3 size // 7, 4 size // 7)``."""
    low, high = _check_fraction_range(size_fraction, "size_fraction")
    sizes = [int(s) for s in shape[-3:]]
    return _draw_boxes(
        int(shape[0]), sizes, generator, device,
        side_low=[s - _floor_fraction(s, high) for s in sizes],
        side_high=[s - _floor_fraction(s, low) for s in sizes],
        max_boxes=max_boxes, continue_prob=continue_prob, first_always=True, margin=margin,
    )  # fmt: skip


def _inpaint_mask(shape: Sequence[int], generator: torch.Generator, device: torch.device, **kwargs: Any) -> Tensor:
    """(N, x, y, z) bool: the voxels :func:`in_paint` replaces (union of its boxes)."""
    return _box_mask(shape[-3:], _inpaint_boxes(shape, generator, device, **kwargs))


def _outpaint_mask(shape: Sequence[int], generator: torch.Generator, device: torch.device, **kwargs: Any) -> Tensor:
    """(N, x, y, z) bool: the voxels :func:`out_paint` keeps (union of its boxes)."""
    return _box_mask(shape[-3:], _outpaint_boxes(shape, generator, device, **kwargs))


def _check_paint_args(
    x: Tensor, generator: torch.Generator, max_boxes: int, continue_prob: float, margin: int
) -> None:
    """Raise ``ValueError`` on a bad batch, generator or box setting of in/out-painting."""
    _check_batch(x)
    _check_generator(generator, x.device)
    _check_prob(continue_prob, "continue_prob")
    if max_boxes < 1 or margin < 0:
        raise ValueError(f"need max_boxes >= 1 and margin >= 0; got max_boxes={max_boxes}, margin={margin}")


def in_paint(
    x: Tensor,
    generator: torch.Generator,
    *,
    max_boxes: int = 5,
    continue_prob: float = 0.95,
    size_fraction: Sequence[float] = (1 / 6, 1 / 3),
    margin: int = 3,
) -> Tensor:
    """Models Genesis in-painting: up to ``max_boxes`` boxes filled with uniform noise.

    Per sample, boxes are added while a draw is below ``continue_prob`` (at most
    ``max_boxes``, possibly none); each side is uniform in
    [floor(size * 1/6), floor(size * 1/3)] and each box keeps ``margin`` voxels from the
    border (PCRL-SPEC "Views, corruptions and targets"; Models Genesis image_in_painting).

    Args:
        x: (N, C, x, y, z) batch in [0, 1].
        generator: randomness, on ``x.device``.
        max_boxes: most boxes per sample.
        continue_prob: probability of drawing one more box.
        size_fraction: (low, high) box side as a fraction of the volume's side.
        margin: distance of the boxes from the border, in voxels.

    Returns:
        The painted batch: uniform [0, 1) noise inside the boxes, ``x`` elsewhere.
    """
    _check_paint_args(x, generator, max_boxes, continue_prob, margin)
    mask = _inpaint_mask(
        x.shape, generator, x.device,
        max_boxes=max_boxes, continue_prob=continue_prob, size_fraction=size_fraction, margin=margin,
    )  # fmt: skip
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.where(mask[:, None], noise, x)


def out_paint(
    x: Tensor,
    generator: torch.Generator,
    *,
    max_boxes: int = 5,
    continue_prob: float = 0.95,
    size_fraction: Sequence[float] = (3 / 7, 4 / 7),
    margin: int = 3,
) -> Tensor:
    """Models Genesis out-painting: everything outside 1..``max_boxes`` boxes becomes noise.

    The first box always exists, each further one while a draw is below ``continue_prob``;
    box sides are about 3/7..4/7 of the volume's side, ``margin`` voxels from the border
    (PCRL-SPEC "Views, corruptions and targets"; Models Genesis image_out_painting).

    Args:
        x: (N, C, x, y, z) batch in [0, 1].
        generator: randomness, on ``x.device``.
        max_boxes: most boxes kept per sample.
        continue_prob: probability of drawing one more box.
        size_fraction: (low, high) box side as a fraction of the volume's side.
        margin: distance of the boxes from the border, in voxels.

    Returns:
        The painted batch: ``x`` inside the boxes, uniform [0, 1) noise outside.
    """
    _check_paint_args(x, generator, max_boxes, continue_prob, margin)
    keep = _outpaint_mask(
        x.shape, generator, x.device,
        max_boxes=max_boxes, continue_prob=continue_prob, size_fraction=size_fraction, margin=margin,
    )  # fmt: skip
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.where(keep[:, None], x, noise)


def _paint_mask(
    shape: Sequence[int], generator: torch.Generator, device: torch.device, *, prob: float, inpaint_prob: float
) -> Tensor:
    """(N, x, y, z) bool: the voxels :func:`paint` replaces with noise.

    Both kinds of boxes are drawn for every sample and each sample's kind picked before
    the mask is built, so one mask serves the batch: in-painted samples replace the voxels
    inside their boxes, out-painted ones those outside.
    """
    n = int(shape[0])
    painted = _rand((n,), generator, device) < prob
    inner = _rand((n,), generator, device) < inpaint_prob
    inside, outside = _inpaint_boxes(shape, generator, device), _outpaint_boxes(shape, generator, device)
    pick = inner[:, None]
    boxes = _Boxes(*(torch.where(pick[..., None] if a.ndim == 3 else pick, a, b) for a, b in zip(inside, outside)))
    mask = _box_mask(shape[-3:], boxes)
    return (mask == inner[:, None, None, None]) & painted[:, None, None, None]


def paint(x: Tensor, generator: torch.Generator, *, prob: float = 0.9, inpaint_prob: float = 0.2) -> Tensor:
    """Painting as PCRL uses it: with ``prob``, in-painting (``inpaint_prob``) else out-painting.

    Decided per sample; both kinds with their default boxes (:func:`in_paint`,
    :func:`out_paint`). Release: prob 0.9, inpaint_prob 0.2 (PCRL-SPEC).

    Args:
        x: (N, C, x, y, z) batch in [0, 1].
        generator: randomness, on ``x.device``.
        prob: probability that a sample is painted.
        inpaint_prob: probability that a painted sample is in-painted rather than out-painted.

    Returns:
        The painted batch (a new tensor).
    """
    _check_batch(x)
    _check_generator(generator, x.device)
    _check_prob(prob, "prob")
    _check_prob(inpaint_prob, "inpaint_prob")
    replaced = _paint_mask(x.shape, generator, x.device, prob=prob, inpaint_prob=inpaint_prob)
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.where(replaced[:, None], noise, x)


# ------------------------------------------------------------ non-linear intensity


def _bezier_table(points: Tensor, n_points: int) -> tuple[Tensor, Tensor]:
    """Cubic Bezier curves through (0, 0), P1, P2, (1, 1) sampled at ``n_points`` values of t.

    Args:
        points: (N, 4) control points ``(p1x, p1y, p2x, p2y)`` in [0, 1].

    Returns:
        ``(xs, ys)``, each (N, n_points), non-decreasing in t (a cubic Bezier whose control
        abscissae are 0, a, b, 1 with a, b in [0, 1] is monotone; ``cummax`` removes
        rounding wiggles so that ``searchsorted`` sees a sorted table).
    """
    t = torch.linspace(0.0, 1.0, n_points, device=points.device, dtype=points.dtype)
    b1, b2, b3 = 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
    xs = points[:, 0:1] * b1 + points[:, 2:3] * b2 + b3
    ys = points[:, 1:2] * b1 + points[:, 3:4] * b2 + b3
    return xs.cummax(dim=1).values, ys.cummax(dim=1).values


def bezier_intensity(
    x: Tensor,
    generator: torch.Generator,
    *,
    prob: float,
    invert_prob: float = 0.5,
    n_points: int = 1000,
) -> Tensor:
    """Models Genesis non-linear transformation: intensities mapped by a random Bezier curve.

    With probability ``prob`` a sample's intensities v in [0, 1] go through a monotone cubic
    Bezier curve through (0, 0), two uniform random control points and (1, 1), tabulated at
    ``n_points`` values of t and interpolated linearly (``np.interp`` semantics; Models
    Genesis tabulates 100,000). With probability ``invert_prob`` the curve is inverted as
    Models Genesis does: the abscissa x(t) is paired with the ordinate y(1 - t), a
    decreasing curve from (0, 1) to (1, 0). Values outside [0, 1] are clamped. PCRL-SPEC:
    switched off in the release (prob 0), kept selectable.

    Args:
        x: (N, C, x, y, z) batch in [0, 1].
        generator: randomness, on ``x.device``.
        prob: probability that a sample is transformed (Models Genesis: 0.9; PCRL: 0).
        invert_prob: probability that the curve is inverted.
        n_points: samples of the curve.

    Returns:
        The transformed batch (same dtype; samples not drawn are copied unchanged).
    """
    _check_batch(x)
    _check_generator(generator, x.device)
    _check_prob(prob, "prob")
    _check_prob(invert_prob, "invert_prob")
    if n_points < 2:
        raise ValueError(f"n_points must be >= 2; got {n_points}")
    n = x.shape[0]
    applied = _rand((n,), generator, x.device) < prob
    points = _rand((n, 4), generator, x.device)
    inverted = _rand((n,), generator, x.device) < invert_prob
    if n == 0 or not bool(applied.any()):
        return x.clone()
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    xs, ys = _bezier_table(points.to(work), n_points)
    ys = torch.where(inverted[:, None], ys.flip(dims=(1,)), ys)
    flat = x.reshape(n, -1)
    v = flat.to(work).clamp(0.0, 1.0).contiguous()
    right = torch.searchsorted(xs, v, right=True).clamp(1, n_points - 1)
    x0, x1 = xs.gather(1, right - 1), xs.gather(1, right)
    y0, y1 = ys.gather(1, right - 1), ys.gather(1, right)
    step = x1 - x0
    weight = torch.where(step > 0, (v - x0) / step.clamp_min(torch.finfo(work).tiny), torch.zeros_like(v))
    mapped = torch.lerp(y0, y1, weight.clamp(0.0, 1.0)).to(x.dtype)
    return torch.where(applied[:, None], mapped, flat).view_as(x)


# -------------------------------------------------------------------- augmentation


def _rotation_matrices(angles: Tensor) -> Tensor:
    """(N, 3, 3) rotations ``Rz @ Ry @ Rx`` for (N, 3) angles (radians) about x, y, z."""
    cos, sin = angles.cos(), angles.sin()
    one, zero = torch.ones_like(cos[:, 0]), torch.zeros_like(cos[:, 0])

    def rot(a: int, b: int, axis: int) -> Tensor:  # rotation in the (a, b) plane
        m = torch.stack([one, zero, zero, zero, one, zero, zero, zero, one], dim=1).view(-1, 3, 3).clone()
        m[:, a, a], m[:, a, b], m[:, b, a], m[:, b, b] = cos[:, axis], -sin[:, axis], sin[:, axis], cos[:, axis]
        return m

    return rot(0, 1, 2) @ rot(2, 0, 1) @ rot(1, 2, 0)


def _affine_theta(matrices: Tensor, sizes: Sequence[int]) -> Tensor:
    """``F.affine_grid`` thetas (N, 3, 4) for voxel-space maps about the volume centre.

    ``matrices`` (N, 3, 3) act on voxel offsets from the centre in (x, y, z) order and map
    output positions to input positions. With ``align_corners=False`` a voxel offset is
    ``size / 2`` times the normalised coordinate, so theta = D^-1 M D with D = diag(size / 2),
    then reversed to the grid's (z, y, x) coordinate order.
    """
    half = torch.tensor([s / 2 for s in sizes], dtype=matrices.dtype, device=matrices.device)
    theta = matrices * half[None, None, :] / half[None, :, None]
    theta = theta.flip(dims=(1, 2))
    return torch.cat([theta, torch.zeros_like(theta[:, :, :1])], dim=2)


def _affine(x: Tensor, matrices: Tensor) -> Tensor:
    """Trilinear resampling of ``x`` through voxel-space matrices (output -> input positions).

    Positions outside the volume take each sample's and channel's minimum (TorchIO's
    default pad value, as the release used), so the output stays within the input's range.
    """
    floor = x.amin(dim=(2, 3, 4), keepdim=True)
    theta = _affine_theta(matrices.to(x.dtype), x.shape[-3:])
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    warped = F.grid_sample(x - floor, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return warped + floor


def _blur_matrices(sigma: Tensor, size: int, radius: int, dtype: torch.dtype) -> Tensor:
    """(N, size, size) matrices of a 1-D Gaussian blur along one axis, borders replicated.

    Row i holds the weights of the 2 * radius + 1 taps ``exp(-t^2 / (2 sigma^2))`` (normalised
    to sum 1) at columns ``clamp(i + t, 0, size - 1)``, so taps beyond the border land on the
    edge voxel. A standard deviation of 0 gives the identity matrix.
    """
    taps = torch.arange(-radius, radius + 1, device=sigma.device)
    weights = torch.exp(-0.5 * (taps[None, :].to(dtype) / sigma.to(dtype).clamp_min(1e-6)[:, None]) ** 2)
    weights = weights / weights.sum(dim=1, keepdim=True)  # (N, T)
    columns = (torch.arange(size, device=sigma.device)[:, None] + taps[None, :]).clamp(0, size - 1)  # (size, T)
    n, width = sigma.shape[0], taps.numel()
    matrices = torch.zeros((n, size, size), dtype=dtype, device=sigma.device)
    return matrices.scatter_add_(2, columns.expand(n, size, width), weights[:, None, :].expand(n, size, width))


def _gaussian_blur(x: Tensor, sigma: Tensor, radius: int) -> Tensor:
    """Separable Gaussian blur with per-sample, per-axis standard deviations (voxels).

    Each axis is one batched product with a banded (size, size) matrix per sample
    (:func:`_blur_matrices`), which is exact, handles replicated borders and is much faster
    than a depthwise ``conv3d`` with per-sample kernels on the CPU.

    Args:
        x: (N, C, x, y, z) batch.
        sigma: (N, 3) standard deviations along x, y, z.
        radius: kernel half-width.
    """
    mx, my, mz = (_blur_matrices(sigma[:, a], x.shape[2 + a], radius, x.dtype) for a in range(3))
    out = torch.einsum("nij,ncjyz->nciyz", mx, x)
    out = torch.einsum("nij,ncxjz->ncxiz", my, out)
    return torch.einsum("nij,ncxyj->ncxyi", mz, out).contiguous()


def _flip_indices(flips: Tensor, sizes: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
    """Index tensors for :func:`_gather_xyz` that flip the axes marked in (N, 3) ``flips``."""
    n = flips.shape[0]
    size_x, size_y, size_z = (int(s) for s in sizes)
    ar = [torch.arange(s, device=flips.device) for s in (size_x, size_y, size_z)]
    xs = torch.where(flips[:, 0, None], size_x - 1 - ar[0], ar[0])[:, :, None].expand(n, size_x, size_y)
    ys = torch.where(flips[:, 1, None], size_y - 1 - ar[1], ar[1])[:, None, :].expand(n, size_x, size_y)
    zs = torch.where(flips[:, 2, None], size_z - 1 - ar[2], ar[2])
    return xs, ys, zs


def augment(
    x: Tensor,
    generator: torch.Generator,
    *,
    flip: bool = True,
    flip_prob: float = 0.5,
    flip_axes: Sequence[int] = (0, 1, 2),
    affine: bool = True,
    affine_prob: float = 1.0,
    degrees: float = 10.0,
    scale: float = 0.1,
    blur: bool = True,
    blur_prob: float = 1.0,
    blur_sigma: Sequence[float] = (0.0, 2.0),
    blur_truncate: float = 3.0,
) -> Tensor:
    """Geometric and intensity augmentation of a view before corruption (PCRL-SPEC).

    In order, each part switchable off: random flips (each axis of ``flip_axes``
    independently with ``flip_prob``); with ``affine_prob`` a random affine about the volume
    centre, rotations uniform in +-``degrees`` about each axis and scales uniform in
    [1 - scale, 1 + scale] per axis, resampled trilinearly; with ``blur_prob`` a Gaussian
    blur whose standard deviation is uniform in ``blur_sigma`` per axis (voxels). The
    defaults are those of the transforms the release applies (TorchIO RandomFlip,
    RandomAffine, RandomBlur), except that the release flips the first axis only.
    Outputs stay within each sample's input range.

    Args:
        x: (N, C, x, y, z) batch in [0, 1].
        generator: randomness, on ``x.device``.
        flip: apply random flips.
        flip_prob: probability of flipping each axis.
        flip_axes: spatial axes that may flip (0 = x, 1 = y, 2 = z).
        affine: apply the random affine.
        affine_prob: probability that a sample gets the affine.
        degrees: largest rotation about each axis, in degrees.
        scale: largest relative change of size per axis.
        blur: apply the Gaussian blur.
        blur_prob: probability that a sample is blurred.
        blur_sigma: (low, high) standard deviation in voxels.
        blur_truncate: kernel half-width in units of the largest standard deviation.

    Returns:
        The augmented batch (a new tensor).
    """
    _check_batch(x)
    _check_generator(generator, x.device)
    for value, name in ((flip_prob, "flip_prob"), (affine_prob, "affine_prob"), (blur_prob, "blur_prob")):
        _check_prob(value, name)
    if any(a not in (0, 1, 2) for a in flip_axes):
        raise ValueError(f"flip_axes must be spatial axes among 0, 1, 2 (x, y, z); got {tuple(flip_axes)}")
    if not 0.0 <= scale < 1.0 or degrees < 0:
        raise ValueError(f"need degrees >= 0 and 0 <= scale < 1; got degrees={degrees}, scale={scale}")
    sigma_low, sigma_high = (float(v) for v in blur_sigma)
    if not 0.0 <= sigma_low <= sigma_high:
        raise ValueError(f"blur_sigma must be (low, high) with 0 <= low <= high; got {tuple(blur_sigma)}")
    n, device = x.shape[0], x.device
    out = x.clone()
    if flip:
        allowed = torch.zeros(3, dtype=torch.bool, device=device)
        allowed[list(flip_axes)] = True
        flips = (_rand((n, 3), generator, device) < flip_prob) & allowed
        out = _gather_xyz(out, *_flip_indices(flips, out.shape[-3:]))
    if affine:
        chosen = (_rand((n,), generator, device) < affine_prob).nonzero().squeeze(1)
        angles = (2 * _rand((n, 3), generator, device) - 1) * math.radians(degrees)
        scales = 1 + (2 * _rand((n, 3), generator, device) - 1) * scale
        if chosen.numel():
            # forward map A = R diag(s) (scale, then rotate); grid_sample needs A^-1
            inverse = (1 / scales)[:, :, None] * _rotation_matrices(angles).transpose(1, 2)
            out = out.index_copy(0, chosen, _affine(out[chosen], inverse[chosen]))
    if blur:
        chosen = _rand((n,), generator, device) < blur_prob
        sigma = sigma_low + (sigma_high - sigma_low) * _rand((n, 3), generator, device)
        sigma = torch.where(chosen[:, None], sigma, torch.zeros_like(sigma))
        radius = int(math.ceil(blur_truncate * sigma_high))
        if radius > 0 and bool(chosen.any()):
            out = _gaussian_blur(out, sigma, radius)
    return out


# ------------------------------------------------------------------------- corrupt


@dataclass(frozen=True)
class CorruptionConfig:
    """Probabilities of the PCRL corruption chain (PCRL-SPEC "Views, corruptions and targets").

    Attributes:
        shuffle_prob: probability of local pixel shuffling (release 0.5).
        shuffle_coverage: fraction of shuffling blocks that are shuffled (see
            :func:`local_pixel_shuffle`).
        shuffle_max_block_fraction: largest shuffling block side / volume side (1/10).
        nonlinear_prob: probability of the Bezier intensity transform (release 0: off;
            Models Genesis 0.9).
        paint_prob: probability of painting (release 0.9).
        inpaint_prob: probability that painting is in-painting rather than out-painting
            (release 0.2).
    """

    shuffle_prob: float = 0.5
    shuffle_coverage: float = 0.8
    shuffle_max_block_fraction: float = 0.1
    nonlinear_prob: float = 0.0
    paint_prob: float = 0.9
    inpaint_prob: float = 0.2

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"{field.name}: must be a number in [0, 1]; got {value!r}")


def corrupt(x: Tensor, config: CorruptionConfig, generator: torch.Generator) -> Tensor:
    """The PCRL corruption chain: local shuffling -> non-linear intensity -> painting.

    PCRL-SPEC "Views, corruptions and targets", rules of Models Genesis. The non-linear
    transform is skipped (and draws nothing) when ``config.nonlinear_prob`` is 0.

    Args:
        x: (N, C, x, y, z) batch in [0, 1] (usually after :func:`augment`).
        config: probabilities of each corruption.
        generator: randomness, on ``x.device``.

    Returns:
        The corrupted batch (a new tensor).
    """
    _check_batch(x)
    _check_generator(generator, x.device)
    out = local_pixel_shuffle(
        x, generator,
        prob=config.shuffle_prob, coverage=config.shuffle_coverage,
        max_block_fraction=config.shuffle_max_block_fraction,
    )  # fmt: skip
    if config.nonlinear_prob > 0:
        out = bezier_intensity(out, generator, prob=config.nonlinear_prob)
    return paint(out, generator, prob=config.paint_prob, inpaint_prob=config.inpaint_prob)
