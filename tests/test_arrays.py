"""pcrl.preprocessing.arrays: the memory-mappable copies of a resampled case, refused when
changed after the resample stage (their record, pcrl.records) or when wrong as written
(NaN voxels, foreground indices out of range, on background or not the label's)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from pcrl.cli import main
from pcrl.errors import DataError
from pcrl.preprocessing.arrays import open_arrays
from pcrl.records import CONTENTS
from pcrl.stages.download import run_download
from pcrl.stages.resample import run_resample
from test_records import reseal

PHANTOM = {"seed": 4, "msd_liver": {"cases": 3, "test_cases": 0, "shape": [48, 48, 20]}}


@pytest.fixture(scope="module")
def liver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """raw/ and interim/ (with arrays) of a 3-case liver phantom, unsharded."""
    root = tmp_path_factory.mktemp("liver")
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    run_download("msd_liver", {"source": "phantom", "phantom": PHANTOM}, out=root / "raw", progress=False)
    run_resample(params["resample"]["msd_liver"], raw=root / "raw", out=root / "interim", progress=False,
                 dataset="msd_liver")
    return root


@pytest.fixture()
def interim(liver: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(liver / "interim", tmp_path / "interim"))


def _case(interim: Path) -> dict:
    return json.loads((interim / "cases.json").read_text())[0]


def _bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _cubes_error(liver: Path, interim: Path, tmp_path: Path, demo_params: dict, capsys) -> str:
    """``pcrl cubes --task lcs`` on ``interim``: exit 2, one line, interim unchanged, no output."""
    params = tmp_path / "params.yaml"
    demo_params["data"]["shards"] = [0]
    params.write_text(yaml.safe_dump(demo_params))
    before, out = _bytes(interim), tmp_path / "processed"
    capsys.readouterr()
    assert main(["--params", str(params), "cubes", "--task", "lcs", "--raw", str(liver / "raw"), "--interim",
                 str(interim), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pcrl cubes: error: "), err
    assert _bytes(interim) == before and not out.exists()
    return err[0]


def test_the_arrays_are_recorded_as_written(liver: Path) -> None:
    case = _case(liver / "interim")
    record = json.loads((liver / "interim" / CONTENTS).read_text())
    assert (record["stage"], record["dataset"], record["shard"]) == ("resample", "msd_liver", [0, 1])
    image = np.load(liver / "interim" / case["arrays"]["image"])
    assert record["files"][case["arrays"]["image"]]["dtype"] == "<f4"
    assert record["files"][case["arrays"]["image"]]["shape"] == list(image.shape)
    assert record["files"][case["arrays"]["foreground"]]["dtype"] == "<i8"
    arrays = open_arrays(liver / "interim", case["arrays"])
    np.testing.assert_array_equal(arrays.foreground, np.flatnonzero(np.asarray(arrays.label).reshape(-1)))


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_an_image_resaved_in_another_dtype_is_refused(liver: Path, interim: Path, tmp_path: Path,
                                                      demo_params: dict, capsys, dtype: type) -> None:
    name = _case(interim)["arrays"]["image"]
    image = np.load(interim / name)
    np.save(interim / name, image.astype(dtype))
    size = 128 + image.size * np.dtype(dtype).itemsize  # a 128-byte header and the values
    err = _cubes_error(liver, interim, tmp_path, demo_params, capsys)
    assert f"{interim / name}: {size} bytes, but its stage wrote {128 + image.size * 4}" in err


def _change(interim: Path, key: str, edit) -> Path:
    path = interim / _case(interim)["arrays"][key]
    array = np.load(path)
    np.save(path, edit(array.copy()))
    return path


def _nan(image: np.ndarray) -> np.ndarray:
    image[0, 1, 2, 3] = np.nan
    return image


def _out_of_range(fg: np.ndarray) -> np.ndarray:
    fg[-1] = 10 ** 9
    return fg


def _on_background(fg: np.ndarray) -> np.ndarray:
    fg[0] = 0  # the corner voxel: background
    return fg


def _label_changed(label: np.ndarray) -> np.ndarray:
    label[label > 0] = 0  # the label .npy no longer the NIfTI's
    return label


@pytest.mark.parametrize(("key", "edit", "written"), [
    ("image", _nan, r"1 voxels are NaN or infinite"),
    ("foreground", _out_of_range, r"foreground indices outside 0\.\.{last} \(the label's voxels\)"),
    ("foreground", _on_background, r"\d+ foreground indices, 1 on background voxels"),
    ("label", _label_changed,
     r"\d+ foreground indices, \d+ on background voxels, for 0 foreground voxels of .*_label\.npy"),
])
def test_a_changed_array_is_refused_and_so_is_one_written_so(liver: Path, interim: Path, tmp_path: Path,
                                                             demo_params: dict, capsys, key: str, edit,
                                                             written: str) -> None:
    path = _change(interim, key, edit)
    err = _cubes_error(liver, interim, tmp_path, demo_params, capsys)
    assert f"{path}: content differs from what its stage wrote (sha256 mismatch)" in err
    reseal(interim)  # as if the resample stage had been fooled into writing it
    last = np.load(interim / _case(interim)["arrays"]["label"]).size - 1
    with pytest.raises(DataError, match=written.replace("{last}", str(last))) as info:
        open_arrays(interim, _case(interim)["arrays"])
    assert str(path) in str(info.value)  # the label: named as the one the foreground indices do not fit
    assert "\n" not in str(info.value)


def test_nan_voxels_are_never_written(tmp_path: Path) -> None:
    from pcrl.preprocessing.arrays import write_arrays

    image = np.zeros((4, 4, 4), np.float32)
    image[1, 2, 3] = np.inf
    with pytest.raises(DataError, match=r"c\.npy: 1 voxels are NaN or infinite"):
        write_arrays(tmp_path, "c", image, np.zeros((4, 4, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []
