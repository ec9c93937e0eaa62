"""The encoder of the Models Genesis 3D U-Net alone, under the release's key names.

The four levels ``down_tr64 .. down_tr512`` of :class:`pcrl.networks.unet3d.UNet3D` (the
same :class:`~pcrl.networks.unet3d.DownTransition` modules, so its state dict is exactly the
``down_tr*`` keys of a PCRL / Models Genesis checkpoint) and the 2x max-pooling between
them, without the decoder: what an exported 3D encoder (``model.safetensors``) loads into.
"""

from __future__ import annotations

from torch import Tensor, nn

from pcrl.errors import ConfigError
from pcrl.networks.blocks import require_positive_int
from pcrl.networks.unet3d import DOWNSAMPLING_FACTOR, DownTransition, NormName, make_norm

__all__ = ["LEVEL_NAMES", "UNet3DEncoder"]

#: The encoder levels, as the release names them.
LEVEL_NAMES = ("down_tr64", "down_tr128", "down_tr256", "down_tr512")


class UNet3DEncoder(nn.Module):
    """The 3D U-Net's encoder: levels with ``2b, 4b, 8b, 16b`` channels, pooled 2x between.

    Args:
        in_channels: image channels (1 for CT).
        base: base width ``b`` (the release: 32).
        norm: ``batch``, ``batch_stats``, ``group`` or ``instance`` (:func:`make_norm`).
    """

    def __init__(self, in_channels: int = 1, base: int = 32, norm: NormName = "batch") -> None:
        super().__init__()
        self.in_channels = require_positive_int("in_channels", in_channels)
        self.base = require_positive_int("base", base)
        make_norm(norm, 1)  # raises ConfigError on an unknown norm
        self.norm = norm
        previous = in_channels
        for depth, name in enumerate(LEVEL_NAMES):
            out = 2 * base * 2**depth
            self.add_module(name, DownTransition(previous, base * 2**depth, out, norm))
            previous = out
        self.pool = nn.MaxPool3d(kernel_size=2, stride=2)

    def encode(self, x: Tensor) -> list[Tensor]:
        """The four level maps (as :meth:`UNet3D.encode`); ``x``: (N, C, x, y, z), sizes divisible by 8."""
        if x.ndim != 5 or x.shape[1] != self.in_channels or any(s % DOWNSAMPLING_FACTOR for s in x.shape[2:]):
            raise ConfigError(f"UNet3DEncoder expects (N, {self.in_channels}, x, y, z) with sizes divisible "
                              f"by {DOWNSAMPLING_FACTOR}, got {tuple(x.shape)}")
        features: list[Tensor] = []
        h = x
        for depth, name in enumerate(LEVEL_NAMES):
            h = getattr(self, name)(self.pool(h) if depth else h)
            features.append(h)
        return features

    def forward(self, x: Tensor) -> Tensor:
        """The deepest map, ``encode(x)[-1]``."""
        return self.encode(x)[-1]
