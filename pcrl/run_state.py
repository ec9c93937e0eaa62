"""A training stage's resumable state folder: prepared for one run, discarded once done.

A training stage (pretraining, fine-tuning) keeps its checkpoints in a state folder so that
an interrupted job resumes. :func:`prepare_state` stamps the folder with the run's
fingerprint (:data:`pcrl.outputs.FINGERPRINT`) and the pipeline's marker, discarding the
state of another run; :func:`discard_state` removes it once the stage's outputs hold the
result. Both delete only folders the pipeline marked (:mod:`pcrl.outputs`).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pcrl.atomic import atomic_path, writing
from pcrl.errors import DataError
from pcrl.outputs import FINGERPRINT, STATE_MARKERS, check_output, has_marker, write_marker

__all__ = ["discard_state", "files_listing_digest", "prepare_state", "state_lock"]

log = logging.getLogger(__name__)


def discard_state(state: Path) -> None:
    """Remove a training state folder once its stage succeeded (its outputs hold the result).

    The state only lets an interrupted job resume; a finished one needs none, and its kept
    checkpoints would otherwise stay on disk. Only a folder the pipeline marked is removed.
    """
    state = Path(state)
    if state.is_dir() and has_marker(state, STATE_MARKERS):
        shutil.rmtree(state)
        log.info("%s: stage done, training state removed", state)


def prepare_state(state: Path, fingerprint: str) -> None:
    """Make ``state`` the resumable state folder of the run identified by ``fingerprint``.

    A state folder of another run (its fingerprint differs: params, data or weights
    changed) is discarded so that the run starts afresh; a non-empty folder that is not a
    pipeline state folder (no marker) is refused instead of deleted.

    Raises:
        UnsafeOutputError: ``state`` exists, is not empty and was not written by the pipeline.
    """
    state = Path(state)
    check_output(state, option="--state", markers=STATE_MARKERS)
    stamp = state / FINGERPRINT
    with writing(state):  # a full disk or unwritable folder: one line naming it
        if state.exists() and has_marker(state, STATE_MARKERS):
            if not stamp.is_file() or stamp.read_text().strip() != fingerprint:
                log.warning("%s holds the state of another run (params or data changed): "
                            "starting afresh", state)
                shutil.rmtree(state)
        state.mkdir(parents=True, exist_ok=True)
        if not has_marker(state):
            write_marker(state)
        if not stamp.is_file():
            with atomic_path(stamp) as tmp:
                tmp.write_text(fingerprint + "\n")


@contextmanager
def state_lock(state: Path) -> Iterator[None]:
    """Hold ``state`` for this run: a second run given the same state folder while this one
    trains is refused at once, naming the holder, instead of both writing one folder.

    The lock is an advisory ``flock`` on ``.<name>.lock`` beside the folder (the folder
    itself is replaced when a run starts afresh); the kernel releases it when the process
    ends, killed or not, so a stale lock file never blocks a rerun.

    Raises:
        DataError: another process holds the lock.
    """
    state = Path(state)
    path = state.parent / f".{state.name}.lock"
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise DataError(f"{state}: in use by another run ({holder}); wait for it to end or give this "
                        "run its own state folder") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def files_listing_digest(*folders: Path | None) -> str:
    """sha256 over (relative path, size, modification time in ns) of every file under
    ``folders``: what a run trains on, cheaply, for its state fingerprint.

    Volumes rewritten under the same ids (a rerun of resample or cubes) change their
    times, so an interrupted run does not resume on other data. A file changed in place
    with its size and time restored is not seen; reading every byte at each start would
    cost minutes on the paper's data.
    """
    digest = hashlib.sha256()
    for folder in folders:
        if folder is None or not Path(folder).is_dir():
            continue
        root = Path(folder)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                stat = (Path(dirpath) / name).stat()
                rel = (Path(dirpath) / name).relative_to(root)
                digest.update(f"{root.name}/{rel}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
