"""``pcrl cubes``: patient splits, nested label fractions and the cubes of one task.

Tasks (docs/method.md "Protocol"): ``pretrain`` (LUNA16 pairs of overlapping crops), ``ncc``
(LUNA16 candidate cubes for false-positive reduction), ``lcs`` (liver) and ``bms``
(brain tumour), whose fine-tuning reads the resampled volumes directly; and the 2D setting's
``pretrain2d`` (ChestX-ray14 pairs) and ``chest14`` (its label table), split by patient with
the official test list held out (:mod:`pcrl.preprocessing.setting2d`).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcrl.atomic import atomic_dir, atomic_path, write_json
from pcrl.preprocessing.candidates import write_ncc_cubes
from pcrl.preprocessing.pair_config import PairConfig
from pcrl.preprocessing.pretrain_pairs import write_pretrain_pairs
from pcrl.datasets.layout import case_order
from pcrl.datasets.manifest import gathered_cases, read_manifests, resolve_extras
from pcrl.preprocessing.setting2d import IMAGES_CSV, chest_entries, patient_split, write_label_table, write_pairs_2d
from pcrl.preprocessing.radiographs import open_store
from pcrl.datasets.shards import read_cases as gathered_interim
from pcrl.preprocessing.splits import check_disjoint, nested_fractions, split_by_group, split_random
from pcrl.errors import ConfigError, DataError
from pcrl.settings import setting_of_cubes_task
from pcrl.tasks import TASKS

log = logging.getLogger(__name__)

PAIR_KEYS = ("crop_sizes", "cube_size", "min_iou", "threshold_hu", "foreground", "min_fraction", "max_fraction",
             "placement", "border")


def dataset_of(task: str) -> str:
    """The dataset a cubes task reads: its task's (:mod:`pcrl.tasks`), or its setting's
    pretraining dataset."""
    return TASKS[task].dataset if task in TASKS else setting_of_cubes_task(task).pretrain_dataset


def read_cases(interim: Path, *, dataset: str | None = None, count: int | None = None) -> list[dict[str, Any]]:
    """The resample stage's cases, every shard gathered and verified
    (:func:`pcrl.datasets.shards.read_cases`): ``dataset``'s, ``count`` shards when given;
    DataError when a shard is missing or none lists a case."""
    cases = gathered_interim(interim, dataset=dataset, count=count)
    if not cases:
        raise DataError(f"{interim}: the resampled dataset lists no case")
    return cases


def _select(cases: list[dict], ids: list[str]) -> list[dict]:
    wanted = set(ids)
    return [c for c in cases if c["id"] in wanted]


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        if rows:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def _groups_split(settings: dict, seed: int, cases: list[dict]) -> dict[str, list[str]]:
    """The case groups named in ``cubes.<task>.groups`` (LUNA16's subsets)."""
    return split_by_group(cases, settings["groups"])


def _labelled_split(settings: dict, seed: int, cases: list[dict]) -> dict[str, list[str]]:
    """A seeded random split of the labelled cases (the Decathlon's imagesTr/labelsTr)."""
    labelled = sorted(c["id"] for c in cases if c.get("label"))
    if not labelled:
        raise DataError("no labelled case in the resampled dataset (Decathlon imagesTr/labelsTr)")
    return split_random(labelled, val=settings["val"], test=settings["test"], seed=seed)


def _split(task: str, settings: dict, seed: int, cases: list[dict]) -> dict[str, list[str]]:
    """Patient split of the task, checked disjoint and non-empty before any cube is cut."""
    if task not in VOLUME_TASKS:
        raise ConfigError(f"unknown task {task!r}; known: {', '.join(VOLUME_TASKS)}")
    split = VOLUME_TASKS[task].split(settings, seed, cases)
    check_disjoint(split)
    for name, ids in split.items():
        if not ids:
            raise DataError(
                f"cubes.{task}: the {name} split is empty "
                f"({len(cases)} cases in groups {sorted({str(c.get('group')) for c in cases})})"
            )
    return split


def _pretrain(settings: dict, seed: int, cases: list[dict], raw: Path, interim: Path, out: Path,
              progress: bool) -> None:
    config = PairConfig(**{k: settings[k] for k in PAIR_KEYS if k in settings})
    index = write_pretrain_pairs(
        cases,
        interim,
        out,
        pairs_per_case=settings["pairs_per_case"],
        config=config,
        seed=seed,
        progress=progress,
    )
    write_json(out / "pairs.json", index)


def _candidate_tables(raw: Path) -> list[tuple[Path, set[str]]]:
    """Each download shard's ``candidates.csv`` with the ids of the scans it holds."""
    tables = []
    for path, manifest in read_manifests(raw, dataset="luna16"):
        if not manifest["cases"]:
            continue
        extras = resolve_extras(manifest, path)
        if "candidates" not in extras:
            raise DataError(f"{path}: the dataset has no candidates.csv (needed by NCC)")
        tables.append((extras["candidates"], {c["id"] for c in manifest["cases"]}))
    return tables


def _ncc(settings: dict, seed: int, cases: list[dict], raw: Path, interim: Path, out: Path, progress: bool) -> None:
    tables = _candidate_tables(raw)
    rows = write_ncc_cubes(
        cases,
        interim,
        tables,
        out,
        size=tuple(settings["cube_size"]),
        negatives_per_positive=settings.get("negatives_per_positive"),
        seed=seed,
        progress=progress,
    )
    if not any(int(r["class"]) == 1 for r in rows):
        names = ", ".join(str(csv_path) for csv_path, _ in tables)
        raise DataError(f"{names}: no positive candidate in the NCC scans")
    _write_csv(out / "candidates.csv", rows)


@dataclass(frozen=True)
class VolumeTask:
    """How the cubes stage serves one task of the volumes: its split, and what it writes
    besides ``split.json`` and ``fractions.json`` (None: nothing; LCS and BMS fine-tune on
    the resampled volumes directly)."""

    split: Callable[[dict, int, list[dict]], dict[str, list[str]]]
    write: Callable[[dict, int, list[dict], Path, Path, Path, bool], None] | None = None


#: The cubes tasks that read resampled volumes (the 3D setting's, :data:`pcrl.settings.SETTINGS`).
VOLUME_TASKS: dict[str, VolumeTask] = {
    "pretrain": VolumeTask(_groups_split, _pretrain),
    "ncc": VolumeTask(_groups_split, _ncc),
    "lcs": VolumeTask(_labelled_split),
    "bms": VolumeTask(_labelled_split),
}


def run_cubes(
    task: str,
    settings: dict[str, Any],
    *,
    seed: int,
    raw: Path,
    interim: Path,
    out: Path,
    progress: bool = True,
    shards: int | None = None,
) -> dict[str, list[str]]:
    """Write ``out`` = ``split.json`` (+ ``fractions.json``) and the task's cubes.

    Splits are by patient (case id), never by cube; label fractions are nested
    (10 % ⊂ 20 % ⊂ 50 % ⊂ 100 % of the training cases) and seeded by ``cubes.seed``.
    The resample shards of ``interim`` must be the task's dataset's complete set
    (``shards``: ``data.shards``'s count); ``out`` records its files in ``contents.json``.
    """
    if setting_of_cubes_task(task).reader == "radiographs":
        return _radiograph_task(task, settings, seed=seed, raw=Path(raw), interim=Path(interim), out=Path(out),
                                progress=progress, shards=shards)
    cases = read_cases(interim, dataset=dataset_of(task), count=shards)
    split = _split(task, settings, seed, cases)
    used = _select(cases, [i for ids in split.values() for i in ids])
    write = VOLUME_TASKS[task].write
    with atomic_dir(out, contents={"stage": "cubes", "task": task, "dataset": dataset_of(task)}) as tmp:
        if write is not None:
            write(settings, seed, used, raw, interim, tmp, progress)
        if "fractions" in settings:
            write_json(tmp / "fractions.json", nested_fractions(split["train"], settings["fractions"], seed))
        write_json(tmp / "split.json", split)
        log.info("%s: %s", task, ", ".join(f"{k} {len(v)}" for k, v in split.items()))
    return split


def _pairs2d(store: Any, split: dict[str, list[str]], settings: dict[str, Any], seed: int, raw: Path, out: Path,
             progress: bool) -> None:
    """``pairs/``, ``pairs.json``, ``split.json`` (pair file ids) and ``patients.json``."""
    # no foreground rule: the CT one (HU threshold, body mask) means nothing on a
    # radiograph, and PCRL's 2D crops have none
    config = PairConfig(**{k: settings[k] for k in PAIR_KEYS if k in settings}, min_fraction=0.0,
                        max_fraction=1.0)
    index, ids = write_pairs_2d(store, split, out, pairs_per_image=int(settings["pairs_per_image"]),
                                    images_per_file=int(settings["images_per_file"]), config=config,
                                    seed=seed, progress=progress)
    write_json(out / "pairs.json", index)
    write_json(out / "patients.json", split)
    write_json(out / "split.json", ids)


def _labels2d(store: Any, split: dict[str, list[str]], settings: dict[str, Any], seed: int, raw: Path, out: Path,
              progress: bool) -> None:
    """``images.csv``, ``split.json`` and ``fractions.json`` of patient ids."""
    write_label_table(store, chest_entries(raw), out / IMAGES_CSV)
    write_json(out / "fractions.json", nested_fractions(split["train"], settings["fractions"], seed))
    write_json(out / "split.json", split)


#: What the cubes stage writes for each task of the radiographs (the 2D setting's).
RADIOGRAPH_TASKS = {"pretrain2d": _pairs2d, "chest14": _labels2d}


def _radiograph_task(task: str, settings: dict[str, Any], *, seed: int, raw: Path, interim: Path, out: Path,
                     progress: bool, shards: int | None = None) -> dict[str, list[str]]:
    """A task of the radiograph store (:data:`RADIOGRAPH_TASKS`): train / val from the
    train_val list's patients, test = the test list's."""
    store = open_store(interim, count=shards)
    cases = gathered_cases(raw, case_order(dataset_of(task)), dataset=dataset_of(task), count=shards)
    listed = {Path(c["image"]).name for c in cases}
    if set(store.names) != listed:
        odd = sorted(set(store.names) ^ listed)
        raise DataError(f"{interim}: the radiograph store and the download manifests of {raw} list different "
                        f"images (e.g. {odd[:3]}): rerun the resample stage")
    split = patient_split(cases, val=float(settings["val"]), seed=seed)
    with atomic_dir(out, contents={"stage": "cubes", "task": task, "dataset": dataset_of(task)}) as tmp:
        RADIOGRAPH_TASKS[task](store, split, settings, seed, raw, tmp, progress)
        log.info("%s: patients %s", task, ", ".join(f"{k} {len(v)}" for k, v in split.items()))
    return split
