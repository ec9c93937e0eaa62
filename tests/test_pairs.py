"""Tests of pcrl.preprocessing.pairs: validation at construction, indexing, lazy memory maps."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pcrl.atomic import save_npy
from pcrl.preprocessing.pairs import PairsDataset, pair_files, read_pair_header
from pcrl.errors import DataError

SHAPE = (6, 5, 4)


def write(path: Path, array: np.ndarray) -> Path:
    save_npy(path, array)
    return path


def pairs(n: int, seed: int, dtype: type = np.float16) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 2, *SHAPE)).astype(dtype)


@pytest.fixture()
def two_files(tmp_path: Path) -> tuple[list[Path], list[np.ndarray]]:
    arrays = [pairs(3, 0), pairs(2, 1, np.float32)]
    return [write(tmp_path / f"c{i}.npy", a) for i, a in enumerate(arrays)], arrays


def test_items_are_float32_views_of_the_right_rows(two_files) -> None:
    files, arrays = two_files
    ds = PairsDataset(files)
    assert len(ds) == 5 and ds.shape == SHAPE
    for index, (file_index, row) in enumerate([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]):
        x1, x2 = ds[index]
        assert x1.shape == x2.shape == (1, *SHAPE)
        assert x1.dtype == x2.dtype == torch.float32
        np.testing.assert_array_equal(x1[0].numpy(), arrays[file_index][row, 0].astype(np.float32))
        np.testing.assert_array_equal(x2[0].numpy(), arrays[file_index][row, 1].astype(np.float32))
        assert ds.locate(index) == (files[file_index], row)
    assert torch.equal(ds[-1][0], ds[4][0])
    with pytest.raises(IndexError):
        ds[5]


def test_items_are_writable_copies(two_files) -> None:
    files, arrays = two_files
    ds = PairsDataset(files)
    x1, _ = ds[3]
    x1 += 1  # must not fail on a read-only memory map, nor change the file
    np.testing.assert_array_equal(ds[3][0][0].numpy(), arrays[1][0, 0])


def test_memory_maps_open_lazily_and_do_not_pickle(two_files) -> None:
    files, _ = two_files
    ds = PairsDataset(files)
    assert ds._maps == {}
    ds[4]
    assert set(ds._maps) == {1}  # only the file that was read
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._maps == {}
    assert len(pickle.dumps(ds)) < 2000  # headers only, no voxel data
    assert torch.equal(clone[4][1], ds[4][1])


def test_dataloader_workers_read_every_pair_once(two_files) -> None:
    files, _ = two_files
    ds = PairsDataset(files)
    loader = DataLoader(ds, batch_size=2, num_workers=1, shuffle=False)
    firsts = torch.cat([x1 for x1, _ in loader])
    assert firsts.shape == (5, 1, *SHAPE)
    assert torch.equal(firsts, torch.stack([ds[i][0] for i in range(5)]))


@pytest.mark.parametrize(("array", "message"), [
    (np.zeros((3, 2, 6, 5), np.float16), "shape"),          # 4-D
    (np.zeros((3, 3, *SHAPE), np.float16), "shape"),        # three views
    (np.zeros((3, 2, 6, 0, 4), np.float16), "shape"),       # empty axis
    (np.zeros((3, 2, *SHAPE), np.int16), "float"),          # not floating point
])
def test_malformed_arrays_are_refused_naming_the_file(tmp_path: Path, array: np.ndarray,
                                                      message: str) -> None:
    bad = write(tmp_path / "bad_case.npy", array)
    with pytest.raises(DataError, match=rf"bad_case\.npy.*{message}"):
        PairsDataset([bad])


def test_truncated_file_is_refused_at_construction(tmp_path: Path) -> None:
    good = write(tmp_path / "good.npy", pairs(2, 0))
    cut = tmp_path / "cut.npy"
    cut.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"cut\.npy: truncated"):
        PairsDataset([good, cut])
    header_only = tmp_path / "stub.npy"
    header_only.write_bytes(good.read_bytes()[:20])
    with pytest.raises(DataError, match=r"stub\.npy"):
        read_pair_header(header_only)


def test_not_an_npy_file_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.npy"
    text.write_text("hello")
    with pytest.raises(DataError, match=r"notes\.npy: not a readable"):
        PairsDataset([text])
    with pytest.raises(DataError, match=r"absent\.npy"):
        PairsDataset([tmp_path / "absent.npy"])


def test_files_with_different_shapes_are_refused(tmp_path: Path) -> None:
    a = write(tmp_path / "a.npy", pairs(1, 0))
    b = write(tmp_path / "b.npy", np.zeros((1, 2, 6, 5, 8), np.float16))
    with pytest.raises(DataError, match=r"b\.npy: views of shape \(6, 5, 8\)"):
        PairsDataset([a, b])


def test_empty_file_list_is_refused() -> None:
    with pytest.raises(DataError, match="no pairs files"):
        PairsDataset([])


def test_file_with_zero_pairs_is_skipped_by_indexing(tmp_path: Path) -> None:
    empty = write(tmp_path / "empty.npy", np.zeros((0, 2, *SHAPE), np.float16))
    full = write(tmp_path / "full.npy", pairs(2, 3))
    ds = PairsDataset([empty, full])
    assert len(ds) == 2 and ds.locate(0) == (full, 0)


def test_pair_files_follow_the_split_order_and_name_missing_ones(tmp_path: Path) -> None:
    for case in ("b", "a"):
        write(tmp_path / f"{case}.npy", pairs(1, 0))
    assert pair_files(tmp_path, ["a", "b"]) == [tmp_path / "a.npy", tmp_path / "b.npy"]
    with pytest.raises(DataError, match=r"zz\.npy"):
        pair_files(tmp_path, ["a", "zz"])
