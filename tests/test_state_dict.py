"""Tests of pcrl.networks.state_dict (loading released checkpoints, docs/method.md "Networks")."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from pcrl.errors import ConfigError, DataError
from pcrl.networks.pcrl_net import PCRLNet3D
from pcrl.networks.state_dict import adapt_first_conv, load_pretrained, unwrap_state_dict, LoadReport
from pcrl.networks.unet3d import UNet3D

RELEASE_KEYS = Path(__file__).parent / "data" / "release_pcrl3d_keys.txt"
FIRST = "down_tr64.ops.0.conv1.weight"
HEADS = ("fc1.", "fc2.", "aug_fc1.", "aug_fc2.")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _release_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for line in RELEASE_KEYS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split("\t")
            inner = shape.strip().removeprefix("(").removesuffix(")")
            shapes[key] = tuple(int(d) for d in inner.split(",") if d.strip())
    return shapes


@pytest.fixture(scope="module")
def release_tensors() -> dict[str, Tensor]:
    """Random tensors with the release's keys and shapes (as a checkpoint would hold)."""
    gen = _gen(2021)
    tensors: dict[str, Tensor] = {}
    for key, shape in _release_shapes().items():
        if key.endswith("num_batches_tracked"):
            tensors[key] = torch.tensor(int(torch.randint(1, 10_000, (1,), generator=gen)))
        else:
            tensors[key] = torch.rand(shape, generator=gen) + 0.5  # positive: valid running_var
    return tensors


def _release_checkpoint(tensors: dict[str, Tensor]) -> dict:
    """The release's checkpoint layout: DataParallel keys under 'state_dict' plus metadata."""
    wrapped = {f"module.{k}": v for k, v in tensors.items()}
    return {"state_dict": wrapped, "epoch": 240, "optimizer": {}}


def _clone(model: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- unwrap


def test_unwrap_accepts_raw_and_wrapped_state_dicts() -> None:
    a, b = torch.zeros(2), torch.ones(3)
    raw = {"x.weight": a, "y.bias": b}
    for obj in (
        raw,
        {"state_dict": raw, "epoch": 3},
        {"model": raw, "optimizer": {"lr": 0.1}},
        {"state_dict": {"module.x.weight": a, "module.y.bias": b}},
        {"model": {"state_dict": {"module.module.x.weight": a, "_orig_mod.y.bias": b}}},
    ):
        out = unwrap_state_dict(obj)
        assert list(out) == ["x.weight", "y.bias"]
        assert out["x.weight"] is a and out["y.bias"] is b


def test_unwrap_strips_only_leading_module() -> None:
    out = unwrap_state_dict({"module.encoder.module.w": torch.zeros(1)})
    assert list(out) == ["encoder.module.w"]


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        ({"epoch": 3, "optimizer": {}}, "no state dict found"),
        ({}, "no state dict found"),
        ({"state_dict": [1, 2]}, "no state dict found"),
        ({"module.w": torch.zeros(1), "w": torch.zeros(1)}, "collides"),
    ],
)
def test_unwrap_errors(obj: dict, fragment: str) -> None:
    with pytest.raises(DataError, match=fragment):
        unwrap_state_dict(obj)


def test_unwrap_rejects_non_mapping() -> None:
    with pytest.raises(DataError, match="list"):
        unwrap_state_dict([torch.zeros(1)])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- release checkpoint


def test_release_checkpoint_loads_encoder_exactly(release_tensors: dict[str, Tensor]) -> None:
    model = UNet3D(base=32)
    before = _clone(model)
    report = load_pretrained(model, _release_checkpoint(release_tensors))
    after = model.state_dict()
    encoder = [k for k in release_tensors if k.startswith("down_tr")]
    assert len(encoder) == 56
    for key in encoder:
        assert torch.equal(after[key], release_tensors[key]), key
    for key in after:
        if not key.startswith("down_tr"):
            assert torch.equal(after[key], before[key]), key  # decoder untouched
    assert report.loaded == encoder
    assert report.missing == report.unexpected == report.mismatched == report.adapted == []
    outside = [k for k in release_tensors if not k.startswith("down_tr")]
    assert sorted(report.ignored) == sorted(outside)
    assert report.ok and report.summary().startswith("loaded 56, missing 0")


def test_release_checkpoint_loads_everything_into_pcrlnet(
    release_tensors: dict[str, Tensor],
) -> None:
    model = PCRLNet3D(base=32)
    report = load_pretrained(model, _release_checkpoint(release_tensors), prefixes=("",))
    after = model.state_dict()
    assert sorted(report.loaded) == sorted(release_tensors) and report.ignored == []
    assert all(torch.equal(after[k], v) for k, v in release_tensors.items())


