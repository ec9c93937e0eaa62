"""PCRL's 3D network: the U-Net backbone plus projection head and TCA.

docs/method.md "Networks" (Zhou et al., ICCV 2021, Sec. 3): the Models Genesis 3D U-Net
(:class:`~pcrl.networks.unet3d.UNet3D`) with the heads of :mod:`pcrl.networks.heads` on its
deepest map (``16b`` channels): the projection head ``fc1`` (16b -> proj_dim) / ``fc2``, and
the TCA gate ``aug_fc1`` (7 -> 8b) / ``aug_fc2`` (8b -> 16b) on the 7-entry code of the
spatial transformation (flip x, y, z as 0/1, then a one-hot of k = 0..3 quarter turns).

At base width 32 the parameter names and shapes equal those of the release's
``PCRLModel3d`` (see tests/data/release_pcrl3d_keys.txt). How the student, momentum
and hybrid encoders are combined is the method's business (pcrl.methods.pcrl).
"""

from __future__ import annotations

from pcrl.networks.blocks import OutActivation
from pcrl.networks.heads import TCA_CODE_DIM, ProjectionHead, TCAGate
from pcrl.networks.unet3d import NormName, UNet3D

__all__ = ["PCRLNet3D"]


class PCRLNet3D(UNet3D, ProjectionHead, TCAGate):
    """UNet3D + projection head (fc1, fc2) + TCA (aug_fc1, aug_fc2): keys as the release.

    ``project`` maps the deepest map (N, 16b, x, y, z) to (N, proj_dim) unit rows;
    ``tca_gate`` maps (N, 7) codes to an (N, 16b, 1, 1, 1) gate (:mod:`pcrl.networks.heads`).

    Args:
        in_channels: image channels.
        out_channels: output channels of the decoder.
        base: base width ``b`` (32 in the paper).
        norm: ``"batch"``, ``"group"`` or ``"instance"``.
        out_activation: ``"sigmoid"`` or ``"none"``.
        proj_dim: dimension of the projected features (128 in the paper and release).

    Raises:
        ConfigError: on a non-positive width, channel count or ``proj_dim``, or an
            unknown option.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base: int = 32,
        norm: NormName = "batch",
        out_activation: OutActivation = "sigmoid",
        proj_dim: int = 128,
    ) -> None:
        super().__init__(in_channels, out_channels, base, norm, out_activation)
        deep = self.feature_channels[3]
        self.add_projection_head(deep, proj_dim)
        self.add_tca_gate(TCA_CODE_DIM, self.feature_channels[2], deep, spatial_dims=3)
