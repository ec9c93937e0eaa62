"""PCRL's 2D network (pcrl.networks.resnet_unet2d) with group and instance norm, written out with
torch.nn.functional from its state dict: the ResNet-18 encoder (He et al., CVPR 2016), the
five decoder stages and ``out_tr``, as the module docstring describes them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcrl.networks.resnet_unet2d import ResNetUNet2D

#: GroupNorm groups of the widths of a width-8 network: the largest divisor <= 8, by hand.
GROUPS = {4: 4, 8: 8, 16: 8, 32: 8, 64: 8}

Norm = Callable[[Tensor, str], Tensor]


def _block(x: Tensor, sd: dict[str, Tensor], prefix: str, stride: int, norm: Norm) -> Tensor:
    """BasicBlock: relu(norm(conv2(relu(norm(conv1(x))))) + shortcut(x))."""
    h = F.relu(norm(F.conv2d(x, sd[f"{prefix}.conv1.weight"], stride=stride, padding=1), f"{prefix}.bn1"))
    h = norm(F.conv2d(h, sd[f"{prefix}.conv2.weight"], padding=1), f"{prefix}.bn2")
    if f"{prefix}.downsample.0.weight" in sd:
        x = norm(F.conv2d(x, sd[f"{prefix}.downsample.0.weight"], stride=stride), f"{prefix}.downsample.1")
    return F.relu(h + x)


def _functional_unet2d(x: Tensor, sd: dict[str, Tensor], norm: Norm) -> Tensor:
    stem = F.relu(norm(F.conv2d(x, sd["encoder.conv1.weight"], stride=2, padding=3), "encoder.bn1"))
    skips, h = [stem], F.max_pool2d(stem, kernel_size=3, stride=2, padding=1)
    for layer, stride in (("layer1", 1), ("layer2", 2), ("layer3", 2), ("layer4", 2)):
        h = _block(_block(h, sd, f"encoder.{layer}.0", stride, norm), sd, f"encoder.{layer}.1", 1, norm)
        skips.append(h)
    h = skips.pop()
    for stage, skip in enumerate((skips[3], skips[2], skips[1], skips[0], None)):
        p = f"decoder.{stage}"
        h = F.conv_transpose2d(h, sd[f"{p}.up_conv.weight"], sd[f"{p}.up_conv.bias"], stride=2)
        h = h if skip is None else torch.cat((h, skip), dim=1)
        for op in (f"{p}.ops.0", f"{p}.ops.1"):  # 3x3 conv without bias -> norm -> ReLU
            h = F.relu(norm(F.conv2d(h, sd[f"{op}.conv1.weight"], padding=1), f"{op}.bn1"))
    return torch.sigmoid(F.conv2d(h, sd["out_tr.final_conv.weight"], sd["out_tr.final_conv.bias"]))


@pytest.mark.parametrize("kind", ["group", "instance"])
def test_other_norms_match_a_functional_network_from_the_state_dict(kind: str) -> None:
    net = ResNetUNet2D(width=8, norm=kind)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(12)
    with torch.no_grad():  # non-trivial affine parameters, so that they matter
        for m in net.modules():
            if isinstance(m, (nn.GroupNorm, nn.InstanceNorm2d)):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
    net.eval()
    sd = {k: v.detach() for k, v in net.state_dict().items()}

    def norm(h: Tensor, name: str) -> Tensor:
        weight, bias = sd[f"{name}.weight"], sd[f"{name}.bias"]
        if kind == "group":
            return F.group_norm(h, GROUPS[h.shape[1]], weight, bias, eps=1e-5)
        return F.instance_norm(h, weight=weight, bias=bias, eps=1e-5)

    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        out = net(x)
    assert out.shape == (2, 1, 64, 64)
    torch.testing.assert_close(out, _functional_unet2d(x, sd, norm), atol=1e-5, rtol=1e-5)
