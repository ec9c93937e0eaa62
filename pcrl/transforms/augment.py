"""Augmentation of a view before corruption: random flips, a small affine, a Gaussian blur.

The three transforms the release applies to each crop (with the defaults of the library
it calls: rotations up to 10 degrees, scales 0.9..1.1, blur standard deviation 0..2 voxels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from pcrl.transforms._checks import _check_batch, _check_generator, _check_prob, _rand
from pcrl.transforms.spatial import _gather_xyz

__all__ = ["augment"]


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


def _check_augment_args(
    flip_prob: float,
    affine_prob: float,
    blur_prob: float,
    flip_axes: Sequence[int],
    degrees: float,
    scale: float,
    blur_sigma: Sequence[float],
) -> tuple[float, float]:
    """Raise ``ValueError`` on a bad setting of :func:`augment`; return ``blur_sigma`` as (low, high)."""
    for value, name in ((flip_prob, "flip_prob"), (affine_prob, "affine_prob"), (blur_prob, "blur_prob")):
        _check_prob(value, name)
    if any(a not in (0, 1, 2) for a in flip_axes):
        raise ValueError(f"flip_axes must be spatial axes among 0, 1, 2 (x, y, z); got {tuple(flip_axes)}")
    if not 0.0 <= scale < 1.0 or degrees < 0:
        raise ValueError(f"need degrees >= 0 and 0 <= scale < 1; got degrees={degrees}, scale={scale}")
    sigma_low, sigma_high = (float(v) for v in blur_sigma)
    if not 0.0 <= sigma_low <= sigma_high:
        raise ValueError(f"blur_sigma must be (low, high) with 0 <= low <= high; got {tuple(blur_sigma)}")
    return sigma_low, sigma_high


def _random_flips(x: Tensor, generator: torch.Generator, flip_prob: float, flip_axes: Sequence[int]) -> Tensor:
    """Flip each axis of ``flip_axes`` of each sample independently with ``flip_prob`` (one (N, 3) draw)."""
    n, device = x.shape[0], x.device
    allowed = torch.zeros(3, dtype=torch.bool, device=device)
    allowed[list(flip_axes)] = True
    flips = (_rand((n, 3), generator, device) < flip_prob) & allowed
    return _gather_xyz(x, *_flip_indices(flips, x.shape[-3:]))


#: Axes a 2D image may move along: x and y; z (its single slice) stays put.
_PLANAR = torch.tensor([True, True, False])


def _random_affine(
    x: Tensor, generator: torch.Generator, affine_prob: float, degrees: float, scale: float, spatial_dims: int = 3
) -> Tensor:
    """With ``affine_prob`` per sample, a random rotation (+-``degrees``) and scaling (1 +- ``scale``).

    Draws, in order and for every sample: the choice, three angles, three scales. With
    ``spatial_dims`` 2 it keeps only the rotation about z and the x, y scales (the same draws, the others zeroed).
    """
    n, device = x.shape[0], x.device
    chosen = (_rand((n,), generator, device) < affine_prob).nonzero().squeeze(1)
    angles = (2 * _rand((n, 3), generator, device) - 1) * math.radians(degrees)
    scales = 1 + (2 * _rand((n, 3), generator, device) - 1) * scale
    if spatial_dims == 2:
        in_plane = _PLANAR.to(device)
        angles = torch.where(~in_plane, angles, torch.zeros_like(angles))  # about z only
        scales = torch.where(in_plane, scales, torch.ones_like(scales))
    if not chosen.numel():
        return x
    # forward map A = R diag(s) (scale, then rotate); grid_sample needs A^-1
    inverse = (1 / scales)[:, :, None] * _rotation_matrices(angles).transpose(1, 2)
    return x.index_copy(0, chosen, _affine(x[chosen], inverse[chosen]))


def _random_blur(
    x: Tensor,
    generator: torch.Generator,
    blur_prob: float,
    sigma_range: tuple[float, float],
    blur_truncate: float,
    spatial_dims: int = 3,
) -> Tensor:
    """With ``blur_prob`` per sample, a Gaussian blur of per-axis standard deviation uniform in ``sigma_range``.

    Draws, in order and for every sample: the choice, then three standard deviations
    (``spatial_dims`` 2: the z one is zeroed).
    """
    n, device = x.shape[0], x.device
    sigma_low, sigma_high = sigma_range
    chosen = _rand((n,), generator, device) < blur_prob
    sigma = sigma_low + (sigma_high - sigma_low) * _rand((n, 3), generator, device)
    sigma = torch.where(chosen[:, None], sigma, torch.zeros_like(sigma))
    if spatial_dims == 2:
        sigma = torch.where(_PLANAR.to(device), sigma, torch.zeros_like(sigma))
    radius = int(math.ceil(blur_truncate * sigma_high))
    if radius > 0 and bool(chosen.any()):
        return _gaussian_blur(x, sigma, radius)
    return x


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
    spatial_dims: int = 3,
) -> Tensor:
    """Geometric and intensity augmentation of a view before corruption (docs/method.md).

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
        spatial_dims: 3, or 2 when the batch holds 2D images as one-slice volumes (N, C, x, y, 1): flips of z
            are dropped, rotations are about z only, z is neither scaled nor blurred. The
            same numbers are drawn, so 2D and 3D share one implementation and one stream.

    Returns:
        The augmented batch (a new tensor).
    """
    _check_batch(x)
    _check_generator(generator, x.device)
    sigma_range = _check_augment_args(flip_prob, affine_prob, blur_prob, flip_axes, degrees, scale, blur_sigma)
    if spatial_dims == 2 and x.shape[-1] != 1:
        raise ValueError(f"2D augmentation needs one-slice volumes (N, C, x, y, 1); got {tuple(x.shape)}")
    if spatial_dims == 2:
        flip_axes = [a for a in flip_axes if a != 2]
    out = x.clone()
    if flip:
        out = _random_flips(out, generator, flip_prob, flip_axes)
    if affine:
        out = _random_affine(out, generator, affine_prob, degrees, scale, spatial_dims)
    if blur:
        out = _random_blur(out, generator, blur_prob, sigma_range, blur_truncate, spatial_dims)
    return out
