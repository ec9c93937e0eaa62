"""Tests of pcrl.networks.pcrl_net (projection head and TCA, docs/method.md "Networks")."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pcrl.errors import ConfigError
from pcrl.networks.heads import TCA_CODE_DIM
from pcrl.networks.pcrl_net import PCRLNet3D
from pcrl.networks.unet3d import UNet3D

RELEASE_KEYS = Path(__file__).parent / "data" / "release_pcrl3d_keys.txt"


def parse_key_list(path: Path) -> dict[str, tuple[int, ...]]:
    """Parse ``key<TAB>(d0, d1, ...)`` lines (``#`` comments) into ``{key: shape}``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split("\t")
        inner = shape.strip().removeprefix("(").removesuffix(")")
        shapes[key] = tuple(int(d) for d in inner.split(",") if d.strip())
    return shapes


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_parse_key_list_reads_the_release_file() -> None:
    shapes = parse_key_list(RELEASE_KEYS)
    # 4 levels x 2 blocks x 7 (conv w, b; bn w, b, mean, var, count) + 3 stages x (2 + 14)
    # + out_tr 2 + fc1/fc2 4 + aug_fc1/aug_fc2 4.
    assert len(shapes) == 56 + 48 + 2 + 4 + 4
    assert shapes["down_tr64.ops.0.conv1.weight"] == (32, 1, 3, 3, 3)
    assert shapes["down_tr64.ops.0.bn1.num_batches_tracked"] == ()
    assert shapes["fc1.bias"] == (128,)


def test_base32_state_dict_equals_the_release_keys_and_shapes() -> None:
    release = parse_key_list(RELEASE_KEYS)
    ours = {key: tuple(t.shape) for key, t in PCRLNet3D(base=32).state_dict().items()}
    assert sorted(set(ours) - set(release)) == []
    assert sorted(set(release) - set(ours)) == []
    assert {k: v for k, v in ours.items() if v != release[k]} == {}


def test_plain_unet_has_the_release_keys_without_the_heads() -> None:
    release = parse_key_list(RELEASE_KEYS)
    heads = {k for k in release if k.startswith(("fc1.", "fc2.", "aug_fc1.", "aug_fc2."))}
    assert len(heads) == 8
    ours = {key: tuple(t.shape) for key, t in UNet3D(base=32).state_dict().items()}
    assert ours == {k: v for k, v in release.items() if k not in heads}


def test_head_shapes_at_small_width_and_proj_dim() -> None:
    net = PCRLNet3D(base=4, proj_dim=16)
    assert tuple(net.fc1.weight.shape) == (16, 64)  # 16b -> proj_dim
    assert tuple(net.fc2.weight.shape) == (16, 16)
    assert tuple(net.aug_fc1.weight.shape) == (32, 7)  # 7 -> 8b
    assert tuple(net.aug_fc2.weight.shape) == (64, 32)  # 8b -> 16b


def test_project_matches_hand_reference_and_has_unit_rows() -> None:
    net = PCRLNet3D(base=4, proj_dim=16)
    deepest = torch.randn(3, 64, 2, 2, 1, generator=_gen(0))
    with torch.no_grad():
        z = net.project(deepest)
        pooled = deepest.sum(dim=(2, 3, 4)) / 4.0  # 2*2*1 voxels
        h = torch.clamp(pooled @ net.fc1.weight.T + net.fc1.bias, min=0.0)
        h = h @ net.fc2.weight.T + net.fc2.bias
        expected = h / h.pow(2).sum(dim=1, keepdim=True).sqrt()
    assert z.shape == (3, 16)
    torch.testing.assert_close(z, expected)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))


def test_project_pools_globally() -> None:
    # A map that is constant in space projects like its 1x1x1 version (pooling, not flattening).
    net = PCRLNet3D(base=4)
    point = torch.randn(2, 64, 1, 1, 1, generator=_gen(1))
    with torch.no_grad():
        torch.testing.assert_close(net.project(point.expand(2, 64, 4, 4, 2)), net.project(point))


