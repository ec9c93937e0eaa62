"""The ResNet-18 encoder of PCRL's 2D setting (He et al., "Deep Residual Learning for Image
Recognition", CVPR 2016), written from scratch in torch (torchvision is not a dependency);
its state-dict keys are torchvision's ``resnet18`` keys without ``fc``, so that a pretrained
encoder loads into any ResNet-18 of torchvision, timm or segmentation_models_pytorch (at
width 64, with batch norm; ``in_channels=3`` for their RGB stems).

* stem: ``conv1`` (7x7, stride 2, padding 3, no bias, ``w`` channels) -> ``bn1`` -> ReLU,
  then ``maxpool`` (3x3, stride 2, padding 1);
* ``layer1 .. layer4``: two BasicBlocks each (``conv1`` 3x3 -> ``bn1`` -> ReLU -> ``conv2``
  3x3 -> ``bn2``, plus the shortcut, then ReLU) with ``w, 2w, 4w, 8w`` channels; the first
  block of layers 2-4 has stride 2 and a projection shortcut ``downsample.0`` (1x1 conv,
  stride 2, no bias) + ``downsample.1`` (batch norm).

Chest14 fine-tunes this encoder alone; the U-Net around it and PCRL's heads are in
:mod:`pcrl.networks.resnet_unet2d`.
"""

from __future__ import annotations

from typing import Literal, get_args

from torch import Tensor, nn

from pcrl.errors import ConfigError
from pcrl.networks.blocks import group_norm_groups, require_positive_int

__all__ = ["DOWNSAMPLING_FACTOR", "BasicBlock", "Norm2dName", "ResNet18Encoder", "check_input", "check_norm",
           "make_norm2d"]

Norm2dName = Literal["batch", "group", "instance"]

#: Total downsampling of the ResNet-18 encoder (stem conv, max-pool, layers 2-4 each 2x).
DOWNSAMPLING_FACTOR = 32

_LAYER_NAMES = ("layer1", "layer2", "layer3", "layer4")


def make_norm2d(norm: Norm2dName, channels: int) -> nn.Module:
    """Build a 2D normalisation layer.

    Args:
        norm: ``"batch"`` (BatchNorm2d, He et al. and torchvision; the only choice whose
            keys, running statistics included, are torchvision's), ``"group"`` (GroupNorm
            with :func:`pcrl.networks.blocks.group_norm_groups` groups) or ``"instance"``
            (InstanceNorm2d with a learnable affine).
        channels: number of channels.

    Returns:
        The norm module.

    Raises:
        ConfigError: if ``norm`` is not one of the three names.
    """
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(group_norm_groups(channels), channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ConfigError(f"norm must be one of {get_args(Norm2dName)}, got {norm!r}")


def check_norm(norm: object) -> None:
    if norm not in get_args(Norm2dName):
        raise ConfigError(f"norm must be one of {get_args(Norm2dName)}, got {norm!r}")


def check_input(x: Tensor, in_channels: int, owner: str) -> None:
    if x.ndim != 4:
        raise ConfigError(f"{owner} expects a batch (N, C, x, y), got a tensor of shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise ConfigError(
            f"{owner} was built for {in_channels} input channel(s), got input of shape {tuple(x.shape)}"
        )
    if any(s % DOWNSAMPLING_FACTOR for s in x.shape[2:]):
        raise ConfigError(
            f"{owner} needs spatial sizes divisible by {DOWNSAMPLING_FACTOR} "
            f"(five 2x downsamplings), got input of shape {tuple(x.shape)}"
        )


class BasicBlock(nn.Module):
    """ResNet BasicBlock (He et al., CVPR 2016, Fig. 2): two 3x3 convs and a shortcut.

    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; the shortcut is the identity, or
    ``downsample`` (1x1 conv with the block's stride, no bias, then norm) when the stride or
    the channel count changes (He et al.'s option B). Convs have no bias (norm follows).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of ``conv1`` and of the shortcut (1 or 2).
        norm: normalisation, see :func:`make_norm2d`.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: Norm2dName) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = make_norm2d(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = make_norm2d(norm, out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                make_norm2d(norm, out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block to ``x`` of shape (N, C_in, x, y)."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class ResNet18Encoder(nn.Module):
    """ResNet-18 (He et al., CVPR 2016) without its classifier; keys as torchvision's resnet18.

    Written here because torchvision is not available (see the module docstring). At width
    64, ``in_channels=3`` and batch norm, the state dict has exactly the keys and shapes of
    torchvision's ``resnet18().state_dict()`` minus ``fc.weight`` and ``fc.bias`` (120 keys,
    11,176,512 parameters), and loads into torchvision / timm / segmentation_models_pytorch
    ResNet-18 encoders (with ``strict=False`` where they also hold ``fc``).

    Args:
        in_channels: image channels (1 for chest X-rays, 3 for torchvision's RGB stem).
        width: channels ``w`` of the stem and ``layer1``; layers 2-4 have ``2w, 4w, 8w``.
        norm: ``"batch"`` (default), ``"group"`` or ``"instance"``, see :func:`make_norm2d`.

    Attributes:
        feature_channels: channels of the five maps returned by :meth:`encode`,
            ``(w, w, 2w, 4w, 8w)``.

    Raises:
        ConfigError: on a non-positive width or channel count or an unknown norm.

    Example:
        >>> enc = ResNet18Encoder(width=8)
        >>> [tuple(f.shape[1:]) for f in enc.encode(torch.rand(1, 1, 64, 64))][-1]
        (64, 2, 2)
    """

    feature_channels: tuple[int, int, int, int, int]

    def __init__(self, in_channels: int = 1, width: int = 64, norm: Norm2dName = "batch") -> None:
        super().__init__()
        self.in_channels = require_positive_int("in_channels", in_channels)
        self.width = require_positive_int("width", width)
        check_norm(norm)
        self.norm = norm
        channels = (width, 2 * width, 4 * width, 8 * width)
        self.feature_channels = (width, *channels)

        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = make_norm2d(norm, width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        previous = width
        for index, (name, out) in enumerate(zip(_LAYER_NAMES, channels)):
            stride = 1 if index == 0 else 2
            layer = nn.Sequential(BasicBlock(previous, out, stride, norm), BasicBlock(out, out, 1, norm))
            self.add_module(name, layer)
            previous = out
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation of the convs (normal, fan-out, ReLU gain); norms to weight 1, bias 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def encode(self, x: Tensor) -> list[Tensor]:
        """Run the encoder.

        Args:
            x: batch (N, in_channels, x, y), each spatial size divisible by 32.

        Returns:
            Five maps: the stem after its ReLU (``w`` channels, 1/2 resolution), ``layer1``
            (``w``, 1/4), ``layer2`` (``2w``, 1/8), ``layer3`` (``4w``, 1/16) and the deepest,
            ``layer4`` (``8w``, 1/32).

        Raises:
            ConfigError: if ``x`` is not 4-D, has the wrong channel count, or a spatial size
                is not divisible by 32; the message gives the shape.
        """
        check_input(x, self.in_channels, type(self).__name__)
        h = self.relu(self.bn1(self.conv1(x)))
        features = [h]
        h = self.maxpool(h)
        for name in _LAYER_NAMES:
            h = getattr(self, name)(h)
            features.append(h)
        return features

    def forward(self, x: Tensor) -> Tensor:
        """Return the deepest map, ``encode(x)[-1]``."""
        return self.encode(x)[-1]
