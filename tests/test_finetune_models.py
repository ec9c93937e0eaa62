"""pcrl.finetune.models (task networks) and pcrl.finetune.checkpoints (initialisation records)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from pcrl.torchfile import save_checked
from pcrl.errors import ConfigError, DataError
from pcrl.finetune.checkpoints import (
    InitRecord,
    apply_init,
    import_checkpoint,
    read_init_record,
    scratch_record,
)
from pcrl.finetune.models import ClassificationNet, NetworkConfig, seeded_network
from pcrl.networks.unet3d import UNet3D

NET = NetworkConfig(base=2)


def _pretrained(seed: int = 7, base: int = 2) -> dict[str, torch.Tensor]:
    """A 1-channel UNet3D state dict (release key names), distinct from any seeded init."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = UNet3D(in_channels=1, out_channels=1, base=base)
    return {k: v + 0.5 if v.is_floating_point() else v for k, v in net.state_dict().items()}


def _record(parts: tuple[str, ...], **kwargs) -> InitRecord:
    return InitRecord("pcrl", "pcrl", parts, kwargs.get("state", _pretrained()))


def test_classifier_is_encoder_gap_and_two_dense_layers() -> None:
    net = seeded_network("ncc", NET, 0)
    assert isinstance(net, ClassificationNet)
    names = {k.split(".")[0] + "." + k.split(".")[1] for k in net.state_dict()}
    assert not any("up_tr" in k or "out_tr" in k for k in net.state_dict())
    assert {"backbone.down_tr64", "backbone.down_tr512", "dense_1.weight", "dense_2.bias"} <= names
    deepest = net.backbone.feature_channels[-1]  # 16b
    assert net.dense_1.weight.shape == (2 * deepest, deepest)  # 512 -> 1024 at b = 32
    assert net(torch.rand(3, 1, 16, 16, 8)).shape == (3, 1)


def test_segmentation_nets_output_logits_per_region() -> None:
    lcs, bms = seeded_network("lcs", NET, 0), seeded_network("bms", NET, 0)
    assert (lcs.in_channels, lcs.out_channels, lcs.out_activation) == (1, 1, "none")
    assert (bms.in_channels, bms.out_channels) == (4, 3)
    assert bms(torch.rand(1, 4, 16, 16, 16)).shape == (1, 3, 16, 16, 16)


def test_seeded_network_is_reproducible_and_leaves_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a, b, c = (seeded_network("lcs", NET, s) for s in (3, 3, 4))
    assert torch.equal(torch.random.get_rng_state(), state)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])
    assert not torch.equal(a.down_tr64.ops[0].conv1.weight, c.down_tr64.ops[0].conv1.weight)


def test_segmentation_loads_encoder_and_decoder_but_never_out_tr() -> None:
    weights = _pretrained()
    net = seeded_network("lcs", NET, 0)
    out_before = net.out_tr.final_conv.weight.clone()
    report = apply_init(net, _record(("encoder", "decoder"), state=weights), "lcs")
    state = net.state_dict()
    for key in weights:
        if key.startswith(("down_tr", "up_tr")):
            assert torch.equal(state[key], weights[key]), key
    assert torch.equal(net.out_tr.final_conv.weight, out_before)
    assert report.ok and not report.adapted
    assert any(k.startswith("out_tr") for k in report.ignored)


def test_encoder_only_record_keeps_the_random_decoder() -> None:
    weights = _pretrained()
    net = seeded_network("lcs", NET, 0)
    decoder_before = net.up_tr64.up_conv.weight.clone()
    apply_init(net, _record(("encoder",), state=weights), "lcs")  # MoCo v2: no decoder loss
    assert torch.equal(net.up_tr64.up_conv.weight, decoder_before)
    assert torch.equal(net.down_tr64.ops[0].conv1.weight, weights["down_tr64.ops.0.conv1.weight"])


def test_classification_loads_the_encoder_only() -> None:
    weights = _pretrained()
    net = seeded_network("ncc", NET, 0)
    report = apply_init(net, _record(("encoder", "decoder"), state=weights), "ncc")
    assert torch.equal(net.backbone.down_tr512.ops[1].conv1.bias,
                       weights["down_tr512.ops.1.conv1.bias"])
    assert all(k.startswith("down_tr") for k in report.loaded)


