"""Implausible images per modality (issue 30, class 4): BraTS MRI channels, radiographs.

An MRI with another channel count, an empty channel or a label map as the image, and a
radiograph that is constant, a mask or not 8-bit, are refused naming the file; through the
CLI with exit 2, the inputs intact and no output folder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml
from PIL import Image

from pcrl.cli import main
from pcrl.errors import DataError
from pcrl.io.png import load_radiograph
from pcrl.phantom import generate_chestxray14, generate_msd_brain
from pcrl.preprocessing.plausibility import check_mri_values
from pcrl.preprocessing.radiographs import write_shard


def _mri(rng: np.random.Generator, channels: int = 4) -> np.ndarray:
    return rng.normal(300.0, 80.0, size=(channels, 12, 12, 8)).astype(np.float32)


def test_a_sound_four_channel_mri_passes() -> None:
    check_mri_values(_mri(np.random.default_rng(0)), Path("BRATS_001.nii.gz"), 4)
    whole = np.random.default_rng(1).integers(0, 3000, size=(4, 12, 12, 8))  # BraTS ships int16 intensities
    check_mri_values(whole, Path("BRATS_002.nii.gz"), 4)


@pytest.mark.parametrize(("defect", "message"), [
    ("three", r"BRATS_001.nii.gz: 3 channel\(s\), expected 4"),
    ("single", r"BRATS_001.nii.gz: 1 channel\(s\), expected 4"),
    ("zero", r"BRATS_001.nii.gz: channel 2 is constant \(0 everywhere\)"),
    ("constant", r"BRATS_001.nii.gz: channel 0 is constant \(7 everywhere\)"),
    ("labels", r"BRATS_001.nii.gz: does not look like an MRI: whole numbers 0 to 3 only"),
])
def test_implausible_mri_is_refused(defect: str, message: str) -> None:
    rng = np.random.default_rng(2)
    values = {"three": lambda: _mri(rng, 3), "single": lambda: _mri(rng, 1)[0],
              "zero": lambda: _mri(rng) * np.array([1, 1, 0, 1], np.float32)[:, None, None, None],
              "constant": lambda: np.concatenate([np.full((1, 12, 12, 8), 7.0, np.float32), _mri(rng, 3)]),
              "labels": lambda: rng.integers(0, 4, size=(4, 12, 12, 8)).astype(np.float32)}[defect]()
    with pytest.raises(DataError, match=f"^{message}"):
        check_mri_values(values, Path("BRATS_001.nii.gz"), 4)


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize("defect", ["three", "zero", "labels"])
def test_the_resample_stage_refuses_an_implausible_brats_volume(defect: str, tmp_path: Path, repo_root: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "Task01_BrainTumour"
    generate_msd_brain(root, cases=2, test_cases=0, seed=4, shape=(32, 32, 24))
    image = sorted((root / "imagesTr").glob("*.nii.gz"))[0]
    ref = sitk.ReadImage(str(image))
    arr = sitk.GetArrayFromImage(ref)  # (4, z, y, x): channels first in a 4D NIfTI read back
    if defect == "three":
        arr = arr[:3]
    elif defect == "zero":
        arr[1] = 0
    else:
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "labelsTr" / image.name)))
        arr = np.stack([label.astype(arr.dtype)] * 4)
    bad = sitk.GetImageFromArray(arr, isVector=False)
    bad.SetSpacing(ref.GetSpacing()[: bad.GetDimension()] if defect == "three" else ref.GetSpacing())
    bad.SetOrigin(ref.GetOrigin())
    bad.SetDirection(ref.GetDirection())
    sitk.WriteImage(bad, str(image))
    demo = yaml.safe_load((repo_root / "params.yaml").read_text())
    demo["data"].update(source="local", datasets=["msd_brain"], local_paths={"msd_brain": str(root)},
                        cache_dir=str(tmp_path / "cache"))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(demo))
    raw, out = tmp_path / "raw", tmp_path / "interim"
    assert main(["--params", str(params), "download", "--dataset", "msd_brain", "--out", str(raw),
                 "--no-progress"]) == 0
    before = _digest(root)
    capsys.readouterr()
    assert main(["--params", str(params), "resample", "--dataset", "msd_brain", "--raw", str(raw), "--out",
                 str(out), "--workers", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = {"three": "3 channel(s), expected 4", "zero": "channel 1 is constant (0 everywhere)",
                "labels": "does not look like an MRI: whole numbers 0 to 3 only"}[defect]
    assert len(err) >= 1 and err[-1].startswith("pcrl resample: error: ") and str(image) in err[-1], err
    assert expected in err[-1], err[-1]
    assert not out.exists() and _digest(root) == before


def _png(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    image = Image.fromarray(pixels)
    (image if mode is None else image.convert(mode)).save(path)
    return path


@pytest.mark.parametrize(("defect", "message"), [
    ("constant", r"1 distinct grey level\(s\) \[128\], as in a constant image or a mask"),
    ("mask", r"2 distinct grey level\(s\) \[0, 255\], as in a constant image or a mask"),
    ("one-bit", r"1-bit grayscale PNG; ChestX-ray14 radiographs are 8-bit"),
    ("sixteen-bit", r"16-bit grayscale PNG"),
])
def test_implausible_radiographs_are_named_and_nothing_is_written(defect: str, message: str, tmp_path: Path) -> None:
    root = tmp_path / "chestxray14"
    generate_chestxray14(root, patients=3, size=(64, 64), seed=5)
    names = sorted(p.name for p in (root / "images").glob("*.png"))
    target = root / "images" / names[1]
    rng = np.random.default_rng(3)
    if defect == "constant":
        _png(target, np.full((64, 64), 128, np.uint8))
    elif defect == "mask":
        _png(target, (rng.random((64, 64)) > 0.5).astype(np.uint8) * 255)
    elif defect == "one-bit":
        _png(target, (rng.random((64, 64)) > 0.5).astype(np.uint8) * 255, mode="1")
    else:
        Image.fromarray(rng.integers(0, 65535, size=(64, 64)).astype(np.uint16)).save(target)
    before = target.read_bytes()
    with pytest.raises(DataError, match=f"^{target}: .*{message}"):
        load_radiograph(target)
    with pytest.raises(DataError, match=names[1]):
        write_shard(root, names, tmp_path / "store", size=(32, 32), expected_size=(64, 64))
    assert not (tmp_path / "store").exists() and target.read_bytes() == before
    assert load_radiograph(root / "images" / names[0]).shape == (64, 64)  # its neighbours pass