def test_release_heads_are_unexpected_in_a_plain_unet(release_tensors: dict[str, Tensor]) -> None:
    model = UNet3D(base=32)
    before = _clone(model)
    checkpoint = _release_checkpoint(release_tensors)
    with pytest.raises(ConfigError, match=r"8 in the checkpoint but not in the model: .*aug_fc1\."):
        load_pretrained(model, checkpoint, prefixes=("",))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # nothing loaded
    report = load_pretrained(model, checkpoint, prefixes=("",), strict=False)
    assert sorted(report.unexpected) == sorted(k for k in release_tensors if k.startswith(HEADS))
    assert len(report.loaded) == 114 - 8 and not report.ok


# ----------------------------------------------------------------------------- other architectures


def test_narrower_checkpoint_raises_listing_mismatched_keys() -> None:
    checkpoint = {"state_dict": UNet3D(base=16).state_dict()}
    model = UNet3D(base=32)
    before = _clone(model)
    with pytest.raises(ConfigError) as info:
        load_pretrained(model, checkpoint)
    message = str(info.value)
    assert "down_tr64.ops.0.conv1.weight (16, 1, 3, 3, 3) vs (32, 1, 3, 3, 3)" in message
    # 56 encoder keys minus 8 num_batches_tracked scalars; 10 listed, the rest counted.
    assert "48 shape mismatch(es)" in message and "(+38 more)" in message
    assert message.count(" vs (") == 10
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_missing_level_raises_and_loads_the_rest_when_not_strict() -> None:
    source = UNet3D(base=4)
    partial = {k: v for k, v in source.state_dict().items() if not k.startswith("down_tr512")}
    with pytest.raises(ConfigError, match=r"14 missing from the checkpoint: down_tr512\.ops\.0\."):
        load_pretrained(UNet3D(base=4), partial)
    model = UNet3D(base=4)
    before = _clone(model)
    report = load_pretrained(model, partial, strict=False)
    assert report.missing == [k for k in before if k.startswith("down_tr512")]
    assert len(report.loaded) == 42
    after = model.state_dict()
    assert all(torch.equal(after[k], partial[k]) for k in report.loaded)
    assert all(torch.equal(after[k], before[k]) for k in report.missing)


def test_models_genesis_layout_loads_encoder_and_decoder() -> None:
    genesis = UNet3D(base=4)
    with torch.no_grad():
        for p in genesis.parameters():
            p.add_(1.0)  # differ from any fresh initialisation
    checkpoint = {"state_dict": {f"module.{k}": v for k, v in genesis.state_dict().items()}}
    model = PCRLNet3D(base=4)
    heads_before = {k: v for k, v in _clone(model).items() if k.startswith(HEADS)}
    report = load_pretrained(model, checkpoint, prefixes=("down_tr", "up_tr", "out_tr"))
    after = model.state_dict()
    assert report.ok and len(report.loaded) == 106 and report.ignored == []
    assert all(torch.equal(after[k], v) for k, v in genesis.state_dict().items())
    assert all(torch.equal(after[k], v) for k, v in heads_before.items())


def test_group_norm_model_rejects_batch_norm_statistics() -> None:
    with pytest.raises(ConfigError, match="running_mean"):
        load_pretrained(UNet3D(base=4, norm="group"), UNet3D(base=4).state_dict())


def test_half_precision_checkpoint_is_cast_to_the_model_dtype() -> None:
    full = UNet3D(base=4).state_dict()
    source = {k: v.half() if v.is_floating_point() else v for k, v in full.items()}
    model = UNet3D(base=4)
    load_pretrained(model, source)
    weight = model.down_tr64.ops[0].conv1.weight
    assert weight.dtype == torch.float32
    assert torch.equal(weight, source[FIRST].float())


@pytest.mark.parametrize("prefixes", [(), [3]])
def test_bad_prefixes_raise(prefixes: object) -> None:
    with pytest.raises(ConfigError, match="prefixes"):
        load_pretrained(
            UNet3D(base=4), UNet3D(base=4).state_dict(), prefixes=prefixes  # type: ignore[arg-type]
        )


def test_string_prefix_and_prefix_absent_from_model() -> None:
    source = UNet3D(base=4).state_dict()
    assert len(load_pretrained(UNet3D(base=4), source, prefixes="out_tr").loaded) == 2
    with pytest.raises(ConfigError, match="no parameter or buffer"):
        load_pretrained(UNet3D(base=4), source, prefixes=("encoder.",))


def test_nothing_loadable_raises_even_when_not_strict() -> None:
    source = {k: v for k, v in UNet3D(base=4).state_dict().items() if not k.startswith("down_tr")}
    with pytest.raises(ConfigError, match="no checkpoint value fits"):
        load_pretrained(UNet3D(base=4), source, strict=False)


