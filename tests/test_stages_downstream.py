"""The downstream stages through the CLI: init-weights, finetune, evaluate, report.

A tiny synthetic task data set is written in the layout of the data stages (split.json,
fractions.json, NCC cubes + candidates.csv, resampled NIfTI + cases.json); every run uses
a base-2 U-Net, 2 epochs and 8^3 patches. Bad inputs must exit 2 with a message naming the
file or key, and leave no output folder.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_task_data import (
    CHEST_HEADER,
    liver_case,
    write_images_csv,
    write_ncc,
    write_radiographs,
    write_split,
    write_volumes,
)

from pcrl.torchfile import save_checked
from pcrl.cli import main
from pcrl.errors import DataError
from pcrl.networks.resnet_unet2d import ResNetUNet2D
from pcrl.networks.unet3d import UNet3D
from pcrl.provenance import params_digest

IDS = ["c0", "c1", "c2", "c3", "c4"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """processed/{ncc,lcs,bms}, interim/{liver,brain}, pretrain/pcrl (a base-2 record)."""
    root = tmp_path_factory.mktemp("world")
    fractions = {"0.5": ["c0"], "1.0": ["c0", "c1"]}
    for task in ("ncc", "lcs", "bms"):
        (root / "processed" / task).mkdir(parents=True)
        write_split(root / "processed" / task, ["c0", "c1"], ["c2"], ["c3", "c4"], fractions, task=task)
    write_ncc(root / "processed" / "ncc",
              {c: [1, 0, 0, 1, 0] if i % 2 else [0, 1, 0, 0] for i, c in enumerate(IDS)})
    liver = {c: liver_case(i, shape=(16, 16, 8)) for i, c in enumerate(IDS)}
    write_volumes(root / "interim" / "liver", liver)
    brain = {}
    for c, (image, label) in liver.items():
        brats = label.copy()
        brats[6:8, 6:8, 2:4] = 3
        brain[c] = (np.stack([image, image ** 2, 1 - image, image]), brats)
    write_volumes(root / "interim" / "brain", brain, dataset="msd_brain")
    with torch.random.fork_rng():
        torch.manual_seed(1)
        state = UNet3D(base=2).state_dict()
    (root / "pretrain" / "pcrl").mkdir(parents=True)
    save_checked({"state_dict": state, "method": "pcrl", "parts": ["encoder", "decoder"],
                  "config": "{}"}, root / "pretrain" / "pcrl" / "weights.pt")
    return {"root": root}


@pytest.fixture(scope="module")
def params(world: dict[str, Path], repo_root: Path) -> Path:
    demo = yaml.safe_load((repo_root / "params.yaml").read_text())
    ft = demo["finetune"]
    ft.update(inits=["scratch", "pcrl"], fractions=[1.0], seeds=[0], network={"base": 2, "norm": "batch"})
    if "chest14" in ft:
        ft["chest14"]["inits"] = []  # this world is 3D only (the 2D task: the chest14 tests below)
    ft["ncc"].update(epochs=2, patience=2, batch_size=4)
    for task in ("lcs", "bms"):
        ft[task].update(epochs=2, patience=2, batch_size=2, patches_per_volume=2, patch_size=[8, 8, 8])
    path = world["root"] / "params.yaml"
    path.write_text(yaml.safe_dump(demo))
    return path


def _run(params: Path, *argv: str) -> int:
    return main(["--params", str(params), *argv, "--no-progress"])


def _finetune(params: Path, root: Path, task: str, init: str, fraction: str = "1.0",
              out: Path | None = None) -> tuple[int, Path]:
    interim = {"lcs": ["--interim", str(root / "interim" / "liver")],
               "bms": ["--interim", str(root / "interim" / "brain")]}.get(task, [])
    out = out or root / "finetune" / task / init / f"f{fraction}" / "s0"
    code = _run(params, "finetune", "--task", task, "--init", init, "--fraction", fraction,
                "--seed", "0", "--processed", str(root / "processed" / task), *interim,
                "--weights", str(root / "pretrain" / init), "--out", str(out),
                "--state", str(root / "state" / task / init / fraction), "--workers", "1")
    return code, out


def _evaluate(params: Path, root: Path, task: str, model: Path, out: Path) -> int:
    interim = {"lcs": ["--interim", str(root / "interim" / "liver")],
               "bms": ["--interim", str(root / "interim" / "brain")]}.get(task, [])
    record = root / "records" / out.relative_to(root)
    return _run(params, "evaluate", "--task", task, "--model", str(model),
                "--processed", str(root / "processed" / task), *interim, "--out", str(out),
                "--record", str(record))


@pytest.fixture(scope="module")
def trained(world: dict[str, Path], params: Path) -> dict[str, Path]:
    root = world["root"]
    assert _run(params, "init-weights", "--init", "scratch", "--out", str(root / "pretrain" / "scratch")) == 0
    models = {}
    for task, init in (("ncc", "scratch"), ("ncc", "pcrl"), ("lcs", "scratch"), ("lcs", "pcrl"),
                       ("bms", "pcrl")):
        code, out = _finetune(params, root, task, init)
        assert code == 0, (task, init)
        models[task, init] = out
    return models


def test_finetune_outputs(trained: dict, world: dict) -> None:
    out = trained["bms", "pcrl"]
    assert sorted(p.name for p in out.iterdir()) == [".pcrl-output", "live", "model.pt", "summary.json",
                                                     "validation.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["first_conv_adapted"] is True and summary["train_cases"] == 2
    assert summary["init_loaded"].startswith("loaded 104")  # encoder + decoder, not out_tr
    model = torch.load(out / "model.pt", weights_only=True)
    assert (model["task"], model["init"], model["fraction"], model["seed"]) == ("bms", "pcrl", 1.0, 0)
    assert model["roi_size"] == [8, 8, 8] and model["train_ids"] == ["c0", "c1"]
    history = json.loads((out / "validation.json").read_text())["history"]
    assert str(model["best_epoch"]) == max(history, key=lambda e: history[e]["dice_mean"]) and \
        isinstance(model["best_epoch"], int)
    scratch = json.loads((trained["ncc", "scratch"] / "summary.json").read_text())
    assert scratch["init_loaded"] == "nothing (scratch)"
    metrics = json.loads((out / "live" / "metrics.json").read_text())
    assert {"train", "val"} <= set(metrics) and "dice_mean" in metrics["val"]


def test_state_is_removed_on_success_and_a_rerun_gives_the_same_model(trained: dict, world: dict,
                                                                       params: Path) -> None:
    """The state folder only serves an interrupted job: gone once the stage succeeded; a
    rerun then trains again from the seeded start and writes bit-identical weights (CPU)."""
    root = world["root"]
    state = root / "state" / "lcs" / "scratch" / "1.0"
    assert not state.exists()
    code, out = _finetune(params, root, "lcs", "scratch", out=root / "again")
    assert code == 0 and not state.exists()
    first = torch.load(trained["lcs", "scratch"] / "model.pt", weights_only=True)["state_dict"]
    second = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_a_second_finetune_on_a_held_state_folder_is_refused(trained: dict, world: dict, params: Path,
                                                             capsys) -> None:
    """Two jobs given one --state: the second stops at once with one line naming the folder
    and the holder; nothing is written to its --out."""
    from pcrl.run_state import state_lock

    root = world["root"]
    state = root / "state" / "ncc" / "scratch" / "1.0"
    with state_lock(state):  # the first job, still training
        code, out = _finetune(params, root, "ncc", "scratch", out=root / "second")
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert f"{state}: in use by another run (pid " in err and "Traceback" not in err


def test_the_state_fingerprint_covers_the_data_it_trains_on(world: dict) -> None:
    """A killed job's state is for the data it trained on: volumes rewritten under the same
    ids (a resample or cubes rerun) change the fingerprint, so the rerun starts afresh
    (pcrl.run_state.prepare_state) instead of resuming on other data."""
    import os

    from pcrl.preprocessing.task_data import TaskSplit
    from pcrl.run_state import files_listing_digest
    from pcrl.stages.finetune import _fingerprint

    root = world["root"]
    run, split = {"task": "lcs", "init": "pcrl", "fraction": 1.0, "seed": 0}, TaskSplit(("c0",), ("c1",), ("c2",))
    weights = root / "pretrain" / "pcrl" / "weights.pt"

    def fingerprint() -> str:
        data = files_listing_digest(root / "processed" / "lcs", root / "interim" / "liver")
        return _fingerprint(run, {"lr": 0.1}, split, weights, data)

    before = fingerprint()
    assert fingerprint() == before  # nothing changed: the job resumes
    volume = root / "interim" / "liver" / "c0.nii.gz"
    stat = volume.stat()
    volume.write_bytes(volume.read_bytes())  # the same bytes, rewritten: as a rerun of resample does
    os.utime(volume, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert fingerprint() != before


def test_evaluate_writes_the_interface_record(trained: dict, world: dict, params: Path) -> None:
    root = world["root"]
    for (task, init), model in trained.items():
        out = root / "evaluate" / task / init / "f1.0" / "s0"
        assert _evaluate(params, root, task, model, out) == 0
        numbers = json.loads((out / "metrics.json").read_text())
        assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers.values()), numbers
        record = json.loads((root / "records" / out.relative_to(root) / "record.json").read_text())
        assert set(record) == {"task", "init", "fraction", "seed", "metrics", "primary", "provenance"}
        assert (record["task"], record["init"], record["fraction"], record["seed"]) == (task, init, 1.0, 0)
        assert record["primary"] in record["metrics"]
        assert numbers == {**record["metrics"], "test_cases": record["provenance"]["test_cases"]}
        prov = record["provenance"]
        evaluate = yaml.safe_load(params.read_text())["evaluate"]
        assert prov["params_sha256"] == params_digest({"evaluate": evaluate})
        assert {"git_commit", "versions", "device", "finetune"} <= set(prov)
        assert {"torch", "monai", "SimpleITK", "pcrl"} <= set(prov["versions"])
    ncc = json.loads((root / "evaluate/ncc/scratch/f1.0/s0/metrics.json").read_text())
    assert ncc["n"] == 9 and ncc["positives"] == 3 and 0 <= ncc["auc"] <= 1  # c3 + c4 candidates
    bms = json.loads((root / "evaluate/bms/pcrl/f1.0/s0/metrics.json").read_text())
    assert {"dice_wt", "dice_tc", "dice_et", "iou_wt", "dice_mean"} <= set(bms)
    assert bms["dice_mean"] == pytest.approx(np.mean([bms["dice_wt"], bms["dice_tc"], bms["dice_et"]]))


def test_report_over_the_expected_runs(trained: dict, world: dict, params: Path, capsys) -> None:
    root = world["root"]
    for (task, init), model in trained.items():
        out = root / "evaluate" / task / init / "f1.0" / "s0"
        if not out.is_dir():
            assert _evaluate(params, root, task, model, out) == 0
    report = root / "report"
    assert _run(params, "report", "--evaluations", str(root / "evaluate"), "--out", str(report)) == 2
    assert "1 of 6 runs have no metrics" in capsys.readouterr().err  # bms/scratch missing
    assert not report.exists()
    relaxed = yaml.safe_load(params.read_text())
    relaxed["report"]["require_complete"] = False
    loose = root / "loose.yaml"
    loose.write_text(yaml.safe_dump(relaxed))
    assert _run(loose, "report", "--evaluations", str(root / "evaluate"), "--out", str(report)) == 0
    summary = json.loads((report / "summary.json").read_text())
    assert set(summary) == {"ncc", "lcs", "bms"}
    assert set(summary["lcs"]["1.0"]) == {"scratch", "pcrl"} and set(summary["bms"]["1.0"]) == {"pcrl"}
    assert (report / "plots" / "lcs.png").is_file() and "| scratch |" in (report / "report.md").read_text()


def test_external_checkpoint_that_does_not_fit_is_refused(world: dict, params: Path, capsys) -> None:
    root = world["root"]
    with torch.random.fork_rng():
        wide = UNet3D(base=4).state_dict()
    ckpt = root / "Genesis_Chest_CT.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in wide.items()}}, ckpt)
    assert _run(params, "init-weights", "--init", "genesis_ct", "--checkpoint", str(ckpt),
                "--out", str(root / "pretrain" / "genesis_ct")) == 0
    code, out = _finetune(params, root, "lcs", "genesis_ct")
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "initialisation 'genesis_ct' (external)" in err
    assert "down_tr64.ops.0.conv1.weight (4, 1, 3, 3, 3) vs (2, 1, 3, 3, 3)" in err


def test_external_checkpoint_with_nan_weights_is_refused_naming_file_and_tensor(
        world: dict, params: Path, capsys) -> None:
    root = world["root"]
    with torch.random.fork_rng():
        state = UNet3D(base=2).state_dict()
    state["down_tr128.ops.0.conv1.weight"][0, 0, 0, 0, 0] = float("nan")
    ckpt = root / "nan_weights.pt"
    torch.save({"state_dict": state}, ckpt)
    out = root / "pretrain" / "nan_init"
    assert _run(params, "init-weights", "--init", "nan_init", "--checkpoint", str(ckpt),
                "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert f"{ckpt}: external checkpoint holds non-finite weights" in err
    assert "down_tr128.ops.0.conv1.weight" in err and not out.exists()


def test_bit_flipped_initialisation_is_an_error_naming_it(world: dict, params: Path,
                                                          tmp_path: Path, capsys) -> None:
    source = world["root"] / "pretrain" / "pcrl"
    flipped = tmp_path / "pretrain" / "flipped"
    shutil.copytree(source, flipped)
    weights = flipped / "weights.pt"
    data = bytearray(weights.read_bytes())
    record = torch.load(weights, weights_only=True)
    tensor = record["state_dict"]["down_tr64.ops.0.conv1.weight"]
    needle = tensor.numpy().tobytes()[:16]  # the stored bytes of that tensor
    at = bytes(data).find(needle)
    assert at > 0
    data[at + 3] ^= 0x01
    weights.write_bytes(bytes(data))
    code = _run(params, "finetune", "--task", "ncc", "--init", "pcrl", "--fraction", "1.0",
                "--seed", "0", "--processed", str(world["root"] / "processed" / "ncc"),
                "--weights", str(flipped), "--out", str(tmp_path / "ft"),
                "--state", str(tmp_path / "state"), "--workers", "1")
    err = capsys.readouterr().err
    assert code == 2 and f"{weights}: initialisation weights is corrupt" in err
    assert not (tmp_path / "ft").exists()


def test_test_cases_seen_in_training_are_refused(trained: dict, world: dict, params: Path,
                                                 tmp_path: Path, capsys) -> None:
    root = world["root"]
    processed = tmp_path / "lcs"
    processed.mkdir()
    write_split(processed, ["c1"], ["c2"], ["c0", "c3"], {"1.0": ["c1"]}, task="lcs")  # c0 trained the model
    out = tmp_path / "eval"
    code = _run(params, "evaluate", "--task", "lcs", "--model", str(trained["lcs", "scratch"]),
                "--processed", str(processed), "--interim", str(root / "interim" / "liver"),
                "--out", str(out))
    assert code == 2 and not out.exists()
    assert "test cases ['c0'] were used to train" in capsys.readouterr().err


def test_foreign_labels_and_empty_splits_exit_2(trained: dict, world: dict, params: Path,
                                                tmp_path: Path, capsys) -> None:
    root = world["root"]
    interim = tmp_path / "interim"
    image, label = liver_case(0, shape=(16, 16, 8))
    write_volumes(interim, {c: (image, label * 3 if c == "c1" else label) for c in IDS})
    code = _run(params, "finetune", "--task", "lcs", "--init", "scratch", "--fraction", "1.0",
                "--seed", "0", "--processed", str(root / "processed" / "lcs"), "--interim", str(interim),
                "--weights", str(root / "pretrain" / "scratch"), "--out", str(tmp_path / "o1"),
                "--state", str(tmp_path / "s1"))
    assert code == 2 and not (tmp_path / "o1").exists()
    assert "c1_label.nii.gz: label value(s) 3, 6 are not classes of task lcs" in capsys.readouterr().err
    processed = tmp_path / "processed"
    processed.mkdir()
    write_split(processed, ["c0"], [], ["c3"], {"1.0": ["c0"]}, task="ncc")
    code = _run(params, "finetune", "--task", "ncc", "--init", "scratch", "--fraction", "1.0",
                "--seed", "0", "--processed", str(processed), "--weights", str(root / "pretrain" / "scratch"),
                "--out", str(tmp_path / "o2"), "--state", str(tmp_path / "s2"))
    assert code == 2 and "the val split is empty" in capsys.readouterr().err
    code = _run(params, "finetune", "--task", "ncc", "--init", "scratch", "--fraction", "0.3",
                "--seed", "0", "--processed", str(root / "processed" / "ncc"),
                "--weights", str(root / "pretrain" / "scratch"), "--out", str(tmp_path / "o3"),
                "--state", str(tmp_path / "s3"))
    assert code == 2 and "label fraction 0.3 is not in" in capsys.readouterr().err


def test_init_weights_arguments(trained: dict, world: dict, params: Path, tmp_path: Path,
                                capsys) -> None:
    assert _run(params, "init-weights", "--init", "genesis_ct", "--out", str(tmp_path / "x")) == 2
    assert "needs one (finetune.external)" in capsys.readouterr().err
    scratch = torch.load(world["root"] / "pretrain" / "scratch" / "weights.pt", weights_only=True)
    assert scratch["parts"] == [] and scratch["state_dict"] == {}


def test_schema_refuses_a_bad_finetune_section(params: Path, tmp_path: Path, capsys) -> None:
    bad = yaml.safe_load(params.read_text())
    broken = copy.deepcopy(bad)
    broken["finetune"]["lcs"]["patch_size"] = [8, 8, 12]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(broken))
    assert _run(path, "report", "--evaluations", str(tmp_path), "--out", str(tmp_path / "r")) == 2
    assert "finetune.lcs.patch_size.2: 12 is invalid" in capsys.readouterr().err


# ------------------------------------------------------------------ Chest14 (2D)

PATIENTS = [f"{p:08d}" for p in range(1, 13)]
CHEST_SETTINGS = {
    "network": {"base": 2, "norm": "batch"},  # the 3D U-Net's: chest14.network overrides it
    "amp": "off",
    "validation": {"batch_size": 5, "sw_batch_size": 1, "overlap": 0.25, "threshold": 0.5},
    "chest14": {"inits": ["scratch", "pcrl"], "network": {"base": 4}, "epochs": 2, "patience": 2,
                "batch_size": 4, "lr": 0.05, "momentum": 0.9, "weight_decay": 1.0e-4, "augment": True},
}
EVALUATE = {"batch_size": 4, "sw_batch_size": 1, "overlap": 0.25, "threshold": 0.5}


def _auc_by_hand(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney: the share of (positive, negative) pairs ordered right, ties one half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float(((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum())
                 / (len(pos) * len(neg)))


@pytest.fixture(scope="module")
def chest(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """12 patients x 2 radiographs of 32x32 in 2 shards; train 1-6, val 7-9, test 10-12. In
    each split, image j has finding f iff (j + f) is even, so every finding has both classes;
    atelectasis (f = 0) is a bright square on the noise. Initialisations: scratch and a
    width-4 ResNetUNet2D encoder (``encoder_state_dict``) saved as the pretrain stage does."""
    root = tmp_path_factory.mktemp("chest")
    rng = np.random.default_rng(3)
    images, rows = {}, []
    for group in (PATIENTS[:6], PATIENTS[6:9], PATIENTS[9:]):
        names = [f"{p}_{i:03d}.png" for p in group for i in range(2)]
        for j, name in enumerate(names):
            flags = [int((j + f) % 2 == 0) for f in range(14)]
            image = rng.integers(0, 60, (32, 32))
            if flags[0]:
                image[8:24, 8:24] += 180
            images[name] = image.astype(np.uint8)
            rows.append([name, name[:8], *flags])
    write_radiographs(root / "interim", images)
    processed = root / "processed"
    processed.mkdir()
    write_split(processed, PATIENTS[:6], PATIENTS[6:9], PATIENTS[9:],
                {"0.5": PATIENTS[:3], "1.0": PATIENTS[:6]}, task="chest14")
    write_images_csv(processed, rows)
    (root / "scratch").mkdir()
    save_checked({"state_dict": {}, "method": "scratch", "parts": [], "config": "{}"},
                 root / "scratch" / "weights.pt")
    with torch.random.fork_rng():
        torch.manual_seed(11)
        encoder = ResNetUNet2D(in_channels=1, width=4).encoder_state_dict()
    (root / "pcrl").mkdir()
    save_checked({"state_dict": encoder, "method": "pcrl", "parts": ["encoder", "decoder"],
                  "config": json.dumps({"network": {"arch": "resnet18_unet2d", "base": 4}})},
                 root / "pcrl" / "weights.pt")
    return {"root": root, "images": images, "rows": rows, "encoder": encoder}


def _chest_finetune(chest: dict, init: str, settings: dict = CHEST_SETTINGS) -> Path:
    from pcrl.stages.finetune import run_finetune

    root = chest["root"]
    return run_finetune("chest14", init, 1.0, 0, copy.deepcopy(settings), processed=root / "processed",
                        interim=root / "interim", weights=root / init, out=root / "finetune" / init,
                        state=root / "state" / init, device="cpu", num_workers=1, progress=False)


@pytest.fixture(scope="module")
def chest_models(chest: dict) -> dict[str, Path]:
    return {init: _chest_finetune(chest, init) for init in ("scratch", "pcrl")}


def test_chest14_finetune_writes_a_model_evaluate_can_rebuild(chest: dict, chest_models: dict) -> None:
    model = torch.load(chest_models["pcrl"] / "model.pt", weights_only=True)
    assert (model["task"], model["init"], model["network"]) == ("chest14", "pcrl", {"base": 4, "norm": "batch"})
    assert model["roi_size"] == [32, 32] and model["train_ids"] == PATIENTS[:6]
    assert model["val_ids"] == PATIENTS[6:9]
    assert model["state_dict"]["encoder.conv1.weight"].shape == (4, 1, 7, 7)  # width 4, not the 3D base 2
    summary = json.loads((chest_models["pcrl"] / "summary.json").read_text())
    assert (summary["train_cases"], summary["train_items"], summary["batch_size"]) == (6, 12, 4)
    assert summary["init_loaded"] == ("loaded 120, missing 0, unexpected 0, mismatched 0, adapted 0, "
                                      "ignored 0")
    scratch = json.loads((chest_models["scratch"] / "summary.json").read_text())
    assert scratch["init_loaded"] == "nothing (scratch)"
    history = json.loads((chest_models["pcrl"] / "validation.json").read_text())["history"]
    assert sorted(history) == ["1", "2"] and all("auc_mean" in m and "auc_hernia" in m for m in history.values())
    assert str(model["best_epoch"]) == max(history, key=lambda e: history[e]["auc_mean"])
    # 6 SGD steps move the weights a little: the pretrained run starts from the record
    record = chest["encoder"]["layer2.0.conv1.weight"]
    tuned = model["state_dict"]["encoder.layer2.0.conv1.weight"]
    other = torch.load(chest_models["scratch"] / "model.pt", weights_only=True)["state_dict"]
    assert (tuned - record).abs().max() < 0.5 * (other["encoder.layer2.0.conv1.weight"] - record).abs().max()


def test_chest14_record_loads_into_the_task_network(chest: dict) -> None:
    from pcrl.finetune.checkpoints import apply_init, read_init_record
    from pcrl.finetune.models import NetworkConfig, seeded_network

    net = seeded_network("chest14", NetworkConfig(base=4), 0)
    record = read_init_record(chest["root"] / "pcrl" / "weights.pt", "pcrl")
    assert apply_init(net, record, "chest14").ok
    own = net.encoder.state_dict()
    assert set(own) == set(chest["encoder"])
    assert all(torch.equal(own[k], v) for k, v in chest["encoder"].items())


def test_chest14_evaluate_scores_every_test_image(chest: dict, chest_models: dict) -> None:
    from pcrl.finetune.models import MultiLabelResNet
    from pcrl.tasks import get_task
    from pcrl.stages.evaluate import run_evaluate

    root = chest["root"]
    out = root / "evaluate" / "chest14" / "pcrl" / "f1.0" / "s0"
    record = run_evaluate("chest14", EVALUATE, model_dir=chest_models["pcrl"], processed=root / "processed",
                          interim=root / "interim", out=out, record_out=root / "records", device="cpu")
    names = get_task("chest14").class_names
    numbers = json.loads((out / "metrics.json").read_text())
    assert set(numbers) == {*(f"auc_{n}" for n in names), "auc_mean", "labels_scored", "n", "test_cases"}
    assert numbers["labels_scored"] == 14
    assert (numbers["n"], numbers["test_cases"]) == (6, 3)  # 2 images of each of 3 patients
    assert record["primary"] == "auc_mean" and record["metrics"]["auc_mean"] == numbers["auc_mean"]
    # an independent scoring of the saved network on the test images
    model = torch.load(chest_models["pcrl"] / "model.pt", weights_only=True)
    net = MultiLabelResNet(in_channels=1, num_labels=14, width=4)
    net.load_state_dict(model["state_dict"])
    net.eval()
    test = [r for r in chest["rows"] if r[1] in PATIENTS[9:]]
    pixels = torch.tensor(np.stack([chest["images"][r[0]] for r in test]), dtype=torch.float32)[:, None] / 255
    with torch.no_grad():
        logits = net(pixels).numpy()
    labels = np.array([r[2:] for r in test])
    expected = {f"auc_{n}": _auc_by_hand(logits[:, j], labels[:, j]) for j, n in enumerate(names)}
    for key, value in expected.items():
        assert numbers[key] == pytest.approx(value, abs=1e-9), key
    assert numbers["auc_mean"] == pytest.approx(np.mean(list(expected.values())), abs=1e-12)


def test_chest14_learns_the_visible_finding(chest: dict, chest_models: dict) -> None:
    """Atelectasis is a bright square: 2 epochs rank (nearly) every test image with it first."""
    from pcrl.stages.evaluate import run_evaluate

    root = chest["root"]
    out = root / "evaluate" / "chest14" / "scratch" / "f1.0" / "s0"
    run_evaluate("chest14", EVALUATE, model_dir=chest_models["scratch"], processed=root / "processed",
                 interim=root / "interim", out=out, device="cpu")
    assert json.loads((out / "metrics.json").read_text())["auc_atelectasis"] >= 8 / 9  # 3 x 3 pairs


def test_chest14_finding_without_a_positive_test_image_is_left_out_and_named(
        chest: dict, chest_models: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A finding with one class among the test images has no AUC: left out, named in a
    warning, the mean over the 13 scored (a small split; the real test list has all 14)."""
    from pcrl.stages.evaluate import run_evaluate

    processed = tmp_path / "processed"
    shutil.copytree(chest["root"] / "processed", processed)
    rows = [[*r[:-1], 0] if r[1] in PATIENTS[9:] else r for r in chest["rows"]]  # no hernia in test
    write_images_csv(processed, rows, CHEST_HEADER)
    out = tmp_path / "out"
    with caplog.at_level("WARNING"):
        run_evaluate("chest14", EVALUATE, model_dir=chest_models["pcrl"], processed=processed,
                     interim=chest["root"] / "interim", out=out, device="cpu")
    metrics = json.loads((out / "metrics.json").read_text())
    assert "auc_hernia" not in metrics and metrics["labels_scored"] == 13
    scored = [v for k, v in metrics.items() if k.startswith("auc_") and k != "auc_mean"]
    assert len(scored) == 13 and metrics["auc_mean"] == pytest.approx(np.mean(scored))
    assert "1 of 14 findings have a single class and no AUC: hernia" in caplog.text
    no_finding = [[*r[:2], *[0] * 14] if r[1] in PATIENTS[9:] else r for r in chest["rows"]]
    write_images_csv(processed, no_finding, CHEST_HEADER)
    with pytest.raises(DataError, match=r"images.csv, the 6 images of the 3 test patients: no label has both"):
        run_evaluate("chest14", EVALUATE, model_dir=chest_models["pcrl"], processed=processed,
                     interim=chest["root"] / "interim", out=tmp_path / "out2", device="cpu")
    assert not (tmp_path / "out2").exists()




