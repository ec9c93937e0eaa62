"""Spatial codes and the flips / quarter turns they describe (docs/method.md, TCA).

A spatial code is a 7-vector per sample (docs/method.md "Transformation-conditioned
attention"): flips of x, y, z as 0/1, then a one-hot of k = 0..3 quarter turns in the x-y
plane (dims -3, -2). :func:`apply_spatial` flips first, then turns; :func:`invert_spatial`
undoes it exactly. Both move voxels without arithmetic (a gather by index on a GPU, one
strided copy per distinct code on the CPU), so they are exact for any dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pcrl.transforms._checks import _check_batch, _check_generator, _DeviceLike, _rand

__all__ = [
    "CODE_SIZE",
    "CODE_SIZE_2D",
    "apply_spatial",
    "decode_spatial",
    "encode_spatial",
    "invert_spatial",
    "codes_2d",
    "spatial_codes",
    "volume_codes",
]

#: Length of a spatial code: 3 flip bits (x, y, z) and a one-hot of k = 0..3 quarter turns.
CODE_SIZE = 7
#: Length of a 2D spatial code (PCRL's ChestX-ray14 setting): flips of x, y and the one-hot of k.
CODE_SIZE_2D = 6
#: Entries of a 3D code that a 2D code keeps (all but the flip of z).
_2D_ENTRIES = (0, 1, 3, 4, 5, 6)


def encode_spatial(flips: Tensor, k: Tensor) -> Tensor:
    """Spatial codes from flip bits and quarter-turn counts (docs/method.md, TCA).

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


def spatial_codes(n: int, generator: torch.Generator, device: _DeviceLike = None, *, spatial_dims: int = 3
                  ) -> Tensor:
    """Random spatial transforms as codes, one per sample (docs/method.md, TCA).

    Each flip has probability 1/2 and k is uniform in 0..3, as in the release.

    Args:
        n: number of codes.
        generator: source of randomness, on ``device``.
        device: where the codes are created; the generator's device when ``None``.

        spatial_dims: 3, or 2: z is never flipped (2D images as one-slice volumes; :func:`codes_2d`
            gives their 6-entry codes).

    Returns:
        (n, 7) float32 codes (see :func:`encode_spatial`).
    """
    device = generator.device if device is None else torch.device(device)
    _check_generator(generator, device)
    flips = _rand((n, 3), generator, device) < 0.5
    if spatial_dims == 2:  # the same draws, z never flipped: one-slice volumes of 2D images
        flips[:, 2] = False
    k = torch.randint(0, 4, (n,), generator=generator, device=device)
    return encode_spatial(flips, k)


def codes_2d(codes: Tensor) -> Tensor:
    """The (N, 6) 2D codes of (N, 7) codes without a flip of z: flips of x, y, one-hot of k.

    A 2D image is handled as a one-slice volume (N, C, x, y, 1), so its transforms are the 3D
    ones with z never flipped; the 2D code is the 3D code without that entry.

    Raises:
        ValueError: a code flips z (no 2D transform does).
    """
    if codes.ndim != 2 or codes.shape[1] != CODE_SIZE:
        raise ValueError(f"codes must be (N, {CODE_SIZE}); got shape {tuple(codes.shape)}")
    if bool((codes[:, 2] != 0).any()):
        raise ValueError("a 2D code cannot flip z; draw the codes with spatial_dims=2")
    return codes[:, list(_2D_ENTRIES)]


def volume_codes(codes: Tensor) -> Tensor:
    """The (N, 7) codes of (N, 6) 2D codes (inverse of :func:`codes_2d`): z not flipped."""
    if codes.ndim != 2 or codes.shape[1] != CODE_SIZE_2D:
        raise ValueError(f"2D codes must be (N, {CODE_SIZE_2D}); got shape {tuple(codes.shape)}")
    return torch.cat([codes[:, :2], torch.zeros_like(codes[:, :1]), codes[:, 2:]], dim=1)


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


#: The flips (of x, y) whose composition with a transpose of x and y is ``torch.rot90`` by k
#: quarter turns in x-y: ``rot90(a, k) == flip(a, _TURN_FLIPS[k]).transpose(x, y)`` for odd k,
#: ``flip(a, _TURN_FLIPS[k])`` for even k (PyTorch's own definition of ``rot90``).
_TURN_FLIPS = ({0: False, 1: False}, {0: False, 1: True}, {0: True, 1: True}, {0: True, 1: False})


def _flips_then_swap(flips: list[bool], k: int, *, inverse: bool) -> tuple[list[int], bool]:
    """One sample's transform as a single flip (axes of x, y, z) and whether x, y are swapped.

    Forward ``rot_k(flip(a, F))`` is ``flip(a, F ^ R_k)``, transposed for odd k (``R_k``:
    :data:`_TURN_FLIPS`). Inverse ``flip(rot_m(a), F)`` with m = -k mod 4: flipping after a
    transpose flips the other axis before it, so F's x and y trade places for odd m.
    """
    turns = (-k) % 4 if inverse else k
    swap = turns % 2 == 1
    own = list(flips)
    if inverse and swap:
        own[0], own[1] = own[1], own[0]
    turn = _TURN_FLIPS[turns]
    axes = [own[0] != turn[0], own[1] != turn[1], own[2]]
    return [a for a in range(3) if axes[a]], swap


def _per_sample(x: Tensor, flips: Tensor, k: Tensor, out_xy: tuple[int, int], *, inverse: bool) -> Tensor:
    """The transforms as one ``torch.flip`` and one (possibly transposed) copy per sample.

    On the CPU two strided passes per sample are several times faster than the index
    gather of :func:`_gather_xyz` (which reads through 64-bit index tensors) and than
    grouping samples by code (whose selects and ``rot90`` copy every voxel 3-4 times);
    the results are the same permutation of voxels.
    """
    n, c, _, _, size_z = x.shape
    out = x.new_empty((n, c, *out_xy, size_z))
    for i, (sample_flips, turns) in enumerate(zip(flips.tolist(), k.tolist())):
        dims, swap = _flips_then_swap(sample_flips, turns, inverse=inverse)
        view = x[i].flip([1 + a for a in dims]) if dims else x[i]
        out[i].copy_(view.transpose(1, 2) if swap else view)
    return out


def _spatial(x: Tensor, codes: Tensor, *, inverse: bool, gather: bool | None = None) -> Tensor:
    """Apply (``inverse=False``) or undo (``inverse=True``) the transforms of ``codes``; by
    one index gather (``gather``; default off the CPU) or by copies per sample."""
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
    if not (x.device.type != "cpu" if gather is None else gather):
        return _per_sample(x, flips, k, (size_y, size_x) if swap else (size_x, size_y), inverse=inverse)
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
    batch by one gather. docs/method.md "Views, corruptions and targets": targets are T(view).

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
