"""pcrl.transforms: spatial codes, Models Genesis corruptions and augmentation (docs/method.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage
import torch

from pcrl import transforms as T
from pcrl.errors import ConfigError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(
    shape: tuple[int, ...] = (4, 1, 20, 20, 12), seed: int = 0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    return torch.rand(shape, generator=gen(1000 + seed), dtype=dtype)


def all_codes() -> torch.Tensor:
    """The 32 codes: 8 flip combinations x 4 quarter turns."""
    flips = torch.tensor([[(i >> a) & 1 for a in range(3)] for i in range(8)], dtype=torch.bool)
    return T.encode_spatial(flips.repeat(4, 1), torch.arange(4).repeat_interleave(8))


def reference_spatial(sample: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """One sample (C, x, y, z) by hand: torch.flip of the flagged axes, then torch.rot90 in x-y."""
    dims = [1 + a for a in range(3) if code[a] == 1]
    flipped = torch.flip(sample, dims) if dims else sample
    return torch.rot90(flipped, int(code[3:].argmax()), dims=(1, 2))


# ------------------------------------------------------------------- spatial codes


def test_spatial_codes_are_valid_and_cover_every_transform() -> None:
    codes = T.spatial_codes(512, gen(), "cpu")
    assert codes.shape == (512, 7) and codes.dtype == torch.float32
    assert ((codes == 0) | (codes == 1)).all()
    assert (codes[:, 3:].sum(dim=1) == 1).all()
    flips, k = T.decode_spatial(codes)
    assert set(k.tolist()) == {0, 1, 2, 3}
    assert 0.35 < flips.float().mean() < 0.65  # each flip has probability 1/2


@pytest.mark.parametrize("gather", [False, True], ids=["copies per sample (CPU)", "index gather (GPU)"])
def test_apply_spatial_matches_flip_then_rot90_for_every_code(gather: bool) -> None:
    from pcrl.transforms.spatial import _spatial

    codes = all_codes()
    x = batch((32, 2, 6, 6, 5))
    out = _spatial(x, codes, inverse=False, gather=gather)  # one code per sample, all 32 in one batch
    for i in range(32):
        assert torch.equal(out[i], reference_spatial(x[i], codes[i])), codes[i].tolist()
    back = _spatial(out, codes, inverse=True, gather=gather)
    assert torch.equal(back, x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_invert_spatial_is_exact_for_all_32_codes(dtype: torch.dtype) -> None:
    x = batch((32, 1, 8, 8, 4), dtype=dtype)
    codes = all_codes()
    moved = T.apply_spatial(x, codes)
    assert moved.dtype == dtype
    assert torch.equal(T.invert_spatial(moved, codes), x)
    # and the inverse is a left inverse as well
    assert torch.equal(T.apply_spatial(T.invert_spatial(x, codes), codes), x)


def test_non_square_xy_needs_one_parity_of_turns() -> None:
    x = batch((2, 1, 6, 4, 3))
    odd = T.encode_spatial(torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.bool), torch.tensor([1, 3]))
    out = T.apply_spatial(x, odd)
    assert out.shape == (2, 1, 4, 6, 3)  # x and y swapped
    for i in range(2):
        assert torch.equal(out[i], reference_spatial(x[i], odd[i]))
    assert torch.equal(T.invert_spatial(out, odd), x)
    mixed = T.encode_spatial(torch.zeros(2, 3, dtype=torch.bool), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\(2, 1, 6, 4, 3\)"):
        T.apply_spatial(x, mixed)


def test_invalid_codes_are_rejected() -> None:
    x = batch((2, 1, 4, 4, 4))
    two_hot = torch.tensor([[0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 0, 0, 0]], dtype=torch.float32)
    with pytest.raises(ValueError, match="row 0"):
        T.apply_spatial(x, two_hot)
    with pytest.raises(ValueError, match=r"\(2, 6\)"):
        T.apply_spatial(x, torch.zeros(2, 6))
    with pytest.raises(ValueError, match="batch"):
        T.apply_spatial(x[0], two_hot)


# ------------------------------------------------------------ local pixel shuffling


def block_extents(block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per block id of one sample (x, y, z): voxel count and (min, max) coordinate per axis."""
    ids = block.flatten()
    n_blocks = int(ids.max()) + 1
    coords = torch.stack(torch.meshgrid(*(torch.arange(s) for s in block.shape), indexing="ij")).flatten(1)
    count = torch.bincount(ids, minlength=n_blocks)
    low = torch.full((3, n_blocks), 10**9).scatter_reduce(1, ids.expand(3, -1), coords, "amin")
    high = torch.full((3, n_blocks), -1).scatter_reduce(1, ids.expand(3, -1), coords, "amax")
    return count, low, high


