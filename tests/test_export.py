"""``pcrl export`` (the ``export`` fixture of tests/conftest.py): the folder's files, its
config's MONAI recipe and the release's 3D keys.

Independent references: MONAI's ResNet (another implementation of ResNet-18) built only from
``config.json`` must compute our encoder's features; the 3D encoder's keys must be the hand
written key list of the PCRL release (tests/data/release_pcrl3d_keys.txt).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from pcrl.hub import load_encoder
from pcrl.records import write_contents
from pcrl.networks.resnet18 import ResNet18Encoder
from pcrl.stages.export import lock_entry

pytestmark = pytest.mark.usefixtures("one_thread")

RELEASE_KEYS = Path(__file__).parent / "data" / "release_pcrl3d_keys.txt"


def test_the_folder_holds_every_file_with_its_sha256(export) -> None:
    out, _ = export(3, summary={"epochs": 2, "train_pairs": 40, "probe_val_auc": {"1": 0.61, "2": 0.7}})
    names = {p.name for p in out.iterdir()} - {".pcrl-output"}
    assert names == {"model.safetensors", "full_model.safetensors", "config.json", "adaptation_plan.json",
                     "README.md", "checksums.json"}
    listing = json.loads((out / "checksums.json").read_text())
    assert set(listing) == names - {"checksums.json"}
    for name, digest in listing.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest, name
    card = (out / "README.md").read_text()
    for name in names - {"checksums.json", "README.md"}:
        assert f"| {name} | `{listing[name]}` |" in card
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["license"] and front["datasets"] == ["luna16"] and front["library_name"] == "pytorch"
    assert "pipeline_tag" in front and "genesis" in front["tags"]
    assert "PHANTOM" in card and "4 scans (train 3, val 1)" in card
    assert "| 1 | 0.6100 |" in card and "| 2 | 0.7000 |" in card and "2 epochs on 40 pairs" in card


def test_the_plan_records_the_preprocessing_and_the_keys(export) -> None:
    out, _ = export(3)
    plan = json.loads((out / "adaptation_plan.json").read_text())
    assert plan["spacing"] == [1.0, 1.0, 1.0] and plan["intensity"] == {"kind": "window", "min": -1000, "max": 1000}
    assert plan["pretraining_crop_size"] == [32, 32, 16] and plan["recommended_patch_size"] == [32, 32, 16]
    assert plan["input_channels"] == 1 and plan["key_map"]["stem"] == ["down_tr64.ops.0"]
    config = json.loads((out / "config.json").read_text())
    assert (config["family"], config["width"], config["spatial_dims"], config["norm"]) == ("unet3d_encoder", 4, 3,
                                                                                          "batch")


def test_the_3d_encoder_has_the_release_keys_and_the_full_model_the_unet(export) -> None:
    out, net = export(3)
    release = {line.split("\t")[0] for line in RELEASE_KEYS.read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    encoder = load_file(str(out / "model.safetensors"))
    assert set(encoder) == {k for k in release if k.startswith("down_tr")}
    full = load_file(str(out / "full_model.safetensors"))
    assert set(full) == {k for k in release if k.startswith(("down_tr", "up_tr", "out_tr"))}
    for key, value in full.items():
        assert torch.equal(value, net.state_dict()[key]), key
    x = torch.rand(2, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(load_encoder(out)(x), net.eval().encode(x)[-1])


def test_an_encoder_only_method_exports_no_full_model(export) -> None:
    out, _ = export(2, parts=("encoder",))
    assert not (out / "full_model.safetensors").exists()
    assert "full_model.safetensors" not in json.loads((out / "checksums.json").read_text())


def test_monai_resnet_from_config_computes_our_features(export) -> None:
    """The recipe of the README: MONAI's resnet18 built from config.json loads
    model.safetensors strictly (same key names) and gives the same pooled features."""
    from monai.networks.nets import ResNet

    out, net = export(2)
    config = json.loads((out / "config.json").read_text())
    monai_net = ResNet(**config["monai_resnet"])
    monai_net.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    ours = net.encoder.eval()
    assert isinstance(ours, ResNet18Encoder)
    x = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        expected = ours(x).mean(dim=(2, 3))
        got = monai_net.eval()(x)
    assert got.shape == expected.shape == (3, 64)
    assert float((got - expected).abs().max()) <= 1e-6


def test_monai_defaults_load_silently_but_compute_other_features(export) -> None:
    """Why config.json spells every argument: MONAI's default stem stride 1 loads the same
    keys without an error but gives other features (the check above can fail)."""
    from monai.networks.nets import ResNet

    out, net = export(2)
    args = {**json.loads((out / "config.json").read_text())["monai_resnet"], "conv1_t_stride": 1}
    monai_net = ResNet(**args)
    monai_net.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        diff = (monai_net.eval()(x) - net.encoder.eval()(x).mean(dim=(2, 3))).abs().max()
    assert float(diff) > 1e-3


def test_lock_entry_reads_the_pretrain_stage_without_code_deps(tmp_path: Path) -> None:
    lock = tmp_path / "dvc.lock"
    lock.write_text(yaml.safe_dump({"schema": "2.0", "stages": {"pretrain@pcrl": {
        "cmd": "pcrl pretrain", "deps": [{"path": "data/processed/pretrain", "md5": "abc.dir"},
                                         {"path": "pcrl/cli.py", "md5": "def"}],
        "params": {"params.yaml": {"pretrain.epochs": 3}},
        "outs": [{"path": "data/pretrain/pcrl", "md5": "ff.dir"}]}}}))
    entry = lock_entry(lock, "pretrain@pcrl")
    assert entry == {"stage": "pretrain@pcrl", "files": {"data/processed/pretrain": "abc.dir",
                                                         "data/pretrain/pcrl": "ff.dir"},
                     "params": {"params.yaml": {"pretrain.epochs": 3}}}
    assert lock_entry(lock, "pretrain@moco") is None and lock_entry(tmp_path / "none.lock", "x") is None


def test_the_cli_exports_with_the_demo_params(export, tmp_path: Path, repo_root: Path) -> None:
    """``pcrl export`` reads resample.<dataset> and cubes.<pretrain task> from params.yaml."""
    from pcrl.cli import main

    export(2)
    out = tmp_path / "cli2d"
    code = main(["--params", str(repo_root / "params.yaml"), "export", "--setting", "2d", "--method", "genesis",
                 "--weights", str(tmp_path / "pretrain2"), "--out", str(out)])
    assert code == 0
    plan = json.loads((out / "adaptation_plan.json").read_text())
    demo = yaml.safe_load((repo_root / "params.yaml").read_text())
    assert plan["resize_to_height_width"] == demo["resample"]["chestxray14"]["size"]
    assert plan["pretraining_crop_size"] == demo["cubes"]["pretrain2d"]["cube_size"][:2]
    assert main(["--params", str(repo_root / "params.yaml"), "export", "--method", "genesis",
                 "--weights", str(tmp_path / "nothing"), "--out", str(tmp_path / "bad")]) == 2


def test_the_2d_card_counts_patients_not_pair_files(tmp_path: Path) -> None:
    """The 2D pairs' split.json lists pair files; the card counts the patients of patients.json."""
    from pcrl.stages.export import _data

    pairs = tmp_path / "pairs"
    pairs.mkdir()
    (pairs / "split.json").write_text(json.dumps({"train": ["0"], "val": ["1"]}))
    (pairs / "patients.json").write_text(json.dumps({"train": ["p1", "p2", "p3"], "val": ["p4"], "test": ["p5"]}))
    write_contents(pairs, {"stage": "cubes", "task": "pretrain2d", "dataset": "chestxray14"})
    assert _data(pairs, "chestxray14", "phantom")["scans"] == 5 and _data(pairs, "chestxray14", "phantom")["unit"] \
        == "patients"
    (pairs / "patients.json").unlink()
    write_contents(pairs, {"stage": "cubes", "task": "pretrain", "dataset": "luna16"})
    assert (_data(pairs, "luna16", "phantom")["scans"], _data(pairs, "luna16", "phantom")["unit"]) == (2, "scans")
