"""PCRL's 2D network: a U-Net whose encoder is a ResNet-18, for NIH ChestX-ray14.

docs/method.md "Hyperparameters of the release": for ChestX-ray14 (2D, 224-pixel crops) PCRL
(Zhou et al., ICCV 2021) used a U-Net with a ResNet-18 encoder (He et al., "Deep Residual
Learning for Image Recognition", CVPR 2016). The network is written here from scratch in
torch because torchvision cannot be imported in this environment and is not a dependency of
the package; no code is taken from another repository.

Encoder: :class:`pcrl.networks.resnet18.ResNet18Encoder` (width ``w``, 64 in He et al.),
whose state-dict keys are torchvision's.

Full network (:class:`ResNetUNet2D`): the encoder under ``encoder``; a decoder of five
stages (``decoder.0 .. decoder.4``), each a 2x transposed conv that keeps the channel count,
concatenation ``[upsampled, skip]`` with the encoder map of the same resolution (none for
the last stage, which reaches the input resolution) and two 3x3 conv/norm/ReLU blocks with
the skip's channel count (``max(1, w // 2)`` in the last stage); then ``out_tr.final_conv``
(1x1 conv) and a sigmoid. PCRL's heads are those of :mod:`pcrl.networks.heads`, as in
:class:`pcrl.networks.pcrl_net.PCRLNet3D`: the projection head ``fc1`` (8w -> proj_dim) / ``fc2`` and
the TCA gate ``aug_fc1`` (code_dim -> 4w) / ``aug_fc2`` (4w -> 8w) on the deepest map. The 2D
transformation code has :data:`~pcrl.networks.heads.TCA_CODE_DIM_2D` = 6 entries: flip x,
flip y (0/1), then a one-hot of k = 0..3 quarter turns.

Spatial sizes must be divisible by 32 (five 2x downsamplings).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pcrl.networks.blocks import OutActivation, OutputTransition, check_out_activation, require_positive_int
from pcrl.networks.heads import TCA_CODE_DIM_2D, ProjectionHead, TCAGate
from pcrl.networks.resnet18 import Norm2dName, ResNet18Encoder, check_input, check_norm, make_norm2d

__all__ = ["ConvBlock2D", "ResNetUNet2D", "UpBlock2D"]


class ConvBlock2D(nn.Module):
    """3x3 conv (no bias: the norm follows) -> norm -> ReLU (``conv1``, ``bn1``).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        norm: normalisation, see :func:`make_norm2d`.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: Norm2dName) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn1 = make_norm2d(norm, out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """Apply conv, norm and ReLU to ``x`` of shape (N, C_in, x, y)."""
        return self.act(self.bn1(self.conv1(x)))


class UpBlock2D(nn.Module):
    """One decoder stage: ``up_conv`` (2x transposed conv), concatenation, two conv blocks.

    As in :class:`pcrl.networks.unet3d.UpTransition`, the transposed conv keeps the channel
    count and the upsampled map comes first in the concatenation, the skip second.

    Args:
        in_channels: channels of the deeper map (kept by ``up_conv``).
        skip_channels: channels of the skip connection (0: no skip).
        out_channels: output channels of both conv blocks.
        norm: normalisation, see :func:`make_norm2d`.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, norm: Norm2dName) -> None:
        super().__init__()
        self.skip_channels = skip_channels
        self.up_conv = nn.ConvTranspose2d(in_channels, in_channels, kernel_size=2, stride=2)
        self.ops = nn.Sequential(
            ConvBlock2D(in_channels + skip_channels, out_channels, norm),
            ConvBlock2D(out_channels, out_channels, norm),
        )

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        """Upsample ``x`` 2x, concatenate ``[up(x), skip]`` on channels (if any), apply ``ops``."""
        h = self.up_conv(x)
        if skip is not None:
            h = torch.cat((h, skip), dim=1)
        return self.ops(h)


class ResNetUNet2D(ProjectionHead, TCAGate):
    """ResNet-18 U-Net + projection head (fc1, fc2) + TCA (aug_fc1, aug_fc2), PCRL's 2D network.

    Offers the interface of :class:`pcrl.networks.pcrl_net.PCRLNet3D` (``encode``, ``decode``,
    ``project``, ``tca_gate``, ``forward``, ``feature_channels``) so that the PCRL method can
    drive either network; maps are (N, C, x, y) and the gate is (N, 8w, 1, 1).

    Args:
        in_channels: image channels (1 for ChestX-ray14).
        out_channels: output channels of ``out_tr.final_conv``.
        width: encoder width ``w`` (64 for ResNet-18); the deepest map has ``8w`` channels.
        proj_dim: dimension of the projected features (128 in the paper and release).
        code_dim: length of a transformation code (:data:`TCA_CODE_DIM_2D` = 6).
        out_activation: ``"sigmoid"`` (default) or ``"none"`` for logits.
        norm: ``"batch"`` (default), ``"group"`` or ``"instance"``, encoder and decoder.

    Attributes:
        encoder: the :class:`ResNet18Encoder` (its own state dict has torchvision's keys;
            see :meth:`encoder_state_dict`).
        decoder: five :class:`UpBlock2D` stages, from the deepest map to full resolution.
        feature_channels: channels of the five maps of :meth:`encode`, ``(w, w, 2w, 4w, 8w)``.

    Raises:
        ConfigError: on a non-positive width, channel count, ``proj_dim`` or ``code_dim``, or
            an unknown option.

    Example:
        >>> net = ResNetUNet2D(width=8)
        >>> net(torch.rand(2, 1, 64, 64)).shape
        torch.Size([2, 1, 64, 64])
    """

    feature_channels: tuple[int, int, int, int, int]

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        width: int = 64,
        proj_dim: int = 128,
        code_dim: int = TCA_CODE_DIM_2D,
        out_activation: OutActivation = "sigmoid",
        norm: Norm2dName = "batch",
    ) -> None:
        super().__init__()
        self.in_channels = require_positive_int("in_channels", in_channels)
        self.out_channels = require_positive_int("out_channels", out_channels)
        self.width = require_positive_int("width", width)
        check_norm(norm)
        self.norm = norm
        self.out_activation = check_out_activation(out_activation)

        self.encoder = ResNet18Encoder(in_channels, width, norm)
        self.feature_channels = self.encoder.feature_channels
        stem, c1, c2, c3, deep = self.feature_channels
        last = max(1, width // 2)
        self.decoder = nn.ModuleList(
            [
                UpBlock2D(deep, c3, c3, norm),  # 1/32 -> 1/16, skip layer3
                UpBlock2D(c3, c2, c2, norm),  # 1/16 -> 1/8, skip layer2
                UpBlock2D(c2, c1, c1, norm),  # 1/8 -> 1/4, skip layer1
                UpBlock2D(c1, stem, stem, norm),  # 1/4 -> 1/2, skip the stem
                UpBlock2D(stem, 0, last, norm),  # 1/2 -> full resolution, no skip
            ]
        )
        self.out_tr = OutputTransition(last, out_channels, out_activation, spatial_dims=2)
        self.add_projection_head(deep, proj_dim)
        self.add_tca_gate(code_dim, c3, deep, spatial_dims=2)

    def encoder_state_dict(self) -> dict[str, Tensor]:
        """The encoder's state dict, keys without prefix (torchvision's resnet18 names)."""
        return dict(self.encoder.state_dict())

    def encode(self, x: Tensor) -> list[Tensor]:
        """Run the ResNet-18 encoder, see :meth:`ResNet18Encoder.encode` (five maps).

        Raises:
            ConfigError: if ``x`` is not (N, in_channels, x, y) with sizes divisible by 32;
                the message gives the shape.
        """
        check_input(x, self.in_channels, type(self).__name__)
        return self.encoder.encode(x)

    def decode(self, features: Sequence[Tensor]) -> Tensor:
        """Run the decoder on the five maps of :meth:`encode` (possibly mixed or gated).

        Args:
            features: ``[stem, layer1, layer2, layer3, deepest]`` as returned by :meth:`encode`.

        Returns:
            (N, out_channels, 32 * x', 32 * y') for a deepest map of size (x', y'): sigmoid
            output, or logits if ``out_activation == "none"``.

        Raises:
            ValueError: if ``features`` does not hold five maps.
        """
        if len(features) != 5:
            raise ValueError(f"decode expects 5 feature maps (4 skips + deepest), got {len(features)}")
        stem, skip1, skip2, skip3, h = features
        for stage, skip in zip(self.decoder, (skip3, skip2, skip1, stem, None)):
            h = stage(h, skip)
        return self.out_tr(h)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruct / segment ``x``: ``decode(encode(x))``."""
        return self.decode(self.encode(x))
