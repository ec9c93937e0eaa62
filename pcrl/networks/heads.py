"""PCRL's projection head and TCA gate, one of each for a U-Net of any spatial dimension.

docs/method.md "Networks" (Zhou et al., ICCV 2021, Sec. 3), on the deepest encoder map
(``C`` channels: 16b in the 3D U-Net, 8w in the 2D ResNet-18 U-Net):

* projection head: global average pool -> ``fc1`` (C -> proj_dim) -> ReLU -> ``fc2``
  (proj_dim -> proj_dim), L2-normalised before the contrastive loss;
* transformation-conditioned attention (TCA): the code of the spatial transformation applied
  to a target (a 0/1 flip per axis, then a one-hot of k = 0..3 quarter turns: 7 entries in
  3D, 6 in 2D) -> ``aug_fc1`` (code -> hidden) -> ReLU -> ``aug_fc2`` (hidden -> C) ->
  sigmoid, a per-channel gate multiplied into the deepest map before decoding (the
  release's channel-wise form).

The layers keep the release's names and sit on the network itself, not under a sub-module,
so that checkpoints have the release's keys (``fc1.weight``, ``aug_fc1.weight``, ...): each
head is a mixin of the network, whose constructor calls :meth:`ProjectionHead.add_projection_head`
then :meth:`TCAGate.add_tca_gate`, after its backbone and decoder (the order in which layers
are created fixes the random initialisation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcrl.networks.blocks import SpatialDims, require_positive_int
from pcrl.transforms.spatial import CODE_SIZE, CODE_SIZE_2D

__all__ = ["TCA_CODE_DIM", "TCA_CODE_DIM_2D", "ProjectionHead", "TCAGate"]

#: Entries of a 3D transformation code: flip x, y, z, one-hot of k = 0..3 quarter turns
#: (docs/method.md "Transformation-conditioned attention").
TCA_CODE_DIM = CODE_SIZE
#: Entries of a 2D transformation code: flip x, flip y, one-hot of k = 0..3 quarter turns.
TCA_CODE_DIM_2D = CODE_SIZE_2D


class ProjectionHead(nn.Module):
    """Mixin: the projection head ``fc1``/``fc2`` of PCRL (and MoCo v2) on the deepest map."""

    fc1: nn.Linear
    fc2: nn.Linear
    proj_dim: int

    def add_projection_head(self, in_channels: int, proj_dim: int) -> None:
        """Create ``fc1`` (in_channels -> proj_dim) then ``fc2`` (proj_dim -> proj_dim).

        Raises:
            ConfigError: if ``proj_dim`` is not a positive integer.
        """
        self.proj_dim = require_positive_int("proj_dim", proj_dim)
        self.fc1 = nn.Linear(in_channels, proj_dim)
        self.fc2 = nn.Linear(proj_dim, proj_dim)

    def project(self, deepest: Tensor) -> Tensor:
        """Projection head: GAP -> fc1 -> ReLU -> fc2 -> L2 normalisation.

        Args:
            deepest: deepest encoder map (N, C, *spatial), e.g. ``encode(x)[-1]``.

        Returns:
            (N, proj_dim) rows of unit Euclidean norm.

        Raises:
            ValueError: if ``deepest`` does not have the head's ``C`` channels on dim 1.
        """
        deep = self.fc1.in_features
        if deepest.ndim < 3 or deepest.shape[1] != deep:
            raise ValueError(
                f"project expects the deepest map (N, {deep}, *spatial), got shape {tuple(deepest.shape)}"
            )
        pooled = deepest.flatten(2).mean(dim=2)
        return F.normalize(self.fc2(F.relu(self.fc1(pooled))), dim=1)


class TCAGate(nn.Module):
    """Mixin: PCRL's transformation-conditioned channel gate ``aug_fc1``/``aug_fc2``."""

    aug_fc1: nn.Linear
    aug_fc2: nn.Linear
    code_dim: int
    spatial_dims: SpatialDims

    def add_tca_gate(self, code_dim: int, hidden: int, channels: int, spatial_dims: SpatialDims) -> None:
        """Create ``aug_fc1`` (code_dim -> hidden) then ``aug_fc2`` (hidden -> channels).

        Args:
            code_dim: entries of a transformation code (:data:`TCA_CODE_DIM` or
                :data:`TCA_CODE_DIM_2D`).
            hidden: width of the hidden layer (the channels of the level above the deepest).
            channels: channels of the deepest map, one gate value each.
            spatial_dims: 3 or 2, the trailing unit dimensions of the gate.

        Raises:
            ConfigError: if ``code_dim`` is not a positive integer.
        """
        self.code_dim = require_positive_int("code_dim", code_dim)
        self.spatial_dims = spatial_dims
        self.aug_fc1 = nn.Linear(code_dim, hidden)
        self.aug_fc2 = nn.Linear(hidden, channels)

    def tca_gate(self, codes: Tensor) -> Tensor:
        """Transformation-conditioned channel gate ``sigmoid(aug_fc2(relu(aug_fc1(codes))))``.

        Args:
            codes: (N, code_dim) transformation codes (a flip per axis; one-hot k = 0..3),
                as made by ``pcrl.transforms.spatial_codes``; any numeric dtype.

        Returns:
            (N, C, 1, 1[, 1]) gate in (0, 1), one unit dimension per spatial one, to multiply
            into the deepest map.

        Raises:
            ValueError: if ``codes`` is not of shape (N, code_dim).
        """
        if codes.ndim != 2 or codes.shape[1] != self.code_dim:
            raise ValueError(f"tca_gate expects codes of shape (N, {self.code_dim}), got {tuple(codes.shape)}")
        codes = codes.to(dtype=self.aug_fc1.weight.dtype)
        gate = torch.sigmoid(self.aug_fc2(F.relu(self.aug_fc1(codes))))
        return gate.reshape(codes.shape[0], self.aug_fc2.out_features, *(1,) * self.spatial_dims)
