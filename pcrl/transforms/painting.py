"""Models Genesis in-painting and out-painting, batched (docs/method.md "Views, corruptions and targets").

Boxes are drawn for the whole batch at once (:func:`_draw_boxes`) and laid over the noise
by slice copies (:func:`_paint_boxes`); :func:`paint` picks in- or out-painting per sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from pcrl.transforms._checks import (
    _check_batch,
    _check_fraction_range,
    _check_generator,
    _check_prob,
    _floor_fraction,
    _rand,
    _randint,
    _uniform,
)

__all__ = ["in_paint", "out_paint", "paint"]


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


def _paint_boxes(x: Tensor, generator: torch.Generator, boxes: _Boxes, inner: Tensor, painted: Tensor) -> Tensor:
    """Draw uniform noise like ``x`` and compose the painted samples in it by box copies.

    Per sample: unpainted, ``x``; in-painted (``inner``), ``x`` with the noise of its active
    boxes; out-painted, the noise with ``x`` in its active boxes. Overlapping boxes copy the
    same values, so the result is the union of the boxes, as a mask would give.

    Written as slice copies rather than ``torch.where`` over a rasterised mask: the boxes
    are axis-aligned and few (at most 5 per sample), so copying them touches each voxel
    about once, where a mask costs a (N, x*y, z) matrix product, comparisons and a
    three-input select over the whole batch, 2-3x the time on the CPU
    (benchmarks/bench_transforms.py). The bounds and choices are read to the host once per call
    (five small transfers on a GPU, where benchmarks/gpu_check.py times the chain).
    """
    noise = _uniform(x.shape, generator, x.device, x.dtype)
    low, high, active = boxes.low.tolist(), boxes.high.tolist(), boxes.active.tolist()
    for i, (is_painted, is_inner) in enumerate(zip(painted.tolist(), inner.tolist())):
        kept = [(slice(None), *map(slice, lo, hi)) for lo, hi, on in zip(low[i], high[i], active[i]) if on]
        if not is_painted:
            noise[i].copy_(x[i])
        elif is_inner:  # noise inside the boxes: keep it aside, lay x down, put it back
            patches = [noise[i][box].clone() for box in kept]
            noise[i].copy_(x[i])
            for box, patch in zip(kept, patches):
                noise[i][box] = patch
        else:  # out-painting: x inside the boxes, noise elsewhere
            for box in kept:
                noise[i][box] = x[i][box]
    return noise


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
    border (docs/method.md "Views, corruptions and targets"; Models Genesis image_in_painting).

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
    boxes = _inpaint_boxes(
        x.shape, generator, x.device,
        max_boxes=max_boxes, continue_prob=continue_prob, size_fraction=size_fraction, margin=margin,
    )  # fmt: skip
    every = torch.ones(x.shape[0], dtype=torch.bool)
    return _paint_boxes(x, generator, boxes, inner=every, painted=every)


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
    (docs/method.md "Views, corruptions and targets"; Models Genesis image_out_painting).

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
    boxes = _outpaint_boxes(
        x.shape, generator, x.device,
        max_boxes=max_boxes, continue_prob=continue_prob, size_fraction=size_fraction, margin=margin,
    )  # fmt: skip
    every = torch.ones(x.shape[0], dtype=torch.bool)
    return _paint_boxes(x, generator, boxes, inner=~every, painted=every)


def _paint_plan(
    shape: Sequence[int], generator: torch.Generator, device: torch.device, *, prob: float, inpaint_prob: float
) -> tuple[_Boxes, Tensor, Tensor]:
    """The draws of :func:`paint`: ``(boxes, inner, painted)``.

    ``painted`` (N,) says which samples are painted, ``inner`` (N,) which of them are
    in-painted. Both kinds of boxes are drawn for every sample; ``boxes`` holds each
    sample's kind (in-painting's boxes where ``inner``, out-painting's elsewhere).
    """
    n = int(shape[0])
    painted = _rand((n,), generator, device) < prob
    inner = _rand((n,), generator, device) < inpaint_prob
    inside, outside = _inpaint_boxes(shape, generator, device), _outpaint_boxes(shape, generator, device)
    pick = inner[:, None]
    boxes = _Boxes(*(torch.where(pick[..., None] if a.ndim == 3 else pick, a, b) for a, b in zip(inside, outside)))
    return boxes, inner, painted


def paint(x: Tensor, generator: torch.Generator, *, prob: float = 0.9, inpaint_prob: float = 0.2) -> Tensor:
    """Painting as PCRL uses it: with ``prob``, in-painting (``inpaint_prob``) else out-painting.

    Decided per sample; both kinds with their default boxes (:func:`in_paint`,
    :func:`out_paint`). Release: prob 0.9, inpaint_prob 0.2 (docs/method.md).

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
    boxes, inner, painted = _paint_plan(x.shape, generator, x.device, prob=prob, inpaint_prob=inpaint_prob)
    return _paint_boxes(x, generator, boxes, inner=inner, painted=painted)
