"""``pcrl resample``: the cases of one shard of a dataset at the target spacing, normalised;
for ChestX-ray14, the radiographs of one shard resized into a memory-mappable store."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pcrl.atomic import atomic_dir, write_json
from pcrl.datasets.layout import case_order
from pcrl.datasets.manifest import gathered_cases, read_manifests
from pcrl.datasets.shards import in_shard
from pcrl.errors import ConfigError, DataError
from pcrl.preprocessing.normalization import Normalization
from pcrl.preprocessing.radiographs import write_shard_of
from pcrl.preprocessing.resample import CASES_FILE, resample_dataset
from pcrl.settings import setting_of_dataset
from pcrl.tasks import TASKS

log = logging.getLogger(__name__)


def run_resample(
    settings: dict[str, Any], *, raw: Path, out: Path, shard: tuple[int, int] = (0, 1),
    workers: int = 1, progress: bool = True, dataset: str | None = None, shards: int | None = None,
) -> list[dict[str, Any]]:
    """Resample shard k of n of the cases of ``raw`` into ``out`` (one file per case).

    ``raw`` is the download stage's folder: one ``manifest.json``, or one shard folder per
    download job (:mod:`pcrl.datasets.shards`). Its cases are gathered in the order an
    unsharded manifest lists them; this shard takes positions k, k + n, ... and records
    each case's position (``order``) in ``cases.json`` so later stages read the shards
    back in that order. ``settings`` is ``params.resample.<dataset>``: ``spacing`` (mm,
    x y z), ``normalization`` and ``arrays`` (also write memory-mappable arrays for
    fine-tuning, :mod:`pcrl.preprocessing.arrays`). ``out`` appears only when every case succeeded,
    with ``contents.json`` recording the dataset, the shard and every file (:mod:`pcrl.records`).

    ``dataset``: the dataset ``settings`` belong to; the download shards of ``raw`` must
    hold it (DataError naming the manifest and both names). ``shards``: the configured number
    of download shards (``data.shards``), all of which must be present.
    """
    found = read_manifests(raw, count=shards)[0]
    held = str(found[1]["dataset"])
    if dataset is not None and held != dataset:
        raise DataError(f"{found[0]}: holds {held} data, but 'pcrl resample' was called for {dataset} "
                        f"(params resample.{dataset}): pass --dataset {held} or the raw folder of {dataset}")
    dataset = held
    everything = gathered_cases(raw, case_order(dataset), dataset=dataset, count=shards)
    if setting_of_dataset(dataset).reader == "radiographs":
        return _radiographs(settings, everything, out=out, shard=shard, progress=progress)
    mine = [(i, case) for i, case in enumerate(everything) if in_shard(i, *shard)]
    cases = [case for _, case in mine]
    with atomic_dir(out, contents={"stage": "resample", "dataset": dataset, "shard": list(shard)}) as tmp:
        entries = resample_dataset(
            cases,
            tmp,
            spacing=settings["spacing"],
            normalization=Normalization(**settings["normalization"]),
            workers=min(workers, max(1, len(cases))),
            progress=progress,
            arrays=bool(settings.get("arrays", False)),
            channels=mri_channels(dataset),
        )
        for entry, (position, _) in zip(entries, mine, strict=True):
            entry["order"] = position
        write_json(tmp / CASES_FILE, entries)
    log.info("%s: shard %d of %d, %d of %d cases resampled to %s mm", dataset, shard[0] + 1,
             shard[1], len(entries), len(everything), settings["spacing"])
    return entries


def mri_channels(dataset: str) -> int | None:
    """The channels a multi-channel MRI dataset's task reads (BraTS: 4); None otherwise."""
    channels = {spec.in_channels for spec in TASKS.values() if spec.dataset == dataset}
    return max(channels) if channels and max(channels) > 1 else None


def _radiographs(settings: dict[str, Any], cases: list[dict[str, Any]], *, out: Path, shard: tuple[int, int],
                 progress: bool) -> list[dict[str, Any]]:
    """The 2D preprocessing (:mod:`pcrl.preprocessing.radiographs`): shard k of n of the radiographs,
    decoded once, checked (``expected_size``: the originals' (width, height)) and
    area-resized to ``size`` (height, width) into ``images.npy`` + ``index.json``."""
    expected = settings.get("expected_size")
    if not expected:  # a radiograph of another size would be stretched without a word
        raise ConfigError("resample.chestxray14.expected_size: required (the originals' width, height)")
    write_shard_of([case["image"] for case in cases], out, size=settings["size"], shard=shard,
                   expected_size=tuple(expected), progress=progress, dataset="chestxray14")
    log.info("chestxray14: shard %d of %d of %d radiographs resized to %s", shard[0] + 1, shard[1], len(cases),
             settings["size"])
    return [{"id": case["id"], "order": i} for i, case in enumerate(cases) if in_shard(i, *shard)]