def test_local_shuffle_permutes_inside_blocks_only() -> None:
    shape = (6, 2, 30, 20, 20)
    x = batch(shape)
    x[:, 1] = 2 * x[:, 0]  # a second channel tied to the first: it must move alike
    plan = T._shuffle_plan(shape, gen(7), torch.device("cpu"), prob=1.0, coverage=0.8, layout=True)
    out = T.local_pixel_shuffle(x, gen(7), prob=1.0, coverage=0.8)
    assert plan.samples.tolist() == list(range(6))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out[:, 1], 2 * out[:, 0])
    for i in range(6):
        ids = plan.block[i].flatten()
        for c in range(2):
            before, after = x[i, c].flatten().double(), out[i, c].flatten().double()
            # sorted values of every block: sort by (block id, value)
            key = ids.double() * 4  # values lie in [0, 2)
            assert torch.equal(before[torch.argsort(key + before)], after[torch.argsort(key + after)])
            assert torch.equal(torch.sort(before).values, torch.sort(after).values)
            kept = ~plan.shuffled[i].flatten()
            assert torch.equal(before[kept], after[kept])
        # blocks are boxes with sides in [1, size // 10] (Models Genesis)
        count, low, high = block_extents(plan.block[i])
        sides = high - low + 1
        present = count > 0
        assert torch.equal(count[present], sides[:, present].prod(dim=0))
        assert (sides[:, present] <= torch.tensor([3, 2, 2])[:, None]).all()
        moved = plan.shuffled[i]
        movable = count[plan.block[i]] > 1  # voxels in blocks of 2 voxels or more
        assert not (moved & ~movable).any()
        if movable.any():
            assert 0.7 < moved[movable].float().mean() < 0.9  # about the coverage, 0.8
            assert (out[i, 0][moved] != x[i, 0][moved]).float().mean() > 0.3  # blocks of 2 keep half


def test_local_shuffle_plan_applied_by_hand() -> None:
    """The plan's (target, source) pairs, applied one at a time in NumPy, give the output;
    each voxel is written at most once, and the padding of blocks cut by the border (sizes
    not divisible by the sides: 47 x 35 x 23) targets the one spare id past the end only."""
    shape = (5, 1, 47, 35, 23)
    x = batch(shape, seed=3)
    volume = 47 * 35 * 23
    plan = T._shuffle_plan(shape, gen(11), torch.device("cpu"), prob=1.0, coverage=0.9, layout=True)
    out = T.local_pixel_shuffle(x, gen(11), prob=1.0, coverage=0.9)
    padded = 0
    for i, targets, sources in zip(plan.samples.tolist(), plan.targets, plan.sources):
        t, src = targets.numpy(), sources.numpy()
        assert t.min() >= 0 and t.max() <= volume and 0 <= src.min() and src.max() < volume
        inside = t < volume
        padded += int((~inside).sum())
        assert len(np.unique(t[inside])) == int(inside.sum())  # each voxel written once
        flat_in = x[i, 0].flatten().numpy()
        expected = flat_in.copy()
        for target, source in zip(t[inside].tolist(), src[inside].tolist()):
            expected[target] = flat_in[source]
        assert np.array_equal(out[i, 0].flatten().numpy(), expected)
        moved = np.zeros(volume, dtype=bool)
        moved[t[inside]] = True
        assert np.array_equal(moved, plan.shuffled[i].flatten().numpy())
    assert padded > 0  # the case under test: some blocks were cut


