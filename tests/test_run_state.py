"""Tests of pcrl.run_state: the state folder's lock and the fingerprint of the data a run reads."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pcrl.errors import DataError
from pcrl.run_state import files_listing_digest, state_lock


def test_a_second_run_on_the_same_state_folder_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state" / "s0"
    with state_lock(state):
        with pytest.raises(DataError, match=rf"{state}: in use by another run \(pid {os.getpid()} on "):
            with state_lock(state):
                pass
    with state_lock(state):  # released: the next run goes ahead
        pass


def test_a_killed_holder_leaves_no_lock(tmp_path: Path) -> None:
    state = tmp_path / "s0"
    code = ("import os, sys; from pathlib import Path; from pcrl.run_state import state_lock\n"
            f"ctx = state_lock(Path({str(state)!r})); ctx.__enter__(); os._exit(9)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    with state_lock(state):  # the kernel dropped the dead process's lock
        pass


def test_the_listing_digest_by_hand_and_its_changes(tmp_path: Path) -> None:
    data = tmp_path / "interim"
    (data / "sub").mkdir(parents=True)
    (data / "b.npy").write_bytes(b"12")
    (data / "sub" / "a.npy").write_bytes(b"1")
    os.utime(data / "b.npy", ns=(5, 7_000))
    os.utime(data / "sub" / "a.npy", ns=(5, 9_000))
    expected = hashlib.sha256(b"interim/b.npy\t2\t7000\ninterim/sub/a.npy\t1\t9000\n").hexdigest()
    assert files_listing_digest(data, None, tmp_path / "missing") == expected
    (data / "b.npy").write_bytes(b"34")  # the same id and size, rewritten: its time moves
    assert files_listing_digest(data) != expected
