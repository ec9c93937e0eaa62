"""Models Genesis non-linear intensity transform: a random monotone Bezier curve per sample."""

from __future__ import annotations

import torch
from torch import Tensor

from pcrl.transforms._checks import _check_batch, _check_generator, _check_prob, _rand

__all__ = ["bezier_intensity"]


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
    decreasing curve from (0, 1) to (1, 0). Values outside [0, 1] are clamped. docs/method.md:
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
