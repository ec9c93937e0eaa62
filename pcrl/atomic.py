"""Atomic outputs: a file or folder appears under its final name only once complete.

docs/design.md, principle 5: an interrupted job must never leave an output that looks
complete. Files are written to a temporary sibling and renamed (``os.replace`` is
atomic on POSIX within one filesystem); stage folders are built in a temporary sibling
folder and swapped in when the stage succeeds.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pcrl.errors import DataError
from pcrl.outputs import check_output, write_marker
from pcrl.records import HashingWriter, array_record, remember, write_contents


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` if the block succeeds.

    The temporary file is removed when the block raises, so nothing half-written stays.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike[str], *, hint: str) -> Any:
    """Read a JSON file another stage wrote; DataError naming it when missing (with ``hint``,
    e.g. the stage to run first) or unreadable."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} is missing: {hint}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable: {exc}") from None


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Save ``array`` as ``.npy`` atomically (memory-mappable by ``np.load(mmap_mode='r')``),
    hashed while written: its record (:mod:`pcrl.records`) goes into the folder's
    ``contents.json`` without reading the file back."""
    array = np.asanyarray(array)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            writer = HashingWriter(fh)
            np.lib.format.write_array(writer, array, allow_pickle=False)
        record = array_record(array, writer)
    remember(path, record)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, contents: dict[str, Any] | None = None) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``path`` when the block succeeds.

    The folder holds only the pipeline's marker (:data:`pcrl.outputs.MARKER`), so the
    output carries it. An existing ``path`` is kept untouched until the new one is complete,
    then removed, but only when it carries the marker too (or is empty): a folder the
    pipeline did not write is refused before anything is built (UnsafeOutputError). On
    error the temporary folder is deleted and ``path`` is left as it was. ``contents``
    (stage, dataset, shard, ...): a data folder, whose files are recorded in
    ``contents.json`` when the block succeeds (:func:`pcrl.records.write_contents`); never
    for a metrics folder, whose every file DVC parses.
    """
    final = Path(path)
    check_output(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        write_marker(tmp)
        yield tmp
        if contents is not None:
            write_contents(tmp, contents)
        if final.exists() or final.is_symlink():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
