"""Datasets in shards: one download job and one resample job per shard (``data.shards``).

A dataset of 888 CT scans or 112,120 radiographs spreads over a cluster only if its data
stages do. ``data.shards`` lists the shard numbers ``0 .. n-1``; DVC's ``matrix`` (and so
Snakemake, through :mod:`pcrl.runners.dag`) makes one ``download`` and one ``resample`` job per
(dataset, shard):

- ``download`` shard k writes ``data/raw/<dataset>/<k>/``: the published archives whose
  position among the dataset's archives is k modulo n (LUNA16: ``subset<i>.zip`` for i mod
  n = k, with the CSVs in every shard; a one-archive dataset such as an MSD task: shard 0
  has it, the others are empty), or for a phantom and a local copy the cases of that slice.
- ``resample`` shard k gathers the manifests of every download shard, orders their cases as
  an unsharded run would, and resamples the cases whose position is k modulo n into
  ``data/interim/<dataset>/<k>/``.
- ``cubes``, ``finetune`` and ``evaluate`` read the gathered folders (:func:`read_cases`):
  the cases of every shard in the unsharded order, their files relative to the gathered
  folder. The result is byte-identical whatever the number of shards (tests/test_shards.py).

A folder that holds ``manifest.json`` (``cases.json``) itself is read as a single shard.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pcrl.atomic import read_json
from pcrl.config import shard_count
from pcrl.errors import ConfigError, DataError

CASES = "cases.json"


def check_shard(shard: int, shards: Any, key: str = "data.shards") -> tuple[int, int]:
    """``(shard, n)`` after checking that ``shard`` is one of ``data.shards``."""
    count = shard_count(shards, key)
    if not 0 <= shard < count:
        raise ConfigError(f"--shard {shard}: {key} is {shards!r} (shards 0..{count - 1})")
    return shard, count


def in_shard(position: int, shard: int, count: int) -> bool:
    """Whether item ``position`` of an ordered list belongs to ``shard`` of ``count``."""
    return position % count == shard


def take_shard(items: Sequence[Any], shard: int, count: int) -> list[Any]:
    """The items of ``shard``: positions ``shard``, ``shard + count``, ..."""
    return [item for i, item in enumerate(items) if in_shard(i, shard, count)]


def shard_folders(root: Path, marker: str) -> list[Path]:
    """The shard folders of a gathered folder, by shard number; ``[root]`` itself when it
    holds ``marker`` (an unsharded folder).

    Raises:
        DataError: ``root`` is missing, or holds neither ``marker`` nor a complete shard.
    """
    root = Path(root)
    if (root / marker).is_file():
        return [root]
    if not root.is_dir():
        raise DataError(f"{root} does not exist (run the stage that writes it first)")
    found = sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()),
                   key=lambda p: int(p.name))
    incomplete = [p.name for p in found if not (p / marker).is_file()]
    if not found or incomplete:
        what = f"shard(s) {', '.join(incomplete)} without {marker}" if found else f"no shard folder with {marker}"
        raise DataError(f"{root}: {what} (run the stage of every shard first)")
    numbers = [int(p.name) for p in found]
    if numbers != list(range(len(numbers))):
        raise DataError(f"{root}: shard folders {numbers} are not 0..{len(numbers) - 1}: "
                        "a stale shard of a run with more shards? (delete it)")
    return found


def read_cases(interim: Path) -> list[dict[str, Any]]:
    """The resampled cases of every shard of ``interim``, as one ``cases.json`` would list
    them: in the unsharded order (``order`` of each entry, else shard order), ``image``,
    ``label`` and ``arrays`` relative to ``interim``.

    Raises:
        DataError: A shard's ``cases.json`` is missing (stage incomplete) or not a list.
    """
    interim = Path(interim)
    entries: list[dict[str, Any]] = []
    for folder in shard_folders(interim, CASES):
        path = folder / CASES
        listed = read_json(path, hint="run 'pcrl resample' first")
        if not isinstance(listed, list):
            raise DataError(f"{path}: expected a list of cases")
        prefix = "" if folder == interim else f"{folder.name}/"
        for entry in listed:
            entry = dict(entry)
            for key in ("image", "label"):
                if entry.get(key):
                    entry[key] = prefix + entry[key]
            if isinstance(entry.get("arrays"), dict):
                entry["arrays"] = {k: prefix + v for k, v in entry["arrays"].items()}
            entries.append(entry)
    return sorted(entries, key=lambda e: e.get("order", 0))


def shard_files(files: Sequence[Any], shard: int, count: int, *, together: bool = False) -> list[Any]:
    """The published files download shard ``shard`` of ``count`` fetches: the archives
    (``extract``) at positions k mod n, and every plain file (the CSVs each shard's layout
    needs) when the shard has an archive; nothing when it has none. ``together``: the
    archives cannot be shared out (one CSV describes them all, ChestX-ray14): shard 0
    fetches every file, the others none."""
    archives = [f for f in files if f.extract]
    archives = (archives if shard == 0 else []) if together else take_shard(archives, shard, count)
    return [*archives, *(f for f in files if not f.extract)] if archives else []
