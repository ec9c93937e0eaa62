"""Tests of pcrl.networks.resnet_unet2d (PCRL's 2D network: a ResNet-18 U-Net, He et al. 2016)."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from pcrl.errors import ConfigError
from pcrl.networks.heads import TCA_CODE_DIM_2D
from pcrl.networks.resnet18 import ResNet18Encoder
from pcrl.networks.resnet_unet2d import ResNetUNet2D
from net_helpers import randomise_batch_norms

# torchvision's resnet18().state_dict() without fc.weight / fc.bias, written out by hand
# (in_channels 3, width 64): the stem (conv1 + bn1: 1 + 5 keys), 8 BasicBlocks of 12 keys
# (conv1, bn1 x5, conv2, bn2 x5) and 3 downsample branches of 6 keys (conv + bn x5):
# 6 + 8 * 12 + 3 * 6 = 120 keys.
TORCHVISION_RESNET18_KEYS = """
conv1.weight (64, 3, 7, 7)
bn1.weight (64,)
bn1.bias (64,)
bn1.running_mean (64,)
bn1.running_var (64,)
bn1.num_batches_tracked ()
layer1.0.conv1.weight (64, 64, 3, 3)
layer1.0.bn1.weight (64,)
layer1.0.bn1.bias (64,)
layer1.0.bn1.running_mean (64,)
layer1.0.bn1.running_var (64,)
layer1.0.bn1.num_batches_tracked ()
layer1.0.conv2.weight (64, 64, 3, 3)
layer1.0.bn2.weight (64,)
layer1.0.bn2.bias (64,)
layer1.0.bn2.running_mean (64,)
layer1.0.bn2.running_var (64,)
layer1.0.bn2.num_batches_tracked ()
layer1.1.conv1.weight (64, 64, 3, 3)
layer1.1.bn1.weight (64,)
layer1.1.bn1.bias (64,)
layer1.1.bn1.running_mean (64,)
layer1.1.bn1.running_var (64,)
layer1.1.bn1.num_batches_tracked ()
layer1.1.conv2.weight (64, 64, 3, 3)
layer1.1.bn2.weight (64,)
layer1.1.bn2.bias (64,)
layer1.1.bn2.running_mean (64,)
layer1.1.bn2.running_var (64,)
layer1.1.bn2.num_batches_tracked ()
layer2.0.conv1.weight (128, 64, 3, 3)
layer2.0.bn1.weight (128,)
layer2.0.bn1.bias (128,)
layer2.0.bn1.running_mean (128,)
layer2.0.bn1.running_var (128,)
layer2.0.bn1.num_batches_tracked ()
layer2.0.conv2.weight (128, 128, 3, 3)
layer2.0.bn2.weight (128,)
layer2.0.bn2.bias (128,)
layer2.0.bn2.running_mean (128,)
layer2.0.bn2.running_var (128,)
layer2.0.bn2.num_batches_tracked ()
layer2.0.downsample.0.weight (128, 64, 1, 1)
layer2.0.downsample.1.weight (128,)
layer2.0.downsample.1.bias (128,)
layer2.0.downsample.1.running_mean (128,)
layer2.0.downsample.1.running_var (128,)
layer2.0.downsample.1.num_batches_tracked ()
layer2.1.conv1.weight (128, 128, 3, 3)
layer2.1.bn1.weight (128,)
layer2.1.bn1.bias (128,)
layer2.1.bn1.running_mean (128,)
layer2.1.bn1.running_var (128,)
layer2.1.bn1.num_batches_tracked ()
layer2.1.conv2.weight (128, 128, 3, 3)
layer2.1.bn2.weight (128,)
layer2.1.bn2.bias (128,)
layer2.1.bn2.running_mean (128,)
layer2.1.bn2.running_var (128,)
layer2.1.bn2.num_batches_tracked ()
layer3.0.conv1.weight (256, 128, 3, 3)
layer3.0.bn1.weight (256,)
layer3.0.bn1.bias (256,)
layer3.0.bn1.running_mean (256,)
layer3.0.bn1.running_var (256,)
layer3.0.bn1.num_batches_tracked ()
layer3.0.conv2.weight (256, 256, 3, 3)
layer3.0.bn2.weight (256,)
layer3.0.bn2.bias (256,)
layer3.0.bn2.running_mean (256,)
layer3.0.bn2.running_var (256,)
layer3.0.bn2.num_batches_tracked ()
layer3.0.downsample.0.weight (256, 128, 1, 1)
layer3.0.downsample.1.weight (256,)
layer3.0.downsample.1.bias (256,)
layer3.0.downsample.1.running_mean (256,)
layer3.0.downsample.1.running_var (256,)
layer3.0.downsample.1.num_batches_tracked ()
layer3.1.conv1.weight (256, 256, 3, 3)
layer3.1.bn1.weight (256,)
layer3.1.bn1.bias (256,)
layer3.1.bn1.running_mean (256,)
layer3.1.bn1.running_var (256,)
layer3.1.bn1.num_batches_tracked ()
layer3.1.conv2.weight (256, 256, 3, 3)
layer3.1.bn2.weight (256,)
layer3.1.bn2.bias (256,)
layer3.1.bn2.running_mean (256,)
layer3.1.bn2.running_var (256,)
layer3.1.bn2.num_batches_tracked ()
layer4.0.conv1.weight (512, 256, 3, 3)
layer4.0.bn1.weight (512,)
layer4.0.bn1.bias (512,)
layer4.0.bn1.running_mean (512,)
layer4.0.bn1.running_var (512,)
layer4.0.bn1.num_batches_tracked ()
layer4.0.conv2.weight (512, 512, 3, 3)
layer4.0.bn2.weight (512,)
layer4.0.bn2.bias (512,)
layer4.0.bn2.running_mean (512,)
layer4.0.bn2.running_var (512,)
layer4.0.bn2.num_batches_tracked ()
layer4.0.downsample.0.weight (512, 256, 1, 1)
layer4.0.downsample.1.weight (512,)
layer4.0.downsample.1.bias (512,)
layer4.0.downsample.1.running_mean (512,)
layer4.0.downsample.1.running_var (512,)
layer4.0.downsample.1.num_batches_tracked ()
layer4.1.conv1.weight (512, 512, 3, 3)
layer4.1.bn1.weight (512,)
layer4.1.bn1.bias (512,)
layer4.1.bn1.running_mean (512,)
layer4.1.bn1.running_var (512,)
layer4.1.bn1.num_batches_tracked ()
layer4.1.conv2.weight (512, 512, 3, 3)
layer4.1.bn2.weight (512,)
layer4.1.bn2.bias (512,)
layer4.1.bn2.running_mean (512,)
layer4.1.bn2.running_var (512,)
layer4.1.bn2.num_batches_tracked ()
"""

# Parameters of ResNet-18 without fc (in_channels 3, width 64), by hand; a BN has 2C parameters:
#   stem:   conv1 64*3*49 = 9,408; bn1 128                                       ->     9,536
#   layer1: 4 convs 64*64*9 = 36,864 each -> 147,456; 4 BNs x 128 = 512          ->   147,968
#   layer2: 128*64*9 = 73,728; 3 convs 128*128*9 = 147,456 each -> 442,368;
#           downsample 128*64 = 8,192; 5 BNs x 256 = 1,280                       ->   525,568
#   layer3: 256*128*9 = 294,912; 3 x 256*256*9 = 3 x 589,824 = 1,769,472;
#           downsample 256*128 = 32,768; 5 BNs x 512 = 2,560                     -> 2,099,712
#   layer4: 512*256*9 = 1,179,648; 3 x 512*512*9 = 3 x 2,359,296 = 7,077,888;
#           downsample 512*256 = 131,072; 5 BNs x 1,024 = 5,120                  -> 8,393,728
#   total 9,536 + 147,968 + 525,568 + 2,099,712 + 8,393,728 = 11,176,512
#   = torchvision's 11,689,512 minus fc (512 * 1000 + 1000 = 513,000).
RESNET18_ENCODER_PARAMETERS = 11_176_512


def parse_keys(text: str) -> dict[str, tuple[int, ...]]:
    """Parse ``key (d0, d1, ...)`` lines into ``{key: shape}``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for line in text.strip().splitlines():
        key, shape = line.split(" ", 1)
        inner = shape.strip().removeprefix("(").removesuffix(")")
        shapes[key] = tuple(int(d) for d in inner.split(",") if d.strip())
    return shapes


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_hand_written_list_has_120_keys() -> None:
    keys = parse_keys(TORCHVISION_RESNET18_KEYS)
    assert len(keys) == 120
    assert sum(k.endswith("num_batches_tracked") for k in keys) == 20  # 20 batch norms
    assert not any(k.startswith("fc.") for k in keys)