def test_chest14_runs_do_not_depend_on_which_inits_exist() -> None:
    """Adding an init (or an external file) says which runs exist, not how one runs: the
    params recorded and fingerprinted for a run leave finetune.chest14.inits/external out."""
    from pcrl.stages.finetune import run_params

    settings = copy.deepcopy(CHEST_SETTINGS)
    before = run_params("chest14", settings)
    settings["chest14"]["inits"] = ["scratch", "pcrl", "moco"]
    settings["chest14"]["external"] = {"imagenet": "/models/resnet18.pth"}
    assert run_params("chest14", settings) == before
    assert "inits" not in before["chest14"] and before["chest14"]["lr"] == 0.05
    settings["chest14"]["lr"] = 0.01
    assert run_params("chest14", settings) != before


@pytest.mark.parametrize(("processed", "interim", "message"), [
    ("bms", "liver", "processed/bms/contents.json: task is 'bms', expected 'lcs'"),
    ("lcs", "brain", "interim/brain/cases.json: holds msd_brain data, but {root}/interim/brain gathers msd_liver"),
])
def test_a_finetune_fed_another_tasks_data_exits_2(world: dict, params: Path, tmp_path: Path, capsys,
                                                    processed: str, interim: str, message: str) -> None:
    root = world["root"]
    before = {p: p.read_bytes() for p in sorted((root / "interim").rglob("*")) if p.is_file()}
    code = _run(params, "finetune", "--task", "lcs", "--init", "scratch", "--fraction", "1.0", "--seed", "0",
                "--processed", str(root / "processed" / processed), "--interim", str(root / "interim" / interim),
                "--weights", str(root / "pretrain" / "scratch"), "--out", str(tmp_path / "o"),
                "--state", str(tmp_path / "s"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message.format(root=root) in err[0], err
    assert not (tmp_path / "o").exists()
    assert before == {p: p.read_bytes() for p in sorted((root / "interim").rglob("*")) if p.is_file()}
