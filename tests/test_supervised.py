"""pcrl.finetune.supervised: supervised pretraining, the study's positive control.

A tiny NCC-like task: nodule cubes hold a bright 4x4x4 block at a random place; the other
cubes get the same 64 bright voxels scattered at random, so mean intensity and histogram are
the same and only the spatial structure tells the classes apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pcrl.evaluation.probe import fit_logistic
from pcrl.preprocessing.task_data import CandidateRows
from pcrl.finetune.supervised import supervised_pretrain
from pcrl.networks.factory import pretraining_network

SHAPE = (16, 16, 8)
EPOCHS = 8


def make_rows(root: Path, n: int, seed: int) -> tuple[CandidateRows, torch.Tensor, np.ndarray]:
    """``n`` cubes in two files (two scans), alternating classes; also the cubes and labels."""
    rng = np.random.default_rng(seed)
    labels = np.array([0, 1] * (n // 2), dtype=np.uint8)
    cubes = rng.normal(0.3, 0.05, size=(n, *SHAPE))
    for i, label in enumerate(labels):
        if label:
            x, y, z = rng.integers(0, 13), rng.integers(0, 13), rng.integers(0, 5)
            cubes[i, x:x + 4, y:y + 4, z:z + 4] += 0.6
        else:
            cubes[i].reshape(-1)[rng.choice(cubes[i].size, 64, replace=False)] += 0.6
    cubes = cubes.astype(np.float16)
    root.mkdir(parents=True, exist_ok=True)
    half = n // 2
    np.save(root / "a.npy", cubes[:half])
    np.save(root / "b.npy", cubes[half:])
    rows = CandidateRows((root / "a.npy", root / "b.npy"), np.repeat([0, 1], half), np.tile(np.arange(half), 2),
                         labels, np.repeat(["a", "b"], half))
    return rows, torch.from_numpy(cubes.astype(np.float32))[:, None], labels


def _encoder(init_seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(init_seed)
    return pretraining_network("unet3d", in_channels=1, base=2, norm="batch", proj_dim=8)


def _pooled(encoder: torch.nn.Module, cubes: torch.Tensor) -> torch.Tensor:
    encoder.eval()
    with torch.no_grad():
        return encoder.encode(cubes)[-1].mean(dim=(2, 3, 4)).double()


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney: the share of (nodule, other) pairs ranked right, ties one half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float(sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg)))


def _probe_auc(train: torch.Tensor, train_labels: np.ndarray, test: torch.Tensor, test_labels: np.ndarray) -> float:
    probe = fit_logistic(train, train_labels, l2=1e-2)
    return _auc(probe.scores(test).numpy(), test_labels)


@pytest.fixture()
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def data(tmp_path: Path):
    return make_rows(tmp_path / "train", 24, seed=0), make_rows(tmp_path / "held_out", 24, seed=1)


def test_supervised_pretraining_learns_features_that_separate_the_classes(single_thread, data) -> None:
    (rows, cubes, labels), (_, held_out, held_out_labels) = data
    encoder = _encoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    # The random init (this seed) does not solve the task on held-out cubes: the test has teeth.
    held_out_before = _probe_auc(_pooled(encoder, cubes), labels, _pooled(encoder, held_out), held_out_labels)
    assert held_out_before < 0.8
    encoder.train()

    returned = supervised_pretrain(encoder, rows, epochs=EPOCHS, batch_size=8, lr=1e-2, seed=0)

    assert returned is encoder
    assert not encoder.training and not any(m.training for m in encoder.modules())
    encoder_convs = [k for k in before if k.startswith("down_tr") and "conv" in k and k.endswith("weight")]
    assert len(encoder_convs) >= 8  # two per level, four levels
    assert all(not torch.equal(encoder.state_dict()[k], before[k]) for k in encoder_convs)
    train_features = _pooled(encoder, cubes)
    assert _probe_auc(train_features, labels, train_features, labels) >= 0.95
    assert _probe_auc(train_features, labels, _pooled(encoder, held_out), held_out_labels) >= 0.9


def test_the_same_seed_gives_the_same_weights_another_seed_others(single_thread, data) -> None:
    (rows, _, _), _ = data
    runs = [supervised_pretrain(_encoder(), rows, epochs=2, batch_size=8, lr=1e-2, seed=seed).state_dict()
            for seed in (3, 3, 4)]
    assert runs[0].keys() == runs[1].keys() == runs[2].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])