def test_four_channel_first_conv_is_the_mean_kernel_repeated() -> None:
    weights = _pretrained()
    net = seeded_network("bms", NET, 0)
    report = apply_init(net, _record(("encoder", "decoder"), state=weights), "bms")
    kernel = weights["down_tr64.ops.0.conv1.weight"]  # (b, 1, 3, 3, 3)
    adapted = net.down_tr64.ops[0].conv1.weight
    assert adapted.shape == (2, 4, 3, 3, 3)
    for channel in range(4):  # W'[:, j] = W[:, 0] / 4 (adapt_first_conv)
        torch.testing.assert_close(adapted[:, channel], kernel[:, 0] / 4)
    assert report.adapted == ["down_tr64.ops.0.conv1.weight"]
    # the same image on the four channels gives the 1-channel network's first activations
    image = torch.rand(1, 1, 8, 8, 8)
    conv1 = torch.nn.functional.conv3d(image, kernel, weights["down_tr64.ops.0.conv1.bias"], padding=1)
    torch.testing.assert_close(net.down_tr64.ops[0].conv1(image.repeat(1, 4, 1, 1, 1)), conv1)


def test_scratch_loads_nothing() -> None:
    net = seeded_network("lcs", NET, 0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert apply_init(net, scratch_record(), "lcs") is None
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_a_checkpoint_of_another_width_lists_the_keys() -> None:
    net = seeded_network("lcs", NET, 0)
    wide = _record(("encoder", "decoder"), state=_pretrained(base=4))
    with pytest.raises(ConfigError, match=r"initialisation 'pcrl' \(pcrl\).*shape mismatch.*"
                                          r"down_tr64\.ops\.0\.conv1\.weight"):
        apply_init(net, wide, "lcs")
    partial = {k: v for k, v in _pretrained().items() if not k.startswith("down_tr512")}
    with pytest.raises(ConfigError, match=r"missing from the checkpoint: down_tr512"):
        apply_init(net, _record(("encoder",), state=partial), "lcs")


def test_records_round_trip_and_old_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    save_checked(_record(("encoder",)).to_file(), path)
    back = read_init_record(path, "pcrl")
    assert back.parts == ("encoder",) and back.method == "pcrl"
    save_checked({"state_dict": _pretrained(), "method": "pcrl"}, path)  # before 'parts' existed
    with pytest.raises(DataError, match="weights.pt: not an initialisation record.*'parts'"):
        read_init_record(path, "pcrl")
    with pytest.raises(DataError, match="nothing.pt: initialisation weights not found"):
        read_init_record(tmp_path / "nothing.pt", "pcrl")


def test_import_release_checkpoint_with_wrappers(tmp_path: Path) -> None:
    weights = _pretrained()
    release = {f"module.{k}": v for k, v in weights.items()}
    release["module.fc1.weight"] = torch.zeros(3, 3)  # PCRL projection head: dropped
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": release, "opt": argparse.Namespace(lr=0.1), "epoch": 240}, path)
    record = import_checkpoint(path, "release")
    assert record.parts == ("encoder", "decoder") and record.method == "external"
    assert set(record.state_dict) == {k for k in weights if k.startswith(("down_tr", "up_tr"))}
    config = json.loads(record.config)
    assert config["base"] == 2 and len(config["sha256"]) == 64 and config["source"] == str(path)
    assert config["layout"] == "pcrl"
    net = seeded_network("lcs", NET, 0)
    apply_init(net, record, "lcs")
    assert torch.equal(net.up_tr128.up_conv.weight, weights["up_tr128.up_conv.weight"])


def test_models_genesis_weights_are_named_and_batch_stats_suggested(tmp_path: Path, caplog) -> None:
    """Without a PCRL head the checkpoint is Models Genesis': its batch norm used batch statistics."""
    path = tmp_path / "Genesis_Chest_CT.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in _pretrained().items()}}, path)
    with caplog.at_level("WARNING", logger="pcrl.finetune.models"):
        record = import_checkpoint(path, "genesis_chest_ct")
    assert json.loads(record.config)["layout"] == "genesis"
    assert "Genesis_Chest_CT.pt" in caplog.text and "norm: batch_stats" in caplog.text
    net = seeded_network("ncc", NetworkConfig(base=2, norm="batch_stats"), 0)
    apply_init(net, record, "ncc")  # the same keys load into batch-statistics layers
    assert torch.equal(net.backbone.down_tr64.ops[0].bn1.weight, record.state_dict["down_tr64.ops.0.bn1.weight"])


def test_import_refuses_checkpoints_without_encoder(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(1), "fc.weight": torch.zeros(1)}, path)
    with pytest.raises(ConfigError, match=r"resnet.pt: no encoder key \(down_tr\*\).*conv1.weight"):
        import_checkpoint(path, "resnet")
    with pytest.raises(ConfigError, match="absent.pt: external checkpoint not found"):
        import_checkpoint(tmp_path / "absent.pt", "x")


