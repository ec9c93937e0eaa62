"""pcrl.records: the record of a data folder's files (size, dtype, shape, SHA-256), written
as the stage finishes and checked by every reader before use."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from pcrl.atomic import atomic_dir, save_npy
from pcrl.errors import DataError
from pcrl.records import CONTENTS, read_contents, verify_contents, write_contents


def reseal(folder: Path) -> None:
    """Record ``folder``'s files again with its record's stage, dataset and shard: what a
    stage fooled into writing bad data would have recorded."""
    meta = {k: v for k, v in read_contents(folder).items() if k not in ("format", "files")}
    write_contents(folder, meta)


def _data_folder(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    with atomic_dir(out, contents={"stage": "resample", "dataset": "luna16", "shard": [0, 1]}) as tmp:
        save_npy(tmp / "case.npy", np.arange(24, dtype=np.float32).reshape(2, 3, 4))
        (tmp / "sub").mkdir()
        (tmp / "sub" / "cases.json").write_text('[{"id": "case"}]\n')
    return out


def test_every_file_is_recorded_with_size_digest_dtype_and_shape(tmp_path: Path) -> None:
    out = _data_folder(tmp_path)
    contents = json.loads((out / CONTENTS).read_text())
    assert (contents["stage"], contents["dataset"], contents["shard"]) == ("resample", "luna16", [0, 1])
    assert sorted(contents["files"]) == ["case.npy", "sub/cases.json"]  # not the marker, not the record
    array = contents["files"]["case.npy"]
    data = (out / "case.npy").read_bytes()  # the digest taken while writing is that of the bytes on disk
    assert array == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "dtype": "<f4",
                     "shape": [2, 3, 4]}
    text = (out / "sub" / "cases.json").read_bytes()
    assert contents["files"]["sub/cases.json"] == {"size": len(text), "sha256": hashlib.sha256(text).hexdigest()}
    assert verify_contents(out, stage="resample", dataset="luna16")["files"] == contents["files"]


def test_the_timestamp_snakemake_adds_to_a_folder_output_is_not_a_stray_file(tmp_path: Path) -> None:
    """Snakemake writes an empty ``.snakemake_timestamp`` into every folder output after its
    job; the folder still verifies (the Snakemake runner's first downstream job failed on it)."""
    out = _data_folder(tmp_path)
    (out / ".snakemake_timestamp").write_bytes(b"")
    assert sorted(verify_contents(out, stage="resample")["files"]) == ["case.npy", "sub/cases.json"]
    (out / ".other_timestamp").write_bytes(b"")  # any other file is still stray
    with pytest.raises(DataError, match=r"\.other_timestamp: not written by the stage"):
        verify_contents(out)


def test_a_metrics_folder_gets_no_record(tmp_path: Path) -> None:
    with atomic_dir(tmp_path / "metrics") as tmp:
        (tmp / "metrics.json").write_text("{}")
    assert not (tmp_path / "metrics" / CONTENTS).exists()


@pytest.mark.parametrize(("change", "message"), [
    (lambda out: np.save(out / "case.npy", np.load(out / "case.npy").astype(np.float64)),
     r"case\.npy: 320 bytes, but its stage wrote 224"),  # 128 header bytes + 24 values of 8 and of 4 bytes
    (lambda out: np.save(out / "case.npy", np.load(out / "case.npy").astype(np.float16)),
     r"case\.npy: 176 bytes, but its stage wrote 224"),
    (lambda out: np.save(out / "case.npy", np.load(out / "case.npy")[::-1].copy()),
     r"case\.npy: content differs from what its stage wrote \(sha256 mismatch\)"),
    (lambda out: (out / "case.npy").unlink(), r"case\.npy: missing, but listed in .*contents\.json"),
    (lambda out: (out / "extra.npy").write_bytes(b"x"), r"extra\.npy: not written by the stage"),
    (lambda out: (out / CONTENTS).unlink(), r"contents\.json is missing: .*out was not written"),
    (lambda out: (out / CONTENTS).write_text("{"), r"contents\.json: unreadable"),
])
def test_a_changed_folder_is_refused_naming_the_file(tmp_path: Path, change, message: str) -> None:
    out = _data_folder(tmp_path)
    verify_contents(out)  # verified once: the process remembers it, but not past a change
    change(out)
    with pytest.raises(DataError, match=message) as info:
        verify_contents(out)
    assert "\n" not in str(info.value)


def test_a_same_size_dtype_change_is_named_by_its_dtype(tmp_path: Path) -> None:
    """float32 re-saved as int32 keeps the size: the header's dtype names what differs."""
    out = _data_folder(tmp_path)
    np.save(out / "case.npy", np.load(out / "case.npy").astype(np.int32))
    with pytest.raises(DataError, match=r"case\.npy: dtype <i4 differs from the <f4 its stage wrote"):
        verify_contents(out)


def test_a_folder_of_another_stage_or_dataset_is_refused(tmp_path: Path) -> None:
    out = _data_folder(tmp_path)
    with pytest.raises(DataError, match=r"out/contents\.json: dataset is 'luna16', expected 'msd_liver'"):
        verify_contents(out, dataset="msd_liver")
    with pytest.raises(DataError, match=r"stage is 'resample', expected 'cubes'"):
        verify_contents(out, stage="cubes")


def test_a_reader_of_a_few_files_checks_only_those(tmp_path: Path) -> None:
    from pcrl.records import verify_files

    out = _data_folder(tmp_path)
    (out / "case.npy").write_bytes(b"changed")  # not read by this reader
    assert verify_files(out, ["sub/cases.json"], stage="resample")["dataset"] == "luna16"
    (out / "sub" / "cases.json").write_text("[]\n")
    with pytest.raises(DataError, match=r"sub/cases\.json: 3 bytes, but its stage wrote 17"):
        verify_files(out, ["sub/cases.json"])
    with pytest.raises(DataError, match=r"other\.json: not written by the stage"):
        verify_files(out, ["other.json"])
