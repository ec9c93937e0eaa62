"""``pcrl.hub.load_encoder``: a checked, complete load or a DataError naming what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pcrl.errors import ConfigError, DataError
from pcrl.hashing import file_digest
from pcrl.hub import load_encoder
from pcrl.networks.encoder3d import UNet3DEncoder
from pcrl.networks.resnet18 import ResNet18Encoder

pytestmark = pytest.mark.usefixtures("one_thread")

RESAMPLE_3D = {"spacing": [1.0, 1.0, 1.0], "normalization": {"kind": "window", "min": -1000, "max": 1000}}


def _rewrite_model(out: Path, state: dict[str, torch.Tensor]) -> None:
    """Replace model.safetensors and update its sha256, so only the key check can catch it."""
    save_file(state, str(out / "model.safetensors"))
    listing = json.loads((out / "checksums.json").read_text())
    listing["model.safetensors"] = file_digest(out / "model.safetensors")
    (out / "checksums.json").write_text(json.dumps(listing))


def test_load_encoder_returns_our_plain_modules(export) -> None:
    out2, net2 = export(2)
    encoder = load_encoder(out2)
    assert isinstance(encoder, ResNet18Encoder) and not encoder.training
    for key, value in net2.encoder.state_dict().items():
        assert torch.equal(encoder.state_dict()[key], value), key
    assert isinstance(load_encoder(export(3)[0]), UNet3DEncoder)


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_a_tampered_file_is_named(export, name: str) -> None:
    out, _ = export(2)
    data = bytearray((out / name).read_bytes())
    data[-2] ^= 0x01
    (out / name).write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"{name}: sha256 [0-9a-f]{{64}} differs"):
        load_encoder(out)


def test_a_missing_file_is_named(export) -> None:
    out, _ = export(3)
    (out / "full_model.safetensors").unlink()
    with pytest.raises(DataError, match="full_model.safetensors: listed in checksums.json but missing"):
        load_encoder(out)


def test_a_missing_key_is_named(export) -> None:
    out, _ = export(2)
    state = load_file(str(out / "model.safetensors"))
    del state["layer3.0.downsample.1.running_var"]
    _rewrite_model(out, state)
    with pytest.raises(DataError, match=r"missing keys \['layer3.0.downsample.1.running_var'\], unexpected keys \[\]"):
        load_encoder(out)


def test_an_extra_key_and_a_wrong_shape_are_named(export) -> None:
    out, _ = export(3)
    state = load_file(str(out / "model.safetensors"))
    state["fc1.weight"] = torch.zeros(2, 2)
    state["down_tr64.ops.0.conv1.bias"] = torch.zeros(5)
    _rewrite_model(out, state)
    with pytest.raises(DataError) as info:
        load_encoder(out)
    message = str(info.value)
    assert "unexpected keys ['fc1.weight']" in message
    assert "down_tr64.ops.0.conv1.bias (5,) vs (4,)" in message


def test_fine_tuning_snippet_runs(export) -> None:
    """The README's plain-PyTorch snippet: the loaded encoder, a linear head, two SGD steps."""
    out, _ = export(2)
    # --- snippet (README "Use the weights elsewhere") ---
    encoder = load_encoder(out).train()
    head = torch.nn.Linear(64, 14)  # 8 * width channels -> 14 findings
    model = torch.nn.Sequential(encoder, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), head)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.rand(4, 1, 64, 64), torch.randint(0, 2, (4, 14)).float()
    losses = []
    for _ in range(2):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    # --- end of snippet ---
    before = load_file(str(out / "model.safetensors"))["conv1.weight"]
    assert all(torch.isfinite(torch.tensor(losses))) and not torch.equal(encoder.conv1.weight.detach(), before)


@pytest.mark.parametrize("dims", [2, 3])
def test_init_weights_takes_an_export_back(export, tmp_path: Path, dims: int) -> None:
    """The round trip: export -> init-weights -> the fine-tuning record holds the same tensors."""
    from pcrl.finetune.checkpoints import read_init_record
    from pcrl.stages.init_weights import run_init_weights

    out, net = export(dims)
    resample = {"size": [64, 64]} if dims == 2 else RESAMPLE_3D
    init = run_init_weights("mine", checkpoint=out, out=tmp_path / "init", setting=f"{dims}d", resample=resample)
    record = read_init_record(init / "weights.pt", "mine")
    original = net.state_dict()
    if dims == 2:
        assert record.parts == ("encoder",)
        assert set(record.state_dict) == {k for k in original if k.startswith("encoder.")}
    else:
        assert record.parts == ("encoder", "decoder")
        assert set(record.state_dict) == {k for k in original if k.startswith(("down_tr", "up_tr", "out_tr"))}
    for key, value in record.state_dict.items():
        assert torch.equal(value, original[key]), key


def test_init_weights_refuses_another_preprocessing(export, tmp_path: Path) -> None:
    from pcrl.stages.init_weights import run_init_weights

    out, _ = export(3)
    liver = {"spacing": [1.0, 1.0, 2.5], "normalization": {"kind": "window", "min": -160, "max": 240}}
    with pytest.raises(ConfigError) as info:
        run_init_weights("mine", checkpoint=out, out=tmp_path / "init", setting="3d", resample=liver)
    message = str(info.value)
    assert "spacing: weights [1.0, 1.0, 1.0] vs task [1.0, 1.0, 2.5]" in message
    assert "'min': -1000" in message and "'min': -160" in message
    with pytest.raises(ConfigError, match="a 3D export, the setting is 2D"):
        run_init_weights("mine", checkpoint=out, out=tmp_path / "init2", setting="2d")


@pytest.mark.parametrize("task", ["ncc", "lcs", "chest14"])
def test_an_export_taken_back_initialises_the_fine_tuning_network(export, tmp_path: Path, task: str) -> None:
    """The whole round trip: export -> init-weights -> apply_init. The fine-tuning network's
    encoder then computes what the exported encoder (loaded by pcrl.hub) computes, and a
    segmentation network also gets the exported decoder."""
    from pcrl.finetune.checkpoints import apply_init, read_init_record
    from pcrl.finetune.models import NetworkConfig, seeded_network
    from pcrl.hub import load_encoder
    from pcrl.stages.init_weights import run_init_weights
    from pcrl.tasks import get_task

    dims = 2 if task == "chest14" else 3
    out, pretrained = export(dims)
    init = run_init_weights("mine", checkpoint=out, out=tmp_path / "init", setting=f"{dims}d",
                            resample={"size": [64, 64]} if dims == 2 else RESAMPLE_3D)
    spec = get_task(task)
    net = seeded_network(spec, NetworkConfig(base=8 if dims == 2 else 4), seed=5)
    report = apply_init(net, read_init_record(init / "weights.pt", "mine"), spec)
    assert report is not None and (report.missing, report.unexpected, report.mismatched) == ([], [], [])
    assert any(k.startswith("up_tr") for k in report.loaded) == (task == "lcs")  # the decoder where there is one
    net.eval()
    x = torch.rand(2, 1, *((64, 64) if dims == 2 else (16, 16, 16)), generator=torch.Generator().manual_seed(1))
    ours = (net.encoder if dims == 2 else getattr(net, "backbone", net)).encode(x)[-1]
    exported = load_encoder(out).encode(x)[-1]
    torch.testing.assert_close(ours, exported, rtol=0, atol=1e-6)
    if task == "lcs":  # the decoder came back too: the whole U-Net equals the pretrained one but its out_tr
        state = net.state_dict()
        for key, value in pretrained.state_dict().items():
            if key.startswith("up_tr"):
                assert torch.equal(state[key], value), key
