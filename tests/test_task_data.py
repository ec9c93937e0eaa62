"""pcrl.preprocessing.task_data: splits, NCC cubes with per-epoch negatives, segmentation patches;
pcrl.preprocessing.chest_labels: labelled radiographs of a patient split."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pcrl.atomic import save_npy, write_json
from pcrl.io.images import array_to_image, write_image
from pcrl.errors import ConfigError, DataError
from pcrl.records import write_contents
from pcrl.preprocessing.task_data import (
    cube_batches,
    load_case,
    load_split,
    read_candidate_rows,
    read_volume_cases,
)
from pcrl.finetune.datasets import CandidateCubeSet, PatchSet

GEOMETRY = {"spacing": (1.0, 1.0, 1.0), "origin": (0.0, 0.0, 0.0),
            "direction": (1, 0, 0, 0, 1, 0, 0, 0, 1)}


def seal(folder: Path, stage: str = "cubes", **meta) -> None:
    """Record the folder's files as its stage would (``contents.json``, pcrl.records),
    keeping what an earlier record of the folder says of it (task, dataset)."""
    earlier = json.loads((folder / "contents.json").read_text()) if (folder / "contents.json").is_file() else {}
    kept = {k: v for k, v in earlier.items() if k not in ("format", "files")}
    write_contents(folder, {**kept, "stage": stage, **meta})


def write_split(folder: Path, train: list[str], val: list[str], test: list[str],
                fractions: dict[str, list[str]] | None = None, task: str | None = None) -> None:
    write_json(folder / "split.json", {"train": train, "val": val, "test": test})
    write_json(folder / "fractions.json", fractions or {"1.0": train})
    seal(folder, **({} if task is None else {"task": task}))


def write_ncc(folder: Path, labels: dict[str, list[int]], size=(8, 8, 8)) -> None:
    """cubes/<id>.npy whose voxels all equal the candidate's global row number."""
    rows, number = [], 0
    for case, classes in labels.items():
        cubes = np.stack([np.full(size, number + i, np.float16) for i in range(len(classes))])
        save_npy(folder / "cubes" / f"{case}.npy", cubes)
        for i, cls in enumerate(classes):
            rows.append({"seriesuid": case, "index": i, "class": cls, "file": f"cubes/{case}.npy"})
        number += len(classes)
    with open(folder / "candidates.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["seriesuid", "index", "class", "file"])
        writer.writeheader()
        writer.writerows(rows)
    seal(folder)


def write_volumes(folder: Path, cases: dict[str, tuple[np.ndarray, np.ndarray]], dataset: str = "msd_liver"
                  ) -> None:
    """NIfTI images (C, x, y, z) or (x, y, z) and labels, and cases.json."""
    entries = []
    for case, (image, label) in cases.items():
        write_image(folder / f"{case}.nii.gz", array_to_image(image.astype(np.float32), **GEOMETRY))
        write_image(folder / f"{case}_label.nii.gz", array_to_image(label.astype(np.uint8), **GEOMETRY))
        entries.append({"id": case, "image": f"{case}.nii.gz", "label": f"{case}_label.nii.gz"})
    write_json(folder / "cases.json", entries)
    seal(folder, "resample", dataset=dataset, shard=[0, 1])


#: The images.csv header the chest14 data stage writes (Wang et al.'s 14 findings, in order).
CHEST_HEADER = ["image", "patient", "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration",
                "Mass", "Nodule", "Pneumonia", "Pneumothorax", "Consolidation", "Edema",
                "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]


def write_radiographs(interim: Path, images: dict[str, np.ndarray], shards: int = 2) -> None:
    """The 2D preprocessing's shards by hand: shard k holds positions k, k + n, ... of the
    sorted names, as images.npy (n, H, W) uint8 and index.json."""
    names = sorted(images)
    for k in range(shards):
        positions = list(range(k, len(names), shards))
        folder = interim / str(k)
        folder.mkdir(parents=True)
        np.save(folder / "images.npy", np.stack([images[names[p]] for p in positions]).astype(np.uint8))
        index = [{"image": names[p], "row": r, "position": p} for r, p in enumerate(positions)]
        (folder / "index.json").write_text(json.dumps(index))
        seal(folder, "resample", dataset="chestxray14", shard=[k, shards])


def write_images_csv(processed: Path, rows: list[list], header: list[str] = CHEST_HEADER) -> Path:
    """images.csv: one [image, patient, 14 flags] row per image."""
    path = processed / "images.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    seal(processed)
    return path


def liver_case(seed: int, shape=(20, 20, 12)) -> tuple[np.ndarray, np.ndarray]:
    """A bright box (label 1) with a tumour core (label 2) in noise."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    label[4:14, 5:15, 3:9] = 1
    label[8:10, 8:10, 5:7] = 2
    image = 0.2 * rng.random(shape) + 0.6 * (label > 0)
    return image.astype(np.float32), label


# ------------------------------------------------------------------ splits


def test_split_and_fraction(tmp_path: Path) -> None:
    write_split(tmp_path, ["a", "b", "c", "d"], ["v"], ["t"], {"0.5": ["c", "a"], "1.0": ["c", "a", "b", "d"]})
    split = load_split(tmp_path, 0.5)
    assert (split.train, split.val, split.test) == (("c", "a"), ("v",), ("t",))
    with pytest.raises(ConfigError, match=r"label fraction 0.2 is not in .*fractions.json .*'0.5', '1.0'"):
        load_split(tmp_path, 0.2)


@pytest.mark.parametrize(
    ("split", "fractions", "message"),
    [
        ({"train": ["a"], "val": [], "test": ["t"]}, {"1.0": ["a"]}, "the val split is empty"),
        ({"train": ["a"], "val": ["v"], "test": ["t"]}, {"1.0": []}, "label fraction 1.0 of the train split is empty"),
        ({"train": ["a", "t"], "val": ["v"], "test": ["t"]}, {"1.0": ["a", "t"]}, r"share case ids \['t'\]"),
        ({"train": ["a"], "val": ["v"], "test": ["t"]}, {"1.0": ["a", "x"]}, r"not in the train split: \['x'\]"),
    ],
)
def test_bad_splits_are_refused(tmp_path: Path, split: dict, fractions: dict, message: str) -> None:
    write_json(tmp_path / "split.json", split)
    write_json(tmp_path / "fractions.json", fractions)
    seal(tmp_path)
    with pytest.raises(DataError, match=message):
        load_split(tmp_path, 1.0)


# ------------------------------------------------------------------ NCC


def test_candidate_rows_and_cube_values(tmp_path: Path) -> None:
    write_ncc(tmp_path, {"s1": [0, 1, 0], "s2": [0, 0], "s3": [1]})
    rows = read_candidate_rows(tmp_path, ["s1", "s3"])
    assert rows.label.tolist() == [0, 1, 0, 1] and rows.case.tolist() == ["s1"] * 3 + ["s3"]
    batches = list(cube_batches(rows, 3))
    assert [b[0].shape for b in batches] == [(3, 1, 8, 8, 8), (1, 1, 8, 8, 8)]
    values = torch.cat([b[0] for b in batches])[:, 0, 0, 0, 0].tolist()
    assert values == [0.0, 1.0, 2.0, 5.0]  # s3's cube is global row 5


def test_bad_candidates_are_named(tmp_path: Path) -> None:
    write_ncc(tmp_path, {"s1": [0, 2]})
    with pytest.raises(DataError, match=r"candidates.csv: label value.s. 2 are not classes of task ncc"):
        read_candidate_rows(tmp_path, ["s1"])
    write_ncc(tmp_path, {"s1": [0, 1]})
    with pytest.raises(DataError, match=r"no candidate for scan.s. \['s9'\]"):
        read_candidate_rows(tmp_path, ["s1", "s9"])
    save_npy(tmp_path / "cubes" / "s1.npy", np.zeros((1, 8, 8, 8), np.float16))  # 2 rows named
    with pytest.raises(DataError, match=r"s1.npy: 1152 bytes, but its stage wrote 2176"):  # changed after its stage
        read_candidate_rows(tmp_path, ["s1"])
    seal(tmp_path)  # as its stage had written it
    with pytest.raises(DataError, match=r"s1.npy: shape \(1, 8, 8, 8\) does not hold rows up to 1"):
        read_candidate_rows(tmp_path, ["s1"])


def test_epoch_holds_every_positive_and_fresh_negatives(tmp_path: Path) -> None:
    write_ncc(tmp_path, {"s1": [1, 0, 0, 0, 0, 0], "s2": [1, 0, 0, 0, 0, 0, 0, 0]})
    rows = read_candidate_rows(tmp_path, ["s1", "s2"])  # 2 positives, 12 negatives
    data = CandidateCubeSet(rows, negatives_per_positive=2.0, seed=0)
    assert len(data) == 2 + 4
    labels = [data[i][1].item() for i in range(len(data))]
    assert labels == [1, 1, 0, 0, 0, 0]
    first = [data.candidate(i) for i in range(len(data))]
    assert first[:2] == [0, 6] and len(set(first)) == 6  # positives first, negatives distinct
    data.seed = 1  # another epoch's base seed (see loader_seed)
    second = [data.candidate(i) for i in range(len(data))]
    assert second[:2] == first[:2] and second[2:] != first[2:]
    assert CandidateCubeSet(rows, None).negatives_per_epoch == 12


def test_negatives_change_per_epoch_through_the_loader(tmp_path: Path) -> None:
    write_ncc(tmp_path, {"s1": [1] + [0] * 30})
    data = CandidateCubeSet(read_candidate_rows(tmp_path, ["s1"]), negatives_per_positive=3.0)

    def epoch(seed: int, workers: int) -> list[float]:
        loader = DataLoader(data, batch_size=2, num_workers=workers,
                            generator=torch.Generator().manual_seed(seed))
        return [v for x, _ in loader for v in x[:, 0, 0, 0, 0].tolist()]

    assert epoch(5, 1) == epoch(5, 2)  # a function of the loader's seed, not of the worker
    assert epoch(5, 1) != epoch(6, 1)  # a new epoch draws new negatives
    assert epoch(5, 1)[0] == 0.0  # the positive


def test_one_class_training_set_is_refused(tmp_path: Path) -> None:
    write_ncc(tmp_path, {"s1": [0, 0]})
    with pytest.raises(DataError, match="0 positive.s. and 2 negative.s.: both classes"):
        CandidateCubeSet(read_candidate_rows(tmp_path, ["s1"]), 1.0)


# ------------------------------------------------------------------ volumes and patches


def test_load_case_checks_channels_and_labels(tmp_path: Path) -> None:
    image, label = liver_case(0)
    brain = np.stack([image] * 4)
    write_volumes(tmp_path, {"liver": (image, label), "brain": (brain, label), "bad": (image, label * 2)})
    liver, brain_case, bad = read_volume_cases(tmp_path, ["liver", "brain", "bad"])
    x, y = load_case(liver, "lcs")
    assert x.shape == (1, 20, 20, 12) and y.shape == (1, 20, 20, 12)
    np.testing.assert_array_equal(y[0], label > 0)
    x, y = load_case(brain_case, "bms")
    assert x.shape == (4, 20, 20, 12) and y.shape == (3, 20, 20, 12)
    np.testing.assert_allclose(x[2], image, atol=1e-6)
    with pytest.raises(DataError, match="liver.nii.gz: 1 channel.s., task bms needs 4"):
        load_case(liver, "bms")
    with pytest.raises(DataError, match=r"bad_label.nii.gz: label value.s. 4 are not classes of task lcs"):
        load_case(bad, "lcs")
    with pytest.raises(DataError, match=r"cases.json: no case \['zzz'\]"):
        read_volume_cases(tmp_path, ["zzz"])


def test_patches_are_seeded_padded_and_centred_on_the_foreground(tmp_path: Path) -> None:
    write_volumes(tmp_path, {"a": liver_case(0), "b": liver_case(1)})
    cases = read_volume_cases(tmp_path, ["a", "b"])
    data = PatchSet(cases, "lcs", (16, 16, 16), patches_per_volume=3, foreground_prob=1.0, seed=0)
    images, targets = data[0]
    assert images.shape == (3, 1, 16, 16, 16) and targets.shape == (3, 1, 16, 16, 16)
    assert images.dtype == torch.float32
    # z is 12 < 16: padded (2 each side); the valid centres all fall in the liver box
    assert bool((targets[:, 0, 8, 8, 8] == 1).all())
    again, _ = data[0]
    assert torch.equal(images, again)
    data.seed = 1
    assert not torch.equal(images, data[0][0])
    # MONAI moves centres inside the valid range; a small central foreground keeps
    # background centres on the background
    label = np.zeros((32, 32, 32), np.uint8)
    label[14:18, 14:18, 14:18] = 1
    write_volumes(tmp_path / "small", {"c": (np.random.default_rng(0).random((32, 32, 32)), label)})
    small = read_volume_cases(tmp_path / "small", ["c"])
    fg = PatchSet(small, "lcs", (8, 8, 8), patches_per_volume=6, foreground_prob=1.0)[0][1]
    bg = PatchSet(small, "lcs", (8, 8, 8), patches_per_volume=6, foreground_prob=0.0)[0][1]
    assert bool((fg[:, 0, 4, 4, 4] == 1).all()) and bool((bg[:, 0, 4, 4, 4] == 0).all())


def test_patch_settings_are_checked(tmp_path: Path) -> None:
    write_volumes(tmp_path, {"a": liver_case(0)})
    cases = read_volume_cases(tmp_path, ["a"])
    with pytest.raises(ConfigError, match="divisible by 8"):
        PatchSet(cases, "lcs", (12, 16, 16), 2)
    with pytest.raises(ConfigError, match="foreground_prob"):
        PatchSet(cases, "lcs", (16, 16, 16), 2, foreground_prob=1.5)


# ------------------------------------------------------------------ Chest14 radiographs


def _chest_world(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray], list[list]]:
    """3 patients x 2 images of 32x32 in 2 shards; labels: finding f of image j is (j + f) % 3 == 0."""
    rng = np.random.default_rng(0)
    names = [f"0000000{p}_00{i}.png" for p in (1, 2, 3) for i in (0, 1)]
    images = {name: rng.integers(0, 256, (32, 32), dtype=np.uint8) for name in names}
    images["00000002_001.png"][0, :2] = (0, 255)  # both ends of the range
    write_radiographs(tmp_path / "interim", images)
    (tmp_path / "processed").mkdir()
    rows = [[name, name[:8], *[int((j + f) % 3 == 0) for f in range(14)]] for j, name in enumerate(names)]
    write_images_csv(tmp_path / "processed", rows)
    return tmp_path / "interim", tmp_path / "processed", images, rows


def test_chest14_items_are_the_patients_images_over_255_with_their_findings(tmp_path: Path) -> None:
    from pcrl.preprocessing.chest_labels import open_store, radiograph_batches, read_image_labels
    from pcrl.finetune.radiographs import RadiographSet

    interim, processed, images, rows = _chest_world(tmp_path)
    store = open_store(interim)
    assert store.names == tuple(sorted(images))  # both shards, back in dataset order
    chosen = read_image_labels(processed, store).of_patients(["00000003", "00000002"])
    assert chosen.names == ("00000002_000.png", "00000002_001.png", "00000003_000.png", "00000003_001.png")
    assert chosen.patients == ("00000002", "00000002", "00000003", "00000003")
    np.testing.assert_array_equal(chosen.labels, np.array([r[2:] for r in rows[2:]], np.uint8))
    data = RadiographSet(chosen)
    assert len(data) == 4
    for i, name in enumerate(chosen.names):
        pixels, labels = data[i]
        assert pixels.dtype == torch.float32 and pixels.shape == (1, 32, 32)
        np.testing.assert_allclose(pixels[0].numpy(), images[name].astype(np.float64) / 255, rtol=0, atol=1e-7)
        assert labels.dtype == torch.float32 and labels.tolist() == [float(v) for v in rows[2 + i][2:]]
    assert data[1][0][0, 0, :2].tolist() == [0.0, 1.0]
    batches = list(radiograph_batches(chosen, 3))
    assert [tuple(b[0].shape) for b in batches] == [(3, 1, 32, 32), (1, 1, 32, 32)]
    torch.testing.assert_close(torch.cat([b[0] for b in batches]), torch.stack([data[i][0] for i in range(4)]))
    loaded = next(iter(DataLoader(data, batch_size=4, num_workers=1)))  # the reader pickles to a worker
    torch.testing.assert_close(loaded[0], torch.stack([data[i][0] for i in range(4)]))


def _set(index: int, change):
    """An edit of images.csv's rows: row ``index`` replaced by ``change(row)``."""
    return lambda rows: rows.__setitem__(index, change(rows[index]))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set(2, lambda r: [*r[:5], 2, *r[6:]]), r"line 4: infiltration is '2', expected 0 or 1"),
        (_set(1, lambda r: r[:-1]), r"line 3: 15 fields, expected 16"),
        (_set(3, lambda r: [r[0], "2", *r[2:]]), r"line 5: patient '2' is not an 8-digit id"),
        (lambda rows: rows.append(["00000009_000.png", "00000009", *[0] * 14]),
         r"line 8: image 00000009_000.png is not among the 6 radiographs"),
        (lambda rows: rows.append(list(rows[0])),
         r"line 8: image 00000001_000.png is listed again \(first on line 2\)"),
    ],
)
def test_a_bad_images_csv_row_names_the_file_and_line(tmp_path: Path, edit, message: str) -> None:
    from pcrl.preprocessing.chest_labels import open_store, read_image_labels

    interim, processed, _, rows = _chest_world(tmp_path)
    edit(rows)
    path = write_images_csv(processed, rows)
    with pytest.raises(DataError, match=f"{path}, {message}"):
        read_image_labels(processed, open_store(interim))


