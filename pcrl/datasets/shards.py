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

Each shard is marked with its dataset and ``[k, n]`` (the manifest's ``dataset`` and
``shard``, an interim shard's ``contents.json``, :mod:`pcrl.records`), and a gathering stage
takes exactly the shard set they describe (:func:`check_shard_set`): a missing shard, an
extra one, one of another shard count or of another dataset is a DataError naming the folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pcrl.atomic import read_json
from pcrl.config import shard_count
from pcrl.errors import ConfigError, DataError
from pcrl.records import verify_contents

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


def check_shard_set(root: Path, marks: Sequence[tuple[Path, Any, Any]], *, dataset: str | None = None,
                    count: int | None = None) -> None:
    """Check that the shards of ``root`` are exactly one dataset's shard set.

    Args:
        root: The gathered folder.
        marks: Per shard folder (as :func:`shard_folders` lists them): the file that marks
            it, the dataset and the ``[k, n]`` it records.
        dataset: The dataset the reading stage expects (None: any, but one for all).
        count: The configured number of shards (``data.shards``; None: as recorded) of
            a sharded folder; an unsharded one (its own marker) must hold the whole dataset.

    Raises:
        DataError: naming the folder: a shard of another dataset, not marked, in the folder
            of another shard, of another shard count, or a shard missing or extra.
    """
    root = Path(root)
    datasets: set[Any] = set()
    counts: set[Any] = set()
    for where, marked, shard in marks:
        want = dataset if dataset is not None else next(iter(datasets), marked)
        if marked != want:
            raise DataError(f"{where}: holds {marked} data, but {root} gathers {want}: a shard of another dataset "
                            "was placed there (remove it, or name the matching dataset)")
        datasets.add(marked)
        if not (isinstance(shard, list) and len(shard) == 2 and all(isinstance(v, int) for v in shard)):
            raise DataError(f"{where}: not marked with its shard [k, n] ({shard!r}); rerun its stage")
        k, n = shard
        folder_k = 0 if where.parent == root else int(where.parent.name)
        if k != folder_k:
            raise DataError(f"{where}: holds shard {k} of {n}, but lies in the folder of shard {folder_k}")
        counts.add(n)
    if len(counts) > 1:
        raise DataError(f"{root}: shards of different shard counts {sorted(counts)}: a stale shard of another run? "
                        "(rerun every shard)")
    recorded = counts.pop() if counts else len(marks)
    if len(marks) == 1 and marks[0][0].parent == root:  # an unsharded folder: the whole dataset
        if recorded != 1:
            raise DataError(f"{marks[0][0]}: holds shard 0 of {recorded} only, not the whole dataset: run its stage "
                            "without --shard, or put the shards in numbered folders")
        return
    if count is not None and recorded != count:
        raise DataError(f"{root}: its shards were written for {recorded} shard(s), but data.shards has {count}: "
                        "rerun the stage of every shard")
    if len(marks) != recorded:
        raise DataError(f"{root}: {len(marks)} shard folder(s) for {recorded} shards: shard(s) "
                        f"{', '.join(str(k) for k in range(len(marks), recorded))} missing "
                        "(run the stage of every shard first)")


def read_cases(interim: Path, *, dataset: str | None = None, count: int | None = None) -> list[dict[str, Any]]:
    """The resampled cases of every shard of ``interim``, as one ``cases.json`` would list
    them: in the unsharded order (``order`` of each entry, else shard order), ``image``,
    ``label`` and ``arrays`` relative to ``interim``. Each shard is verified against its
    ``contents.json`` first (:func:`pcrl.records.verify_contents`), and the shards must be
    one dataset's (``dataset`` when given) complete set (:func:`check_shard_set`).

    Raises:
        DataError: A shard's ``cases.json`` is missing (stage incomplete) or not a list, a
            file differs from its record, or the shard set is wrong.
    """
    interim = Path(interim)
    entries: list[dict[str, Any]] = []
    folders = shard_folders(interim, CASES)
    records = [verify_contents(folder, stage="resample") for folder in folders]
    check_shard_set(interim, [(folder / CASES, r.get("dataset"), r.get("shard")) for folder, r in
                              zip(folders, records)], dataset=dataset, count=count)
    for folder in folders:
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
