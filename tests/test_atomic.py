"""Atomic outputs: nothing half-written ever carries its final name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pcrl.outputs import MARKER, UnsafeOutputError, write_marker
from pcrl.atomic import atomic_dir, atomic_path, save_npy, write_json


def test_atomic_path_renames_on_success(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("hello")
        assert not target.exists()
    assert target.read_text() == "hello"
    assert list(target.parent.iterdir()) == [target]


def test_atomic_path_leaves_nothing_on_error(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_write_json_and_npy_round_trip(tmp_path: Path) -> None:
    write_json(tmp_path / "m.json", {"a": [1, 2]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": [1, 2]}
    arr = np.arange(24, dtype=np.float16).reshape(2, 3, 4)
    save_npy(tmp_path / "x.npy", arr)
    loaded = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert loaded.dtype == np.float16 and np.array_equal(loaded, arr)


def test_atomic_dir_replaces_only_when_complete(tmp_path: Path) -> None:
    out = tmp_path / "stage"
    out.mkdir()
    write_marker(out)  # an earlier output of the pipeline
    (out / "old.txt").write_text("old")
    with pytest.raises(ValueError):
        with atomic_dir(out) as tmp:
            (tmp / "new.txt").write_text("partial")
            raise ValueError("case 3 failed")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]
    with atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("done")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]


def test_atomic_dir_never_replaces_a_folder_it_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "my_dataset"
    out.mkdir()
    (out / "scan.mhd").write_text("precious")
    with pytest.raises(UnsafeOutputError, match="not written by this pipeline"):
        with atomic_dir(out) as tmp:
            (tmp / "new.txt").write_text("done")
    assert sorted(p.name for p in out.iterdir()) == ["scan.mhd"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_dataset"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_dir(empty) as tmp:  # an empty folder holds nothing to lose
        (tmp / "new.txt").write_text("done")
    assert sorted(p.name for p in empty.iterdir()) == [MARKER, "new.txt"]
