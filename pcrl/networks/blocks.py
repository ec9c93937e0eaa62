"""Pieces shared by the 3D and the 2D U-Net: argument checks, GroupNorm groups, the output layer.

Both networks of PCRL (Zhou et al., ICCV 2021; docs/method.md "Networks") end in the
releases' ``out_tr.final_conv``, a 1x1(x1) conv followed by a sigmoid; they size GroupNorm
as the release's "gn" option (8 groups). Written once here for any spatial dimension; the
networks differ only in backbone and decoder (their heads: :mod:`pcrl.networks.heads`).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor, nn

from pcrl.errors import ConfigError

__all__ = [
    "GROUP_NORM_MAX_GROUPS",
    "OutActivation",
    "OutputTransition",
    "SpatialDims",
    "check_out_activation",
    "group_norm_groups",
    "require_positive_int",
]

OutActivation = Literal["sigmoid", "none"]
#: 2 (images, ChestX-ray14) or 3 (volumes, LUNA16).
SpatialDims = Literal[2, 3]

#: Upper bound on GroupNorm's group count; the PCRL release's "gn" option uses 8 groups.
GROUP_NORM_MAX_GROUPS = 8

_CONV: dict[int, type[nn.Conv2d] | type[nn.Conv3d]] = {2: nn.Conv2d, 3: nn.Conv3d}


def require_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is a positive int (not a bool), else raise ConfigError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_out_activation(value: object) -> OutActivation:
    """Return ``value`` if it is an :data:`OutActivation`, else raise ConfigError naming it."""
    if value not in get_args(OutActivation):
        raise ConfigError(f"out_activation must be one of {get_args(OutActivation)}, got {value!r}")
    return value  # type: ignore[return-value]


def group_norm_groups(channels: int, max_groups: int = GROUP_NORM_MAX_GROUPS) -> int:
    """Number of GroupNorm groups for ``channels``: the largest divisor not above ``max_groups``.

    The PCRL release's group-norm option uses 8 groups, which divides every channel
    count at base width 32; for narrow networks (tests, demo) the largest divisor of
    ``channels`` not exceeding 8 keeps the layer valid (e.g. 12 -> 6, 4 -> 4, 9 -> 3).

    Args:
        channels: number of channels to normalise (>= 1).
        max_groups: upper bound on the number of groups (>= 1).

    Returns:
        A group count that divides ``channels``.

    Raises:
        ConfigError: if ``channels`` or ``max_groups`` is not a positive integer.
    """
    if channels < 1 or max_groups < 1:
        raise ConfigError(
            f"group norm needs positive channels and max_groups, got {channels} and {max_groups}"
        )
    for groups in range(min(channels, max_groups), 0, -1):
        if channels % groups == 0:
            return groups
    return 1  # unreachable: 1 divides everything


class OutputTransition(nn.Module):
    """``final_conv`` (1x1 or 1x1x1 conv) followed by a sigmoid, or nothing (logits).

    Args:
        in_channels: input channels.
        out_channels: output channels (classes or reconstructed channels).
        activation: ``"sigmoid"`` (the releases; intensities in [0, 1]) or ``"none"``.
        spatial_dims: 3 (``nn.Conv3d``, default) or 2 (``nn.Conv2d``).
    """

    def __init__(
        self, in_channels: int, out_channels: int, activation: OutActivation, spatial_dims: SpatialDims = 3
    ) -> None:
        super().__init__()
        if spatial_dims not in _CONV:
            raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        self.final_conv = _CONV[spatial_dims](in_channels, out_channels, kernel_size=1)
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        """Return the 1x1(x1) conv of ``x``, through a sigmoid unless the activation is "none"."""
        out = self.final_conv(x)
        return torch.sigmoid(out) if self.activation == "sigmoid" else out