def test_local_shuffle_probability_and_identity() -> None:
    x = batch()
    out = T.local_pixel_shuffle(x, gen(), prob=0.0)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()
    assert torch.equal(T.local_pixel_shuffle(x, gen(), prob=1.0, coverage=0.0), x)



def test_local_shuffle_takes_any_strides() -> None:
    """A transposed (non-contiguous) batch shuffles as its contiguous copy does."""
    x = batch((3, 2, 30, 20, 20)).transpose(2, 3)  # blocks up to 2 x 3 x 2 voxels
    assert not x.is_contiguous()
    out = T.local_pixel_shuffle(x, gen(4), prob=1.0)
    assert torch.equal(out, T.local_pixel_shuffle(x.contiguous(), gen(4), prob=1.0))
    assert not torch.equal(out, x)


def test_local_shuffle_coin_is_drawn_per_sample() -> None:
    """With prob 0.5 each sample of a batch is shuffled independently: over 40 batches of 16
    the count per batch follows Binomial(16, 0.5) (a per-batch coin would give only 0 or 16),
    and the total over 640 samples lies within 4 standard deviations (4 * sqrt(160)) of 320."""
    x = torch.rand(16, 1, 32, 32, 20, generator=torch.Generator().manual_seed(0))
    counts = [int((T.local_pixel_shuffle(x, gen(s), prob=0.5) != x).flatten(1).any(1).sum())
              for s in range(40)]
    assert abs(sum(counts) - 320) <= 4 * 160 ** 0.5
    mixed = [c for c in counts if 0 < c < 16]
    assert len(mixed) >= 38  # P(a batch of 16 is all-or-none) = 2 * 2**-16
    variance = sum((c - 8) ** 2 for c in counts) / len(counts)
    assert 2 <= variance <= 8  # binomial variance 16 * 0.25 = 4; a per-batch coin gives 64


# ------------------------------------------------------------------------ painting


def box_mask(shape: tuple[int, ...], boxes) -> torch.Tensor:
    """(N, x, y, z) bool by hand: True inside any active box of the sample (half-open bounds)."""
    mask = torch.zeros((shape[0], *shape[2:]), dtype=torch.bool)
    for i in range(shape[0]):
        for low, high, on in zip(boxes.low[i].tolist(), boxes.high[i].tolist(), boxes.active[i].tolist()):
            if on:
                mask[i, low[0]:high[0], low[1]:high[1], low[2]:high[2]] = True
    return mask


def paint_mask(shape: tuple[int, ...], generator: torch.Generator, prob: float, inpaint_prob: float) -> torch.Tensor:
    """(N, x, y, z) bool: the voxels paint() replaces, from its draws: in-painted samples
    their boxes, out-painted ones all but their boxes, unpainted ones none."""
    boxes, inner, painted = T._paint_plan(shape, generator, torch.device("cpu"), prob=prob, inpaint_prob=inpaint_prob)
    inside = box_mask(shape, boxes)
    return torch.where(inner[:, None, None, None], inside, ~inside) & painted[:, None, None, None]


