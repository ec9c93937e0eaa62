"""``pcrl.hub.load_encoder``: a checked, complete load or a DataError naming what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pcrl.errors import DataError
from pcrl.hashing import file_digest
from pcrl.hub import load_encoder
from pcrl.networks.encoder3d import UNet3DEncoder
from pcrl.networks.resnet18 import ResNet18Encoder

pytestmark = pytest.mark.usefixtures("one_thread")


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
