"""``pcrl pretrain`` on phantom pairs: loss goes down, kill + rerun resumes, torchrun with 2 processes."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pcrl.atomic import save_npy, write_json
from pcrl.records import write_contents
from pcrl.preprocessing.pair_config import PairConfig
from pcrl.preprocessing.pair_sampling import sample_pairs
from pcrl.phantom import luna16_case
from pcrl.preprocessing.pairs import PairsDataset
from pcrl.engine import TrainConfig, load_checkpoint, train
from pcrl.methods import build_method, method_config
from pcrl.stages.pretrain import gauge_warnings, method_settings, run_pretrain

CUBE = (16, 16, 8)


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cubes@pretrain-style output from three phantom chest CTs (HU scaled to [0, 1])."""
    root = tmp_path_factory.mktemp("pairs")
    config = PairConfig(crop_sizes=((16, 16, 8), (24, 24, 12), (32, 32, 16)), cube_size=CUBE)
    index, ids = [], []
    for i in range(3):
        case = luna16_case(seed=0, index=i, shape=(80, 80, 24))
        volume = (np.clip(case.image.astype(np.float32), -1000, 1000) + 1000) / 2000
        cubes, _ = sample_pairs(volume, 8, config, np.random.default_rng(i), case_id=case.case_id)
        save_npy(root / "pairs" / f"{case.case_id}.npy", cubes.astype(np.float16))
        index.append({"id": case.case_id, "group": f"subset{i}", "file": f"pairs/{case.case_id}.npy", "n": 8})
        ids.append(case.case_id)
    write_json(root / "pairs.json", index)
    write_json(root / "split.json", {"train": ids[:2], "val": ids[2:]})
    write_contents(root, {"stage": "cubes", "task": "pretrain", "dataset": "luna16"})  # as the cubes stage records it
    return root


def _settings(demo: dict, **overrides) -> dict:
    settings = copy.deepcopy(demo["pretrain"])
    settings.update(epochs=3, batch_size=4, checkpoint_every=1, network={"base": 2, "norm": "batch"})
    settings["pcrl"].update(queue_size=16)
    settings["moco"].update(queue_size=16)
    settings.update(overrides)
    return settings


def _epoch_losses(out: Path) -> list[float]:
    tsv = out / "live" / "plots" / "metrics" / "train" / "loss.tsv"
    rows = tsv.read_text().splitlines()[1:]
    return [float(r.split("\t")[-1]) for r in rows]


