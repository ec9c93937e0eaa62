"""The Models Genesis 3D U-Net, the backbone of PCRL.

docs/method.md "Networks": the backbone is the 3D U-Net of Models Genesis (Zhou et al.,
MICCAI 2019), reused unchanged by PCRL (Zhou et al., ICCV 2021). Module and parameter
names follow the original releases (``down_tr64 ... down_tr512``, ``up_tr256 ... up_tr64``,
``out_tr.final_conv``, every norm layer named ``bn1``) so that their checkpoints load
with :func:`pcrl.networks.state_dict.load_pretrained`.

With base width ``b`` (32 in the paper):

* encoder level ``d`` (d = 0..3): two blocks of 3x3x3 conv + norm + ReLU with
  ``b * 2**d`` then ``2 * b * 2**d`` output channels, i.e. outputs of
  ``(2b, 4b, 8b, 16b)`` channels; a 2x max-pool between levels (the skip connection is
  taken before pooling, the deepest level is not pooled);
* decoder stage (``up_tr256``, ``up_tr128``, ``up_tr64``): a transposed conv (kernel 2,
  stride 2) that keeps the channel count, concatenation ``[upsampled, skip]`` (in this
  order, as the releases), then two conv blocks down to the skip's channel count;
* ``out_tr.final_conv``: a 1x1x1 conv to ``out_channels``, followed by a sigmoid unless
  ``out_activation="none"`` (logits, e.g. for a loss that applies its own activation).

Spatial sizes must be divisible by 8 (three 2x poolings).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcrl.errors import ConfigError
from pcrl.networks.blocks import (
    OutActivation,
    OutputTransition,
    check_out_activation,
    group_norm_groups,
    require_positive_int,
)

__all__ = [
    "DOWNSAMPLING_FACTOR",
    "ConvBlock",
    "DownTransition",
    "NormName",
    "UNet3D",
    "UpTransition",
    "BatchStatsNorm3d",
    "make_norm",
]

NormName = Literal["batch", "batch_stats", "group", "instance"]

#: Total downsampling of the encoder (three 2x max-pools): input sizes must divide by it.
DOWNSAMPLING_FACTOR = 8

_LEVEL_NAMES = ("down_tr64", "down_tr128", "down_tr256", "down_tr512")
_UP_NAMES = ("up_tr256", "up_tr128", "up_tr64")


class BatchStatsNorm3d(nn.BatchNorm3d):
    """Batch norm that normalises with the batch's statistics in eval mode too.

    Models Genesis (Zhou et al., MICCAI 2019) trained its public 3D weights with such a layer:
    the running statistics were updated but never used, so those weights meet activations
    normalised by batch statistics only. Loaded into ``nn.BatchNorm3d`` they are evaluated with
    running statistics instead (``norm: batch``); ``norm: batch_stats`` reproduces their
    training condition. Parameters and buffers are those of ``nn.BatchNorm3d``, so checkpoints
    load either way.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        momentum = self.momentum
        if momentum is None:  # cumulative average, as nn.BatchNorm3d
            tracked = self.num_batches_tracked
            momentum = 1.0 / max(1, int(tracked) if tracked is not None else 1)
        running = self.training  # running statistics are updated while training, never used
        return F.batch_norm(
            x,
            self.running_mean if running else None,
            self.running_var if running else None,
            self.weight,
            self.bias,
            True,
            momentum,
            self.eps,
        )


def make_norm(norm: NormName, channels: int) -> nn.Module:
    """Build the normalisation layer of a conv block.

    Args:
        norm: ``"batch"`` (BatchNorm3d, the release default), ``"batch_stats"``
            (:class:`BatchStatsNorm3d`, batch statistics always: Models Genesis' public
            weights), ``"group"`` (GroupNorm with
            :func:`pcrl.networks.blocks.group_norm_groups` groups) or ``"instance"`` (InstanceNorm3d with a
            learnable affine, as the release's "in" option).
        channels: number of channels.

    Returns:
        The norm module.

    Raises:
        ConfigError: if ``norm`` is not one of the four names.
    """
    if norm == "batch":
        return nn.BatchNorm3d(channels)
    if norm == "batch_stats":
        return BatchStatsNorm3d(channels)
    if norm == "group":
        return nn.GroupNorm(group_norm_groups(channels), channels)
    if norm == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    raise ConfigError(f"norm must be one of {get_args(NormName)}, got {norm!r}")


class ConvBlock(nn.Module):
    """3x3x3 conv (bias) -> norm -> ReLU; the release's ``LUConv`` (``conv1``, ``bn1``).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        norm: normalisation, see :func:`make_norm`.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: NormName) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1, bias=True)
        self.bn1 = make_norm(norm, out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """Apply conv, norm and ReLU to ``x`` of shape (N, C_in, x, y, z)."""
        return self.act(self.bn1(self.conv1(x)))


class DownTransition(nn.Module):
    """One encoder level: two conv blocks ``ops.0`` and ``ops.1`` (pooling is done by UNet3D).

    Args:
        in_channels: input channels.
        mid_channels: output channels of the first block.
        out_channels: output channels of the second block (= of the level).
        norm: normalisation, see :func:`make_norm`.
    """

    def __init__(
        self, in_channels: int, mid_channels: int, out_channels: int, norm: NormName
    ) -> None:
        super().__init__()
        self.ops = nn.Sequential(
            ConvBlock(in_channels, mid_channels, norm),
            ConvBlock(mid_channels, out_channels, norm),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Return the level's feature map (same spatial size as ``x``)."""
        return self.ops(x)


