"""The pretraining networks by name: the 3D U-Net of the LUNA16 setting, the 2D ResNet-18 U-Net
of the ChestX-ray14 setting (Zhou et al., ICCV 2021, which released both).

Both offer the same methods (``encode``, ``decode``, ``project``, ``tca_gate``, ``forward``),
so PCRL, Models Genesis and MoCo v2 drive either one; ``pretrain.network.arch`` chooses.
"""

from __future__ import annotations

from typing import Literal, get_args

from pcrl.errors import ConfigError
from pcrl.networks.pcrl_net import PCRLNet3D
from pcrl.networks.heads import TCA_CODE_DIM_2D
from pcrl.networks.resnet_unet2d import ResNetUNet2D
from pcrl.networks.unet3d import UNet3D

__all__ = ["ARCHS", "Arch", "check_arch", "pretraining_network", "restoration_network", "spatial_dims"]

Arch = Literal["unet3d", "resnet18_unet2d"]
ARCHS: tuple[str, ...] = get_args(Arch)
#: Module name prefixes of each network that only reconstruction uses (MoCo v2 freezes them).
DECODER_PREFIXES = {"unet3d": ("up_tr", "out_tr"), "resnet18_unet2d": ("decoder", "out_tr")}


def check_arch(arch: str, key: str = "arch") -> str:
    """``arch`` if it names a network; ConfigError naming ``key`` otherwise."""
    if arch not in ARCHS:
        raise ConfigError(f"{key} must be one of {ARCHS}, got {arch!r}")
    return arch


def spatial_dims(arch: str) -> int:
    """2 or 3: the images the network takes."""
    return 2 if check_arch(arch) == "resnet18_unet2d" else 3


PretrainingNetwork = PCRLNet3D | ResNetUNet2D
RestorationNetwork = UNet3D | ResNetUNet2D


def pretraining_network(arch: str, *, in_channels: int, base: int, norm: str, proj_dim: int) -> PretrainingNetwork:
    """The network with its projection head and TCA gate (``base``: the 2D encoder's width)."""
    if check_arch(arch) == "unet3d":
        return PCRLNet3D(in_channels=in_channels, out_channels=in_channels, base=base, norm=norm,  # type: ignore[arg-type]
                         proj_dim=proj_dim)
    return ResNetUNet2D(in_channels=in_channels, out_channels=in_channels, width=base, proj_dim=proj_dim,
                        code_dim=TCA_CODE_DIM_2D, norm=norm)  # type: ignore[arg-type]


def restoration_network(arch: str, *, in_channels: int, base: int, norm: str) -> RestorationNetwork:
    """The encoder-decoder alone (Models Genesis); the 2D network's heads are frozen (unused)."""
    if check_arch(arch) == "unet3d":
        return UNet3D(in_channels=in_channels, out_channels=in_channels, base=base, norm=norm)  # type: ignore[arg-type]
    net = pretraining_network(arch, in_channels=in_channels, base=base, norm=norm, proj_dim=8)
    for name, module in net.named_children():
        if name.startswith(("fc", "aug_fc")):
            module.requires_grad_(False)
    return net