def test_pcrl_on_phantom_pairs_lowers_the_loss(pairs_dir: Path, tmp_path: Path, demo_params: dict) -> None:
    """Pretraining lowers the total PCRL loss on the phantom pairs.

    Both the initial and the trained model are scored on the same batch, with the same
    generator seed (same views, corruptions, alphas, mixup) and the same negatives: per-epoch
    training means are not comparable, because the queue starts as random unit vectors (easy
    negatives) and fills with real keys. The negatives are fixed random unit vectors, not the
    trained run's queue: that queue holds the keys of these very pairs (2 pair files, a queue of
    2 steps), and with a key encoder that follows the student (the cosine momentum ramp) they
    equal the positives, which puts the loss at ln(K + 1) whatever the encoder learnt.
    """
    torch.set_num_threads(1)
    settings = _settings(demo_params, epochs=8, lr=0.1, network={"base": 4, "norm": "batch"})
    settings["pcrl"].update(loss="infonce", queue_size=8)
    dataset = PairsDataset(sorted((pairs_dir / "pairs").glob("*.npy"))[:2])
    values = method_settings("pcrl", settings, n_data=16, steps=8 * (len(dataset) // 4))  # the run's steps
    method = build_method("pcrl", method_config("pcrl", values))
    initial = copy.deepcopy(method)
    config = TrainConfig(epochs=8, batch_size=4, lr=0.1, checkpoint_every=8, progress=False)
    train(method, dataset, config, tmp_path / "state", device="cpu")
    x1 = torch.stack([dataset[i][0] for i in range(8)])
    x2 = torch.stack([dataset[i][1] for i in range(8)])

    negatives = torch.nn.functional.normalize(
        torch.randn(method.queue.keys.shape, generator=torch.Generator().manual_seed(11)), dim=1)

    def score(model: torch.nn.Module) -> dict[str, float]:
        model = copy.deepcopy(model).train()
        model.queue.keys.copy_(negatives)
        with torch.no_grad():
            out = model(x1, x2, torch.Generator().manual_seed(7))
        return {k: float(v) for k, v in out.items()}

    before, after = score(initial), score(method)
    assert after["loss"] < before["loss"]
    assert after["reconstruction"] < before["reconstruction"]


def test_the_probe_does_not_change_the_training(pairs_dir: Path, tmp_path: Path, demo_params: dict) -> None:
    """The monitor runs after each checkpoint, in eval mode, on its own streams: same weights."""
    from test_probe import make_ncc_processed

    torch.set_num_threads(1)
    settings = _settings(demo_params, epochs=2)
    ncc = make_ncc_processed(tmp_path / "ncc", {"a": "train", "v": "val", "c": "test"})
    runs = {}
    for name, probe in (("with", ncc), ("without", None)):
        out = run_pretrain("genesis", settings, pairs=pairs_dir, out=tmp_path / name, state=tmp_path / f"{name}_s",
                           device="cpu", progress=False, probe=probe,
                           probe_settings={"every": 1, "max_per_class": None, "l2": 0.01})
        runs[name] = torch.load(out / "weights.pt", weights_only=True)["state_dict"]
    assert json.loads((tmp_path / "with" / "summary.json").read_text())["probe_val_auc"].keys() == {"1", "2"}
    assert json.loads((tmp_path / "without" / "summary.json").read_text())["probe_val_auc"] == {}
    for key, value in runs["with"].items():
        assert torch.equal(value, runs["without"][key]), key


def test_pretrain_stage_writes_weights_previews_summary(pairs_dir: Path, tmp_path: Path, demo_params: dict) -> None:
    from test_probe import make_ncc_processed

    from pcrl.evaluation.probe import probe_auc, probe_split
    from pcrl.networks.pcrl_net import PCRLNet3D

    torch.set_num_threads(1)
    settings = _settings(demo_params, epochs=2)
    ncc = make_ncc_processed(tmp_path / "ncc", {"a": "train", "b": "train", "v": "val", "c": "test"})
    out = run_pretrain("pcrl", settings, pairs=pairs_dir, out=tmp_path / "out", state=tmp_path / "state",
                       device="cpu", progress=False, probe=ncc,
                       probe_settings={"every": 1, "max_per_class": None, "l2": 0.01})
    # the probe of every epoch, and at the end that of the final student on the val scans
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["probe_val_auc"]) == {"1", "2"}
    student = PCRLNet3D(base=2, proj_dim=settings["pcrl"]["proj_dim"])
    student.load_state_dict(torch.load(out / "weights.pt", weights_only=True)["state_dict"])
    expected = probe_auc(student, probe_split(str(ncc), ["a", "b"], ["v"]))
    assert summary["probe_val_auc"]["2"] == pytest.approx(expected, abs=1e-9)
    live = out / "live" / "plots" / "metrics"
    assert len((live / "probe" / "val_auc.tsv").read_text().splitlines()) == 3  # header + 2 epochs
    psnr = [float(r.split("\t")[-1]) for r in (live / "val" / "psnr.tsv").read_text().splitlines()[1:]]
    assert len(psnr) == 2 and all(0 < v < 60 for v in psnr)
    for gauge in ("con_acc", "queue_fill"):
        assert 0.0 <= summary["final"][f"train/{gauge}"] <= 1.0
    losses = _epoch_losses(out)
    assert len(losses) == 2 and all(np.isfinite(losses))
    weights = torch.load(out / "weights.pt", weights_only=True)
    assert weights["parts"] == ["encoder", "decoder"]
    assert "down_tr64.ops.0.conv1.weight" in weights["state_dict"] and "aug_fc1.weight" in weights["state_dict"]
    assert sorted(p.name for p in (out / "previews").glob("*.png")) == ["epoch_001.png", "epoch_002.png"]
    assert (out / "previews" / "epoch_002.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_pairs"] == 16 and summary["world_size"] == 1
    assert summary["provenance"]["device"].startswith("cpu")
    assert len(summary["provenance"]["params_sha256"]) == 64 and "torch" in summary["provenance"]["versions"]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2
    # the gauges of every epoch, on the held-out pairs (pcrl/evaluation/gauges.py)
    val_pairs = len(PairsDataset(sorted((pairs_dir / "pairs").glob("*.npy"))[2:]))  # split: 3rd case is val
    assert val_pairs == 8
    gauges = summary["gauges"]
    for name in ("effective_rank", "retrieval_top1", "retrieval_chance"):
        assert set(gauges[name]) == {"1", "2"}, name
        assert (live / "gauges" / f"{name}.tsv").is_file(), name
    for epoch in ("1", "2"):
        assert gauges["retrieval_chance"][epoch] == pytest.approx(1 / min(64, val_pairs))
        assert 0.0 <= gauges["retrieval_top1"][epoch] <= 1.0
        assert gauges["retrieval_top1"][epoch] * val_pairs == pytest.approx(round(gauges["retrieval_top1"][epoch]
                                                                                  * val_pairs))
        # pooled deepest features of 8 crops (32 channels at base 2): rank in [0, min(8 - 1, 32)]
        assert 0.0 <= gauges["effective_rank"][epoch] <= 7.0 + 1e-9
    for name in ("grad_contrastive", "grad_reconstruction"):  # PCRL has both halves
        assert (live / "gauges" / f"{name}.tsv").is_file() and set(gauges[name]) == {"1", "2"}, name
        assert all(v > 0 for v in gauges[name].values()), name
    assert set(gauges["psnr_gain"]) == {"1", "2"}
    warnings = summary["warnings"]
    assert isinstance(warnings, list) and all(isinstance(w, str) for w in warnings)
    # 2 epochs of 16 // 4 batches = 8 steps: any m >= 0 has 1 / (1 - m) >= 1 > 8 / 10 steps
    assert "pretrain.pcrl.momentum" in warnings[0] and "8 steps" in warnings[0]
    assert warnings[1:] == gauge_warnings(out / "live")
    # the momentum schedule ran over the 8 steps and its count is checkpointed (a resume continues it)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["method"]["ema.steps"].item() == 8


def _params_file(tmp_path: Path, demo: dict, settings: dict) -> Path:
    params = copy.deepcopy(demo)
    params["pretrain"] = settings
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _cli(params: Path, pairs: Path, out: Path, state: Path, method: str = "genesis") -> list[str]:
    return [sys.executable, "-m", "pcrl.cli", "--params", str(params), "pretrain", "--method", method,
            "--pairs", str(pairs), "--out", str(out), "--state", str(state), "--device", "cpu",
            "--workers", "0", "--no-progress"]


@pytest.mark.pipeline  # the real CLI three times in subprocesses, one killed: ~100 s
def test_killed_job_resumes_without_repeating_epochs(pairs_dir: Path, tmp_path: Path, demo_params: dict) -> None:
    """kill -9 after the first checkpoint; the rerun finishes the remaining epochs only,
    with the same weights as an uninterrupted run.

    The job is frozen (SIGSTOP) the moment its first checkpoint appears, then killed, so it
    cannot race past the remaining epochs between the check and the kill."""
    epochs = 6
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PCRL_NO_DVC_COMMIT": "1"}
    params = _params_file(tmp_path, demo_params, _settings(demo_params, epochs=epochs))
    state, out = tmp_path / "state", tmp_path / "out"
    job = subprocess.Popen(_cli(params, pairs_dir, out, state), env=env)
    checkpoint = state / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and job.poll() is None:
        time.sleep(0.01)
    job.send_signal(signal.SIGSTOP)
    assert job.poll() is None, "the job ended before it could be killed"
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert checkpoint.exists() and not out.exists(), "killed job must leave state but no output"
    done = int(load_checkpoint(checkpoint)["epoch"])
    assert 1 <= done < epochs
    subprocess.run(_cli(params, pairs_dir, out, state), env=env, check=True, timeout=600)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run_by_this_job"] == list(range(done + 1, epochs + 1))
    steps = [int(r.split("\t")[0]) for r in
             (out / "live/plots/metrics/train/loss.tsv").read_text().splitlines()[1:]]
    assert steps == list(range(1, epochs + 1))

    ref_out = tmp_path / "ref_out"
    subprocess.run(_cli(params, pairs_dir, ref_out, tmp_path / "ref_state"), env=env, check=True, timeout=600)
    resumed = torch.load(out / "weights.pt", weights_only=True)["state_dict"]
    reference = torch.load(ref_out / "weights.pt", weights_only=True)["state_dict"]
    assert resumed.keys() == reference.keys()
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], rtol=0, atol=1e-6, msg=key)


