"""Helpers of the network tests: batch norms that matter in eval mode."""

from __future__ import annotations

import torch
from torch import nn


def randomise_batch_norms(net: nn.Module, seed: int) -> None:
    """Give every 2D and 3D batch norm non-trivial affine parameters and running statistics,
    so that a test comparing eval-mode outputs would see a norm applied wrongly."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                assert m.running_mean is not None and m.running_var is not None
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.2 * torch.randn(c, generator=gen))
                m.running_mean.copy_(0.3 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
