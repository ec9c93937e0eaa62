"""pcrl.evaluation.probe and pcrl.stages.probe: the frozen-encoder linear probe."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pcrl.atomic import save_npy, write_json
from pcrl.records import write_contents
from test_records import reseal
from pcrl.errors import DataError
from pcrl.evaluation.probe import fit_logistic, pooled_features, probe_auc, probe_split
from pcrl.preprocessing.task_data import read_candidate_rows

CUBE = (8, 8, 8)


def make_ncc_processed(root: Path, scans: dict[str, str], *, per_class: int = 6, seed: int = 0) -> Path:
    """A cubes@ncc-like folder: ``scans`` maps scan id -> split; nodule cubes hold a bright blob."""
    rng = np.random.default_rng(seed)
    rows = []
    for sid in scans:
        labels = np.array([0] * per_class + [1] * per_class, dtype=np.uint8)
        cubes = rng.uniform(0.0, 0.4, size=(labels.size, *CUBE)).astype(np.float32)
        cubes[labels == 1, 2:6, 2:6, 2:6] += 0.5
        save_npy(root / "cubes" / f"{sid}.npy", cubes.astype(np.float16))
        rows += [{"seriesuid": sid, "index": i, "class": int(c), "file": f"cubes/{sid}.npy"}
                 for i, c in enumerate(labels)]
    with open(root / "candidates.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["seriesuid", "index", "class", "file"])
        writer.writeheader()
        writer.writerows(rows)
    split = {name: [s for s, g in scans.items() if g == name] for name in ("train", "val", "test")}
    write_json(root / "split.json", split)
    write_json(root / "fractions.json", {"0.5": split["train"][: max(1, len(split["train"]) // 2)],
                                         "1.0": split["train"]})
    write_contents(root, {"stage": "cubes", "task": "ncc", "dataset": "luna16"})  # as the cubes stage records it
    return root


class MeanEncoder(nn.Module):
    """An 'encoder' whose deepest map has two channels: the cube's mean and a constant."""

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        pooled = torch.nn.functional.avg_pool3d(x, 2)
        return [torch.cat([pooled, torch.ones_like(pooled)], dim=1)]