def test_a_method_reads_only_the_shared_keys_and_its_own_section(demo_params: dict) -> None:
    from pcrl.stages.pretrain import SHARED_KEYS, used_settings

    settings = copy.deepcopy(demo_params["pretrain"])
    before = copy.deepcopy(used_settings("pcrl", settings))
    assert set(before) == {k for k in SHARED_KEYS if k in settings} | {"pcrl"}
    settings["moco"]["temperature"] = 0.5
    settings["genesis"] = {"extra": 1}
    settings["methods"] = ["pcrl"]
    assert used_settings("pcrl", settings) == before
    settings["network"]["base"] = 8
    assert used_settings("pcrl", settings) != before
    assert used_settings("moco", settings)["moco"]["temperature"] == 0.5


def test_changed_params_discard_stale_state(pairs_dir: Path, tmp_path: Path, demo_params: dict) -> None:
    state = tmp_path / "state"
    run_pretrain("genesis", _settings(demo_params, epochs=1), pairs=pairs_dir, out=tmp_path / "a", state=state,
                 device="cpu", progress=False)
    out = run_pretrain("genesis", _settings(demo_params, epochs=2, lr=0.02), pairs=pairs_dir, out=tmp_path / "b",
                       state=state, device="cpu", progress=False)
    assert json.loads((out / "summary.json").read_text())["epochs_run_by_this_job"] == [1, 2]


