"""Networks: the Models Genesis 3D U-Net, PCRL's heads, and checkpoint loading.

See docs/method.md "Networks" and docs/INTERFACES.md (pcrl/networks).
"""

from pcrl.networks.pcrl_net import TCA_CODE_DIM, PCRLNet3D
from pcrl.networks.state_dict import (
    LoadReport,
    adapt_first_conv,
    load_pretrained,
    unwrap_state_dict,
)
from pcrl.networks.unet3d import UNet3D

__all__ = [
    "TCA_CODE_DIM",
    "LoadReport",
    "PCRLNet3D",
    "UNet3D",
    "adapt_first_conv",
    "load_pretrained",
    "unwrap_state_dict",
]