def test_in_paint_only_fills_its_boxes_with_noise() -> None:
    shape = (8, 1, 30, 24, 18)
    x = torch.full(shape, 2.0)  # outside [0, 1): every noise voxel differs
    boxes = T._inpaint_boxes(shape, gen(3), torch.device("cpu"))
    mask = box_mask(shape, boxes)
    out = T.in_paint(x, gen(3))
    inside = mask[:, None].expand_as(x)
    assert torch.equal(out[~inside], x[~inside])
    assert ((out[inside] >= 0) & (out[inside] < 1)).all()
    # Models Genesis: up to 5 boxes, sides size//6..size//3, 3 voxels from the border
    sizes = torch.tensor(shape[2:])
    sides = boxes.high - boxes.low
    assert (sides >= sizes // 6).all() and (sides <= sizes // 3).all()
    assert (boxes.low >= 3).all() and (boxes.high <= sizes - 3).all()
    active = boxes.active.long()
    assert torch.equal(active, active.cummin(dim=1).values)  # boxes 0..k-1 exist
    assert active.sum(dim=1).max() <= 5 and mask.any()


def test_out_paint_keeps_its_boxes_and_replaces_the_rest() -> None:
    shape = (8, 2, 28, 28, 14)
    x = torch.full(shape, 2.0)
    boxes = T._outpaint_boxes(shape, gen(4), torch.device("cpu"))
    keep = box_mask(shape, boxes)[:, None].expand_as(x)
    out = T.out_paint(x, gen(4))
    assert torch.equal(out[keep], x[keep])
    assert ((out[~keep] >= 0) & (out[~keep] < 1)).all()
    assert boxes.active[:, 0].all()  # at least one box kept per sample
    sizes = torch.tensor(shape[2:])
    sides = boxes.high - boxes.low
    assert (sides >= sizes - 4 * sizes // 7).all() and (sides <= sizes - 3 * sizes // 7).all()
    fraction_kept = keep.float().mean(dim=(1, 2, 3, 4))
    assert (fraction_kept > 0.05).all() and (fraction_kept < 0.8).all()


def test_paint_changes_only_its_mask() -> None:
    shape = (16, 1, 21, 21, 14)
    x = torch.full(shape, 2.0)
    replaced = paint_mask(shape, gen(5), prob=0.9, inpaint_prob=0.2)[:, None].expand_as(x)
    out = T.paint(x, gen(5), prob=0.9, inpaint_prob=0.2)
    assert torch.equal(out[~replaced], x[~replaced])
    assert ((out[replaced] >= 0) & (out[replaced] < 1)).all()
    assert torch.equal(T.paint(x, gen(), prob=0.0), x)
    inner = paint_mask(shape, gen(6), prob=1.0, inpaint_prob=1.0).float().mean(dim=(1, 2, 3))
    outer = paint_mask(shape, gen(6), prob=1.0, inpaint_prob=0.0).float().mean(dim=(1, 2, 3))
    assert (inner < 0.2).all() and (outer > 0.3).all()  # in-painting replaces little, out-painting most


# ------------------------------------------------------------- non-linear intensity


def reference_bezier(values: np.ndarray, p: np.ndarray, inverted: bool, n_points: int = 1000) -> np.ndarray:
    """Models Genesis' curve through (0,0), p[0:2], p[2:4], (1,1), by np.interp."""
    t = np.linspace(0.0, 1.0, n_points)
    b1, b2, b3 = 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
    xs, ys = p[0] * b1 + p[2] * b2 + b3, p[1] * b1 + p[3] * b2 + b3
    return np.interp(values, xs, ys[::-1] if inverted else ys)


@pytest.mark.parametrize("invert_prob", [0.0, 1.0])
def test_bezier_is_monotone_with_fixed_endpoints(invert_prob: float) -> None:
    ramp = torch.linspace(0, 1, 4 * 1000).view(4, 1, 10, 10, 10)
    out = T.bezier_intensity(ramp, gen(2), prob=1.0, invert_prob=invert_prob)
    flat = out.flatten(1)
    steps = flat[:, 1:] - flat[:, :-1]
    if invert_prob == 0.0:
        assert (steps >= 0).all()
        assert torch.allclose(flat[0, 0], torch.tensor(0.0)) and torch.allclose(flat[-1, -1], torch.tensor(1.0))
    else:
        assert (steps <= 0).all()
        assert torch.allclose(flat[0, 0], torch.tensor(1.0)) and torch.allclose(flat[-1, -1], torch.tensor(0.0))
    assert ((out >= 0) & (out <= 1)).all()
    # against np.interp on the same control points (drawn after the per-sample coin)
    g = gen(2)
    torch.rand(4, generator=g)
    points = torch.rand(4, 4, generator=g).double().numpy()
    for i in range(4):
        expected = reference_bezier(ramp[i].double().numpy(), points[i], invert_prob == 1.0)
        np.testing.assert_allclose(out[i].numpy(), expected, atol=1e-5)


def test_bezier_probability_zero_is_identity() -> None:
    x = batch()
    assert torch.equal(T.bezier_intensity(x, gen(), prob=0.0), x)
    half = T.bezier_intensity(x, gen(), prob=0.5)
    assert half.dtype == x.dtype and half.shape == x.shape


# ------------------------------------------------------------------- augmentation


def test_augment_switched_off_is_a_copy() -> None:
    x = batch()
    out = T.augment(x, gen(), flip=False, affine=False, blur=False)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


def test_augment_flips_only() -> None:
    x = batch((16, 1, 6, 5, 4))
    out = T.augment(x, gen(), affine=False, blur=False)
    seen = set()
    for i in range(16):
        matches = [
            dims for dims in ((), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4))
            if torch.equal(out[i : i + 1], torch.flip(x[i : i + 1], dims) if dims else x[i : i + 1])
        ]  # fmt: skip
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) >= 4
    only_x = T.augment(x, gen(), flip_axes=(0,), flip_prob=1.0, affine=False, blur=False)
    assert torch.equal(only_x, torch.flip(x, (2,)))


