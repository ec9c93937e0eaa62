"""The 2D tasks' inputs, cut from the radiograph store (:mod:`pcrl.preprocessing.radiographs`).

PCRL's 2D setting (Zhou et al., ICCV 2021) pretrains a ResNet-18 U-Net on NIH ChestX-ray14
(Wang et al., CVPR 2017) and fine-tunes it on the 14 findings (Chest14). Both tasks split
the radiographs *by patient*: the official ``test_list.txt`` is the test split (never seen
by pretraining), and the patients of ``train_val_list.txt`` are split into train and val
by a seeded draw with each task's ``val`` share (the same draw when the shares are equal).

- ``pretrain2d``: pairs of two crops of one radiograph with IoU above the threshold,
  resized to the cube size: the 3D pair rule (:func:`pcrl.preprocessing.pair_sampling.sample_pairs`) on a
  one-slice volume (x, y, 1), so the pretraining stage reads them as it reads the 3D pairs.
  Pairs are stored in chunks of images (``pairs/<group>_<NNNN>.npy``), not one file per
  image: 112,120 files would be a burden to every file system and to DVC.
- ``chest14``: ``images.csv``, one row per radiograph of the store (``image``,
  ``patient``, the 14 findings 0/1), for the fine-tuning stage.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from pcrl.atomic import atomic_path, save_npy
from pcrl.datasets.chestxray14 import FINDINGS, IMAGES_CSV, ChestEntry, patient_of, read_entries
from pcrl.preprocessing.pair_config import PairConfig
from pcrl.preprocessing.pair_sampling import sample_pairs
from pcrl.preprocessing.pretrain_pairs import case_rng
from pcrl.datasets.manifest import read_manifests, resolve_extras
from pcrl.preprocessing.radiographs import RadiographStore
from pcrl.preprocessing.splits import check_disjoint, split_random
from pcrl.errors import ConfigError, DataError

__all__ = ["IMAGES_CSV", "chest_entries", "patient_split", "write_label_table", "write_pairs_2d"]

log = logging.getLogger(__name__)

def chest_entries(raw: Path) -> dict[str, ChestEntry]:
    """Every row of every download shard's ``Data_Entry_2017_v2020.csv``, by image name.

    Raises:
        DataError: a shard's manifest names no CSV, or two shards disagree on an image.
    """
    entries: dict[str, ChestEntry] = {}
    for path, manifest in read_manifests(Path(raw)):
        if not manifest["cases"]:
            continue
        extras = resolve_extras(manifest, path)
        if "entries" not in extras:
            raise DataError(f"{path}: the dataset has no Data_Entry_2017_v2020.csv (needed by the 2D tasks)")
        for entry in read_entries(extras["entries"].parent):
            if entries.setdefault(entry.image, entry) != entry:
                raise DataError(f"{extras['entries']}: {entry.image} differs from its row in another shard's CSV")
    return entries


def patient_split(cases: Sequence[dict[str, Any]], *, val: float, seed: int) -> dict[str, list[str]]:
    """Patient ids of train / val / test: test = the patients of the official test list, the
    train_val patients split by a seeded draw (:func:`pcrl.preprocessing.splits.split_random`).

    ``cases`` are the download manifests' cases (``id`` = file stem, ``group`` =
    ``train_val`` or ``test``).

    Raises:
        DataError: no patient in a split, or a patient in both lists.
    """
    groups: dict[str, set[str]] = {"train_val": set(), "test": set()}
    for case in cases:
        group = str(case["group"])
        if group not in groups:
            raise DataError(f"case {case['id']}: group {group!r} is neither train_val nor test")
        groups[group].add(patient_of(str(case["id"])))
    drawn = split_random(sorted(groups["train_val"]), val=val, test=0.0, seed=seed)
    split = {"train": drawn["train"], "val": drawn["val"], "test": sorted(groups["test"])}
    check_disjoint(split)
    for name, ids in split.items():
        if not ids:
            raise DataError(f"the {name} split of ChestX-ray14 holds no patient ({len(cases)} radiographs)")
    return split


def _rows_of(store: RadiographStore, patients: Sequence[str]) -> list[int]:
    wanted = set(patients)
    return [i for i, name in enumerate(store.names) if patient_of(name) in wanted]


def write_pairs_2d(store: RadiographStore, split: dict[str, list[str]], out: Path, *, pairs_per_image: int,
                       images_per_file: int, config: PairConfig, seed: int, progress: bool = True
                       ) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Write ``out/pairs/<group>_<NNNN>.npy`` (n, 2, X, Y, 1) float16 for the train and val
    patients' radiographs, ``images_per_file`` radiographs per file.

    Each radiograph, scaled to [0, 1] (``/ 255``), is a one-slice volume (H, W, 1) and
    draws ``pairs_per_image`` pairs from ``case_rng(seed, image name)``: the pairs of an
    image do not depend on the chunking or on the other images.

    Returns:
        (index entries ``{"id", "group", "file", "n", "images"}``, ``{"train": [file ids],
        "val": [file ids]}``), the file ids standing where the 3D pairs have scan ids.

    Raises:
        ConfigError: a crop or cube size with z other than 1, or a count below 1.
    """
    if pairs_per_image < 1 or images_per_file < 1:
        raise ConfigError(f"pairs_per_image and images_per_file must be >= 1, got {pairs_per_image}, "
                          f"{images_per_file}")
    if any(size[2] != 1 for size in (*config.crop_sizes, config.cube_size)):
        raise ConfigError("cubes.pretrain2d: crop_sizes and cube_size are (x, y, 1) for radiographs")
    index: list[dict[str, Any]] = []
    ids: dict[str, list[str]] = {}
    for group in ("train", "val"):
        rows = _rows_of(store, split[group])
        ids[group] = []
        chunks = [rows[i:i + images_per_file] for i in range(0, len(rows), images_per_file)]
        for number, chunk in enumerate(tqdm(chunks, desc=f"2D pairs ({group})", disable=not progress)):
            pairs = np.empty((len(chunk) * pairs_per_image, 2, *config.cube_size), dtype=np.float16)
            for j, row in enumerate(chunk):
                name = store.names[row]
                image = store.image(row).astype(np.float32)[:, :, None] / 255.0
                cubes, _ = sample_pairs(image, pairs_per_image, config, case_rng(seed, name), case_id=name)
                pairs[j * pairs_per_image:(j + 1) * pairs_per_image] = cubes
            file_id = f"{group}_{number:04d}"
            save_npy(out / "pairs" / f"{file_id}.npy", pairs)
            index.append({"id": file_id, "group": group, "file": f"pairs/{file_id}.npy", "n": len(pairs),
                          "images": [store.names[r] for r in chunk]})
            ids[group].append(file_id)
    log.info("2D pairs: %s", ", ".join(f"{g} {sum(e['n'] for e in index if e['group'] == g)}" for g in ids))
    return index, ids


def write_label_table(store: RadiographStore, entries: dict[str, ChestEntry], path: Path) -> int:
    """``images.csv``: per radiograph of the store, in its order: image, patient, 14 findings.

    Raises:
        DataError: an image of the store without its row in the CSV.
    """
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "patient", *FINDINGS])
        for name in store.names:
            if name not in entries:
                raise DataError(f"radiograph {name} of the store has no row in Data_Entry_2017_v2020.csv")
            writer.writerow([name, patient_of(name), *entries[name].labels])
    return len(store)