# ----------------------------------------------------------------------------- first conv


def test_adapt_first_conv_hand_values() -> None:
    weight = torch.arange(2 * 1 * 3 * 3 * 3, dtype=torch.float32).reshape(2, 1, 3, 3, 3)
    adapted = adapt_first_conv(weight, 4)
    assert adapted.shape == (2, 4, 3, 3, 3)
    for j in range(4):
        assert torch.equal(adapted[:, j], weight[:, 0] / 4)
    # Two input channels of constant 1 and 3 -> one channel of 1 + 3.
    two = torch.stack([torch.ones(3, 3, 3), 3 * torch.ones(3, 3, 3)]).unsqueeze(0)
    assert torch.equal(adapt_first_conv(two, 1), torch.full((1, 1, 3, 3, 3), 4.0))


def test_adapted_conv_on_copies_equals_original_conv() -> None:
    weight = torch.randn(5, 1, 3, 3, 3, generator=_gen(0))
    bias = torch.randn(5, generator=_gen(1))
    x = torch.rand(2, 1, 8, 8, 8, generator=_gen(2))
    expected = F.conv3d(x, weight, bias, padding=1)
    got = F.conv3d(x.repeat(1, 4, 1, 1, 1), adapt_first_conv(weight, 4), bias, padding=1)
    torch.testing.assert_close(got, expected)
    # From 2 source channels: C copies give the source conv's response to 2 copies.
    weight2 = torch.randn(5, 2, 3, 3, 3, generator=_gen(3))
    torch.testing.assert_close(
        F.conv3d(x.repeat(1, 3, 1, 1, 1), adapt_first_conv(weight2, 3), bias, padding=1),
        F.conv3d(x.repeat(1, 2, 1, 1, 1), weight2, bias, padding=1),
    )


@pytest.mark.parametrize(
    ("weight", "channels", "error"),
    [(torch.zeros(4, 3), 2, ValueError), (torch.zeros(4, 1, 3), 0, ConfigError)],
)
def test_adapt_first_conv_rejects_bad_arguments(weight: Tensor, channels: int, error: type) -> None:
    with pytest.raises(error):
        adapt_first_conv(weight, channels)


def test_one_channel_checkpoint_into_four_channel_model() -> None:
    ct = UNet3D(in_channels=1, base=4).eval()
    brats = UNet3D(in_channels=4, base=4).eval()
    report = load_pretrained(brats, {"state_dict": ct.state_dict()}, prefixes=("",))
    assert isinstance(report, LoadReport)
    assert report.adapted == [FIRST] and FIRST in report.loaded and report.ok
    expected_first = adapt_first_conv(ct.state_dict()[FIRST], 4)
    torch.testing.assert_close(brats.state_dict()[FIRST], expected_first)
    x = torch.rand(1, 1, 16, 16, 8, generator=_gen(4))
    with torch.no_grad():
        torch.testing.assert_close(brats(x.repeat(1, 4, 1, 1, 1)), ct(x))


def test_the_log_line_names_the_parts_loaded_and_left_out_and_every_odd_key() -> None:
    report = LoadReport(loaded=["down_tr64.a.weight", "down_tr64.b.weight", "up_tr256.c.weight"],
                        ignored=["fc1.weight", "fc1.bias", "aug_fc1.weight"],
                        missing=["down_tr512.x.weight"], unexpected=["extra.weight"],
                        mismatched=[("out_tr.w", (1, 2), (3, 4))], adapted=["down_tr64.a.weight"])
    assert report.describe() == (
        "loaded ['down_tr64', 'up_tr256'] (3 tensors); left out ['fc1', 'aug_fc1'] (3 tensors); "
        "adapted ['down_tr64.a.weight']; missing ['down_tr512.x.weight']; unexpected ['extra.weight']; "
        "mismatched out_tr.w (1, 2) vs (3, 4)")
    assert LoadReport(loaded=["backbone.x"]).describe() == "loaded ['backbone'] (1 tensors)"


def test_an_encoder_only_load_says_the_decoder_was_left_out() -> None:
    """A pretrained U-Net loaded into the NCC classifier's encoder: the log names the decoder
    parts that were not loaded, so an intended partial load is never silent."""
    torch.manual_seed(0)
    pretrained = UNet3D(base=4)
    target = UNet3D(base=4)
    report = load_pretrained(target, pretrained.state_dict(), prefixes=("down_tr",))
    line = report.describe()
    assert line.startswith("loaded ['down_tr64', 'down_tr128', 'down_tr256', 'down_tr512']")
    assert "left out ['up_tr256', 'up_tr128', 'up_tr64', 'out_tr']" in line
