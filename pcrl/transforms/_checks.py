"""Argument checks and random draws shared by the :mod:`pcrl.transforms` submodules.

All randomness of the package goes through :func:`_rand` and :func:`_randint` (or direct
``torch.rand``/``torch.randint`` calls with an explicit ``generator``), never the global RNGs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

#: Anything ``torch.device`` accepts, or ``None`` for "the generator's device".
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


def _uniform(shape: Sequence[int], generator: torch.Generator, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Uniform [0, 1) numbers of ``shape`` and ``dtype`` for bulk draws (noise, sort keys).

    Written by hand for float32 on the CPU, where ``torch.rand`` spends about 4.4 ns per
    number (one Mersenne-Twister draw and a double-precision scaling each): here each 64-bit
    draw of ``random_`` gives two numbers, its two 32-bit halves keeping 23 bits each as the
    mantissa of a float in [1, 2), minus 1 -- a uniform grid of 2^-23 steps, about 1.7x
    faster (benchmarks/bench_transforms.py). Elsewhere (CUDA's Philox, other dtypes)
    ``torch.rand``.
    """
    shape = tuple(int(s) for s in shape)
    if torch.device(device).type != "cpu" or dtype != torch.float32:
        return torch.rand(shape, generator=generator, device=device, dtype=dtype)
    count = math.prod(shape)
    bits = torch.empty((count + 1) // 2, dtype=torch.int64, device=device).random_(generator=generator)
    halves = bits.view(torch.int32)[:count]  # random_ fills 63 bits: each half's low 23 are uniform
    return halves.bitwise_and_(0x7FFFFF).bitwise_or_(0x3F800000).view(torch.float32).sub_(1.0).view(shape)


def _randint(low: Tensor, high: Tensor, generator: torch.Generator) -> Tensor:
    """Integers uniform in [low, high] (both inclusive, element-wise, broadcast) as int64.

    Like Python's ``random.randint`` used by Models Genesis, but for whole tensors of bounds.
    """
    low, high = torch.broadcast_tensors(low.long(), high.long())
    u = torch.rand(low.shape, generator=generator, device=low.device, dtype=torch.float32)
    value = low + (u * (high - low + 1).to(torch.float32)).long()
    return torch.minimum(value, high)  # float rounding of u * n can reach n

