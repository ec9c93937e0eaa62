"""The LUNA16 phantom's opt-in ``ncc_task: shapes``: a task only learned features solve.

With the default ``vessels`` task the mean of a few central voxels separates nodules
from the other candidates. With ``shapes`` every candidate sits on a bright lung object
of the same HU and volume distributions, a sphere (nodule) or a capped tube (decoy).
These tests run the pipeline's own path (phantom files, the resample stage's 1 mm
resampling and [-1000, 1000] HU window, the NCC stage's 32x32x16 candidate cubes) on
30 scans, split by scan, and check that no single intensity feature of a cube separates
the classes while a small 3D CNN trained on the labelled cubes does.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pcrl.config import load_params, validate_params
from pcrl import phantom
from pcrl.preprocessing.candidates import write_ncc_cubes
from pcrl.preprocessing.normalization import Normalization
from pcrl.preprocessing.resample import resample_case
from pcrl.errors import ConfigError
from pcrl.stages.download import _phantom

SCANS, TRAIN_SCANS = 30, 15  # scans 0..14 train, 15..29 test
SHAPE = (96, 96, 48)  # the demo's phantom shape (params.yaml)
CUBE = (32, 32, 16)  # the NCC cube of params.yaml
HALF = np.array(CUBE) // 2


def hu(value: float) -> float:
    """A HU value on the [0, 1] scale of the resampled LUNA16 volumes."""
    return (value + 1000.0) / 2000.0


FEATURES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "central_4x4x4_mean": lambda x: x[:, HALF[0] - 2:HALF[0] + 2, HALF[1] - 2:HALF[1] + 2,
                                      HALF[2] - 2:HALF[2] + 2].mean(axis=(1, 2, 3)),
    "cube_mean": lambda x: x.mean(axis=(1, 2, 3)),
    "cube_max": lambda x: x.max(axis=(1, 2, 3)),
    "cube_std": lambda x: x.std(axis=(1, 2, 3)),
    "voxels_above_-400HU": lambda x: (x > hu(-400.0)).sum(axis=(1, 2, 3)).astype(np.float64),
}


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic: P(positive > negative), ties 1/2."""
    pos = np.asarray(scores, dtype=np.float64)[labels == 1][:, None]
    neg = np.asarray(scores, dtype=np.float64)[labels == 0][None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


@pytest.fixture(scope="module")
def shape_cubes(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cubes (n, 32, 32, 16) float32 in [0, 1], class (n,), scan number (n,)) of 30 scans."""
    root = tmp_path_factory.mktemp("shapes")
    raw, interim, ncc = root / "raw", root / "interim", root / "ncc"
    phantom.generate_luna16(raw, scans=SCANS, subsets=10, seed=0, shape=SHAPE, ncc_task="shapes")
    with open(raw / "candidates.csv", newline="") as fh:  # rows by scan, in scan order
        uids = list(dict.fromkeys(row["seriesuid"] for row in csv.DictReader(fh)))
    assert len(uids) == SCANS
    window = Normalization("window", min=-1000.0, max=1000.0)
    cases = [
        resample_case({"id": uid, "image": str(raw / f"subset{i % 10}" / f"{uid}.mhd"), "group": f"subset{i % 10}"},
                      interim, spacing=(1.0, 1.0, 1.0), normalization=window)
        for i, uid in enumerate(uids)
    ]
    rows = write_ncc_cubes(cases, interim, raw / "candidates.csv", ncc, size=CUBE, progress=False)
    files = {uid: np.load(ncc / f"cubes/{uid}.npy").astype(np.float32) for uid in uids}
    cubes = np.stack([files[r["seriesuid"]][r["index"]] for r in rows])
    labels = np.array([r["class"] for r in rows])
    scans = np.array([uids.index(r["seriesuid"]) for r in rows])
    return cubes, labels, scans


def test_shapes_scans_hold_both_classes_around_their_objects(shape_cubes) -> None:
    """2-4 nodules and a similar number of decoys per scan; positives are annotated nodules."""
    _, labels, scans = shape_cubes
    for i in range(SCANS):
        mine = labels[scans == i]
        assert 1 <= mine.sum() <= 4 and 1 <= (mine == 0).sum() <= 6, (i, mine)
    assert 0.3 < labels.mean() < 0.5
    case = phantom.luna16_case(0, 3, SHAPE, "shapes")
    positives = [np.array(c.center) for c in case.candidates if c.label == 1]
    assert len(positives) == len(case.nodules)
    for nodule in case.nodules:
        assert 9.0 <= nodule.diameter_mm <= 13.5
        assert min(np.linalg.norm(p - np.array(nodule.center)) for p in positives) <= 0.5 + 1e-9


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_shapes_no_intensity_feature_separates_the_classes(shape_cubes, feature: str) -> None:
    """Equal HU, equal volume: each hand-made feature is near chance on the test scans."""
    cubes, labels, scans = shape_cubes
    test = scans >= TRAIN_SCANS
    value = auc(FEATURES[feature](cubes[test]), labels[test])
    assert max(value, 1.0 - value) <= 0.6, f"{feature}: test AUC {value:.3f}"


@pytest.mark.pipeline  # 300 training steps of a 3D CNN: ~3 min on 2 cores
def test_shapes_small_cnn_learns_the_shapes(shape_cubes) -> None:
    """A few-layer 3D CNN trained on the labelled cubes of 15 scans tells the other 15 apart."""
    cubes, labels, scans = shape_cubes
    train, test = scans < TRAIN_SCANS, scans >= TRAIN_SCANS
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        net = nn.Sequential(
            nn.AvgPool3d(2),  # 2 mm voxels: the objects are 10-20 mm across
            nn.Conv3d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
            nn.Conv3d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
            nn.Conv3d(32, 32, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(32, 1),
        )
        optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
        x = torch.from_numpy(cubes[train][:, None])
        y = torch.from_numpy(labels[train].astype(np.float32))
        for _ in range(300):
            batch = rng.integers(0, len(y), size=32)
            xb = x[batch]
            for dim in (2, 3, 4):  # flips along x, y, z
                if rng.random() < 0.5:
                    xb = xb.flip(dim)
            if rng.random() < 0.5:  # swap x and y (square in-plane voxels)
                xb = xb.transpose(2, 3)
            loss = nn.functional.binary_cross_entropy_with_logits(net(xb)[:, 0], y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            scores = net(torch.from_numpy(cubes[test][:, None]))[:, 0].numpy()
    finally:
        torch.set_num_threads(threads)
    assert auc(scores, labels[test]) >= 0.9


def test_vessels_is_the_default_and_unchanged_by_the_option(tmp_path: Path) -> None:
    """The default task is ``vessels``; naming it gives the same case and files."""
    default, vessels = phantom.luna16_case(0, 0), phantom.luna16_case(0, 0, ncc_task="vessels")
    assert default.image.tobytes() == vessels.image.tobytes()
    assert (default.case_id, default.nodules, default.candidates) == (vessels.case_id, vessels.nodules,
                                                                        vessels.candidates)
    shapes = phantom.luna16_case(0, 0, ncc_task="shapes")
    assert shapes.case_id == default.case_id and shapes.spacing == default.spacing  # same draws up to the lesions
    assert shapes.image.tobytes() != default.image.tobytes()
    phantom.generate_luna16(tmp_path / "a", scans=2, subsets=1, shape=(80, 80, 20))
    phantom.generate_luna16(tmp_path / "b", scans=2, subsets=1, shape=(80, 80, 20), ncc_task="vessels")
    for name in ("annotations.csv", "candidates.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_download_stage_passes_ncc_task_to_the_phantom(tmp_path: Path) -> None:
    """``data.phantom.luna16.ncc_task`` reaches the generator through the download stage."""
    data = {"phantom": {"seed": 2, "luna16": {"scans": 2, "subsets": 1, "shape": [96, 96, 48],
                                              "ncc_task": "shapes"}}}
    assert _phantom("luna16", data, tmp_path / "luna16", (0, 1))
    with open(tmp_path / "luna16" / "candidates.csv", newline="") as fh:
        written = [(r["seriesuid"], int(r["class"])) for r in csv.DictReader(fh)]
    cases = [phantom.luna16_case(2, i, (96, 96, 48), "shapes") for i in range(2)]
    assert written == [(c.case_id, k.label) for c in cases for k in c.candidates]


def test_bad_ncc_task_is_a_config_error(tmp_path: Path) -> None:
    """The generator and the params schema both reject an unknown task, naming the key."""
    with pytest.raises(ConfigError, match="'ncc_task' must be one of"):
        phantom.generate_luna16(tmp_path / "luna16", scans=1, ncc_task="spheres")
    assert not (tmp_path / "luna16").exists()
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    params["data"]["phantom"]["luna16"]["ncc_task"] = "spheres"
    with pytest.raises(ConfigError, match=r"data\.phantom\.luna16\.ncc_task"):
        validate_params(params)
    params["data"]["phantom"]["luna16"]["ncc_task"] = "shapes"
    validate_params(params)
