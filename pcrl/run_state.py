"""A training stage's resumable state folder: prepared for one run, discarded once done.

A training stage (pretraining, fine-tuning) keeps its checkpoints in a state folder so that
an interrupted job resumes. :func:`prepare_state` stamps the folder with the run's
fingerprint (:data:`pcrl.outputs.FINGERPRINT`) and the pipeline's marker, discarding the
state of another run; :func:`discard_state` removes it once the stage's outputs hold the
result. Both delete only folders the pipeline marked (:mod:`pcrl.outputs`).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from pcrl.atomic import atomic_path
from pcrl.outputs import FINGERPRINT, STATE_MARKERS, check_output, has_marker, write_marker

__all__ = ["discard_state", "prepare_state"]

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
