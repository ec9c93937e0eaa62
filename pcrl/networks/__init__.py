"""Networks: the Models Genesis 3D U-Net, PCRL's heads, the 2D ResNet-18 U-Net, checkpoint loading.

See docs/method.md "Networks" and docs/INTERFACES.md (pcrl/networks).
"""

from pcrl.networks.heads import TCA_CODE_DIM, TCA_CODE_DIM_2D
from pcrl.networks.pcrl_net import PCRLNet3D
from pcrl.networks.resnet_unet2d import ResNet18Encoder, ResNetUNet2D
from pcrl.networks.state_dict import (
    LoadReport,
    adapt_first_conv,
    load_pretrained,
    unwrap_state_dict,
)
from pcrl.networks.unet3d import UNet3D

__all__ = [
    "TCA_CODE_DIM",
    "TCA_CODE_DIM_2D",
    "LoadReport",
    "PCRLNet3D",
    "ResNet18Encoder",
    "ResNetUNet2D",
    "UNet3D",
    "adapt_first_conv",
    "load_pretrained",
    "unwrap_state_dict",
]