class UpTransition(nn.Module):
    """One decoder stage: ``up_conv`` (2x transposed conv), concatenation, two conv blocks.

    The upsampled map comes first in the concatenation and the skip second, as in the
    Models Genesis and PCRL releases; pretrained ``ops.0.conv1`` weights rely on this order.

    Args:
        in_channels: channels of the deeper map (kept by ``up_conv``).
        skip_channels: channels of the skip connection.
        out_channels: output channels of both conv blocks.
        norm: normalisation, see :func:`make_norm`.
    """

    def __init__(
        self, in_channels: int, skip_channels: int, out_channels: int, norm: NormName
    ) -> None:
        super().__init__()
        self.up_conv = nn.ConvTranspose3d(in_channels, in_channels, kernel_size=2, stride=2)
        self.ops = nn.Sequential(
            ConvBlock(in_channels + skip_channels, out_channels, norm),
            ConvBlock(out_channels, out_channels, norm),
        )

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """Upsample ``x`` 2x, concatenate ``[up(x), skip]`` on channels, apply ``ops``."""
        return self.ops(torch.cat((self.up_conv(x), skip), dim=1))


class UNet3D(nn.Module):
    """Models Genesis 3D U-Net (docs/method.md "Networks"); module names as the release.

    Args:
        in_channels: image channels (1 for CT, 4 for BraTS).
        out_channels: output channels of ``out_tr.final_conv``.
        base: base width ``b``; level outputs have ``(2b, 4b, 8b, 16b)`` channels
            (the paper: 32, i.e. 64, 128, 256, 512).
        norm: ``"batch"`` (default), ``"group"`` or ``"instance"``; always stored under
            the attribute ``bn1`` so that checkpoint keys line up with the release.
        out_activation: ``"sigmoid"`` (default) or ``"none"`` for logits.

    Attributes:
        feature_channels: channels of the four maps returned by :meth:`encode`.

    Raises:
        ConfigError: on a non-positive width or channel count or an unknown option.

    Example:
        >>> net = UNet3D(base=4)
        >>> net(torch.rand(2, 1, 32, 32, 16)).shape
        torch.Size([2, 1, 32, 32, 16])
    """

    feature_channels: tuple[int, int, int, int]

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base: int = 32,
        norm: NormName = "batch",
        out_activation: OutActivation = "sigmoid",
    ) -> None:
        super().__init__()
        self.in_channels = require_positive_int("in_channels", in_channels)
        self.out_channels = require_positive_int("out_channels", out_channels)
        self.base = require_positive_int("base", base)
        if norm not in get_args(NormName):
            raise ConfigError(f"norm must be one of {get_args(NormName)}, got {norm!r}")
        self.norm = norm
        self.out_activation = check_out_activation(out_activation)

        c0, c1, c2, c3 = (2 * base * 2**d for d in range(4))
        self.feature_channels = (c0, c1, c2, c3)
        # Level d: in -> b * 2**d -> 2 * b * 2**d.
        self.down_tr64 = DownTransition(in_channels, base, c0, norm)
        self.down_tr128 = DownTransition(c0, 2 * base, c1, norm)
        self.down_tr256 = DownTransition(c1, 4 * base, c2, norm)
        self.down_tr512 = DownTransition(c2, 8 * base, c3, norm)
        self.pool = nn.MaxPool3d(kernel_size=2, stride=2)
        self.up_tr256 = UpTransition(c3, c2, c2, norm)
        self.up_tr128 = UpTransition(c2, c1, c1, norm)
        self.up_tr64 = UpTransition(c1, c0, c0, norm)
        self.out_tr = OutputTransition(c0, out_channels, out_activation)

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 5:
            raise ConfigError(
                f"UNet3D expects a batch (N, C, x, y, z), got a tensor of shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ConfigError(
                f"UNet3D was built for {self.in_channels} input channel(s), "
                f"got input of shape {tuple(x.shape)}"
            )
        spatial = tuple(x.shape[2:])
        if any(s % DOWNSAMPLING_FACTOR for s in spatial):
            raise ConfigError(
                f"UNet3D needs spatial sizes divisible by {DOWNSAMPLING_FACTOR} "
                f"(three 2x poolings), got input of shape {tuple(x.shape)}"
            )

    def encode(self, x: Tensor) -> list[Tensor]:
        """Run the encoder.

        Args:
            x: batch (N, in_channels, x, y, z), each spatial size divisible by 8.

        Returns:
            Four maps: the skips of levels 0..2 (before pooling) with ``2b, 4b, 8b``
            channels at full, 1/2 and 1/4 resolution, and the deepest map (``16b``
            channels, 1/8 resolution).

        Raises:
            ConfigError: if ``x`` is not 5-D, has the wrong channel count, or a spatial
                size is not divisible by 8; the message gives the shape.
        """
        self._check_input(x)
        features: list[Tensor] = []
        h = x
        for depth, name in enumerate(_LEVEL_NAMES):
            if depth > 0:
                h = self.pool(h)
            h = getattr(self, name)(h)
            features.append(h)
        return features

    def decode(self, features: Sequence[Tensor]) -> Tensor:
        """Run the decoder on the four maps of :meth:`encode` (possibly mixed or gated).

        Args:
            features: ``[skip0, skip1, skip2, deepest]`` as returned by :meth:`encode`.

        Returns:
            (N, out_channels, x, y, z): sigmoid output, or logits if
            ``out_activation == "none"``.

        Raises:
            ValueError: if ``features`` does not hold four maps.
        """
        if len(features) != 4:
            raise ValueError(
                f"decode expects 4 feature maps (3 skips + deepest), got {len(features)}"
            )
        skip0, skip1, skip2, h = features
        for name, skip in zip(_UP_NAMES, (skip2, skip1, skip0)):
            h = getattr(self, name)(h, skip)
        return self.out_tr(h)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruct / segment ``x``: ``decode(encode(x))``."""
        return self.decode(self.encode(x))
