"""Inputs and reconstruction targets of a pretraining step, built on the batch's device.

docs/method.md "Views, corruptions and targets": each view of a pair (two crops of one region,
values in [0, 1]) is augmented (flip / affine / blur), then corrupted (local pixel
shuffling, in- or out-painting, optionally a Bezier intensity curve); a spatial transform
``T`` (flips, quarter turns in x-y) with code ``c`` is drawn per view, and the
reconstruction target is ``T`` applied to

* the clean augmented view (``target="intent"``, default: restore *and* transform), or
* the corrupted view (``target="release"``, as the released code does).

This module also holds the mixing helpers of PCRL's hybrid encoder and batch mixup:
``alpha, lambda ~ Beta(1, 1)`` folded to ``max(u, 1 - u)``; Beta(1, 1) is Uniform(0, 1),
so one uniform draw from the step's generator suffices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from pcrl import transforms
from pcrl.errors import ConfigError

__all__ = [
    "Mixup",
    "TargetMode",
    "ViewConfig",
    "Views",
    "augment_and_corrupt",
    "draw_mixup",
    "folded_uniform",
    "identity_codes",
    "make_views",
]

TargetMode = Literal["intent", "release"]


@dataclass(frozen=True)
class ViewConfig:
    """How a pretraining pair becomes network inputs and targets.

    Attributes:
        target: ``"intent"`` (T applied to the clean augmented view, default) or
            ``"release"`` (T applied to the corrupted view).
        corruption: settings of :func:`pcrl.transforms.corrupt`.
        augment: keyword arguments of :func:`pcrl.transforms.augment` (flip, affine,
            blur ...); empty for its defaults.
        spatial: draw a spatial transform per view (True); False uses the identity
            (codes of no flip and no turn), as PCRL's ablation without TCA.
    """

    target: TargetMode = "intent"
    corruption: transforms.CorruptionConfig = field(default_factory=transforms.CorruptionConfig)
    augment: Mapping[str, Any] = field(default_factory=dict)
    spatial: bool = True

    def __post_init__(self) -> None:
        if self.target not in get_args(TargetMode):
            raise ConfigError(f"target must be one of {get_args(TargetMode)}, got {self.target!r}")
        if not isinstance(self.corruption, transforms.CorruptionConfig):
            raise ConfigError(
                f"corruption must be a CorruptionConfig, got {type(self.corruption).__name__}"
            )
        if not isinstance(self.augment, Mapping):
            raise ConfigError(f"augment must be a mapping of keyword arguments, got {self.augment!r}")


@dataclass(frozen=True)
class Views:
    """One step's inputs and targets for a batch of pairs; all (N, C, x, y, z) but the codes.

    Attributes:
        clean1, clean2: the augmented views before corruption.
        input1, input2: the corrupted views, the networks' inputs.
        codes1, codes2: (N, 7) spatial-transform codes (flips x, y, z; one-hot k = 0..3);
            (N, 6) in 2D (no flip of z).
        base1, base2: the reconstruction targets before the spatial transform: the clean
            views (``"intent"``) or the corrupted ones (``"release"``). (PCRL's mixup pass,
            which has no TCA, reconstructs ``clean1``/``clean2`` in both modes.)
        target1, target2: ``apply_spatial(base, codes)``, the targets of the TCA passes.
    """

    clean1: Tensor
    clean2: Tensor
    input1: Tensor
    input2: Tensor
    codes1: Tensor
    codes2: Tensor
    base1: Tensor
    base2: Tensor
    target1: Tensor
    target2: Tensor


def _check_batch(name: str, x: Tensor) -> None:
    if x.ndim not in (4, 5):
        raise ValueError(f"{name} must be a batch (N, C, x, y, z) or, in 2D, (N, C, x, y); got shape {tuple(x.shape)}")


def _lift(x: Tensor) -> Tensor:
    """A 2D batch (N, C, x, y) as one-slice volumes (N, C, x, y, 1); 3D batches unchanged."""
    return x[..., None] if x.ndim == 4 else x


def augment_and_corrupt(x: Tensor, config: ViewConfig, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Augment a batch, then corrupt it (Models Genesis' and PCRL's input pipeline).

    A 2D batch (PCRL's ChestX-ray14 setting) runs through the same 3D transforms as one-slice
    volumes, with the 2D augmentation (in-plane rotations, no flip / scaling / blur of z).

    Args:
        x: (N, C, x, y, z) or (N, C, x, y) clean views in [0, 1].
        config: augmentation and corruption settings.
        generator: torch.Generator on ``x``'s device.

    Returns:
        ``(clean, corrupted)``: the augmented view and the corrupted network input, shaped as ``x``.
    """
    _check_batch("x", x)
    spatial_dims = x.ndim - 2
    volume = _lift(x)
    clean = transforms.augment(volume, generator, **{**dict(config.augment), "spatial_dims": spatial_dims})
    corrupted = transforms.corrupt(clean, config.corruption, generator)
    return (clean[..., 0], corrupted[..., 0]) if spatial_dims == 2 else (clean, corrupted)


