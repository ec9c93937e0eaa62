"""Checkpoint files: a digest written with them, verified on load; no code runs from them."""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from pcrl.errors import DataError
from pcrl.torchfile import DIGEST_KEY, first_nonfinite, load_checked, require_finite, save_checked


def _checkpoint() -> dict:
    generator = torch.Generator().manual_seed(0)
    return {"state_dict": {"conv.weight": torch.randn(4, 3, generator=generator),
                           "bn.num_batches_tracked": torch.tensor(7)},
            "epoch": 3, "metrics": {"loss": 0.5}}


def test_round_trip_keeps_content_and_stores_its_sha256(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_checked(_checkpoint(), path)
    loaded = load_checked(path, "checkpoint")
    assert torch.equal(loaded["state_dict"]["conv.weight"], _checkpoint()["state_dict"]["conv.weight"])
    assert loaded["epoch"] == 3 and DIGEST_KEY not in loaded
    raw = torch.load(path, weights_only=True)
    assert len(raw[DIGEST_KEY]) == 64
    assert list(tmp_path.iterdir()) == [path]


def _rewrite_tensor_bytes(path: Path, flip: int) -> None:
    """Flip one bit inside the stored bytes of the first tensor, keeping the zip valid."""
    with zipfile.ZipFile(path) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    data_name = sorted(n for n in members if "/data/" in n)[0]
    blob = bytearray(members[data_name])
    blob[flip] ^= 0x10
    members[data_name] = bytes(blob)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    path.write_bytes(buffer.getvalue())


def test_equal_contents_give_equal_bytes_whatever_the_file_name(tmp_path: Path) -> None:
    """torch.save given a path names the zip's root after the (random, temporary) file; the
    saved bytes must not depend on it, or a rerun's equal weights look changed to DVC."""
    obj = {"state_dict": {"w": torch.arange(6.0).reshape(2, 3)}, "method": "pcrl"}
    save_checked(obj, tmp_path / "weights.pt")
    save_checked(obj, tmp_path / "other" / "checkpoint.pt")
    first, second = (tmp_path / "weights.pt").read_bytes(), (tmp_path / "other" / "checkpoint.pt").read_bytes()
    assert first == second
    with zipfile.ZipFile(tmp_path / "weights.pt") as archive:
        assert {name.split("/")[0] for name in archive.namelist()} == {"archive"}


def test_a_flipped_bit_in_a_tensor_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    save_checked(_checkpoint(), path)
    _rewrite_tensor_bytes(path, flip=5)
    flipped = torch.load(path, weights_only=True)  # torch itself does not notice
    assert not torch.equal(flipped["state_dict"]["conv.weight"], _checkpoint()["state_dict"]["conv.weight"])
    with pytest.raises(DataError, match=rf"{path}: checkpoint is corrupt: .*sha256"):
        load_checked(path, "checkpoint")


def test_truncated_file_is_named_without_unsafe_advice(tmp_path: Path) -> None:
    path = tmp_path / "cut.pt"
    save_checked(_checkpoint(), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=f"{path}: not a readable checkpoint") as info:
        load_checked(path, "checkpoint")
    assert "weights_only=False" not in str(info.value)


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_a_pickle_that_would_run_code_is_refused_without_unsafe_advice(tmp_path: Path, capsys) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "x": Payload()}, path)
    with pytest.raises(DataError, match="would need code execution") as info:
        load_checked(path, "checkpoint", require_digest=False)
    assert "weights_only=False" not in str(info.value)
    assert "code ran" not in capsys.readouterr().out
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(DataError, match=str(plain)):
        load_checked(plain, "checkpoint")


def test_a_file_without_digest_is_refused_when_one_is_required(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    torch.save(_checkpoint(), path)
    with pytest.raises(DataError, match="carries no content digest"):
        load_checked(path, "training checkpoint")
    assert load_checked(path, "external checkpoint", require_digest=False)["epoch"] == 3


def test_non_finite_weights_name_the_file_and_first_tensor(tmp_path: Path) -> None:
    state = {"a": torch.ones(2), "b": torch.tensor([1.0, float("nan")]),
             "c": torch.tensor([float("inf")]), "n": torch.tensor(3)}
    assert first_nonfinite(state) == "b"
    with pytest.raises(DataError, match=r"w\.pt: model holds non-finite weights \(NaN or inf\) in b and 1 more"):
        require_finite(state, tmp_path / "w.pt", "model")
    require_finite({"a": torch.ones(2), "n": torch.tensor(3)}, tmp_path / "w.pt", "model")


def test_digest_covers_dtype_shape_and_values() -> None:
    from pcrl.torchfile import object_digest

    base = {"w": torch.zeros(2, 3)}
    assert object_digest(base) == object_digest({"w": torch.zeros(2, 3)})
    for other in ({"w": torch.zeros(3, 2)}, {"w": torch.zeros(2, 3, dtype=torch.float64)},
                  {"w": torch.zeros(2, 3).index_fill_(1, torch.tensor([2]), 1e-30)},
                  {"v": torch.zeros(2, 3)}, {"w": torch.zeros(2, 3), "epoch": 1}):
        assert object_digest(other) != object_digest(base)
    # the digest of a tensor is the sha256 of its bytes in a fixed framing: recompute by hand
    t = torch.arange(6, dtype=torch.int16)
    manual = hashlib.sha256(b"|mapping|1|" + b"/w|tensor|torch.int16|(6,)|" + t.numpy().tobytes())
    assert object_digest({"w": t}) == manual.hexdigest()
