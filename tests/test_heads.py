"""Tests of pcrl.networks.heads: PCRL's projection head and TCA gate in 2D and 3D.

The expected values are worked out by hand from weights set by hand (docs/method.md
"Networks": GAP -> fc1 -> ReLU -> fc2 -> L2 norm; sigmoid(aug_fc2(relu(aug_fc1(code))))).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pcrl.errors import ConfigError
from pcrl.networks.pcrl_net import PCRLNet3D
from pcrl.networks.resnet_unet2d import ResNetUNet2D
from pcrl.networks.heads import TCA_CODE_DIM, TCA_CODE_DIM_2D, ProjectionHead, TCAGate

HEAD_KEYS = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
             "aug_fc1.weight", "aug_fc1.bias", "aug_fc2.weight", "aug_fc2.bias"]


class Host(ProjectionHead, TCAGate):
    """The smallest network with both heads: 2 deep channels, proj_dim 2, 3-entry codes."""

    def __init__(self, spatial_dims: int, deep: int = 2, proj_dim: int = 2, code_dim: int = 3,
                 hidden: int = 2) -> None:
        super().__init__()
        self.add_projection_head(deep, proj_dim)
        self.add_tca_gate(code_dim, hidden, deep, spatial_dims)  # type: ignore[arg-type]


def _set(layer: nn.Linear, weight: list[list[float]], bias: list[float]) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))


def _hand_host(spatial_dims: int) -> Host:
    host = Host(spatial_dims)
    _set(host.fc1, [[1.0, 0.0], [0.0, -1.0]], [0.0, 0.5])
    _set(host.fc2, [[1.0, 1.0], [0.0, 2.0]], [0.0, 0.0])
    _set(host.aug_fc1, [[1.0, 0.0, 0.0], [0.0, 1.0, -1.0]], [0.0, 0.0])
    _set(host.aug_fc2, [[1.0, 0.0], [-1.0, 2.0]], [0.0, 0.5])
    return host


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_project_by_hand(spatial_dims: int) -> None:
    host = _hand_host(spatial_dims)
    # sample 0: channel means 2 and -1 -> fc1 (2, 1 + 0.5) -> ReLU (2, 1.5) -> fc2 (3.5, 3)
    # sample 1: channel means -1 and -3 -> fc1 (-1, 3 + 0.5) -> ReLU (0, 3.5) -> fc2 (3.5, 7)
    spatial = (2, 1) if spatial_dims == 2 else (2, 1, 2)
    deepest = torch.zeros(2, 2, *spatial)
    flat = deepest.view(2, 2, -1)
    size = flat.shape[2]
    flat[0, 0] = torch.tensor([1.0, 3.0] * (size // 2))  # mean 2
    flat[0, 1] = torch.tensor([-2.0, 0.0] * (size // 2))  # mean -1
    flat[1, 0] = torch.tensor([0.0, -2.0] * (size // 2))  # mean -1
    flat[1, 1] = torch.tensor([-6.0, 0.0] * (size // 2))  # mean -3
    expected = torch.tensor([[3.5, 3.0], [3.5, 7.0]])
    expected /= torch.tensor([[math.sqrt(3.5**2 + 3.0**2)], [math.sqrt(3.5**2 + 7.0**2)]])
    with torch.no_grad():
        torch.testing.assert_close(host.project(deepest), expected)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_tca_gate_by_hand_and_its_shape(spatial_dims: int) -> None:
    host = _hand_host(spatial_dims)
    codes = torch.tensor([[1, 0, 0], [0, 0, 1], [0, 1, 0]])  # integer codes are accepted
    # (1,0,0): hidden (1, 0) -> (1, -1 + 0.5); (0,0,1): hidden (0, -1) -> ReLU (0, 0) -> (0, 0.5);
    # (0,1,0): hidden (0, 1) -> (0, 2 + 0.5)
    logits = [[1.0, -0.5], [0.0, 0.5], [0.0, 2.5]]
    expected = torch.tensor([[_sigmoid(v) for v in row] for row in logits])
    with torch.no_grad():
        gate = host.tca_gate(codes)
    assert gate.shape == (3, 2, *(1,) * spatial_dims)
    torch.testing.assert_close(gate.flatten(1), expected)
    # multiplied into a deepest map, each channel is scaled by its own gate value
    deepest = torch.arange(3 * 2 * 4**spatial_dims, dtype=torch.float32).reshape(3, 2, *(4,) * spatial_dims)
    gated = deepest * gate
    for n in range(3):
        for c in range(2):
            torch.testing.assert_close(gated[n, c], deepest[n, c] * float(expected[n, c]))


def test_heads_create_their_layers_in_the_release_order_from_the_global_stream() -> None:
    torch.manual_seed(3)
    host = Host(3, deep=4, proj_dim=5, code_dim=7, hidden=6)
    torch.manual_seed(3)
    expected = [nn.Linear(4, 5), nn.Linear(5, 5), nn.Linear(7, 6), nn.Linear(6, 4)]
    assert list(host.state_dict()) == HEAD_KEYS
    for got, want in zip(host.state_dict().values(), (t for m in expected for t in (m.weight, m.bias))):
        assert torch.equal(got, want)


@pytest.mark.parametrize(("net", "code_dim", "dims"), [(PCRLNet3D(base=2, proj_dim=4), TCA_CODE_DIM, 3),
                                                        (ResNetUNet2D(width=4, proj_dim=4), TCA_CODE_DIM_2D, 2)])
def test_both_unets_carry_the_same_heads_last_under_the_release_keys(net: nn.Module, code_dim: int,
                                                                        dims: int) -> None:
    assert (TCA_CODE_DIM, TCA_CODE_DIM_2D) == (7, 6)
    assert list(net.state_dict())[-8:] == HEAD_KEYS
    assert isinstance(net, ProjectionHead) and isinstance(net, TCAGate)
    assert type(net).project is ProjectionHead.project and type(net).tca_gate is TCAGate.tca_gate
    assert net.aug_fc1.in_features == code_dim and net.spatial_dims == dims


def test_bad_inputs_and_settings() -> None:
    host = Host(2)
    with pytest.raises(ValueError, match=r"\(N, 2, \*spatial\)"):
        host.project(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"\(N, 2, \*spatial\)"):
        host.project(torch.zeros(1, 2))  # no spatial dimension
    for shape in ((2, 4), (2, 3, 1), (3,)):
        with pytest.raises(ValueError, match=r"\(N, 3\)"):
            host.tca_gate(torch.zeros(shape))
    with pytest.raises(ConfigError, match="proj_dim"):
        Host(2, proj_dim=0)
    with pytest.raises(ConfigError, match="code_dim"):
        Host(2, code_dim=0)