def _drop_row(rows: list[list]) -> list[list]:
    return rows[:2] + rows[3:]


def _change_patient(rows: list[list]) -> list[list]:
    return [*rows[:3], [rows[3][0], "00000001", *rows[3][2:]], *rows[4:]]


@pytest.mark.parametrize("edit", [_drop_row, _change_patient])
def test_an_images_csv_changed_after_its_stage_is_refused(tmp_path: Path, edit) -> None:
    from pcrl.preprocessing.chest_labels import open_store, read_image_labels

    interim, processed, _, rows = _chest_world(tmp_path)
    path = processed / "images.csv"
    with open(path, "w", newline="") as fh:  # edited by hand: its record is the stage's
        writer = csv.writer(fh)
        writer.writerow(CHEST_HEADER)
        writer.writerows(edit(rows))
    before = path.read_bytes()
    with pytest.raises(DataError, match=rf"{path}: (\d+ bytes, but its stage wrote \d+|content differs)") as info:
        read_image_labels(processed, open_store(interim))
    assert "\n" not in str(info.value) and path.read_bytes() == before


def test_images_csv_header_and_patients_without_images_are_refused(tmp_path: Path) -> None:
    from pcrl.preprocessing.chest_labels import open_store, read_image_labels

    interim, processed, _, rows = _chest_world(tmp_path)
    store = open_store(interim)
    swapped = [*CHEST_HEADER[:2], CHEST_HEADER[3], CHEST_HEADER[2], *CHEST_HEADER[4:]]
    path = write_images_csv(processed, rows, header=swapped)
    with pytest.raises(DataError, match=f"{path}: header .* not 'image,patient' followed by the 14 findings"):
        read_image_labels(processed, store)
    write_images_csv(processed, rows, header=[h.upper() if i > 1 else h for i, h in enumerate(CHEST_HEADER)])
    labelled = read_image_labels(processed, store)  # the findings' case does not matter
    with pytest.raises(DataError, match=r"images.csv: no image of patient.s. \['00000007'\]"):
        labelled.of_patients(["00000001", "00000007"])
    (processed / "images.csv").unlink()
    with pytest.raises(DataError, match="images.csv is missing"):
        read_image_labels(processed, store)
