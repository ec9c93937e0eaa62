"""PCRL's 3D network: the U-Net backbone plus projection head and TCA.

docs/method.md "Networks" (Zhou et al., ICCV 2021, Sec. 3):

* projection head: global average pool of the deepest map (``16b`` channels) ->
  ``fc1`` (16b -> proj_dim) -> ReLU -> ``fc2`` (proj_dim -> proj_dim), L2-normalised
  before the contrastive loss;
* transformation-conditioned attention (TCA): the 7-vector code of the spatial
  transformation applied to a target (flip x, y, z as 0/1, then a one-hot of k = 0..3
  quarter turns) -> ``aug_fc1`` (7 -> 8b) -> ReLU -> ``aug_fc2`` (8b -> 16b) -> sigmoid,
  a per-channel gate multiplied into the deepest map before decoding (the release's
  channel-wise form, the paper's default here).

At base width 32 the parameter names and shapes equal those of the release's
``PCRLModel3d`` (see tests/data/release_pcrl3d_keys.txt). How the student, momentum
and hybrid encoders are combined is the method's business (pcrl.methods.pcrl).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcrl.transforms.spatial import CODE_SIZE
from pcrl.networks.unet3d import NormName, OutActivation, UNet3D, require_positive_int

__all__ = ["TCA_CODE_DIM", "PCRLNet3D"]

#: Length of a spatial-transformation code: 3 flips + one-hot of 4 quarter turns.
#: Entries of a transformation code (docs/method.md "Transformation-conditioned attention").
TCA_CODE_DIM = CODE_SIZE


class PCRLNet3D(UNet3D):
    """UNet3D + projection head (fc1, fc2) + TCA (aug_fc1, aug_fc2): keys as the release.

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
        self.proj_dim = require_positive_int("proj_dim", proj_dim)
        deep = self.feature_channels[3]
        hidden = self.feature_channels[2]
        self.fc1 = nn.Linear(deep, proj_dim)
        self.fc2 = nn.Linear(proj_dim, proj_dim)
        self.aug_fc1 = nn.Linear(TCA_CODE_DIM, hidden)
        self.aug_fc2 = nn.Linear(hidden, deep)

    def project(self, deepest: Tensor) -> Tensor:
        """Projection head: GAP -> fc1 -> ReLU -> fc2 -> L2 normalisation.

        Args:
            deepest: deepest encoder map (N, 16b, *spatial), e.g. ``encode(x)[3]``.

        Returns:
            (N, proj_dim) rows of unit Euclidean norm.

        Raises:
            ValueError: if ``deepest`` does not have ``16b`` channels on dim 1.
        """
        deep = self.feature_channels[3]
        if deepest.ndim < 3 or deepest.shape[1] != deep:
            raise ValueError(
                f"project expects the deepest map (N, {deep}, *spatial), "
                f"got shape {tuple(deepest.shape)}"
            )
        pooled = deepest.flatten(2).mean(dim=2)
        return F.normalize(self.fc2(F.relu(self.fc1(pooled))), dim=1)

    def tca_gate(self, codes: Tensor) -> Tensor:
        """Transformation-conditioned channel gate.

        Args:
            codes: (N, 7) spatial-transformation codes (flip x, y, z; one-hot k = 0..3),
                as made by ``pcrl.transforms.spatial_codes``; any numeric dtype.

        Returns:
            (N, 16b, 1, 1, 1) gate in (0, 1), to multiply into the deepest map.

        Raises:
            ValueError: if ``codes`` is not of shape (N, 7).
        """
        if codes.ndim != 2 or codes.shape[1] != TCA_CODE_DIM:
            raise ValueError(
                f"tca_gate expects codes of shape (N, {TCA_CODE_DIM}), got {tuple(codes.shape)}"
            )
        codes = codes.to(dtype=self.aug_fc1.weight.dtype)
        gate = torch.sigmoid(self.aug_fc2(F.relu(self.aug_fc1(codes))))
        return gate.reshape(codes.shape[0], self.feature_channels[3], 1, 1, 1)
