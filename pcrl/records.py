"""``contents.json``: what a data stage wrote, checked by every stage that reads it.

A data folder (a resample shard, the radiograph store's shard, a cubes output) holds, beside
its files, ``contents.json``::

    {"format": 1, "stage": "resample", "dataset": "luna16", "shard": [0, 2],
     "files": {"case.npy": {"size": 123, "sha256": "…", "dtype": "<f4", "shape": [1, 64, 64, 32]}, …}}

Every file of the folder (but the marker and the record) is listed with its size and
SHA-256, an ``.npy`` file also with its dtype and shape. :func:`write_contents` writes it
when the stage's folder is complete (:func:`pcrl.atomic.atomic_dir` with ``contents=``);
an array saved with :func:`pcrl.atomic.save_npy` is hashed while its bytes are written
(:class:`HashingWriter`, :func:`remember`), so only the other files are read back.
:func:`verify_contents` is what a reader calls before using the folder: the stage, dataset
and shard it expects, no file missing or added, and each file's size, dtype, shape and
digest; any difference is a DataError naming the file and what differs. A folder is
verified once per process while its files are unchanged (size and modification time).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pcrl.errors import DataError

CONTENTS = "contents.json"
FORMAT = 1
ALGORITHM = "sha256"
#: Files of a folder that are not recorded: the pipeline's marker, the record itself, and
#: the empty timestamp Snakemake adds to every folder output after its job.
UNRECORDED = (".pcrl-output", CONTENTS, ".snakemake_timestamp")

Record = dict[str, Any]

#: Digests computed while writing, by resolved path: (size, mtime_ns, record).
_PENDING: dict[str, tuple[int, int, Record]] = {}
#: Folders verified in this process, with the size and time of each file then.
_VERIFIED: set[tuple[str, tuple[tuple[str, int, int], ...]]] = set()


class HashingWriter:
    """A binary file wrapper that hashes and counts the bytes written through it."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.digest = hashlib.new(ALGORITHM)
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Write ``data`` to the file and into the digest."""
        self.digest.update(data)
        self.size += len(data)
        return self._fh.write(data)

    def flush(self) -> None:
        """Flush the underlying file."""
        self._fh.flush()


def remember(path: str | os.PathLike[str], record: Record) -> None:
    """Keep the record of a file just written, for :func:`write_contents` (used while the
    file keeps its size and modification time)."""
    stat = Path(path).stat()
    _PENDING[str(Path(path).resolve())] = (stat.st_size, stat.st_mtime_ns, record)


def pending(path: str | os.PathLike[str]) -> Record | None:
    """The record :func:`remember` keeps of ``path`` if the file is unchanged since (taken
    out: a worker process hands it to the process that writes the folder's record)."""
    kept = _PENDING.pop(str(Path(path).resolve()), None)
    stat = Path(path).stat()
    return kept[2] if kept is not None and kept[:2] == (stat.st_size, stat.st_mtime_ns) else None


def array_record(array: np.ndarray, writer: HashingWriter) -> Record:
    """The record of an ``.npy`` file written through ``writer``."""
    return npy_record(array.dtype, array.shape, writer)


def npy_record(dtype: np.dtype | type, shape: Sequence[int], writer: HashingWriter) -> Record:
    """The record of an ``.npy`` file of ``dtype`` and ``shape`` written (streamed) through ``writer``."""
    return {"size": writer.size, ALGORITHM: writer.digest.hexdigest(), "dtype": np.dtype(dtype).str,
            "shape": [int(n) for n in shape]}


def _npy_header(path: Path) -> tuple[str, list[int]]:
    with path.open("rb") as fh:
        version = np.lib.format.read_magic(fh)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read(fh)
    return dtype.str, list(shape)


def file_record(path: str | os.PathLike[str]) -> Record:
    """Size and digest of ``path`` (read once), with dtype and shape for an ``.npy`` file."""
    path = Path(path)
    digest, size = hashlib.new(ALGORITHM), 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
            size += len(chunk)
    record: Record = {"size": size, ALGORITHM: digest.hexdigest()}
    if path.suffix == ".npy":
        try:
            record["dtype"], record["shape"] = _npy_header(path)
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise DataError(f"{path}: not a readable .npy file ({exc})") from None
    return record


def _listed(folder: Path) -> list[Path]:
    """The files of ``folder`` a record lists (at any depth), sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix()
                  not in UNRECORDED)


def write_contents(folder: str | os.PathLike[str], meta: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``folder/contents.json``: ``meta`` (stage, dataset, shard, ...) and the record of
    every file of ``folder``; a digest taken while writing (:func:`remember`) is reused."""
    folder = Path(folder)
    files: dict[str, Record] = {}
    for path in _listed(folder):
        files[path.relative_to(folder).as_posix()] = pending(path) or file_record(path)
    contents = {"format": FORMAT, **meta, "files": files}
    (folder / CONTENTS).write_text(json.dumps(contents, indent=1) + "\n")
    return contents


def read_contents(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The record of ``folder``; DataError naming it when missing or unreadable."""
    path = Path(folder) / CONTENTS
    try:
        contents = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} is missing: {folder} was not written (completely) by the current "
                        "pipeline; rerun the stage that writes it") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None
    if not isinstance(contents, dict) or contents.get("format") != FORMAT or not isinstance(
            contents.get("files"), dict):
        raise DataError(f"{path}: not a record of format {FORMAT}; rerun the stage that writes {folder}")
    return contents


def _state(folder: Path) -> tuple[str, tuple[tuple[str, int, int], ...]]:
    stats = tuple((p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in sorted(q for q in folder.rglob("*") if q.is_file()))
    return str(folder.resolve()), stats


def check_file(path: Path, record: Any) -> None:
    """Compare one file with its record; DataError naming the file and what differs."""
    if not isinstance(record, dict) or not isinstance(record.get(ALGORITHM), str):
        raise DataError(f"{path}: its record is malformed; rerun the stage that writes it")
    size = path.stat().st_size
    if size != record.get("size"):
        raise DataError(f"{path}: {size} bytes, but its stage wrote {record.get('size')}: the file was "
                        "changed or truncated; rerun the stage that writes it")
    actual = file_record(path)
    for key in ("dtype", "shape"):
        if key in record and actual.get(key) != record[key]:
            raise DataError(f"{path}: {key} {actual.get(key)} differs from the {record[key]} its stage wrote; "
                            "rerun the stage that writes it")
    if actual[ALGORITHM] != record[ALGORITHM]:
        raise DataError(f"{path}: content differs from what its stage wrote ({ALGORITHM} mismatch); "
                        "rerun the stage that writes it")


def verify_contents(folder: str | os.PathLike[str], **expect: Any) -> dict[str, Any]:
    """Check ``folder`` against its ``contents.json`` before reading it; return the record.

    ``expect`` (e.g. ``stage="resample", dataset="luna16"``): values the record must hold;
    a list value is compared as a list. Every listed file must exist unchanged (size,
    dtype, shape, digest), and no unlisted file may be there.

    Raises:
        DataError: naming the folder or file and what differs.
    """
    folder = Path(folder)
    contents = read_contents(folder)
    for key, want in expect.items():
        have = contents.get(key)
        if have != (list(want) if isinstance(want, tuple) else want):
            raise DataError(f"{folder / CONTENTS}: {key} is {have!r}, expected {want!r}: the folder belongs "
                            f"to another {key}")
    state = _state(folder)
    if state in _VERIFIED:
        return contents
    listed = contents["files"]
    present = {p.relative_to(folder).as_posix() for p in _listed(folder)}
    missing, extra = sorted(set(listed) - present), sorted(present - set(listed))
    if missing:
        raise DataError(f"{folder / missing[0]}: missing, but listed in {folder / CONTENTS}; rerun its stage")
    if extra:
        raise DataError(f"{folder / extra[0]}: not written by the stage (not in {folder / CONTENTS}); "
                        "remove it or rerun the stage")
    for name in sorted(listed):
        check_file(folder / name, listed[name])
    _VERIFIED.add(state)
    return contents


def verify_files(folder: str | os.PathLike[str], names: list[str], **expect: Any) -> dict[str, Any]:
    """Check only the files ``names`` of ``folder`` against its record (a reader of a few
    files of a large folder, e.g. the split of the pretraining pairs); see :func:`verify_contents`.

    Raises:
        DataError: naming the folder or file and what differs, or a file the record lacks.
    """
    folder = Path(folder)
    contents = read_contents(folder)
    for key, want in expect.items():
        if contents.get(key) != (list(want) if isinstance(want, tuple) else want):
            raise DataError(f"{folder / CONTENTS}: {key} is {contents.get(key)!r}, expected {want!r}: the folder "
                            f"belongs to another {key}")
    for name in names:
        if name not in contents["files"]:
            raise DataError(f"{folder / name}: not written by the stage (not in {folder / CONTENTS}); "
                            "rerun the stage")
        check_file(folder / name, contents["files"][name])
    return contents