def _newton_logistic(z: np.ndarray, y: np.ndarray, weights: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Independent reference: Newton's method on the weighted, L2-penalised log-loss (numpy)."""
    x = np.hstack([z, np.ones((z.shape[0], 1))])
    theta = np.zeros(x.shape[1])
    penalty = np.diag([l2] * z.shape[1] + [0.0])  # the bias is not penalised
    for _ in range(50):
        p = 1 / (1 + np.exp(-x @ theta))
        grad = x.T @ (weights * (p - y)) + penalty @ theta
        hess = (x * (weights * p * (1 - p))[:, None]).T @ x + penalty
        theta -= np.linalg.solve(hess, grad)
    return theta[:-1], float(theta[-1])


def test_fit_logistic_matches_an_independent_newton_solver() -> None:
    rng = np.random.default_rng(3)
    features = rng.normal(size=(60, 4)) * [1.0, 3.0, 0.5, 2.0] + [0.0, 1.0, -2.0, 5.0]
    labels = (features[:, 0] + 0.3 * features[:, 1] + rng.normal(scale=1.0, size=60) > 0.8).astype(np.int64)
    probe = fit_logistic(torch.from_numpy(features), labels, l2=0.1)
    z = (features - features.mean(axis=0)) / features.std(axis=0)
    pos = labels.sum()
    weights = np.where(labels == 1, 0.5 / pos, 0.5 / (labels.size - pos))
    w_ref, b_ref = _newton_logistic(z, labels.astype(float), weights, 0.1)
    np.testing.assert_allclose(probe.weight.numpy(), w_ref, rtol=1e-5, atol=1e-7)
    assert probe.bias.item() == pytest.approx(b_ref, abs=1e-6)


def test_fit_logistic_rejects_one_class_and_non_finite_features() -> None:
    with pytest.raises(ValueError, match="both classes"):
        fit_logistic(torch.randn(5, 2), np.zeros(5))
    bad = torch.randn(4, 2)
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        fit_logistic(bad, np.array([0, 1, 0, 1]))


def test_probe_separates_what_the_features_separate_and_not_shuffled_labels(tmp_path: Path) -> None:
    root = make_ncc_processed(tmp_path, {"a": "train", "b": "train", "c": "test", "d": "test"})
    split = probe_split(str(root), ["a", "b"], ["c", "d"])
    assert len(split.train) == 24 and len(split.held_out) == 24
    assert probe_auc(MeanEncoder(), split) == pytest.approx(1.0)
    # the same cubes with the held-out labels shuffled: the probe can no longer rank them
    rng = np.random.default_rng(0)
    aucs = []
    for _ in range(20):
        shuffled = split.held_out.take(np.arange(len(split.held_out)))
        object.__setattr__(shuffled, "label", rng.permutation(shuffled.label))
        aucs.append(probe_auc(MeanEncoder(), type(split)(split.train, shuffled)))
    assert abs(float(np.mean(aucs)) - 0.5) < 0.1


def test_pooled_features_are_the_spatial_mean_of_the_deepest_map_and_restore_the_mode(tmp_path: Path) -> None:
    root = make_ncc_processed(tmp_path, {"a": "train", "c": "test"}, per_class=2)
    rows = read_candidate_rows(root, ["a"])
    encoder = MeanEncoder().train()
    feats = pooled_features(encoder, rows, batch_size=3)
    cubes = np.load(root / "cubes" / "a.npy").astype(np.float32)
    np.testing.assert_allclose(feats[:, 0].numpy(), cubes.reshape(len(cubes), -1).mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(feats[:, 1].numpy(), 1.0)
    assert encoder.training


def test_probe_split_refuses_shared_scans_a_missing_class_and_caps_classes(tmp_path: Path) -> None:
    root = make_ncc_processed(tmp_path, {"a": "train", "b": "train", "c": "test"})
    with pytest.raises(DataError, match=r"in both .*\['a'\]"):
        probe_split(str(root), ["a", "b"], ["a", "c"])
    capped = probe_split(str(root), ["a", "b"], ["c"], max_per_class=4)
    assert len(capped.train) == 8 and int(capped.train.label.sum()) == 4
    rows = list(csv.DictReader(open(root / "candidates.csv")))
    with open(root / "candidates.csv", "w", newline="") as fh:  # scan c loses its nodules
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if not (r["seriesuid"] == "c" and r["class"] == "1"))
    reseal(root)  # as if the stage had written it so
    with pytest.raises(DataError, match="held-out scans have no candidate of class 1"):
        probe_split(str(root), ["a", "b"], ["c"])


def test_probe_stage_scores_every_init_and_fraction(tmp_path: Path) -> None:
    from pcrl.stages.init_weights import run_init_weights
    from pcrl.stages.probe import run_probe

    processed = make_ncc_processed(tmp_path / "ncc", {"a": "train", "b": "train", "v": "val", "c": "test"})
    run_init_weights("scratch", checkpoint=None, out=tmp_path / "pretrain" / "scratch")
    finetune = {"inits": ["scratch"], "fractions": [0.5, 1.0], "seeds": [0, 1], "network": {"base": 2, "norm": "batch"}}
    out = run_probe(finetune, {"every": 1, "max_per_class": None, "l2": 0.01}, pretrained=tmp_path / "pretrain",
                    processed=processed, out=tmp_path / "probe")
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"scratch"} and set(metrics["scratch"]) == {"0.5", "1.0"}
    rows = list(csv.DictReader(open(out / "probe.csv")))
    assert [(r["fraction"], r["seed"]) for r in rows] == [("0.5", "0"), ("0.5", "1"), ("1.0", "0"), ("1.0", "1")]
    assert [int(r["train"]) for r in rows] == [12, 12, 24, 24] and all(int(r["test"]) == 12 for r in rows)
    for fraction in ("0.5", "1.0"):  # the mean over the seeds' random encoders
        values = [float(r["auc"]) for r in rows if r["fraction"] == fraction]
        assert metrics["scratch"][fraction] == pytest.approx(np.mean(values))
    assert (out / "probe.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(DataError, match="initialisation weights not found"):
        run_probe({**finetune, "inits": ["pcrl"]}, {"every": 1, "max_per_class": None, "l2": 0.01},
                  pretrained=tmp_path / "pretrain", processed=processed, out=tmp_path / "probe2")
    assert not (tmp_path / "probe2").exists()
