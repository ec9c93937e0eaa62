"""Patches from memory-mapped volumes (pcrl/finetune/patches.py, pcrl/preprocessing/arrays.py).

References are written here: a window found by brute force in the full volume, MONAI's
centre correction by hand, and the foreground share counted over many draws.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pcrl.preprocessing.arrays import open_arrays, write_arrays
from pcrl.errors import DataError
from pcrl.preprocessing.task_data import VolumeCase, load_case
from pcrl.finetune.datasets import PatchSet
from pcrl.finetune.patches import crop_start, cut, draw_centres


def _volume(tmp_path: Path, shape=(40, 36, 20), channels=1):
    rng = np.random.default_rng(0)
    image = rng.random((channels, *shape), dtype=np.float32)
    label = np.zeros(shape, np.uint8)
    label[5:9, 20:26, 3:7] = 1
    label[30:33, 4:6, 12:15] = 2
    names = write_arrays(tmp_path, "c0", image, label)
    return image, label, names


@pytest.mark.parametrize("centre, size, patch, start", [
    (0, 40, 16, 0), (8, 40, 16, 0), (20, 40, 16, 12), (39, 40, 16, 24), (5, 10, 16, 0)])
def test_crop_start_keeps_the_window_inside(centre: int, size: int, patch: int, start: int) -> None:
    assert crop_start(centre, size, patch) == start


def test_arrays_round_trip_and_foreground_indices(tmp_path: Path) -> None:
    image, label, names = _volume(tmp_path)
    mapped = open_arrays(tmp_path, names)
    assert isinstance(mapped.image, np.memmap) and mapped.image.dtype == np.float32
    assert np.array_equal(mapped.image, image) and np.array_equal(mapped.label, label)
    assert np.array_equal(mapped.foreground, np.flatnonzero(label > 0))
    (tmp_path / names["label"]).write_bytes(b"not an array")
    with pytest.raises(DataError, match="c0_label.npy: cannot memory-map"):
        open_arrays(tmp_path, names)


def test_a_patch_is_the_window_of_the_full_volume(tmp_path: Path) -> None:
    image, label, names = _volume(tmp_path, channels=2)
    patch = (16, 16, 8)
    for centre in [(0, 0, 0), (20, 18, 10), (39, 35, 19), (7, 22, 5)]:
        got = cut(open_arrays(tmp_path, names).image, centre, patch)
        # brute force: the window of the full volume whose start is nearest the centre
        starts = [min(max(c - p // 2, 0), s - p) for c, p, s in zip(centre, patch, image.shape[1:])]
        want = image[:, starts[0]:starts[0] + 16, starts[1]:starts[1] + 16, starts[2]:starts[2] + 8]
        assert got.shape == (2, 16, 16, 8) and np.array_equal(got, want)


def test_a_volume_smaller_than_the_patch_is_padded_symmetrically(tmp_path: Path) -> None:
    image, _, names = _volume(tmp_path, shape=(10, 36, 5))
    got = cut(open_arrays(tmp_path, names).image, (4, 18, 2), (16, 16, 8))
    assert got.shape == (1, 16, 16, 8)
    assert np.array_equal(got[:, 3:13, :, 1:6], image[:, :, 10:26, :])  # pads 3+3 and 1+2
    assert got[:, :3].sum() == 0 and got[:, 13:].sum() == 0 and got[..., 6:].sum() == 0


def test_centres_fall_on_foreground_as_often_as_asked(tmp_path: Path) -> None:
    _, label, names = _volume(tmp_path)
    mapped = open_arrays(tmp_path, names)
    rng = np.random.RandomState(1)
    assert all(label[c] > 0 for c in draw_centres(rng, mapped, 50, 1.0))
    assert all(label[c] == 0 for c in draw_centres(rng, mapped, 50, 0.0))
    share = np.mean([label[c] > 0 for c in draw_centres(rng, mapped, 2000, 0.3)])
    assert 0.26 < share < 0.34


def test_patch_set_reads_the_arrays_like_the_nifti_files(tmp_path: Path) -> None:
    """The same case with and without arrays: load_case gives the same voxels; the
    memory-mapped PatchSet gives patches that are windows of that volume, with targets."""
    from pcrl.io.images import array_to_image, write_image

    image, label, names = _volume(tmp_path)
    grid = {"spacing": (1.0, 1.0, 1.0), "origin": (0.0, 0.0, 0.0), "direction": tuple(np.eye(3).ravel())}
    write_image(tmp_path / "c0.nii.gz", array_to_image(image[0], **grid))
    write_image(tmp_path / "c0_label.nii.gz", array_to_image(label, **grid))
    plain = VolumeCase("c0", tmp_path / "c0.nii.gz", tmp_path / "c0_label.nii.gz")
    mapped = VolumeCase("c0", plain.image, plain.label, names, tmp_path)
    a, b = load_case(plain, "lcs"), load_case(mapped, "lcs")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    images, targets = PatchSet([mapped], "lcs", (16, 16, 8), 4, foreground_prob=1.0)[0]
    assert images.shape == (4, 1, 16, 16, 8) and targets.shape == (4, 1, 16, 16, 8)
    for patch, target in zip(images.numpy(), targets.numpy()):
        hits = [(x, y, z) for x in range(25) for y in range(21) for z in range(13)
                if np.array_equal(image[0, x:x + 16, y:y + 16, z:z + 8], patch[0])]
        assert len(hits) == 1
        x, y, z = hits[0]
        assert np.array_equal(target[0], (label[x:x + 16, y:y + 16, z:z + 8] > 0).astype(np.float32))
        assert target.sum() > 0  # centred on the liver


def test_patch_set_targets_follow_their_patches_for_every_brats_region(tmp_path: Path) -> None:
    """BMS from arrays: 4 channels, labels 0..3; each of the K patches gets its own target
    channels, the BraTS regions by hand: whole tumour {1, 2, 3}, core {2, 3}, enhancing {3}.
    The memory maps kept open by a PatchSet are not pickled to DataLoader workers."""
    import pickle

    rng = np.random.default_rng(1)
    image = rng.random((4, 30, 28, 18), dtype=np.float32)
    label = rng.integers(0, 4, size=(30, 28, 18)).astype(np.uint8)
    names = write_arrays(tmp_path, "b0", image, label)
    case = VolumeCase("b0", tmp_path / "b0.nii.gz", tmp_path / "b0_label.nii.gz", names, tmp_path)
    patches = PatchSet([case], "bms", (16, 16, 8), 3, foreground_prob=0.5, check=False)
    images, targets = patches[0]
    assert images.shape == (3, 4, 16, 16, 8) and targets.shape == (3, 3, 16, 16, 8)
    assert targets.is_contiguous() and images.dtype == torch.float32 and targets.dtype == torch.uint8
    for patch, target in zip(images.numpy(), targets.numpy()):
        hits = [(x, y, z) for x in range(15) for y in range(13) for z in range(11)
                if np.array_equal(image[:, x:x + 16, y:y + 16, z:z + 8], patch)]
        assert len(hits) == 1
        x, y, z = hits[0]
        window = label[x:x + 16, y:y + 16, z:z + 8]
        for channel, region in enumerate(({1, 2, 3}, {2, 3}, {3})):
            assert np.array_equal(target[channel], np.isin(window, list(region)).astype(np.float32))
    assert patches._open and not pickle.loads(pickle.dumps(patches))._open
    again = patches[0]  # from the kept maps: the same item
    assert all(np.array_equal(u.numpy(), v.numpy()) for u, v in zip(again, (images, targets)))


def test_resample_writes_arrays_that_fine_tuning_reads(tmp_path: Path, demo_params: dict) -> None:
    """resample.<dataset>.arrays: the stage writes each case's arrays beside its NIfTI files,
    cases.json names them, and fine-tuning reads the very voxels of the NIfTI files."""
    import copy

    from pcrl.preprocessing.task_data import read_volume_cases
    from pcrl.stages.download import run_download
    from pcrl.stages.resample import run_resample

    data = copy.deepcopy(demo_params["data"])
    data["phantom"]["msd_liver"] = {"cases": 3, "test_cases": 0, "shape": [48, 48, 24]}
    for k in range(2):
        run_download("msd_liver", data, out=tmp_path / "raw" / str(k), shard=(k, 2), progress=False)
    settings = {**demo_params["resample"]["msd_liver"], "arrays": True}
    for k in range(2):
        run_resample(settings, raw=tmp_path / "raw", out=tmp_path / "interim" / str(k), shard=(k, 2),
                     progress=False)
    cases = read_volume_cases(tmp_path / "interim", ["liver_0", "liver_1", "liver_2"])
    assert [c.arrays["image"] for c in cases if c.arrays] == ["0/liver_0.npy", "1/liver_1.npy", "0/liver_2.npy"]
    for case in cases:
        mapped = load_case(case, "lcs")
        plain = load_case(VolumeCase(case.id, case.image, case.label), "lcs")  # the .nii.gz files
        assert np.array_equal(mapped[0], plain[0]) and np.array_equal(mapped[1], plain[1])