@pytest.mark.pipeline  # the real CLI under torchrun (2 processes), then a run in-process: ~40 s
def test_torchrun_two_processes_on_cpu(pairs_dir: Path, tmp_path: Path, demo_params: dict) -> None:
    """PCRL_NPROC_PER_NODE=2: the CLI re-launches itself under torchrun (gloo, 2 processes)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PCRL_NPROC_PER_NODE": "2"}
    params = _params_file(tmp_path, demo_params, _settings(demo_params, epochs=1))
    out = tmp_path / "out"
    subprocess.run(_cli(params, pairs_dir, out, tmp_path / "state", method="pcrl"), env=env, check=True, timeout=600)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    # the same global batch in one process: the two runs see the same pairs in the same
    # global order; they differ by each rank's own corruption stream and per-rank batch
    # norm, so the epoch loss agrees within a tolerance, not exactly
    single = run_pretrain("pcrl", _settings(demo_params, epochs=1), pairs=pairs_dir, out=tmp_path / "single",
                          state=tmp_path / "single_state", device="cpu", progress=False)
    reference = json.loads((single / "summary.json").read_text())["final"]
    for term in ("train/loss", "train/reconstruction"):
        if term in reference:
            assert abs(summary["final"][term] - reference[term]) <= 0.15 * abs(reference[term]), term
    assert summary["final"]["train/lr"] == reference["train/lr"]


def test_dvc_yaml_declares_exactly_the_keys_a_method_reads(repo_root: Path) -> None:
    """dvc.yaml lists the shared keys by hand: they must be SHARED_KEYS and the method's own."""
    from pcrl.stages.pretrain import SHARED_KEYS

    stage = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]["pretrain"]["do"]
    assert set(stage["params"]) == {f"pretrain.{k}" for k in SHARED_KEYS} | {"pretrain.${item}", "probe"}


def _write_series(live: Path, name: str, values: list[float]) -> None:
    """A dvclive plot file: header ``step\\t<name>``, then one row per step."""
    path = live / "plots" / "metrics" / f"{name}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"step\t{name.split('/')[-1]}"] + [f"{i}\t{v}" for i, v in enumerate(values, start=1)]
    path.write_text("\n".join(rows) + "\n")


def test_gauge_warnings_read_the_last_epoch(tmp_path: Path) -> None:
    # retrieval 0.03 with chance 0.02 is within 2x chance (0.04): a warning naming both
    near_chance = tmp_path / "near_chance"
    _write_series(near_chance, "gauges/retrieval_top1", [0.5, 0.03])  # only the last epoch counts
    _write_series(near_chance, "gauges/retrieval_chance", [0.02, 0.02])
    _write_series(near_chance, "gauges/effective_rank", [1.0, 5.0])
    warnings = gauge_warnings(near_chance)
    assert len(warnings) == 1 and "retrieval" in warnings[0] and "0.030" in warnings[0] and "0.020" in warnings[0]
    assert "epoch 2" in warnings[0]

    fine = tmp_path / "fine"
    _write_series(fine, "gauges/retrieval_top1", [0.03, 0.5])
    _write_series(fine, "gauges/retrieval_chance", [0.02, 0.02])
    _write_series(fine, "gauges/effective_rank", [1.2, 5.0])
    assert gauge_warnings(fine) == []

    collapsed = tmp_path / "collapsed"
    _write_series(collapsed, "gauges/retrieval_top1", [0.5])
    _write_series(collapsed, "gauges/retrieval_chance", [0.02])
    _write_series(collapsed, "gauges/effective_rank", [1.5])
    warnings = gauge_warnings(collapsed)
    assert len(warnings) == 1 and "effective rank" in warnings[0] and "1.50" in warnings[0]

    assert gauge_warnings(tmp_path / "nothing_logged") == []
    # retrieval exactly at 2x chance still counts as near chance; rank exactly 2 does not collapse
    boundary = tmp_path / "boundary"
    _write_series(boundary, "gauges/retrieval_top1", [0.25])
    _write_series(boundary, "gauges/retrieval_chance", [0.125])
    _write_series(boundary, "gauges/effective_rank", [2.0])
    warnings = gauge_warnings(boundary)
    assert len(warnings) == 1 and "retrieval" in warnings[0]