# ------------------------------------------------------------- Chest14 (2D)


def test_chest14_classifier_loads_torchvision_and_pretrained_2d_encoders() -> None:
    from pcrl.finetune.models import MultiLabelResNet
    from pcrl.networks.resnet18 import ResNet18Encoder
    from pcrl.networks.resnet_unet2d import ResNetUNet2D

    with torch.random.fork_rng():
        torch.manual_seed(3)
        imagenet = ResNet18Encoder(in_channels=3, width=8).state_dict()
        pretrained = ResNetUNet2D(in_channels=1, width=8).state_dict()
    torchvision_like = {**{k: v for k, v in imagenet.items() if not k.endswith("num_batches_tracked")},
                        "fc.weight": torch.zeros(1000, 64), "fc.bias": torch.zeros(1000)}  # as torchvision's files
    net = MultiLabelResNet(in_channels=1, num_labels=14, width=8)
    dropped = net.load_encoder(torchvision_like)
    assert dropped == ["fc.bias", "fc.weight"] and int(net.encoder.bn1.num_batches_tracked) == 0
    # an ImageNet RGB kernel on a grayscale radiograph: the sum over its input channels
    torch.testing.assert_close(net.encoder.conv1.weight, imagenet["conv1.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(net.encoder.layer3[1].bn2.running_var, imagenet["layer3.1.bn2.running_var"])
    dropped = net.load_encoder({f"module.{k}": v for k, v in pretrained.items()})
    torch.testing.assert_close(net.encoder.layer4[0].conv1.weight, pretrained["encoder.layer4.0.conv1.weight"])
    assert not any(k.startswith("encoder.") for k in dropped) and any(k.startswith("decoder") for k in dropped)
    assert net(torch.rand(2, 1, 64, 64)).shape == (2, 14)
    with pytest.raises(ConfigError, match="mismatched shapes"):
        MultiLabelResNet(width=16).load_encoder(torchvision_like)
    with pytest.raises(ConfigError, match=r"missing \['bn1.bias'"):
        net.load_encoder({k: v for k, v in imagenet.items() if not k.startswith("bn1.")})


def _unet2d_state(seed: int, width: int = 4) -> dict[str, torch.Tensor]:
    """A ResNetUNet2D's full state dict, shifted so that it differs from any seeded init."""
    from pcrl.networks.resnet_unet2d import ResNetUNet2D

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = ResNetUNet2D(in_channels=1, width=width)
    return {k: v + 0.25 if v.is_floating_point() else v + 3 for k, v in net.state_dict().items()}


def test_chest14_network_is_a_resnet18_of_the_configured_width() -> None:
    from pcrl.finetune.models import MultiLabelResNet

    net = seeded_network("chest14", NetworkConfig(base=4), 0)
    assert isinstance(net, MultiLabelResNet)
    assert net.encoder.conv1.weight.shape == (4, 1, 7, 7)  # width 4, one radiograph channel
    assert net.classifier.weight.shape == (14, 32)  # 8w deepest channels -> 14 findings
    again = seeded_network("chest14", NetworkConfig(base=4), 0)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in net.state_dict().items())
    assert net(torch.rand(2, 1, 32, 32)).shape == (2, 14)
    group = seeded_network("chest14", NetworkConfig(base=4, norm="group"), 0)
    assert isinstance(group.encoder.bn1, torch.nn.GroupNorm)
    with pytest.raises(ConfigError, match="finetune.chest14.network.norm.*not 'batch_stats'"):
        seeded_network("chest14", NetworkConfig(base=4, norm="batch_stats"), 0)


@pytest.mark.parametrize("layout", ["full network", "encoder_state_dict"])
def test_chest14_loads_the_2d_encoder_of_a_pretrain_record(layout: str) -> None:
    """The pretrain stage stores the method's network (``encoder.`` + torchvision names,
    decoder, heads); ResNetUNet2D.encoder_state_dict gives the encoder without prefix."""
    full = _unet2d_state(5)
    encoder = {k.removeprefix("encoder."): v for k, v in full.items() if k.startswith("encoder.")}
    state = full if layout == "full network" else encoder
    net = seeded_network("chest14", NetworkConfig(base=4), 0)
    classifier = net.classifier.weight.clone()
    report = apply_init(net, InitRecord("pcrl", "pcrl", ("encoder", "decoder"), state), "chest14")
    own = net.encoder.state_dict()
    # stem conv + bn (6 keys), 8 blocks x (2 convs + 2 bns: 12), 3 shortcuts x (conv + bn: 6)
    assert sorted(own) == sorted(encoder) and len(own) == 6 + 8 * 12 + 3 * 6
    for key, value in encoder.items():
        assert torch.equal(own[key], value), key
    assert torch.equal(net.classifier.weight, classifier)  # the head stays the seeded one
    assert report is not None and report.ok and report.adapted == []
    assert sorted(report.loaded) == sorted(f"encoder.{k}" for k in encoder)
    dropped = sorted(k for k in full if not k.startswith("encoder.")) if layout == "full network" else []
    assert report.ignored == dropped


def test_chest14_scratch_and_records_that_do_not_fit() -> None:
    net = seeded_network("chest14", NetworkConfig(base=4), 0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert apply_init(net, scratch_record(), "chest14") is None
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    wide = InitRecord("moco", "moco", ("encoder",), _unet2d_state(5, width=8))
    with pytest.raises(ConfigError, match=r"initialisation 'moco' \(moco\).*mismatched shapes \['bn1.bias'"):
        apply_init(net, wide, "chest14")
    with pytest.raises(ConfigError, match=r"initialisation 'pcrl' \(pcrl\).*missing \['bn1.bias'"):
        apply_init(net, _record(("encoder", "decoder")), "chest14")  # a 3D U-Net record


def test_an_external_resnet18_file_becomes_a_2d_record_and_loads_into_chest14(tmp_path: Path) -> None:
    """torchvision's ImageNet file layout (fc, no num_batches_tracked), wrapped as a training
    script saves it: the record keeps the 120 encoder keys under torchvision's names; the
    Chest14 network then sums the RGB stem over its channels and takes every other tensor."""
    from pcrl.finetune.checkpoints import import_resnet18_checkpoint
    from pcrl.finetune.models import MultiLabelResNet
    from pcrl.networks.resnet18 import ResNet18Encoder
    from pcrl.stages.init_weights import run_init_weights

    with torch.random.fork_rng():
        torch.manual_seed(11)
        imagenet = ResNet18Encoder(in_channels=3, width=8).state_dict()
    torchvision_like = {**{k: v for k, v in imagenet.items() if not k.endswith("num_batches_tracked")},
                        "fc.weight": torch.ones(1000, 64), "fc.bias": torch.ones(1000)}
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in torchvision_like.items()}, "epoch": 90}, path)
    record = import_resnet18_checkpoint(path, "imagenet")
    assert record.parts == ("encoder",) and record.method == "external"
    assert set(record.state_dict) == {k for k in imagenet if not k.endswith("num_batches_tracked")}
    config = json.loads(record.config)
    assert (config["layout"], config["base"], config["in_channels"], config["dropped_keys"]) == ("resnet18", 8, 3, 2)
    out = run_init_weights("imagenet", checkpoint=path, out=tmp_path / "pretrain2d" / "imagenet", setting="2d")
    stored = read_init_record(out / "weights.pt", "imagenet")
    net = MultiLabelResNet(in_channels=1, num_labels=14, width=8)
    report = apply_init(net, stored, "chest14")
    assert report is not None and report.adapted == ["encoder.conv1.weight"]
    torch.testing.assert_close(net.encoder.conv1.weight, imagenet["conv1.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(net.encoder.layer2[0].downsample[0].weight, imagenet["layer2.0.downsample.0.weight"])
    torch.testing.assert_close(net.encoder.layer4[1].bn2.running_mean, imagenet["layer4.1.bn2.running_mean"])


def test_a_file_that_is_no_resnet18_is_refused_at_import_naming_it(tmp_path: Path) -> None:
    from pcrl.finetune.checkpoints import import_resnet18_checkpoint
    from pcrl.networks.resnet18 import ResNet18Encoder

    genesis = tmp_path / "genesis.pt"
    torch.save(_pretrained(), genesis)
    with pytest.raises(ConfigError, match=r"genesis\.pt: no ResNet-18 stem"):
        import_resnet18_checkpoint(genesis, "g")
    resnet34_like = tmp_path / "resnet34.pt"
    state = ResNet18Encoder(in_channels=3, width=8).state_dict()
    state["layer1.2.conv1.weight"] = torch.zeros(8, 8, 3, 3)  # ResNet-34 has three blocks in layer1
    torch.save(state, resnet34_like)
    with pytest.raises(ConfigError, match=r"resnet34\.pt: not a ResNet-18 encoder of width 8: .*layer1\.2\.conv1"):
        import_resnet18_checkpoint(resnet34_like, "r")
    state = ResNet18Encoder(in_channels=3, width=8).state_dict()
    state["layer3.0.conv2.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(DataError, match=r"nan\.pt.*layer3\.0\.conv2\.weight"):
        import_resnet18_checkpoint(tmp_path / "nan.pt", "n")