def test_encoder_keys_and_shapes_equal_torchvision_resnet18() -> None:
    expected = parse_keys(TORCHVISION_RESNET18_KEYS)
    ours = {k: tuple(v.shape) for k, v in ResNet18Encoder(in_channels=3, width=64).state_dict().items()}
    assert sorted(set(ours) - set(expected)) == []
    assert sorted(set(expected) - set(ours)) == []
    assert {k: v for k, v in ours.items() if v != expected[k]} == {}
    assert list(ours) == list(expected)  # also torchvision's order


def test_encoder_parameter_count() -> None:
    encoder = ResNet18Encoder(in_channels=3, width=64)
    assert sum(p.numel() for p in encoder.parameters()) == RESNET18_ENCODER_PARAMETERS


def _functional_block(x: Tensor, sd: dict[str, Tensor], prefix: str, stride: int, eps: float) -> Tensor:
    def bn(h: Tensor, name: str) -> Tensor:
        return F.batch_norm(
            h, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"],
            sd[f"{name}.bias"], training=False, eps=eps,
        )

    h = F.relu(bn(F.conv2d(x, sd[f"{prefix}.conv1.weight"], stride=stride, padding=1), f"{prefix}.bn1"))
    h = bn(F.conv2d(h, sd[f"{prefix}.conv2.weight"], padding=1), f"{prefix}.bn2")
    if f"{prefix}.downsample.0.weight" in sd:
        shortcut = bn(F.conv2d(x, sd[f"{prefix}.downsample.0.weight"], stride=stride), f"{prefix}.downsample.1")
    else:
        shortcut = x
    return F.relu(h + shortcut)