def test_affine_rotates_in_voxel_space_about_the_centre() -> None:
    # anisotropic grid: a rotation in the y-z plane only lands right if voxel units are used
    sizes = (9, 24, 16)
    centre = torch.tensor([(s - 1) / 2 for s in sizes], dtype=torch.float64)
    coords = torch.stack(torch.meshgrid(*(torch.arange(s, dtype=torch.float64) for s in sizes), indexing="ij"))
    source = torch.tensor([0.0, 4.0, 2.0], dtype=torch.float64)  # blob offset from the centre, in voxels
    blob = torch.exp(-((coords - (centre + source)[:, None, None, None]) ** 2).sum(0) / 2.0)
    angle = math.radians(30)
    rotation = torch.tensor(
        [[1, 0, 0], [0, math.cos(angle), -math.sin(angle)], [0, math.sin(angle), math.cos(angle)]], dtype=torch.float64
    )
    out = T._affine(blob[None, None], rotation[None])[0, 0]  # output position p samples input R p
    mass = (out * coords).flatten(1).sum(1) / out.sum()
    expected = centre + rotation.T @ source
    assert torch.allclose(mass, expected, atol=0.05), (mass, expected)


def test_affine_identity_and_range() -> None:
    x = batch()
    near = T.augment(x, gen(), flip=False, blur=False, degrees=0.0, scale=0.0)
    assert torch.allclose(near, x, atol=1e-5)
    out = T.augment(x, gen(), flip=False, blur=False)
    assert not torch.allclose(out, x, atol=1e-3)
    low, high = x.amin(dim=(1, 2, 3, 4)), x.amax(dim=(1, 2, 3, 4))
    assert (out.amin(dim=(1, 2, 3, 4)) >= low - 1e-6).all() and (out.amax(dim=(1, 2, 3, 4)) <= high + 1e-6).all()


def test_blur_matches_scipy_gaussian_filter() -> None:
    x = batch((3, 2, 12, 10, 8), dtype=torch.float64)
    sigma = torch.tensor([[0.0, 1.0, 2.0], [0.5, 0.0, 1.5], [2.0, 2.0, 0.3]], dtype=torch.float64)
    out = T._gaussian_blur(x, sigma, radius=6)
    for i in range(3):
        for c in range(2):
            expected = x[i, c].numpy()
            for axis in range(3):
                if sigma[i, axis] > 0:
                    expected = scipy.ndimage.gaussian_filter1d(
                        expected, float(sigma[i, axis]), axis=axis, mode="nearest", radius=6
                    )
            np.testing.assert_allclose(out[i, c].numpy(), expected, atol=1e-12)
    assert torch.equal(T.augment(x, gen(), flip=False, affine=False, blur_sigma=(0.0, 0.0)), x)


# ------------------------------------------------------- corrupt, config, randomness


