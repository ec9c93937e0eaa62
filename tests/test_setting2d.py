"""The 2D setting's inputs (pcrl/preprocessing/setting2d.py and the 2D branches of the resample, cubes and
pretrain stages), on the ChestX-ray14 phantom run through the real download stage."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pcrl.datasets.chestxray14 import FINDINGS, read_entries, read_split_lists
from pcrl.preprocessing.pair_config import PairConfig
from pcrl.preprocessing.pair_sampling import sample_pairs
from pcrl.preprocessing.pretrain_pairs import case_rng
from pcrl.preprocessing.pairs import PairsDataset
from pcrl.preprocessing.setting2d import patient_split, write_pairs_2d
from pcrl.preprocessing.radiographs import open_store, resize_radiograph
from pcrl.errors import ConfigError, DataError
from pcrl.stages.cubes import run_cubes
from pcrl.stages.download import run_download
from pcrl.settings import SETTINGS
from pcrl.stages.resample import run_resample
from test_records import reseal

PHANTOM = {"patients": 10, "images_per_patient": [1, 3], "size": [64, 64], "test_fraction": 0.3}
CUBES = {"val": 0.25, "pairs_per_image": 3, "images_per_file": 4, "crop_sizes": [[24, 24, 1], [32, 32, 1]],
         "cube_size": [16, 16, 1], "min_iou": 0.25}


@pytest.fixture(scope="module")
def chest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/raw and data/interim of the phantom in 2 download and 3 resample shards."""
    root = tmp_path_factory.mktemp("chest")
    data = {"source": "phantom", "phantom": {"seed": 1, "chestxray14": PHANTOM}}
    for k in range(2):
        run_download("chestxray14", data, out=root / "raw" / str(k), shard=(k, 2), progress=False)
    for k in range(3):
        run_resample({"size": [32, 48], "expected_size": [64, 64]}, raw=root / "raw", out=root / "interim" / str(k),
                     shard=(k, 3), progress=False)
    return root


def _originals(root: Path) -> dict[str, Path]:
    return {p.name: p for k in range(2) for p in (root / "raw" / str(k) / "images").iterdir()}


def test_the_store_holds_every_radiograph_once_resized_in_name_order(chest: Path) -> None:
    from PIL import Image

    store = open_store(chest / "interim")
    originals = _originals(chest)
    assert list(store.names) == sorted(originals)
    for i in (0, len(store) - 1):
        pixels = np.asarray(Image.open(originals[store.names[i]]).convert("L"))
        np.testing.assert_array_equal(store.image(i), resize_radiograph(pixels, (32, 48)))


def test_patient_split_holds_out_the_official_test_list(chest: Path) -> None:
    run_cubes("chest14", {"val": 0.25, "fractions": [0.5, 1.0]}, seed=0, raw=chest / "raw",
              interim=chest / "interim", out=chest / "chest14", progress=False)
    split = json.loads((chest / "chest14" / "split.json").read_text())
    test_patients = {n[:8] for k in range(2) for n in read_split_lists(chest / "raw" / str(k)).test}
    assert set(split["test"]) == test_patients
    assert not set(split["train"]) & set(split["val"]) and not (set(split["train"]) | set(split["val"])) & test_patients
    train_val = 10 - len(test_patients)
    assert len(split["val"]) == int(0.25 * train_val + 0.5)  # rounded half up
    fractions = json.loads((chest / "chest14" / "fractions.json").read_text())
    assert set(fractions["0.5"]) < set(fractions["1.0"]) == set(split["train"])