def test_encode_matches_a_functional_resnet18_from_the_state_dict() -> None:
    encoder = ResNet18Encoder(in_channels=1, width=8)
    randomise_batch_norms(encoder, seed=1)
    encoder.eval()
    sd = {k: v.detach() for k, v in encoder.state_dict().items()}
    eps = 1e-5
    x = torch.rand(2, 1, 64, 64, generator=_gen(2))

    stem = F.batch_norm(
        F.conv2d(x, sd["conv1.weight"], stride=2, padding=3),
        sd["bn1.running_mean"], sd["bn1.running_var"], sd["bn1.weight"], sd["bn1.bias"],
        training=False, eps=eps,
    )
    stem = F.relu(stem)
    expected = [stem]
    h = F.max_pool2d(stem, kernel_size=3, stride=2, padding=1)
    for layer, stride in (("layer1", 1), ("layer2", 2), ("layer3", 2), ("layer4", 2)):
        h = _functional_block(h, sd, f"{layer}.0", stride, eps)
        h = _functional_block(h, sd, f"{layer}.1", 1, eps)
        expected.append(h)

    with torch.no_grad():
        ours = encoder.encode(x)
    assert len(ours) == 5
    for got, want in zip(ours, expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the running statistics matter: the match is not a coincidence of trivial BN buffers
    with torch.no_grad():
        batch_stats = encoder.train().encode(x)[4]
    assert float((ours[4] - batch_stats).abs().max()) > 1e-3


def test_encoder_and_decoder_map_shapes_at_width_8() -> None:
    net = ResNetUNet2D(width=8)
    # (w, w, 2w, 4w, 8w) at 1/2 .. 1/32 of 64x64, written out by hand
    assert net.feature_channels == (8, 8, 16, 32, 64)
    decoder_maps: list[tuple[int, ...]] = []
    hooks = [stage.register_forward_hook(lambda _m, _i, out: decoder_maps.append(tuple(out.shape[1:])))
             for stage in net.decoder]
    x = torch.rand(2, 1, 64, 64, generator=_gen(3))
    with torch.no_grad():
        features = net.encode(x)
        out = net.decode(features)
    for hook in hooks:
        hook.remove()
    assert [tuple(f.shape[1:]) for f in features] == [
        (8, 32, 32), (8, 16, 16), (16, 8, 8), (32, 4, 4), (64, 2, 2),
    ]
    assert decoder_maps == [(32, 4, 4), (16, 8, 8), (8, 16, 16), (8, 32, 32), (4, 64, 64)]
    assert out.shape == (2, 1, 64, 64)
    assert float(out.min()) > 0.0 and float(out.max()) < 1.0


def test_forward_is_decode_of_encode_and_logits_option() -> None:
    sig = ResNetUNet2D(in_channels=2, out_channels=3, width=8).eval()
    raw = ResNetUNet2D(in_channels=2, out_channels=3, width=8, out_activation="none").eval()
    raw.load_state_dict(sig.state_dict())
    x = torch.rand(1, 2, 32, 64, generator=_gen(4))
    with torch.no_grad():
        probs, logits = sig(x), raw(x)
        torch.testing.assert_close(probs, sig.decode(sig.encode(x)))
    assert probs.shape == (1, 3, 32, 64)
    torch.testing.assert_close(torch.sigmoid(logits), probs)


def test_project_has_unit_rows_and_matches_a_hand_reference() -> None:
    net = ResNetUNet2D(width=8, proj_dim=16)
    deepest = torch.randn(3, 64, 2, 2, generator=_gen(5))
    with torch.no_grad():
        z = net.project(deepest)
        pooled = deepest.sum(dim=(2, 3)) / 4.0
        h = torch.clamp(pooled @ net.fc1.weight.T + net.fc1.bias, min=0.0) @ net.fc2.weight.T + net.fc2.bias
        expected = h / h.pow(2).sum(dim=1, keepdim=True).sqrt()
    assert z.shape == (3, 16)
    torch.testing.assert_close(z, expected)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))
    with pytest.raises(ValueError, match=r"\(N, 64, \*spatial\)"):
        net.project(torch.zeros(2, 32, 2, 2))