def test_corruption_config_names_the_bad_field() -> None:
    for value in (1.5, -0.1, "0.5", True):
        with pytest.raises(ConfigError, match="paint_prob"):
            T.CorruptionConfig(paint_prob=value)
    assert T.CorruptionConfig().nonlinear_prob == 0.0  # switched off as in the release


def test_corrupt_chain() -> None:
    x = batch((6, 1, 20, 20, 10))
    off = T.CorruptionConfig(shuffle_prob=0.0, paint_prob=0.0)
    assert torch.equal(T.corrupt(x, off, gen()), x)
    on = T.CorruptionConfig(shuffle_prob=1.0, nonlinear_prob=1.0, paint_prob=1.0)
    out = T.corrupt(x, on, gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    assert ((out >= 0) & (out <= 1)).all()
    assert (out != x).flatten(1).any(dim=1).all()
    # shuffling alone keeps each sample's multiset of values
    shuffled = T.corrupt(x, T.CorruptionConfig(shuffle_prob=1.0, paint_prob=0.0), gen())
    assert torch.equal(shuffled.flatten(1).sort(dim=1).values, x.flatten(1).sort(dim=1).values)


CALLS = {
    "spatial_codes": lambda x, g: T.spatial_codes(x.shape[0], g, x.device),
    "shuffle": lambda x, g: T.local_pixel_shuffle(x, g, prob=1.0),
    "in_paint": T.in_paint,
    "out_paint": T.out_paint,
    "paint": T.paint,
    "bezier": lambda x, g: T.bezier_intensity(x, g, prob=1.0),
    "augment": T.augment,
    "corrupt": lambda x, g: T.corrupt(x, T.CorruptionConfig(nonlinear_prob=0.5), g),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", sorted(CALLS))
def test_randomness_only_from_the_generator(name: str, dtype: torch.dtype) -> None:
    call = CALLS[name]
    x = batch((4, 1, 20, 16, 10), dtype=dtype)
    original = x.clone()
    torch.manual_seed(1)
    state = torch.get_rng_state()
    first = call(x, gen(11))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is never drawn from
    torch.manual_seed(2)
    assert torch.equal(call(x, gen(11)), first)  # same generator seed, same output
    assert not torch.equal(call(x, gen(12)), first)  # another seed, another output
    assert torch.equal(x, original)  # inputs are never modified
    if name != "spatial_codes":
        assert first.shape == x.shape and first.dtype == dtype


def test_bulk_uniform_draws_are_uniform_on_a_2_to_the_23_grid() -> None:
    """The CPU float32 draws of painting noise and shuffle keys (two numbers per 64-bit draw):
    in [0, 1) on multiples of 2^-23, flat over 64 bins (chi-square, 63 degrees of freedom,
    far below the 0.1 % critical value of about 103), every mantissa bit a fair coin in both
    halves of a draw, neighbours uncorrelated, and reproducible from the seed alone."""
    from pcrl.transforms._checks import _uniform

    cpu = torch.device("cpu")
    u = _uniform((1000, 1001), gen(11), cpu, torch.float32)  # an odd count: the last draw half used
    assert u.shape == (1000, 1001) and u.dtype == torch.float32
    flat = u.flatten().double()
    assert flat.min() >= 0 and flat.max() < 1
    steps = flat * 2**23
    assert torch.equal(steps, steps.round())
    counts = torch.bincount((flat * 64).long(), minlength=64).double()
    expected = flat.numel() / 64
    assert ((counts - expected) ** 2 / expected).sum() < 103
    mantissa = steps.long()
    for half in (mantissa[0::2], mantissa[1::2]):
        bit_means = torch.stack([((half >> k) & 1).double().mean() for k in range(23)])
        assert (bit_means - 0.5).abs().max() < 0.005  # 4.5 standard deviations at n = 500k
    pairs = torch.corrcoef(torch.stack([flat[:-1], flat[1:]]))[0, 1]
    assert abs(float(pairs)) < 0.005
    assert torch.equal(_uniform((7, 3), gen(5), cpu, torch.float32), _uniform((7, 3), gen(5), cpu, torch.float32))
    assert not torch.equal(_uniform((7, 3), gen(5), cpu, torch.float32), _uniform((7, 3), gen(6), cpu, torch.float32))
    doubles = _uniform((4, 5), gen(5), cpu, torch.float64)  # other dtypes: torch.rand
    assert doubles.dtype == torch.float64
    assert torch.equal(doubles, torch.rand((4, 5), generator=gen(5), dtype=torch.float64))


def test_wrong_arguments_are_named() -> None:
    x = batch()
    with pytest.raises(ValueError, match="prob"):
        T.local_pixel_shuffle(x, gen(), prob=2.0)
    with pytest.raises(ValueError, match=r"\(1, 20, 20, 12\)"):
        T.paint(x[0], gen())
    with pytest.raises(TypeError, match="Generator"):
        T.in_paint(x, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="floating"):
        T.out_paint((x * 10).long(), gen())
    with pytest.raises(ValueError, match="generator lives on cpu"):
        T.spatial_codes(2, gen(), "meta")  # the generator must live where the tensors are made


# ---------------------------------------------------------- 2D images


def test_2d_codes_never_flip_z_and_drop_that_entry() -> None:
    codes3d = T.spatial_codes(64, gen(3))
    codes2d = T.spatial_codes(64, gen(3), spatial_dims=2)
    assert not bool(codes2d[:, 2].any())
    # the same stream: every entry but the flip of z equals the 3D draw
    torch.testing.assert_close(codes2d[:, [0, 1, 3, 4, 5, 6]], codes3d[:, [0, 1, 3, 4, 5, 6]])
    six = T.codes_2d(codes2d)
    assert six.shape == (64, T.CODE_SIZE_2D) and torch.equal(T.volume_codes(six), codes2d)
    assert bool(codes3d[:, 2].any())
    with pytest.raises(ValueError, match="cannot flip z"):
        T.codes_2d(codes3d)


def test_2d_spatial_transform_is_the_2d_flip_then_turn() -> None:
    images = batch((8, 1, 12, 12, 1))[..., 0]
    six = T.codes_2d(T.spatial_codes(8, gen(4), spatial_dims=2))
    out = T.apply_spatial(images[..., None], T.volume_codes(six))[..., 0]
    for i in range(8):
        dims = [1 + a for a in range(2) if six[i, a] == 1]
        expected = torch.rot90(torch.flip(images[i], dims) if dims else images[i], int(six[i, 2:].argmax()), (1, 2))
        torch.testing.assert_close(out[i], expected)


def test_2d_affine_is_an_in_plane_rotation_about_the_centre() -> None:
    """Independent reference: scipy's affine_transform of the 2D image by the drawn angle."""
    n, size, degrees = 3, 32, 30.0
    images = torch.zeros(n, 1, size, size)
    images[:, :, 10:20, 6:14] = 1.0  # an off-centre block, so rotation and its sign show
    images += 0.05
    out = T.augment(images[..., None], gen(5), flip=False, blur=False, degrees=degrees, scale=0.0,
                    spatial_dims=2)[..., 0]
    g = gen(5)
    torch.rand(n, generator=g)  # the affine's choice
    angles = (2 * torch.rand((n, 3), generator=g) - 1) * math.radians(degrees)
    centre = np.array([(size - 1) / 2] * 2)
    for i in range(n):
        theta = float(angles[i, 2])
        rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        inverse = rotation.T  # output -> input positions
        expected = scipy.ndimage.affine_transform(images[i, 0].double().numpy(), inverse,
                                                  offset=centre - inverse @ centre, order=1, mode="nearest")
        inner = slice(6, size - 6)
        np.testing.assert_allclose(out[i, 0, inner, inner].numpy(), expected[inner, inner], atol=1e-5)
        assert abs(theta) > math.radians(1)


def test_2d_augment_keeps_one_slice_and_refuses_thick_volumes() -> None:
    images = batch((4, 1, 16, 16, 1))
    out = T.augment(images, gen(6), spatial_dims=2)
    assert out.shape == images.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="one-slice volumes"):
        T.augment(batch((2, 1, 16, 16, 4)), gen(6), spatial_dims=2)