def test_project_of_the_encoder_matches_a_functional_reference() -> None:
    """q = normalize(fc2(relu(fc1(GAP(deepest))))) with the deepest map of the Models Genesis
    encoder written out with torch.nn.functional from the state dict (eval mode: running BN
    statistics, set at random here so that they matter)."""
    net = PCRLNet3D(base=2, proj_dim=8)
    gen = _gen(21)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
        net.fc1.weight.mul_(50.0)  # so that the rows of q follow the pooled features, not fc1's bias
    net.eval()
    sd = {k: v.detach() for k, v in net.state_dict().items()}

    def block(h: torch.Tensor, name: str) -> torch.Tensor:
        h = F.conv3d(h, sd[f"{name}.conv1.weight"], sd[f"{name}.conv1.bias"], padding=1)
        return F.relu(F.batch_norm(h, sd[f"{name}.bn1.running_mean"], sd[f"{name}.bn1.running_var"],
                                   sd[f"{name}.bn1.weight"], sd[f"{name}.bn1.bias"], training=False, eps=1e-5))

    x = torch.randn(3, 1, 16, 16, 8, generator=_gen(2)) * torch.tensor([0.1, 3.0, 30.0]).view(3, 1, 1, 1, 1)
    h = x
    for depth, name in enumerate(("down_tr64", "down_tr128", "down_tr256", "down_tr512")):
        h = block(block(F.max_pool3d(h, 2) if depth else h, f"{name}.ops.0"), f"{name}.ops.1")
    assert h.shape == (3, 32, 2, 2, 1)  # 16b channels at 1/8 resolution
    pooled = h.mean(dim=(2, 3, 4))
    z = F.linear(F.relu(F.linear(pooled, sd["fc1.weight"], sd["fc1.bias"])), sd["fc2.weight"], sd["fc2.bias"])
    expected = z / z.norm(dim=1, keepdim=True)
    with torch.no_grad():
        got = net.project(net.encode(x)[3])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_project_rejects_wrong_channels() -> None:
    with pytest.raises(ValueError, match=r"\(N, 64, \*spatial\)"):
        PCRLNet3D(base=4).project(torch.zeros(2, 32, 2, 2, 1))


def test_tca_gate_matches_hand_reference() -> None:
    net = PCRLNet3D(base=4)
    # Codes: flip x and y with k=1; no flip with k=0; flip z with k=3.
    codes = torch.tensor(
        [[1, 1, 0, 0, 1, 0, 0], [0, 0, 0, 1, 0, 0, 0], [0, 0, 1, 0, 0, 0, 1]], dtype=torch.float32
    )
    with torch.no_grad():
        gate = net.tca_gate(codes)
        h = torch.clamp(codes @ net.aug_fc1.weight.T + net.aug_fc1.bias, min=0.0)
        expected = 1.0 / (1.0 + torch.exp(-(h @ net.aug_fc2.weight.T + net.aug_fc2.bias)))
    assert gate.shape == (3, 64, 1, 1, 1)
    torch.testing.assert_close(gate.reshape(3, 64), expected)
    assert float(gate.min()) > 0.0 and float(gate.max()) < 1.0
    # Integer codes are accepted and give the same gate.
    with torch.no_grad():
        torch.testing.assert_close(net.tca_gate(codes.long()), gate)


def test_tca_gate_equals_a_hand_written_mlp_per_channel() -> None:
    """gate = sigmoid(W2 relu(W1 c + b1) + b2), one value per channel of the deepest map
    (docs/method.md "Transformation-conditioned attention"), computed here from the weights."""
    net = PCRLNet3D(base=4).eval()
    codes = torch.tensor([[1.0, 0, 1, 0, 0, 1, 0], [0, 1, 0, 1, 0, 0, 0]])
    w1, b1 = net.aug_fc1.weight.detach(), net.aug_fc1.bias.detach()
    w2, b2 = net.aug_fc2.weight.detach(), net.aug_fc2.bias.detach()
    width = w1.shape[0]  # 256 at base 32, scaled with the base
    assert w1.shape == (width, TCA_CODE_DIM) and w2.shape == (64, width)
    hidden = [[max(0.0, sum(float(w1[j, i]) * float(c[i]) for i in range(7)) + float(b1[j]))
               for j in range(width)] for c in codes]
    expected = torch.tensor([[1 / (1 + math.exp(-(sum(float(w2[o, j]) * h[j] for j in range(width))
                                                  + float(b2[o])))) for o in range(64)]
                             for h in hidden])
    with torch.no_grad():
        gate = net.tca_gate(codes)
    assert gate.shape == (2, 64, 1, 1, 1)
    torch.testing.assert_close(gate.flatten(1), expected, atol=1e-5, rtol=1e-5)
    # multiplied into the deepest map, the gate scales each channel by its own value
    with torch.no_grad():
        deepest = net.encode(torch.rand(2, 1, 16, 16, 8, generator=_gen(3)))[3]
    gated = deepest * gate
    torch.testing.assert_close(gated[1, 5], deepest[1, 5] * expected[1, 5])


@pytest.mark.parametrize("shape", [(2, 6), (2, 7, 1), (7,)])
def test_tca_gate_rejects_bad_codes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(N, 7\)"):
        PCRLNet3D(base=4).tca_gate(torch.zeros(shape))


def test_bad_proj_dim_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="proj_dim"):
        PCRLNet3D(base=4, proj_dim=0)


def test_is_a_unet3d_that_reconstructs() -> None:
    net = PCRLNet3D(base=4, norm="group").eval()
    assert isinstance(net, UNet3D)
    with torch.no_grad():
        out = net(torch.rand(1, 1, 16, 16, 8, generator=_gen(4)))
    assert out.shape == (1, 1, 16, 16, 8)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