def test_tca_gate_shape_range_and_head_sizes() -> None:
    assert TCA_CODE_DIM_2D == 6
    net = ResNetUNet2D(width=8)
    assert tuple(net.aug_fc1.weight.shape) == (32, 6)  # code_dim -> 4w
    assert tuple(net.aug_fc2.weight.shape) == (64, 32)  # 4w -> 8w
    assert tuple(net.fc1.weight.shape) == (128, 64)  # 8w -> 128
    full = ResNetUNet2D(width=64)
    assert tuple(full.aug_fc1.weight.shape) == (256, 6) and tuple(full.aug_fc2.weight.shape) == (512, 256)
    # flip x with k=1; no flip, k=0; flip x and y with k=3
    codes = torch.tensor([[1, 0, 0, 1, 0, 0], [0, 0, 1, 0, 0, 0], [1, 1, 0, 0, 0, 1]])
    with torch.no_grad():
        gate = net.tca_gate(codes)
        h = torch.clamp(codes.float() @ net.aug_fc1.weight.T + net.aug_fc1.bias, min=0.0)
        expected = torch.sigmoid(h @ net.aug_fc2.weight.T + net.aug_fc2.bias)
    assert gate.shape == (3, 64, 1, 1)
    assert float(gate.min()) > 0.0 and float(gate.max()) < 1.0
    torch.testing.assert_close(gate.flatten(1), expected)
    with pytest.raises(ValueError, match=r"\(N, 6\)"):
        net.tca_gate(torch.zeros(3, 7))


def test_gradients_reach_every_parameter() -> None:
    net = ResNetUNet2D(width=8).train()
    x = torch.rand(2, 1, 64, 64, generator=_gen(6))
    codes = torch.tensor([[1.0, 0, 0, 0, 1, 0], [0, 1, 1, 0, 0, 0]])
    features = net.encode(x)
    gated = [*features[:4], features[4] * net.tca_gate(codes)]
    weights = torch.rand(2, 128, generator=_gen(7))
    loss = net.decode(gated).mean() + (net.project(features[4]) * weights).sum()
    loss.backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert missing == []


@pytest.mark.parametrize("cls", [ResNetUNet2D, ResNet18Encoder])
def test_size_not_divisible_by_32_raises_config_error_naming_the_shape(cls: type) -> None:
    net = cls(width=8)
    with pytest.raises(ConfigError, match=r"divisible by 32.*\(1, 1, 60, 64\)"):
        net.encode(torch.zeros(1, 1, 60, 64))
    with pytest.raises(ConfigError, match=r"\(1, 3, 64, 64\)"):
        net.encode(torch.zeros(1, 3, 64, 64))  # wrong channel count
    with pytest.raises(ConfigError, match=r"\(1, 64, 64\)"):
        net.encode(torch.zeros(1, 64, 64))  # not a batch


def test_bad_options_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="width"):
        ResNet18Encoder(width=0)
    with pytest.raises(ConfigError, match="norm"):
        ResNetUNet2D(width=8, norm="layer")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="out_activation"):
        ResNetUNet2D(width=8, out_activation="softmax")  # type: ignore[arg-type]


def test_encoder_state_dict_round_trips_strictly() -> None:
    source = ResNet18Encoder(in_channels=1, width=8)
    randomise_batch_norms(source, seed=8)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    target = ResNet18Encoder(in_channels=1, width=8)
    result = target.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    x = torch.rand(1, 1, 64, 64, generator=_gen(9))
    source.eval()
    target.eval()
    with torch.no_grad():
        for a, b in zip(source.encode(x), target.encode(x)):
            torch.testing.assert_close(a, b, rtol=0.0, atol=0.0)


def test_full_model_encoder_state_dict_has_the_torchvision_keys() -> None:
    expected = parse_keys(TORCHVISION_RESNET18_KEYS)
    net = ResNetUNet2D(in_channels=3, width=64)
    encoder_sd = net.encoder_state_dict()
    assert list(encoder_sd) == list(expected)
    assert {k: tuple(v.shape) for k, v in encoder_sd.items()} == expected
    # in the full model the same tensors sit under "encoder."
    full = net.state_dict()
    assert all(torch.equal(full[f"encoder.{k}"], v) for k, v in encoder_sd.items())
    # and the encoder of a trained full model loads strictly into a stand-alone encoder
    ResNet18Encoder(in_channels=3, width=64).load_state_dict(encoder_sd, strict=True)
