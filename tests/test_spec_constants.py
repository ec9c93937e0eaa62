"""Every number of PCRL's method description, pinned against the spec and measured in behaviour.

The spec (docs/method.md, PCRL-SPEC) states the constants; these tests check the defaults
*and* what the code does with them (statistics of many draws, written-out network
arithmetic), so that a change of, e.g., the in-painting noise range, the shuffling block
size or a batch-norm constant fails here even if every other test still passes.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pcrl import transforms
from pcrl.preprocessing.pair_config import DEFAULT_CROP_SIZES, PairConfig
from pcrl.methods.pcrl import PCRL, PCRLConfig
from pcrl.networks.pcrl_net import PCRLNet3D
from pcrl.transforms.painting import _inpaint_boxes, _outpaint_boxes
from pcrl.transforms.shuffle import _shuffle_plan

SPEC_CROP_SIZES = [(64, 64, 32), (96, 96, 48), (96, 96, 96), (32, 32, 16), (112, 112, 64)]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------- defaults


def test_method_defaults_are_the_papers() -> None:
    cfg = PCRLConfig(n_data=1)
    assert (cfg.base, cfg.proj_dim, cfg.queue_size) == (32, 128, 16384)
    assert (cfg.temperature, cfg.momentum) == (0.2, 0.999)
    assert (cfg.loss, cfg.target, cfg.nce) == ("nce", "intent", "intent")
    assert cfg.tca and cfg.hybrid and cfg.mixup and cfg.shuffle_bn
    c = transforms.CorruptionConfig()
    assert (c.shuffle_prob, c.nonlinear_prob, c.paint_prob, c.inpaint_prob) == (0.5, 0.0, 0.9, 0.2)
    assert c.shuffle_max_block_fraction == 0.1


def test_pair_defaults_are_the_papers() -> None:
    assert [tuple(s) for s in DEFAULT_CROP_SIZES] == SPEC_CROP_SIZES
    cfg = PairConfig()
    assert cfg.cube_size == (64, 64, 32) and cfg.min_iou == 0.25
    assert cfg.threshold_hu == -150.0 and cfg.hu_range == (-1000.0, 1000.0)
    assert cfg.threshold == pytest.approx(0.425)  # -150 HU on the [0, 1] scale


@pytest.mark.parametrize("norm_cls", [nn.BatchNorm3d])
def test_batch_norm_constants_are_the_releases(norm_cls: type) -> None:
    """eps 1e-5, momentum 0.1, affine, running statistics: torch's defaults, as the release."""
    net = PCRLNet3D(base=2)
    norms = [m for m in net.modules() if isinstance(m, norm_cls)]
    assert len(norms) == 14
    for m in norms:
        assert (m.eps, m.momentum, m.affine, m.track_running_stats) == (1e-5, 0.1, True, True)


# -------------------------------------------------------------- corruptions, measured


