"""pcrl.preprocessing.radiographs: the 2D array store of ChestX-ray14 (resized uint8 shards)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pcrl.io.png import load_radiograph
from pcrl.phantom import generate_chestxray14
from pcrl.preprocessing.radiographs import gather_store, resize_radiograph, shard_positions, write_shard
from pcrl.errors import DataError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("cxr") / "chestxray14"
    generate_chestxray14(root, patients=5, size=(64, 64), seed=3)
    return root, sorted(p.name for p in (root / "images").glob("*.png"))


def test_resize_is_area_averaging_by_hand() -> None:
    image = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    out = resize_radiograph(image, (2, 2))
    expected = np.array([[np.mean([0, 10, 40, 50]), np.mean([20, 30, 60, 70])],
                         [np.mean([80, 90, 120, 130]), np.mean([100, 110, 140, 150])]])
    np.testing.assert_array_equal(out, np.round(expected).astype(np.uint8))
    assert out.dtype == np.uint8
    assert np.array_equal(resize_radiograph(image, (4, 4)), image)


def test_shards_gather_back_to_every_image_in_order(dataset, tmp_path: Path) -> None:
    root, names = dataset
    folders = [write_shard(root, names, tmp_path / str(k), size=(32, 32), shard=(k, 3)) for k in range(3)]
    store = gather_store(folders[::-1])  # any order of shard folders
    assert store.names == tuple(names) and len(store) == len(names)
    for i in (0, len(names) // 2, len(names) - 1):
        original = load_radiograph(root / "images" / names[i]).astype(np.float64)
        assert original.shape == (64, 64)
        # area interpolation by a factor of 2: the mean of each 2 x 2 block, rounded half to even
        blocks = original.reshape(32, 2, 32, 2).mean(axis=(1, 3))
        np.testing.assert_array_equal(store.image(i), np.round(blocks).astype(np.uint8))
    assert shard_positions(7, (1, 3)) == [1, 4]


def test_a_corrupt_png_is_named_and_nothing_is_written(dataset, tmp_path: Path) -> None:
    root, names = dataset
    broken = tmp_path / "broken"
    (broken / "images").mkdir(parents=True)
    for name in names[:3]:
        (broken / "images" / name).write_bytes((root / "images" / name).read_bytes())
    data = (broken / "images" / names[1]).read_bytes()
    (broken / "images" / names[1]).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=names[1]):
        write_shard(broken, names[:3], tmp_path / "out", size=(32, 32))
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataError, match=r"00000001_000.png: image is 64 x 64 pixels .*expected 1024 x 1024"):
        write_shard(root, names[:1], tmp_path / "out", size=(32, 32), expected_size=(1024, 1024))


def test_gather_refuses_missing_or_repeated_positions_and_mixed_sizes(dataset, tmp_path: Path) -> None:
    root, names = dataset
    a = write_shard(root, names, tmp_path / "a", size=(32, 32), shard=(0, 2))
    b = write_shard(root, names, tmp_path / "b", size=(32, 32), shard=(1, 2))
    with pytest.raises(DataError, match="do not hold positions"):
        gather_store([a])
    with pytest.raises(DataError, match="do not hold positions"):
        gather_store([a, b, a])
    c = write_shard(root, names, tmp_path / "c", size=(16, 16), shard=(1, 2))
    with pytest.raises(DataError, match="different sizes"):
        gather_store([a, c])
    (b / "images.npy").write_bytes((b / "images.npy").read_bytes()[:200])
    with pytest.raises(DataError, match="b"):
        gather_store([a, b])


def _swap_names(index: list[dict]) -> list[dict]:
    index[0]["image"], index[1]["image"] = index[1]["image"], index[0]["image"]
    return index


def _repeat_row(index: list[dict]) -> list[dict]:
    index[1]["row"] = index[0]["row"]  # two names, one image's pixels
    return index


def _row_out_of_range(index: list[dict]) -> list[dict]:
    index[-1]["row"] = len(index)
    return index


@pytest.mark.parametrize(("edit", "written"), [
    (_swap_names, None),  # well-formed: only the record shows it
    (_repeat_row, r"index\.json: rows \[0, 0, 2\]\.\.\. are not 0\.\.2 once each"),
    (_row_out_of_range, r"index\.json: rows \[0, 1, 3\]\.\.\. are not 0\.\.2 once each"),
])
def test_a_changed_index_is_refused_and_so_is_one_written_so(dataset, tmp_path: Path, edit,
                                                             written: str | None) -> None:
    import json

    from test_records import reseal

    from pcrl.preprocessing.radiographs import open_store

    root, names = dataset
    for k in range(2):
        write_shard(root, names[:6], tmp_path / "interim" / str(k), size=(32, 32), shard=(k, 2))
    path = tmp_path / "interim" / "1" / "index.json"
    index = json.loads(path.read_text())
    assert len(index) == 3
    path.write_text(json.dumps(edit(index), indent=1) + "\n")
    before = path.read_bytes()
    with pytest.raises(DataError, match=rf"{path}: (\d+ bytes, but its stage wrote \d+|content differs)") as info:
        open_store(tmp_path / "interim", count=2)
    assert "\n" not in str(info.value) and path.read_bytes() == before
    if written is not None:
        reseal(path.parent)  # as if the stage had written it so
        with pytest.raises(DataError, match=written):
            open_store(tmp_path / "interim", count=2)
