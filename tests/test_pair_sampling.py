"""Tests of pcrl.preprocessing.pair_config, boxes, pair_sampling and pretrain_pairs: PCRL pretraining
pairs (docs/method.md "Views")."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from pcrl.preprocessing.boxes import box_iou_3d, box_sums, foreground_mask, integral_image
from pcrl.preprocessing.pair_config import DEFAULT_CROP_SIZES, PairConfig
from pcrl.preprocessing.pair_sampling import pair_layout, resize_crops, sample_boxes, sample_pairs
from pcrl.preprocessing.pretrain_pairs import case_rng, write_pretrain_pairs
from pcrl.errors import ConfigError, DataError

AIR, TISSUE = 0.0, 0.6  # -1000 HU and +200 HU on the [0, 1] scale; the -150 HU threshold is 0.425

SMALL = PairConfig(
    crop_sizes=((16, 16, 8), (24, 24, 12), (12, 12, 6), (64, 64, 32)),
    cube_size=(8, 8, 4),
    max_tries=200,
)


def _bench():
    """The benchmark script, for its per-voxel reference implementation."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_cubes.py"
    spec = importlib.util.spec_from_file_location("bench_cubes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _block_volume(shape=(40, 36, 24), block=(8, 30, 6, 30, 4, 20)) -> np.ndarray:
    """Air everywhere except one tissue block [x0:x1, y0:y1, z0:z1]."""
    volume = np.full(shape, AIR, dtype=np.float32)
    x0, x1, y0, y1, z0, z1 = block
    volume[x0:x1, y0:y1, z0:z1] = TISSUE
    return volume


def _overlap_fraction(box: np.ndarray, block: tuple[int, ...]) -> float:
    """Fraction of a box inside the block, by hand: product of the per-axis overlaps."""
    inter = 1
    for axis in range(3):
        low = max(box[axis], block[2 * axis])
        high = min(box[axis + 3], block[2 * axis + 1])
        inter *= max(0, high - low)
    return inter / np.prod(box[3:] - box[:3])


# ----------------------------------------------------------------------- box_iou_3d


def test_box_iou_hand_computed():
    a = np.array([0, 0, 0, 4, 4, 4])
    assert box_iou_3d(a, a) == 1.0
    assert box_iou_3d(a, np.array([10, 10, 10, 12, 12, 12])) == 0.0
    assert box_iou_3d(a, np.array([4, 0, 0, 8, 4, 4])) == 0.0  # shares a face only (half-open)
    # half overlap along x: intersection 2*4*4 = 32, union 64 + 64 - 32 = 96
    assert box_iou_3d(a, np.array([2, 0, 0, 6, 4, 4])) == pytest.approx(1 / 3)
    # nested: 2*2*2 / 4*4*4
    assert box_iou_3d(a, np.array([1, 1, 1, 3, 3, 3])) == pytest.approx(8 / 64)
    # overlap along all three axes: 2*3*1 / (64 + 3*5*2 - 6)
    assert box_iou_3d(a, np.array([2, 1, 3, 5, 6, 5])) == pytest.approx(6 / 88)


def test_box_iou_broadcasts():
    a = np.array([[0, 0, 0, 4, 4, 4], [2, 0, 0, 6, 4, 4], [9, 9, 9, 10, 10, 10]])
    iou = box_iou_3d(a, np.array([0, 0, 0, 4, 4, 4]))
    np.testing.assert_allclose(iou, [1.0, 1 / 3, 0.0])


def test_box_sums_and_iou_match_per_voxel_reference():
    bench = _bench()
    rng = np.random.default_rng(3)
    mask = rng.random((9, 7, 6)) < 0.4
    table = integral_image(mask)
    starts = rng.integers(0, [8, 6, 5], size=(12, 3))
    ends = starts + rng.integers(1, 4, size=(12, 3))
    boxes = np.concatenate([starts, np.minimum(ends, [9, 7, 6])], axis=1)
    sums = box_sums(table, boxes)
    volumes = np.prod(boxes[:, 3:] - boxes[:, :3], axis=1)
    for box, total, volume in zip(boxes, sums, volumes):
        assert total / volume == pytest.approx(bench.reference_fraction(mask, tuple(box)))
    iou = box_iou_3d(boxes[:-1], boxes[1:])
    for a, b, value in zip(boxes[:-1], boxes[1:], iou):
        assert value == pytest.approx(bench.reference_iou(tuple(a), tuple(b)))


# ----------------------------------------------------------------------- foreground


def test_body_mask_fills_air_enclosed_in_each_axial_slice():
    volume = np.full((12, 12, 3), AIR, dtype=np.float32)
    volume[2:10, 2:10, :] = TISSUE
    volume[4:8, 4:8, :] = AIR  # a "lung" enclosed by tissue in every axial slice
    body = foreground_mask(volume, PairConfig())
    expected = np.zeros(volume.shape, dtype=bool)
    expected[2:10, 2:10, :] = True
    np.testing.assert_array_equal(body, expected)
    dense = foreground_mask(volume, PairConfig(foreground="dense"))
    np.testing.assert_array_equal(dense, volume >= 0.425)


@pytest.mark.parametrize(
    "config, block, low, high",
    [
        (PairConfig(crop_sizes=SMALL.crop_sizes, cube_size=(8, 8, 4)), (8, 30, 6, 30, 4, 20), 0.5, 1.0),
        (PairConfig.release(crop_sizes=SMALL.crop_sizes, cube_size=(8, 8, 4), placement="overlap"),
         (4, 20, 4, 20, 2, 14), 0.0, 0.15),
        (PairConfig.release(crop_sizes=SMALL.crop_sizes[:3], cube_size=(8, 8, 4), border=(2, 2, 1)),
         (4, 20, 4, 20, 2, 14), 0.0, 0.15),
    ],
    ids=["body-at-least-half", "release-at-most-15pc-dense", "release-placement-at-most-15pc-dense"],
)
def test_every_kept_box_obeys_the_foreground_rule(config, block, low, high):
    volume = _block_volume(block=block)
    _, boxes = sample_pairs(volume, 8, config, np.random.default_rng(0))
    fractions = np.array([_overlap_fraction(b, block) for b in boxes.reshape(-1, 6)])
    assert fractions.min() >= low and fractions.max() <= high
    # the rule is binding: unconstrained boxes of the same volume break it
    free = PairConfig(crop_sizes=SMALL.crop_sizes, cube_size=(8, 8, 4), min_fraction=0.0)
    _, free_boxes = sample_pairs(volume, 16, free, np.random.default_rng(0))
    free_fractions = np.array([_overlap_fraction(b, block) for b in free_boxes.reshape(-1, 6)])
    assert ((free_fractions < low) | (free_fractions > high)).any()


def test_no_valid_pair_raises_naming_the_case():
    volume = np.full((30, 30, 20), AIR, dtype=np.float32)
    with pytest.raises(DataError, match="case lung-042.*0 of 2"):
        sample_pairs(volume, 2, PairConfig(crop_sizes=((8, 8, 4),), cube_size=(8, 8, 4), max_tries=3),
                     np.random.default_rng(0), case_id="lung-042")


# ------------------------------------------------------------------------- sampling


def test_pairs_overlap_have_listed_sizes_and_stay_inside():
    volume = _block_volume()
    cubes, boxes = sample_pairs(volume, 16, SMALL, np.random.default_rng(1))
    assert cubes.shape == (16, 2, 8, 8, 4) and cubes.dtype == np.float32
    assert boxes.shape == (16, 2, 6)
    bench = _bench()
    for a, b in boxes:
        assert bench.reference_iou(tuple(a), tuple(b)) > 0.25
    allowed = {(16, 16, 8), (24, 24, 12), (12, 12, 6), (40, 36, 24)}  # 64x64x32 clipped to the volume
    extents = {tuple(e) for e in (boxes[..., 3:] - boxes[..., :3]).reshape(-1, 3)}
    assert extents <= allowed
    assert boxes[..., :3].min() >= 0 and (boxes[..., 3:] <= np.array(volume.shape)).all()


def test_cubes_are_the_resized_crops_of_their_boxes():
    rng = np.random.default_rng(2)
    volume = rng.random((40, 36, 24)).astype(np.float32)
    config = PairConfig(crop_sizes=SMALL.crop_sizes, cube_size=(8, 8, 4), min_fraction=0.0)
    cubes, boxes = sample_pairs(volume, 5, config, np.random.default_rng(3))
    for pair, pair_boxes in zip(cubes, boxes):
        for cube, (x0, y0, z0, x1, y1, z1) in zip(pair, pair_boxes):
            crop = torch.from_numpy(volume[x0:x1, y0:y1, z0:z1].copy())[None, None]
            expected = torch.nn.functional.interpolate(crop, size=(8, 8, 4), mode="trilinear", align_corners=False)
            np.testing.assert_allclose(cube, expected[0, 0].numpy(), rtol=0, atol=1e-6)


def test_constant_region_resizes_to_the_constant():
    volume = np.full((40, 36, 24), 0.7, dtype=np.float32)
    cubes, _ = sample_pairs(volume, 6, SMALL, np.random.default_rng(4))
    np.testing.assert_allclose(cubes, 0.7, rtol=0, atol=1e-6)
    crop = torch.full((1, 13, 7, 5), 0.3)
    np.testing.assert_allclose(resize_crops(crop, (8, 8, 4)).numpy(), 0.3, rtol=0, atol=1e-6)


def test_same_seed_same_pairs_other_seed_other_pairs_and_prefix_stable():
    volume = _block_volume()
    cubes_a, boxes_a = sample_pairs(volume, 6, SMALL, np.random.default_rng(7))
    cubes_b, boxes_b = sample_pairs(volume, 6, SMALL, np.random.default_rng(7))
    _, boxes_c = sample_pairs(volume, 6, SMALL, np.random.default_rng(8))
    _, boxes_prefix = sample_pairs(volume, 3, SMALL, np.random.default_rng(7))
    np.testing.assert_array_equal(boxes_a, boxes_b)
    np.testing.assert_array_equal(cubes_a, cubes_b)
    assert not np.array_equal(boxes_a, boxes_c)
    np.testing.assert_array_equal(boxes_prefix, boxes_a[:3])


def test_reference_pair_follows_the_same_rule():
    bench = _bench()
    volume = _block_volume()
    cubes, boxes = bench.reference_sample_pair(volume, SMALL, np.random.default_rng(5))
    body = foreground_mask(volume, SMALL)
    assert box_iou_3d(boxes[0], boxes[1]) > SMALL.min_iou
    for cube, (x0, y0, z0, x1, y1, z1) in zip(cubes, boxes):
        assert body[x0:x1, y0:y1, z0:z1].mean() >= SMALL.min_fraction
        expected = resize_crops(torch.from_numpy(volume[x0:x1, y0:y1, z0:z1].copy())[None], (8, 8, 4))[0]
        np.testing.assert_array_equal(cube, expected.numpy())


# ---------------------------------------------------------------- release placement


def _start_difference_overlaps(a: int, b: int, low: int, high_a: int, high_b: int) -> np.ndarray:
    """P(overlap length = l) along one axis, l = 0 .. min(a, b), of a box of length ``a`` and
    one of length ``b`` whose starts are independent uniform integers in [low, high_a] and
    [low, high_b]: the start difference d = s2 - s1 is the convolution of the two ranges."""
    count_a, count_b = high_a - low + 1, high_b - low + 1
    d = np.arange(low - high_a, high_b - low + 1)  # every value of s2 - s1
    ways = np.convolve(np.ones(count_b), np.ones(count_a))  # (s1, s2) pairs giving each d
    overlap = np.clip(np.minimum(a, d + b) - np.maximum(0, d), 0, None)
    return np.bincount(overlap, weights=ways, minlength=min(a, b) + 1) / (count_a * count_b)


def _release_size_mix(shape, sizes, border=(70, 70, 15), slack=3, min_iou=0.25) -> np.ndarray:
    """P(size pair (i, j) | accepted) under the release's rule, by hand, with no foreground rule.

    P(i, j) is proportional to 1/k^2 (two independent uniform indices) times P(IoU > min_iou)
    for independent uniform starts within the borders; the IoU only depends on the per-axis
    overlaps, whose distributions are combined by an outer product over the three axes.
    """
    sizes = np.asarray(sizes)
    k = len(sizes)
    high = np.asarray(shape) - sizes - 1 - np.asarray(border) - np.array([0, 0, slack])
    mix = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            axes = [_start_difference_overlaps(sizes[i, n], sizes[j, n], border[n], high[i, n], high[j, n])
                    for n in range(3)]
            inter = np.einsum("i,j,k->ijk", *[np.arange(len(p), dtype=np.float64) for p in axes])
            union = sizes[i].prod() + sizes[j].prod() - inter
            mix[i, j] = np.einsum("i,j,k->ijk", *axes)[inter / union > min_iou].sum() / k**2
    return mix / mix.sum()


def _size_pair_counts(boxes: np.ndarray, sizes) -> np.ndarray:
    """(k, k) counts of the (box 1, box 2) size indices of box pairs (n, 2, 6)."""
    extents = boxes[..., 3:] - boxes[..., :3]
    index = (extents[..., None, :] == np.asarray(sizes)).all(axis=-1)
    assert index.sum(axis=-1).min() == 1, "every box has one of the listed sizes"
    counts = np.zeros((len(sizes), len(sizes)), dtype=np.int64)
    np.add.at(counts, (index[:, 0].argmax(-1), index[:, 1].argmax(-1)), 1)
    return counts


def test_release_size_mix_matches_the_rule_computed_by_hand():
    from scipy import stats

    shape = (320, 320, 280)
    expected = _release_size_mix(shape, DEFAULT_CROP_SIZES)
    # sizes (64,64,32), (96,96,48), (96,96,96), (32,32,16), (112,112,64)
    assert expected[3, 3] == pytest.approx(0.0010, abs=0.0001)  # two 32x32x16 crops
    assert expected[0, 0] == pytest.approx(0.0124, abs=0.0002)  # two 64x64x32 crops
    assert np.unravel_index(expected.argmax(), expected.shape) == (2, 2)  # two 96x96x96 crops
    assert expected[2, 2] == pytest.approx(0.156, abs=0.001)
    np.testing.assert_allclose(expected, expected.T, atol=1e-12)  # the two boxes are drawn alike

    n = 5000
    boxes = sample_boxes(shape, n, PairConfig.release(), np.random.default_rng(0))
    counts = _size_pair_counts(boxes, DEFAULT_CROP_SIZES)
    assert counts[expected == 0].sum() == 0
    possible = expected > 0
    result = stats.chisquare(counts[possible], n * expected[possible])
    assert result.pvalue > 1e-3, (counts, np.round(n * expected, 1))
    # power: the overlap placement's mix is far from it (about 7 % of 32x32x16 pairs)
    overlap = _size_pair_counts(sample_boxes(shape, n, PairConfig(), np.random.default_rng(0)), DEFAULT_CROP_SIZES)
    assert overlap[3, 3] > 20 * n * expected[3, 3]


def test_release_starts_cover_exactly_the_range_within_the_border():
    # x starts in [70, 150 - 8 - 1 - 70] = {70, 71}, y in {70, 71, 72}, z in [15, 40 - 4 - 3 - 1 - 15]
    config = PairConfig(placement="release", crop_sizes=((8, 8, 4),), cube_size=(8, 8, 4), min_fraction=0.0)
    volume = np.full((150, 151, 40), TISSUE, dtype=np.float32)
    cubes, boxes = sample_pairs(volume, 200, config, np.random.default_rng(0))
    starts = boxes[..., :3].reshape(-1, 3)
    assert set(starts[:, 0]) == {70, 71} and set(starts[:, 1]) == {70, 71, 72}
    assert set(starts[:, 2]) == {15, 16, 17}
    assert (boxes[..., 3:] - boxes[..., :3] == (8, 8, 4)).all()
    np.testing.assert_allclose(cubes, TISSUE, rtol=0, atol=1e-6)
    # every box of this volume passes the foreground rule, so the box-only draw is the same
    np.testing.assert_array_equal(sample_boxes(volume.shape, 200, config, np.random.default_rng(0)), boxes)


def test_release_starts_lie_within_the_border_and_depth_slack():
    shape = (320, 300, 200)
    boxes = sample_boxes(shape, 2000, PairConfig.release(), np.random.default_rng(1)).reshape(-1, 6)
    assert (boxes[:, :3] >= (70, 70, 15)).all()
    assert (boxes[:, 3:] <= np.array(shape) - 1 - np.array([70, 70, 3 + 15])).all()
    assert box_iou_3d(boxes[0::2], boxes[1::2]).min() > 0.25


def test_release_prefix_stable_and_seeded():
    shape = (320, 320, 280)
    config = PairConfig.release()
    first = sample_boxes(shape, 1500, config, np.random.default_rng(4))  # more than one batch
    np.testing.assert_array_equal(sample_boxes(shape, 40, config, np.random.default_rng(4)), first[:40])
    assert not np.array_equal(sample_boxes(shape, 40, config, np.random.default_rng(5)), first[:40])


def test_release_shrinks_crops_too_wide_for_the_x_border():
    config = PairConfig.release()
    # 253 - 112 - 1 - 70 = 70 <= 70: the 112 crop shrinks to 80x80 (z kept); 254 leaves it
    shrunk = pair_layout((253, 320, 280), config)
    assert [tuple(s) for s in shrunk.sizes] == [(64, 64, 32), (96, 96, 48), (96, 96, 96), (32, 32, 16), (80, 80, 64)]
    np.testing.assert_array_equal(shrunk.high[4], (253 - 80 - 71, 320 - 80 - 71, 280 - 64 - 19))
    assert tuple(pair_layout((254, 320, 280), config).sizes[4]) == (112, 112, 64)
    boxes = sample_boxes((253, 320, 280), 300, config, np.random.default_rng(2))
    extents = {tuple(e) for e in (boxes[..., 3:] - boxes[..., :3]).reshape(-1, 3)}
    assert (80, 80, 64) in extents and (112, 112, 64) not in extents


def test_release_pads_shallow_volumes_in_z():
    three = ((64, 64, 32), (32, 32, 16), (112, 112, 64))  # deepest 64, as in the release
    config = PairConfig.release(crop_sizes=three)
    # 98 - 64 - 3 - 1 - 15 = 15: no padding; 97 is padded to 64 + 3 + 1 + 2 * 15 + 1 = 99
    assert pair_layout((320, 320, 98), config).pad_z == 0
    padded = pair_layout((320, 320, 97), config)
    assert padded.pad_z == 2 and tuple(padded.shape) == (320, 320, 99)
    assert padded.high[2, 2] == 99 - 64 - 19 == 16 and padded.low[2, 2] == 15
    assert pair_layout((320, 320, 40), config).pad_z == 59
    # the deepest default crop is 96: padded to 96 + 3 + 1 + 30 + 1 = 131
    assert tuple(pair_layout((320, 320, 100), PairConfig.release()).shape) == (320, 320, 131)

    # crops reach into the zero slices: a 10-slice volume, 12-deep crops, border (2, 2, 3)
    small = PairConfig(placement="release", crop_sizes=((12, 12, 12),), cube_size=(12, 12, 12),
                       border=(2, 2, 3), min_fraction=0.0)
    layout = pair_layout((20, 20, 10), small)
    assert layout.pad_z == 13 and tuple(layout.shape) == (20, 20, 23)
    volume = np.full((20, 20, 10), 0.7, dtype=np.float32)
    cubes, boxes = sample_pairs(volume, 30, small, np.random.default_rng(3))
    assert set(boxes[..., 2].ravel()) == {3, 4}  # z starts in [3, 23 - 12 - 3 - 1 - 3]
    assert set(boxes[..., 0].ravel()) <= {2, 3, 4, 5}
    for cube, z0 in zip(cubes.reshape(-1, 12, 12, 12), boxes[..., 2].ravel()):
        np.testing.assert_allclose(cube[..., : 10 - z0], 0.7, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(cube[..., 10 - z0:], 0.0)


def test_release_volume_too_small_raises_naming_the_case():
    with pytest.raises(DataError) as raised:
        sample_pairs(np.zeros((100, 100, 100), dtype=np.float32), 2, PairConfig.release(),
                     np.random.default_rng(0), case_id="tiny-7")
    message = str(raised.value)
    assert message.startswith("case tiny-7: crop sizes do not fit in the volume (100, 100, 100) "
                              "within the border (70, 70, 15)")
    # 100 - 32 - 1 - 70 <= 70: shrunk by 32 to 0; every crop is named
    assert "(32, 32, 16) (shrunk to (0, 0, 16)) in x, y" in message
    assert "(112, 112, 64) (shrunk to (80, 80, 64)) in x, y" in message and message.count(" in x, y") == 5
    # y is not shrunk, only checked: 200 - 96 - 1 - 70 < 70
    with pytest.raises(DataError, match=r"case flat: .*\(320, 200, 280\)") as raised:
        pair_layout((320, 200, 280), PairConfig.release(), case_id="flat")
    assert "(96, 96, 48) in y;" in str(raised.value) and "(32, 32, 16)" not in str(raised.value)
    # the overlap placement still fits the same volume
    assert pair_layout((100, 100, 100), PairConfig()).size_pairs is not None


# --------------------------------------------------------------------------- config


def test_config_normalises_lists_and_names_bad_keys():
    config = PairConfig(crop_sizes=[[8, 8, 4]], cube_size=[8, 8, 4], hu_range=[-1000, 1000])
    assert config.crop_sizes == ((8, 8, 4),) and config.cube_size == (8, 8, 4)
    assert config.threshold == pytest.approx(0.425)
    with pytest.raises(ConfigError, match="min_iou"):
        PairConfig(min_iou=1.5)
    with pytest.raises(ConfigError, match="cube_size"):
        PairConfig(cube_size=(8, 8))
    with pytest.raises(ConfigError, match="min_fraction"):
        PairConfig(min_fraction=0.8, max_fraction=0.2)


def test_config_placement_fields():
    assert PairConfig().placement == "overlap"
    release = PairConfig.release()
    assert (release.placement, release.foreground, release.max_fraction) == ("release", "dense", 0.15)
    assert (release.border, release.depth_slack, release.shrink) == ((70, 70, 15), 3, 32)
    assert PairConfig(border=[4, 4, 2]).border == (4, 4, 2)
    with pytest.raises(ConfigError, match="placement"):
        PairConfig(placement="random")
    with pytest.raises(ConfigError, match="border"):
        PairConfig(border=(70, 70))
    with pytest.raises(ConfigError, match="border"):
        PairConfig(border=(70, -1, 15))
    with pytest.raises(ConfigError, match="depth_slack"):
        PairConfig(depth_slack=-1)
    with pytest.raises(ConfigError, match="shrink"):
        PairConfig(shrink=-32)


# ---------------------------------------------------------------------------- stage


def _write_nifti(path: Path, volume: np.ndarray) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(volume.transpose(2, 1, 0)), str(path))


def test_write_pretrain_pairs_per_case_seeding(tmp_path):
    interim = tmp_path / "interim"
    interim.mkdir()
    volumes = {"case-a": _block_volume(), "case-b": _block_volume(block=(2, 38, 2, 34, 2, 22))}
    cases = []
    for case_id, volume in volumes.items():
        _write_nifti(interim / f"{case_id}.nii.gz", volume)
        cases.append({"id": case_id, "group": "subset0", "image": f"{case_id}.nii.gz"})

    index = write_pretrain_pairs(cases, interim, tmp_path / "out", pairs_per_case=3, config=SMALL, seed=11,
                                 progress=False)
    assert index == [
        {"id": "case-a", "group": "subset0", "file": "pairs/case-a.npy", "n": 3},
        {"id": "case-b", "group": "subset0", "file": "pairs/case-b.npy", "n": 3},
    ]
    for case_id, volume in volumes.items():
        saved = np.load(tmp_path / "out" / "pairs" / f"{case_id}.npy")
        assert saved.dtype == np.float16 and saved.shape == (3, 2, 8, 8, 4)
        expected, _ = sample_pairs(volume, 3, SMALL, case_rng(11, case_id))
        np.testing.assert_array_equal(saved, expected.astype(np.float16))

    write_pretrain_pairs(cases[::-1], interim, tmp_path / "reversed", pairs_per_case=3, config=SMALL, seed=11,
                         progress=False)
    for case_id in volumes:
        np.testing.assert_array_equal(np.load(tmp_path / "reversed" / "pairs" / f"{case_id}.npy"),
                                      np.load(tmp_path / "out" / "pairs" / f"{case_id}.npy"))


def test_write_pretrain_pairs_missing_image_names_the_case(tmp_path):
    cases = [{"id": "ghost", "group": "subset1", "image": "ghost.nii.gz"}]
    with pytest.raises(DataError, match="ghost.*does not exist"):
        write_pretrain_pairs(cases, tmp_path, tmp_path / "out", pairs_per_case=1, config=SMALL, seed=0,
                             progress=False)


def test_stage_passes_placement_and_border_to_the_sampler(tmp_path, monkeypatch):
    from pcrl.stages import cubes as stage

    seen = []
    monkeypatch.setattr(stage, "write_pretrain_pairs", lambda *args, config, **kwargs: seen.append(config) or [])
    settings = {"pairs_per_case": 2, "crop_sizes": [[8, 8, 4]], "cube_size": [8, 8, 4], "min_iou": 0.25}
    stage._pretrain({**settings, "placement": "release", "border": [4, 5, 2]}, 0, [], tmp_path, tmp_path, tmp_path,
                    False)
    stage._pretrain(settings, 0, [], tmp_path, tmp_path, tmp_path, False)
    assert (seen[0].placement, seen[0].border) == ("release", (4, 5, 2))
    assert (seen[1].placement, seen[1].border) == ("overlap", (70, 70, 15))


def test_2d_pairs_are_the_same_rule_on_one_slice_volumes() -> None:
    """PCRL's ChestX-ray14 pairs: two crops of one radiograph with 2D IoU above the threshold,
    resized to the cube size; a radiograph is a one-slice volume (x, y, 1)."""
    rng = np.random.default_rng(0)
    image = rng.uniform(0.3, 1.0, size=(96, 96, 1)).astype(np.float32)
    config = PairConfig(crop_sizes=((32, 32, 1), (48, 48, 1), (64, 64, 1)), cube_size=(32, 32, 1),
                        min_iou=0.3, min_fraction=0.0)
    cubes, boxes = sample_pairs(image, 50, config, np.random.default_rng(1))
    assert cubes.shape == (50, 2, 32, 32, 1)
    assert (boxes[:, :, 2] == 0).all() and (boxes[:, :, 5] == 1).all()
    for (a, b) in boxes:  # 2D IoU written out
        ix = max(0, min(a[3], b[3]) - max(a[0], b[0]))
        iy = max(0, min(a[4], b[4]) - max(a[1], b[1]))
        inter = ix * iy
        union = (a[3] - a[0]) * (a[4] - a[1]) + (b[3] - b[0]) * (b[4] - b[1]) - inter
        assert inter / union > 0.3
    first = boxes[0, 0]
    crop = image[first[0]:first[3], first[1]:first[4], 0]
    expected = torch.nn.functional.interpolate(torch.from_numpy(crop)[None, None], size=(32, 32), mode="bilinear",
                                               align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(cubes[0, 0, :, :, 0], expected, rtol=1e-5, atol=1e-6)