def test_in_painting_boxes_and_noise() -> None:
    """0..5 boxes (continue with p 0.95), sides floor(s/6)..floor(s/3), noise uniform in [0, 1)."""
    shape = (400, 1, 64, 64, 32)
    boxes = _inpaint_boxes(shape, _gen(1), torch.device("cpu"))
    sides = (boxes.high - boxes.low)[boxes.active]
    assert sides.shape[1] == 3
    for axis, size in enumerate((64, 64, 32)):
        assert int(sides[:, axis].min()) == size // 6 and int(sides[:, axis].max()) == size // 3
    counts = boxes.active.sum(dim=1)
    assert int(counts.max()) == 5 and int(counts.min()) == 0
    # P(at least one box) = 0.95; P(all five) = 0.95^5 = 0.774
    assert float((counts >= 1).float().mean()) == pytest.approx(0.95, abs=0.03)
    assert float((counts == 5).float().mean()) == pytest.approx(0.95**5, abs=0.05)
    x = torch.full((200, 1, 32, 32, 16), -5.0)  # outside [0, 1]: painted voxels are noise alone
    out = transforms.in_paint(x, _gen(2))
    noise = out[out != -5.0]
    assert noise.numel() > 10_000
    assert float(noise.min()) >= 0.0 and float(noise.max()) < 1.0
    assert float(noise.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(noise.var()) == pytest.approx(1 / 12, abs=0.005)


def test_out_painting_keeps_1_to_5_boxes_of_3_7_to_4_7_of_each_side() -> None:
    boxes = _outpaint_boxes((400, 1, 70, 70, 35), _gen(3), torch.device("cpu"))
    sides = (boxes.high - boxes.low)[boxes.active]
    for axis, size in enumerate((70, 70, 35)):
        assert int(sides[:, axis].min()) == size - (4 * size) // 7
        assert int(sides[:, axis].max()) == size - (3 * size) // 7
    counts = boxes.active.sum(dim=1)
    assert int(counts.min()) == 1 and int(counts.max()) == 5


def test_paint_probabilities() -> None:
    """Painting with p 0.9; of those, in-painting with p 0.2 (keeps most voxels) else out-painting."""
    n = 2000
    x = torch.full((n, 1, 16, 16, 8), -5.0)
    out = transforms.paint(x, _gen(4))
    changed = (out != -5.0).flatten(1).float().mean(dim=1)
    painted = changed > 0
    assert float(painted.float().mean()) == pytest.approx(0.9 * (1 - 0.2 * 0.05), abs=0.02)
    # out-painting replaces most of the volume (outside boxes of <= 4/7 of each side)
    mostly = (changed > 0.5).float().mean()
    assert float(mostly) == pytest.approx(0.9 * 0.8, abs=0.03)


def _longest_run(line: torch.Tensor) -> int:
    """Length of the longest run of equal consecutive values."""
    edges = torch.nonzero(line[1:] != line[:-1]).flatten() + 1
    bounds = torch.cat([torch.tensor([0]), edges, torch.tensor([line.numel()])])
    return int((bounds[1:] - bounds[:-1]).max())


def test_local_shuffle_p_half_and_blocks_up_to_a_tenth_of_each_side() -> None:
    sizes = (60, 60, 30)
    plan = _shuffle_plan((300, 1, *sizes), _gen(5), torch.device("cpu"), layout=True)
    assert plan.samples.numel() / 300 == pytest.approx(0.5, abs=0.07)
    assert plan.block is not None
    for axis, size in enumerate(sizes):
        lines = plan.block.movedim(axis + 1, 1)[:, :, 0, 0]  # (M, size): block ids along the axis
        longest = [_longest_run(line) for line in lines]
        assert max(longest) == size // 10 and min(longest) == 1, (axis, max(longest))


def test_augmentation_constants() -> None:
    """Affine rotations up to 10 degrees and scales 0.9..1.1, blur sigma 0..2: the release's library defaults."""
    import inspect

    params = inspect.signature(transforms.augment).parameters
    assert params["degrees"].default == 10.0
    assert params["scale"].default == 0.1
    assert tuple(params["blur_sigma"].default) == (0.0, 2.0)
    assert tuple(params["flip_axes"].default) == (0, 1, 2)


# ------------------------------------------------------ the network, written out


def _conv_block(x: torch.Tensor, sd: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """conv3d 3x3x3 (padding 1, bias) -> batch norm (running statistics, eps 1e-5) -> ReLU."""
    x = F.conv3d(x, sd[f"{name}.conv1.weight"], sd[f"{name}.conv1.bias"], padding=1)
    mean, var = sd[f"{name}.bn1.running_mean"], sd[f"{name}.bn1.running_var"]
    w, b = sd[f"{name}.bn1.weight"], sd[f"{name}.bn1.bias"]
    shape = (1, -1, 1, 1, 1)
    x = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + 1e-5) * w.view(shape) + b.view(shape)
    return torch.clamp(x, min=0.0)


def _written_out_pcrl_net(sd: dict[str, torch.Tensor], x: torch.Tensor, codes: torch.Tensor):
    """The spec's network from its state dict alone: encoder, head, TCA gate, decoder."""
    skips = []
    h = x
    for level, name in enumerate(("down_tr64", "down_tr128", "down_tr256", "down_tr512")):
        if level:
            h = F.max_pool3d(h, kernel_size=2, stride=2)
        h = _conv_block(_conv_block(h, sd, f"{name}.ops.0"), sd, f"{name}.ops.1")
        skips.append(h)
    deepest = skips[-1]
    pooled = deepest.mean(dim=(2, 3, 4))
    hidden = torch.clamp(F.linear(pooled, sd["fc1.weight"], sd["fc1.bias"]), min=0)
    z = F.linear(hidden, sd["fc2.weight"], sd["fc2.bias"])
    q = z / z.norm(dim=1, keepdim=True)
    hidden = torch.clamp(F.linear(codes, sd["aug_fc1.weight"], sd["aug_fc1.bias"]), min=0)
    gate = torch.sigmoid(F.linear(hidden, sd["aug_fc2.weight"], sd["aug_fc2.bias"]))
    h = deepest * gate[:, :, None, None, None]
    for name, skip in zip(("up_tr256", "up_tr128", "up_tr64"), skips[2::-1]):
        up = F.conv_transpose3d(h, sd[f"{name}.up_conv.weight"], sd[f"{name}.up_conv.bias"], stride=2)
        h = torch.cat([up, skip], dim=1)
        h = _conv_block(_conv_block(h, sd, f"{name}.ops.0"), sd, f"{name}.ops.1")
    out = torch.sigmoid(F.conv3d(h, sd["out_tr.final_conv.weight"], sd["out_tr.final_conv.bias"]))
    return q, out


def test_network_matches_the_spec_written_out_from_its_state_dict() -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = PCRLNet3D(base=2, proj_dim=8)
        x = torch.rand(2, 1, 16, 16, 8)
    with torch.no_grad():  # non-trivial running statistics, so eval-mode batch norm shows
        for m in net.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2, generator=_gen(6))
                m.running_var.uniform_(0.5, 2.0, generator=_gen(7))
        net.aug_fc2.weight.mul_(20.0)
    net.eval()
    codes = transforms.spatial_codes(2, _gen(8), "cpu")
    sd = {k: v.detach() for k, v in net.state_dict().items()}
    with torch.no_grad():
        feats = net.encode(x)
        q = net.project(feats[-1])
        out = net.decode([*feats[:3], feats[3] * net.tca_gate(codes)])
        q_ref, out_ref = _written_out_pcrl_net(sd, x, codes)
    torch.testing.assert_close(q, q_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-6)


def test_tca_widths_are_7_256_512_at_paper_width() -> None:
    net = PCRLNet3D(base=32)
    assert tuple(net.aug_fc1.weight.shape) == (256, 7)
    assert tuple(net.aug_fc2.weight.shape) == (512, 256)
    assert tuple(net.fc1.weight.shape) == (128, 512) and tuple(net.fc2.weight.shape) == (128, 128)


def test_ema_momentum_is_applied_per_step() -> None:
    """After one step, momentum = 0.999 * momentum + 0.001 * student (written out)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        method = PCRL(PCRLConfig(base=2, queue_size=8, proj_dim=4, loss="infonce"))
    before = {k: v.clone() for k, v in method.momentum_encoder.state_dict().items()}
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(1.0)
    method.after_step()
    name = "down_tr64.ops.0.conv1.weight"
    student = method.student.state_dict()[name]
    torch.testing.assert_close(method.momentum_encoder.state_dict()[name], 0.999 * before[name] + 0.001 * student)
    assert dataclasses.replace(method.config).momentum == 0.999