def identity_codes(n: int, device: torch.device | str) -> Tensor:
    """(n, 7) codes of the identity transform: no flip, zero quarter turns."""
    codes = torch.zeros(n, 7, device=device)
    codes[:, 3] = 1.0
    return codes


def make_views(x1: Tensor, x2: Tensor, config: ViewConfig, generator: torch.Generator) -> Views:
    """Build inputs, codes and targets from a batch of clean pairs (docs/method.md "Views").

    Draw order from ``generator`` (fixed, for reproducibility): augment+corrupt view 1,
    augment+corrupt view 2, codes of view 1, codes of view 2.

    Args:
        x1, x2: (N, C, x, y, z) the two crops of each pair, values in [0, 1]; or 2D crops
            (N, C, x, y), handled as one-slice volumes with 6-entry codes (flips of x, y and
            the one-hot of k; the ChestX-ray14 setting of the paper).
        config: view settings.
        generator: torch.Generator on the batch's device.

    Returns:
        The :class:`Views` of the step (2D tensors and (N, 6) codes for a 2D batch).

    Raises:
        ValueError: if ``x1`` and ``x2`` are not batches of the same shape, or, with spatial
            transforms, if x and y differ in size (a quarter turn would change the shape).
    """
    _check_batch("x1", x1)
    if x1.shape != x2.shape:
        raise ValueError(f"x1 and x2 must have the same shape, got {tuple(x1.shape)} and {tuple(x2.shape)}")
    if config.spatial and x1.shape[2] != x1.shape[3]:
        raise ValueError(
            f"spatial targets turn the x-y plane: x and y sizes must be equal, got batch {tuple(x1.shape)}"
        )
    spatial_dims = x1.ndim - 2
    clean1, input1 = augment_and_corrupt(x1, config, generator)
    clean2, input2 = augment_and_corrupt(x2, config, generator)
    n = x1.shape[0]
    if config.spatial:
        codes1 = transforms.spatial_codes(n, generator, x1.device, spatial_dims=spatial_dims)
        codes2 = transforms.spatial_codes(n, generator, x1.device, spatial_dims=spatial_dims)
    else:
        codes1 = codes2 = identity_codes(n, x1.device)
    base1, base2 = (clean1, clean2) if config.target == "intent" else (input1, input2)
    target1 = transforms.apply_spatial(_lift(base1), codes1)
    target2 = transforms.apply_spatial(_lift(base2), codes2)
    if spatial_dims == 2:  # back to 2D: images (N, C, x, y) and 6-entry codes
        target1, target2 = target1[..., 0], target2[..., 0]
        codes1, codes2 = transforms.codes_2d(codes1), transforms.codes_2d(codes2)
    return Views(
        clean1=clean1,
        clean2=clean2,
        input1=input1,
        input2=input2,
        codes1=codes1,
        codes2=codes2,
        base1=base1,
        base2=base2,
        target1=target1,
        target2=target2,
    )


def folded_uniform(generator: torch.Generator, device: torch.device | str) -> Tensor:
    """A draw of ``max(u, 1 - u)``, ``u ~ Beta(1, 1) = Uniform(0, 1)``: a 0-d tensor in [0.5, 1].

    PCRL's hybrid coefficient ``alpha`` and mixup coefficient ``lambda`` (docs/method.md "One
    training step").
    """
    u = torch.rand((), generator=generator, device=device)
    return torch.maximum(u, 1.0 - u)


@dataclass(frozen=True)
class Mixup:
    """Batch mixup with one coefficient and one permutation (Zhang et al., ICLR 2018).

    Calling it on a tensor ``a`` of batch size N returns ``lam * a + (1 - lam) * a[perm]``,
    so every tensor of a step (inputs, targets, keys) is mixed with the same pairs.

    Attributes:
        lam: 0-d tensor in [0.5, 1].
        perm: (N,) permutation of the batch.
    """

    lam: Tensor
    perm: Tensor

    def __call__(self, a: Tensor) -> Tensor:
        if a.shape[0] != self.perm.shape[0]:
            raise ValueError(
                f"Mixup drawn for a batch of {self.perm.shape[0]}, got a tensor of shape {tuple(a.shape)}"
            )
        lam = self.lam.to(a.dtype)
        return lam * a + (1.0 - lam) * a[self.perm]


def draw_mixup(n: int, generator: torch.Generator, device: torch.device | str) -> Mixup:
    """Draw ``lambda`` (folded Beta(1, 1)) then a permutation of ``n`` from ``generator``."""
    lam = folded_uniform(generator, device)
    perm = torch.randperm(n, generator=generator, device=device)
    return Mixup(lam=lam, perm=perm)
