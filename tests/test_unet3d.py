"""Tests of pcrl.networks.unet3d (Models Genesis 3D U-Net, docs/method.md "Networks")."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pcrl.errors import ConfigError
from pcrl.networks.unet3d import UNet3D
from pcrl.networks.blocks import group_norm_groups
from pcrl.networks.unet3d import BatchStatsNorm3d
from net_helpers import randomise_batch_norms

SHAPE = (32, 32, 16)


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("base", "norm", "expected"),
    [
        # (2b, 4b, 8b, 16b) channels at full, 1/2, 1/4, 1/8 of 32x32x16, written out by hand.
        (4, "batch", [(8, 32, 32, 16), (16, 16, 16, 8), (32, 8, 8, 4), (64, 4, 4, 2)]),
        (8, "group", [(16, 32, 32, 16), (32, 16, 16, 8), (64, 8, 8, 4), (128, 4, 4, 2)]),
        (4, "instance", [(8, 32, 32, 16), (16, 16, 16, 8), (32, 8, 8, 4), (64, 4, 4, 2)]),
    ],
)
def test_feature_and_output_shapes(base: int, norm: str, expected: list[tuple[int, ...]]) -> None:
    net = UNet3D(base=base, norm=norm)  # type: ignore[arg-type]
    x = _rand(2, 1, *SHAPE)
    with torch.no_grad():
        features = net.encode(x)
        out = net.decode(features)
    assert net.feature_channels == tuple(e[0] for e in expected)
    assert [tuple(f.shape[1:]) for f in features] == expected
    assert all(f.shape[0] == 2 for f in features)
    assert out.shape == (2, 1, *SHAPE)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def _functional_unet3d(x: torch.Tensor, sd: dict[str, torch.Tensor]) -> torch.Tensor:
    """The Models Genesis U-Net written out with torch.nn.functional from a state dict (eval mode):
    levels of two (3x3x3 conv + BN + ReLU) joined by 2x max-pools, skips before pooling; stages of
    a 2x transposed conv, ``cat([up, skip])`` and two blocks; a 1x1x1 conv and a sigmoid."""

    def block(h: torch.Tensor, name: str) -> torch.Tensor:
        h = F.conv3d(h, sd[f"{name}.conv1.weight"], sd[f"{name}.conv1.bias"], padding=1)
        h = F.batch_norm(h, sd[f"{name}.bn1.running_mean"], sd[f"{name}.bn1.running_var"],
                         sd[f"{name}.bn1.weight"], sd[f"{name}.bn1.bias"], training=False, eps=1e-5)
        return F.relu(h)

    skips, h = [], x
    for depth, name in enumerate(("down_tr64", "down_tr128", "down_tr256", "down_tr512")):
        h = F.max_pool3d(h, kernel_size=2) if depth else h
        h = block(block(h, f"{name}.ops.0"), f"{name}.ops.1")
        skips.append(h)
    h = skips.pop()
    for name in ("up_tr256", "up_tr128", "up_tr64"):
        up = F.conv_transpose3d(h, sd[f"{name}.up_conv.weight"], sd[f"{name}.up_conv.bias"], stride=2)
        h = block(block(torch.cat((up, skips.pop()), dim=1), f"{name}.ops.0"), f"{name}.ops.1")
    return torch.sigmoid(F.conv3d(h, sd["out_tr.final_conv.weight"], sd["out_tr.final_conv.bias"]))


def test_multichannel_forward_matches_a_functional_unet_from_the_state_dict() -> None:
    net = UNet3D(in_channels=4, out_channels=3, base=2)
    randomise_batch_norms(net, seed=5)
    net.eval()
    sd = {k: v.detach() for k, v in net.state_dict().items()}
    x = _rand(2, 4, 16, 16, 8)
    with torch.no_grad():
        out = net(x)
    assert out.shape == (2, 3, 16, 16, 8)
    torch.testing.assert_close(out, _functional_unet3d(x, sd), atol=1e-5, rtol=1e-5)
    # every input channel reaches every output channel
    for c in range(4):
        y = x.clone()
        y[:, c] += 1.0
        with torch.no_grad():
            assert bool(((net(y) - out).abs().flatten(2).amax(dim=2) > 1e-4).all())


def test_a_voxel_reaches_the_first_level_within_two_voxels() -> None:
    # Two 3x3x3 convs (padding 1, no pooling): level 0 changes only within Chebyshev distance 2
    # of a changed input voxel (5x5x5), and does change at that voxel. (A threshold, not > 0: CPU
    # convolutions may round an unchanged voxel differently from one call to the next.)
    net = UNet3D(base=2)
    randomise_batch_norms(net, seed=6)
    net.eval()
    x = _rand(1, 1, 16, 16, 16)
    y = x.clone()
    y[0, 0, 7, 8, 9] += 10.0
    with torch.no_grad():
        changed = (net.encode(y)[0] - net.encode(x)[0]).abs().amax(dim=1)[0] > 1e-4
    where = changed.nonzero()
    assert int((where - torch.tensor([7, 8, 9])).abs().amax()) == 2
    assert bool(changed[7, 8, 9]) and bool(changed[5, 10, 11])  # the centre and a far corner


def test_out_activation_none_gives_logits_of_the_sigmoid_model() -> None:
    sig = UNet3D(base=4).eval()
    raw = UNet3D(base=4, out_activation="none").eval()
    raw.load_state_dict(sig.state_dict())
    x = _rand(2, 1, 16, 16, 8)
    with torch.no_grad():
        logits, probs = raw(x), sig(x)
    assert not torch.allclose(logits, probs)
    torch.testing.assert_close(torch.sigmoid(logits), probs)


def test_release_layer_layout_at_base_4() -> None:
    net = UNet3D(base=4, norm="instance")
    first = net.down_tr64.ops[0].conv1
    assert isinstance(first, nn.Conv3d)
    assert (first.in_channels, first.out_channels) == (1, 4)
    assert first.kernel_size == (3, 3, 3) and first.padding == (1, 1, 1) and first.bias is not None
    # Level d: b*2^d then 2b*2^d channels (b = 4).
    io = [
        (lvl.ops[0].conv1.in_channels, lvl.ops[0].conv1.out_channels, lvl.ops[1].conv1.out_channels)
        for lvl in (net.down_tr64, net.down_tr128, net.down_tr256, net.down_tr512)
    ]
    assert io == [(1, 4, 8), (8, 8, 16), (16, 16, 32), (32, 32, 64)]
    up = [
        (u.up_conv.in_channels, u.up_conv.out_channels, u.ops[0].conv1.in_channels,
         u.ops[1].conv1.out_channels)
        for u in (net.up_tr256, net.up_tr128, net.up_tr64)
    ]
    assert up == [(64, 64, 96, 32), (32, 32, 48, 16), (16, 16, 24, 8)]
    assert net.up_tr256.up_conv.kernel_size == (2, 2, 2)
    assert net.up_tr256.up_conv.stride == (2, 2, 2)
    assert net.out_tr.final_conv.kernel_size == (1, 1, 1)
    assert isinstance(net.down_tr64.ops[1].bn1, nn.InstanceNorm3d)
    assert net.down_tr64.ops[1].bn1.affine


NORM_TYPES = (nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm3d)


@pytest.mark.parametrize(("norm", "cls"), list(zip(("batch", "group", "instance"), NORM_TYPES)))
def test_every_norm_is_named_bn1(norm: str, cls: type) -> None:
    net = UNet3D(base=4, norm=norm)  # type: ignore[arg-type]
    norms = {name: m for name, m in net.named_modules() if isinstance(m, NORM_TYPES)}
    assert len(norms) == 14  # 4 levels x 2 + 3 stages x 2
    assert all(name.endswith(".bn1") and isinstance(m, cls) for name, m in norms.items())


def test_skip_taken_before_pooling_and_levels_joined_by_max_pool() -> None:
    net = UNet3D(base=4).eval()
    x = _rand(1, 1, 16, 16, 8)
    with torch.no_grad():
        f0, f1, f2, f3 = net.encode(x)
        torch.testing.assert_close(f0, net.down_tr64(x))
        torch.testing.assert_close(f1, net.down_tr128(F.max_pool3d(f0, 2)))
        torch.testing.assert_close(f3, net.down_tr512(F.max_pool3d(f2, 2)))


def test_decoder_concatenates_upsampled_first_then_skip() -> None:
    # The release's ordering matters for pretrained up_tr*.ops.0 weights: with the
    # kernel's skip half (input channels 64..95 at base 4) zeroed, the skip has no effect.
    net = UNet3D(base=4).eval()
    with torch.no_grad():
        net.up_tr256.ops[0].conv1.weight[:, 64:] = 0.0
        deep, skip = _rand(1, 64, 2, 2, 1, seed=1), _rand(1, 32, 4, 4, 2, seed=2)
        a = net.up_tr256(deep, skip)
        b = net.up_tr256(deep, skip + 5.0)
        c = net.up_tr256(deep + 5.0, skip)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize(
    ("shape", "fragment"),
    [
        ((1, 1, 20, 16, 8), "(1, 1, 20, 16, 8)"),
        ((1, 1, 16, 16, 12), "(1, 1, 16, 16, 12)"),
        ((1, 2, 16, 16, 8), "(1, 2, 16, 16, 8)"),
        ((1, 16, 16, 8), "(1, 16, 16, 8)"),
    ],
)
def test_bad_input_shapes_raise_config_error_naming_the_shape(
    shape: tuple[int, ...], fragment: str
) -> None:
    net = UNet3D(base=4)
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        net(torch.zeros(shape))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"norm": "layer"},
        {"base": 0},
        {"base": 2.5},
        {"base": True},
        {"in_channels": 0},
        {"out_activation": "softmax"},
    ],
)
def test_bad_options_raise_config_error(kwargs: dict) -> None:
    key = next(iter(kwargs))
    with pytest.raises(ConfigError, match=key):
        UNet3D(**kwargs)


def test_decode_needs_four_maps() -> None:
    with pytest.raises(ValueError, match="4 feature maps"):
        UNet3D(base=4).decode([torch.zeros(1, 8, 4, 4, 4)])


@pytest.mark.parametrize(
    ("channels", "groups"),
    [(4, 4), (8, 8), (12, 6), (9, 3), (7, 7), (10, 5), (11, 1), (64, 8), (768, 8), (1, 1), (3, 3)],
)
def test_group_norm_group_count(channels: int, groups: int) -> None:
    assert group_norm_groups(channels) == groups


def test_group_norm_in_the_model_has_valid_groups_for_odd_widths() -> None:
    net = UNet3D(base=3, norm="group")  # normalised channels: 3, 6, 12, 24, 48 (by hand)
    gns = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    assert len(gns) == 14
    assert all(m.num_channels % m.num_groups == 0 for m in gns)
    pairs = {(m.num_channels, m.num_groups) for m in gns}
    assert pairs == {(3, 3), (6, 6), (12, 6), (24, 8), (48, 8)}
    with torch.no_grad():
        assert net(_rand(1, 1, 8, 8, 8)).shape == (1, 1, 8, 8, 8)


def test_batch_stats_norm_uses_batch_statistics_in_eval_mode_and_updates_running_ones_in_training() -> None:
    """Models Genesis' batch norm, written out: (x - batch mean) / sqrt(biased var + eps) * w + b."""
    layer = BatchStatsNorm3d(3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        layer.bias.copy_(torch.tensor([0.0, -1.0, 0.25]))
    x = _rand(2, 3, 4, 4, 2) * 5 + 1
    mean = x.mean(dim=(0, 2, 3, 4))
    var = x.var(dim=(0, 2, 3, 4), unbiased=False)
    shape = (1, 3, 1, 1, 1)
    normalised = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + 1e-5)
    expected = normalised * layer.weight.view(shape) + layer.bias.view(shape)
    layer.eval()
    torch.testing.assert_close(layer(x), expected.detach())
    torch.testing.assert_close(layer.running_mean, torch.zeros(3))  # eval: untouched
    plain = nn.BatchNorm3d(3).eval()
    plain.load_state_dict(layer.state_dict())  # same keys: checkpoints load either way
    assert not torch.allclose(plain(x), expected)  # running statistics (0, 1) differ
    layer.train()
    layer(x)
    unbiased = x.var(dim=(0, 2, 3, 4), unbiased=True)
    torch.testing.assert_close(layer.running_mean, 0.1 * mean)
    torch.testing.assert_close(layer.running_var, 0.9 + 0.1 * unbiased)
    assert int(layer.num_batches_tracked) == 1


def test_norm_batch_stats_builds_batch_stats_layers_under_the_release_names() -> None:
    net = UNet3D(base=4, norm="batch_stats")
    norms = {name: m for name, m in net.named_modules() if isinstance(m, nn.BatchNorm3d)}
    assert len(norms) == 14 and all(isinstance(m, BatchStatsNorm3d) for m in norms.values())
    assert set(net.state_dict()) == set(UNet3D(base=4, norm="batch").state_dict())