def test_chest14_label_table_is_the_csv_in_store_order(chest: Path) -> None:
    run_cubes("chest14", {"val": 0.25, "fractions": [1.0]}, seed=0, raw=chest / "raw", interim=chest / "interim",
              out=chest / "table", progress=False)
    with open(chest / "table" / "images.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    entries = {e.image: e for k in range(2) for e in read_entries(chest / "raw" / str(k))}
    assert [r["image"] for r in rows] == list(open_store(chest / "interim").names)
    for row in rows:
        assert row["patient"] == row["image"][:8]
        assert tuple(int(row[f]) for f in FINDINGS) == entries[row["image"]].labels


def test_2d_pairs_are_the_pair_rule_per_image_whatever_the_chunking(chest: Path, tmp_path: Path) -> None:
    store = open_store(chest / "interim")
    config = PairConfig(crop_sizes=((24, 24, 1), (32, 32, 1)), cube_size=(16, 16, 1), min_iou=0.25, min_fraction=0.0)
    split = patient_split([{"id": Path(n).stem, "group": "train_val"} for n in store.names]
                          + [{"id": "99999999_000", "group": "test"}], val=0.25, seed=0)
    index, ids = write_pairs_2d(store, split, tmp_path / "a", pairs_per_image=3, images_per_file=4,
                                    config=config, seed=5, progress=False)
    assert [e["id"] for e in index] == ids["train"] + ids["val"] and all(len(e["images"]) <= 4 for e in index)
    first = index[0]
    pairs = np.load(tmp_path / "a" / first["file"])
    assert pairs.shape == (3 * len(first["images"]), 2, 16, 16, 1) and pairs.dtype == np.float16
    name = first["images"][1]
    image = store.image(list(store.names).index(name)).astype(np.float32)[:, :, None] / 255.0
    expected, _ = sample_pairs(image, 3, config, case_rng(5, name), case_id=name)
    np.testing.assert_array_equal(pairs[3:6], expected.astype(np.float16))
    one_file, _ = write_pairs_2d(store, split, tmp_path / "b", pairs_per_image=3, images_per_file=1000,
                                     config=config, seed=5, progress=False)
    together = np.concatenate([np.load(tmp_path / "a" / e["file"]) for e in index if e["group"] == "train"])
    np.testing.assert_array_equal(np.load(tmp_path / "b" / one_file[0]["file"]), together)
    with pytest.raises(ConfigError, match=r"\(x, y, 1\)"):
        write_pairs_2d(store, split, tmp_path / "c", pairs_per_image=1, images_per_file=1,
                           config=PairConfig(crop_sizes=((8, 8, 2),), cube_size=(8, 8, 2)), seed=0, progress=False)


def test_the_pretrain2d_task_feeds_2d_views_to_the_pretraining(chest: Path) -> None:
    split = run_cubes("pretrain2d", CUBES, seed=0, raw=chest / "raw", interim=chest / "interim",
                      out=chest / "pretrain2d", progress=False)
    ids = json.loads((chest / "pretrain2d" / "split.json").read_text())
    assert json.loads((chest / "pretrain2d" / "patients.json").read_text()) == split
    index = json.loads((chest / "pretrain2d" / "pairs.json").read_text())
    for group in ("train", "val"):  # no test patient, and no val patient among the training pairs
        seen = {patient for e in index if e["group"] == group for patient in (n[:8] for n in e["images"])}
        assert seen == set(split[group])
    dataset = PairsDataset([chest / "pretrain2d" / "pairs" / f"{i}.npy" for i in ids["train"]], spatial_dims=2)
    x1, x2 = dataset[0]
    assert x1.shape == x2.shape == (1, 16, 16)
    assert PairsDataset([chest / "pretrain2d" / "pairs" / f"{ids['train'][0]}.npy"])[0][0].shape == (1, 16, 16, 1)
    with pytest.raises(DataError, match="not 2D"):
        PairsDataset([_three_d(chest)], spatial_dims=2)


def _three_d(root: Path) -> Path:
    path = root / "volume_pairs.npy"
    np.save(path, np.zeros((2, 2, 8, 8, 4), dtype=np.float16))
    return path


def test_cubes_refuse_a_store_that_is_not_the_downloaded_dataset(chest: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(chest / "interim", tmp_path / "interim")
    index_file = tmp_path / "interim" / "1" / "index.json"
    index = json.loads(index_file.read_text())
    index[0]["image"] = "00000099_000.png"  # a store of another dataset
    index_file.write_text(json.dumps(index))
    with pytest.raises(DataError, match=r"interim/1/index\.json: 396 bytes, but its stage wrote 469"):
        run_cubes("chest14", {"val": 0.25, "fractions": [1.0]}, seed=0, raw=chest / "raw",
                  interim=tmp_path / "interim", out=tmp_path / "out", progress=False)
    reseal(index_file.parent)  # as if the stage had written it so
    with pytest.raises(DataError, match=r"00000099_000\.png.*rerun the resample stage"):
        run_cubes("chest14", {"val": 0.25, "fractions": [1.0]}, seed=0, raw=chest / "raw",
                  interim=tmp_path / "interim", out=tmp_path / "out", progress=False)
    shutil.rmtree(tmp_path / "interim" / "2")
    with pytest.raises(DataError, match=r"interim: 2 shard folder\(s\) for 3 shards: shard\(s\) 2 missing"):
        run_cubes("pretrain2d", CUBES, seed=0, raw=chest / "raw", interim=tmp_path / "interim",
                  out=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_the_2d_settings_put_the_2d_keys_over_the_3d_ones() -> None:
    pretrain = {"methods": ["pcrl"], "epochs": 3, "lr": 0.01, "network": {"base": 4, "norm": "batch"},
                "pcrl": {"queue_size": 256, "loss": "nce"}, "corruption": {"paint_prob": 0.9}}
    pretrain2d = {"methods": ["moco", "pcrl"],
                  "settings": {"epochs": 5, "network": {"arch": "resnet18_unet2d", "base": 8},
                               "pcrl": {"queue_size": 64}}}
    merged = SETTINGS["2d"].pretrain_params({"pretrain": pretrain, "pretrain2d": pretrain2d})
    assert SETTINGS["3d"].pretrain_params({"pretrain": pretrain, "pretrain2d": pretrain2d}) == pretrain
    assert merged == {"methods": ["moco", "pcrl"], "epochs": 5, "lr": 0.01,
                      "network": {"base": 8, "norm": "batch", "arch": "resnet18_unet2d"},
                      "pcrl": {"queue_size": 64, "loss": "nce"}, "corruption": {"paint_prob": 0.9}}
    assert pretrain["network"] == {"base": 4, "norm": "batch"}  # the 3D settings untouched


def test_previews_show_a_2d_image_whole() -> None:
    from pcrl.previews import middle_slices

    images = {name: torch.arange(2 * 1 * 4 * 5, dtype=torch.float32).reshape(2, 1, 4, 5) + i
              for i, name in enumerate(("clean", "input", "target", "output"))}
    slices = middle_slices(images)
    np.testing.assert_array_equal(slices["target"], images["target"][:, 0].numpy())


def test_dark_radiographs_still_give_pairs_no_ct_foreground_rule(chest: Path, tmp_path: Path) -> None:
    """The CT rule (half of a crop at or above -150 HU on the [0, 1] scale, i.e. >= 0.425)
    would refuse every crop of an underexposed radiograph; the 2D pairs have no such rule."""
    import shutil

    shutil.copytree(chest / "interim", tmp_path / "interim")
    for shard in (tmp_path / "interim").iterdir():
        images = np.load(shard / "images.npy")
        np.save(shard / "images.npy", (images // 4).astype(np.uint8))  # all below 64/255
        reseal(shard)
    run_cubes("pretrain2d", CUBES, seed=0, raw=chest / "raw", interim=tmp_path / "interim", out=tmp_path / "pairs",
              progress=False)
    index = json.loads((tmp_path / "pairs" / "pairs.json").read_text())
    split = json.loads((tmp_path / "pairs" / "patients.json").read_text())
    used = [n for n in open_store(chest / "interim").names if n[:8] in {*split["train"], *split["val"]}]
    assert sum(e["n"] for e in index) == 3 * len(used)
    assert max(float(np.load(tmp_path / "pairs" / e["file"]).max()) for e in index) < 0.25


def test_a_phantom_shard_without_patients_writes_an_empty_manifest(tmp_path: Path) -> None:
    data = {"source": "phantom", "phantom": {"seed": 1, "chestxray14": {**PHANTOM, "patients": 2}}}
    run_download("chestxray14", data, out=tmp_path / "2", shard=(2, 3), progress=False)
    manifest = json.loads((tmp_path / "2" / "manifest.json").read_text())
    assert manifest["cases"] == [] and manifest["dataset"] == "chestxray14"
