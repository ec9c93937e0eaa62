"""Stage outputs that can never destroy inputs (docs/design.md, principle 7: inputs are sacred).

A stage replaces its output folder when it succeeds, and a training stage may discard its
state folder when the run's settings changed. Both are deletions, so before a stage writes
anything, :func:`check_output` refuses an output path that

- equals, contains or lies inside one of the stage's inputs (``--raw``, ``--pairs``, a
  configured ``data.local_paths`` folder, the download cache, ...);
- equals or contains the repository root or the user's home;
- is an existing non-empty folder that does not carry :data:`MARKER`, the file the
  pipeline writes into every output folder it creates (:func:`pcrl.atomic.atomic_dir`) and
  every state folder (:func:`pcrl.run_state.prepare_state`): a folder without it was not
  written by the pipeline, so the pipeline does not delete it.

This module depends on no other pcrl module but the errors: :mod:`pcrl.atomic` and
:mod:`pcrl.run_state` build on it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pcrl.errors import PcrlError

#: Written into every folder a stage creates; a folder without it is never replaced.
MARKER = ".pcrl-output"
#: Empty: DVC parses every file of a folder declared as metrics (data/evaluate), and an
#: empty file adds no metric to `dvc metrics show`, where any text would.
MARKER_TEXT = ""
#: The fingerprint of the run a state folder belongs to.
FINGERPRINT = "fingerprint.txt"
#: What shows a state folder is the pipeline's (the fingerprint alone: folders of older runs).
STATE_MARKERS = (MARKER, FINGERPRINT)


class UnsafeOutputError(PcrlError):
    """An output path would overwrite or delete something the stage did not write."""


def _resolved(path: str | os.PathLike[str]) -> Path:
    return Path(path).expanduser().resolve()


def is_within(child: Path, parent: Path) -> bool:
    """Whether ``child`` is ``parent`` or lies below it (both resolved)."""
    return child == parent or parent in child.parents


def repository_roots(start: str | os.PathLike[str] = ".") -> list[Path]:
    """The working folder and the nearest enclosing folder holding ``.git`` or ``.dvc``."""
    here = _resolved(start)
    roots = [here]
    for folder in (here, *here.parents):
        if (folder / ".git").exists() or (folder / ".dvc").is_dir():
            roots.append(folder)
            break
    return roots


def has_marker(folder: Path, names: Iterable[str] = (MARKER,)) -> bool:
    """Whether ``folder`` carries the pipeline's output marker (or one of ``names``)."""
    return any((Path(folder) / name).is_file() for name in names)


def write_marker(folder: Path) -> None:
    """Mark ``folder`` as written by the pipeline."""
    (Path(folder) / MARKER).write_text(MARKER_TEXT)


def _is_foreign(folder: Path, markers: Iterable[str]) -> bool:
    """A non-empty existing folder (or a file) that the pipeline did not mark."""
    if not folder.exists() and not folder.is_symlink():
        return False
    if not folder.is_dir() or folder.is_symlink():
        return True
    return any(folder.iterdir()) and not has_marker(folder, markers)


def check_output(
    out: str | os.PathLike[str],
    *,
    inputs: Iterable[str | os.PathLike[str]] = (),
    protected: Iterable[str | os.PathLike[str]] = (),
    option: str = "--out",
    markers: Iterable[str] = (MARKER,),
) -> None:
    """Refuse an output path whose replacement could delete what the stage did not write.

    Args:
        out: The output (or state) folder.
        inputs: The stage's inputs and the user's datasets: ``out`` may neither equal,
            contain nor lie inside any of them.
        protected: Folders ``out`` may lie inside but neither equal nor contain (the
            repository root, the user's home).
        option: The option that named ``out``, for the message.
        markers: File names that show a folder was written by the pipeline.

    Raises:
        UnsafeOutputError: naming ``out`` and the path it would endanger.
    """
    target = _resolved(out)
    if target == Path(target.anchor):
        raise UnsafeOutputError(f"{option} {out} is the filesystem root; refusing to write there")
    for given in inputs:
        path = _resolved(given)
        if target == path:
            relation = "is"
        elif is_within(path, target):
            relation = "contains"
        elif is_within(target, path):
            relation = "lies inside"
        else:
            continue
        raise UnsafeOutputError(
            f"{option} {out} {relation} the input {given}; replacing it would delete that "
            "input: choose another output folder"
        )
    for given in protected:
        path = _resolved(given)
        if is_within(path, target):
            relation = "is" if path == target else "contains"
            raise UnsafeOutputError(
                f"{option} {out} {relation} {given} (the repository or your home folder); "
                "choose an output folder inside it, e.g. data/..."
            )
    if _is_foreign(target, markers):
        raise UnsafeOutputError(
            f"{option} {out} exists and was not written by this pipeline (no {MARKER} file in "
            "it); refusing to replace it: choose another folder, or empty or remove it yourself"
        )


#: Options naming what a stage reads, and what it writes (replaces or may discard).
INPUT_OPTIONS = ("raw", "interim", "pairs", "processed", "weights", "model", "evaluations",
                 "checkpoint", "probe", "pretrained", "finetuned")
OUTPUT_OPTIONS = ("out", "state", "record")


def check_stage_paths(args: argparse.Namespace, params: dict[str, Any]) -> None:
    """Refuse, before any work, an output that could delete an input or a user's data.

    The inputs are the stage's own (``--raw``, ``--pairs``, ...), every
    ``data.local_paths`` folder and the download cache; the repository and the user's
    home may hold outputs but never be one (:func:`check_output`); the CLI runs it for every stage.
    """
    data = params.get("data", {})
    inputs = [getattr(args, name) for name in INPUT_OPTIONS if getattr(args, name, None)]
    inputs += [str(p) for p in data.get("local_paths", {}).values()]
    inputs.append(str(data.get("cache_dir", "data/downloads")))
    protected = [*repository_roots(), Path(args.params).resolve().parent, Path.home()]
    outs = [(name, getattr(args, name)) for name in OUTPUT_OPTIONS if getattr(args, name, None)]
    for name, out in outs:
        others = [o for n, o in outs if n != name]
        check_output(out, inputs=[*inputs, *others], protected=protected, option=f"--{name}",
                     markers=STATE_MARKERS if name == "state" else (MARKER,))
