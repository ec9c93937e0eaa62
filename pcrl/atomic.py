"""Atomic outputs: a file or folder appears under its final name only once complete.

docs/design.md, principle 5: an interrupted job must never leave an output that looks
complete. Files are written to a temporary sibling and renamed (``os.replace`` is
atomic on POSIX within one filesystem); stage folders are built in a temporary sibling
folder and swapped in when the stage succeeds.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pcrl.errors import DataError, OutputWriteError
from pcrl.outputs import check_output, write_marker
from pcrl.records import HashingWriter, array_record, remember, write_contents


#: errno of a failed write -> the reason the one-line error gives.
_WRITE_ERRNOS = {
    errno.ENOSPC: "disk full",
    errno.EFBIG: "file size limit reached",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
}
_DENIED = {errno.EACCES, errno.EPERM}
#: numpy's short write (``tofile``) and torch's writer (``torch.save``) report no errno.
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")
#: safetensors (Rust) reports the errno in its message only.
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")
#: torch's data loader workers hand batches over in shared memory files.
_SHARED_MEMORY = re.compile(r"unable to (resize|write to|mmap|open shared memory object).*<.*?torch_")
_TORCH_WRITE = re.compile(r"PytorchStreamWriter|basic_ios|file write failed|unexpected pos")  # not its reader


def _under(name: str | os.PathLike[str], roots: tuple[Path, ...]) -> Path | None:
    """``name`` (absolute) when it is one of ``roots``, below one or above one; else None."""
    path = Path(os.path.abspath(name))
    for root in roots:
        root = Path(os.path.abspath(root))
        if path == root or root in path.parents or path in root.parents:
            return path
    return None


def write_failure(exc: BaseException, roots: tuple[Path, ...]) -> tuple[str, Path | None] | None:
    """``(reason, file)`` when ``exc`` is a failed write under (or above) ``roots``, else None.

    A full disk, a file size limit, a quota or a read-only file system is a write failure
    wherever raised; a denied access only for a path under ``roots`` (a denied input keeps
    its own error), and so are numpy's and torch's short writes, which name no file.
    """
    if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
        return _WRITE_ERRNOS[exc.errno], _under(exc.filename, roots) if exc.filename else None
    rust = _RUST_OS_ERROR.search(str(exc)) if not isinstance(exc, OSError) else None
    if rust is not None and int(rust.group(1)) in _WRITE_ERRNOS:  # safetensors' writer
        return _WRITE_ERRNOS[int(rust.group(1))], None
    if isinstance(exc, OSError) and exc.errno in _DENIED and exc.filename:
        path = _under(exc.filename, roots)
        return ("not writable", path) if path is not None else None
    if isinstance(exc, OSError) and exc.errno is None and _SHORT_WRITE.search(str(exc)):
        return "write cut short (disk full or file size limit)", None
    if isinstance(exc, RuntimeError) and _SHARED_MEMORY.search(str(exc)):
        return "the data loader's shared memory is full or over the file size limit", Path("/dev/shm")
    if isinstance(exc, RuntimeError) and _TORCH_WRITE.search(str(exc)):
        return "write cut short (disk full or file size limit)", None
    return None


def _shown(path: Path | None, final: Path, tmp: Path | None) -> Path:
    """The file to name: ``path`` with ``tmp`` swapped for ``final``; ``final`` when unknown
    or a temporary sibling."""
    if path is None or path.name.startswith(f".{final.name}."):
        return final
    if tmp is not None:
        tmp = Path(os.path.abspath(tmp))
        if path == tmp or tmp in path.parents:
            return final / path.relative_to(tmp)
    return path


@contextlib.contextmanager
def writing(final: str | os.PathLike[str], tmp: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """Turn a failed write to ``final`` (built at ``tmp``, or about to be created in its
    folder when ``tmp`` is None) into one OutputWriteError naming the file by its final
    name and the reason; any other error passes unchanged."""
    final = Path(final)
    roots = (final.parent,) if tmp is None else (final, Path(tmp))
    try:
        yield
    except OutputWriteError as exc:  # raised below: name the file by its final path
        if tmp is None or str(tmp) not in str(exc):
            raise
        raise OutputWriteError(str(exc).replace(str(tmp), str(final))) from exc.__cause__
    except Exception as exc:  # noqa: BLE001 (only write failures are converted, the rest re-raised)
        failure = write_failure(exc, roots)
        if failure is None:
            raise
        reason, path = failure
        detail = f" ({exc.strerror})" if isinstance(exc, OSError) and exc.strerror else ""
        raise OutputWriteError(f"{_shown(path, final, None if tmp is None else Path(tmp))}: "
                               f"cannot write: {reason}{detail}") from exc


@contextlib.contextmanager
def write_errors() -> Iterator[None]:
    """A stage's last net: a full disk, file size limit, quota or read-only file system
    met by a write outside :func:`atomic_path` / :func:`atomic_dir` (a log, a library's
    own files) becomes one OutputWriteError naming the file it reports."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 (only write failures are converted, the rest re-raised)
        failure = write_failure(exc, ())
        if failure is None or (isinstance(exc, OSError) and exc.errno in _DENIED):
            raise
        where = getattr(exc, "filename", None) or failure[1] or "an output file"
        raise OutputWriteError(f"{where}: cannot write: {failure[0]}") from exc


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` if the block succeeds.

    The temporary file is removed when the block raises, so nothing half-written stays.
    """
    final = Path(path)
    with writing(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with writing(final, tmp):
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
    with writing(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        with writing(final, tmp):
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
