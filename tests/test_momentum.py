"""Tests of pcrl.methods.momentum: EMA, key queue, shuffled batch norm (one and two processes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pcrl.methods.momentum import (
    KeyQueue,
    batch_shuffle,
    batch_unshuffle,
    concat_all_gather,
    update_momentum,
)


def _pair() -> tuple[nn.Module, nn.Module]:
    student = nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1))
    teacher = nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1))
    with torch.no_grad():
        student[0].weight.copy_(torch.tensor([[1.0, 2.0]]))
        student[0].bias.fill_(3.0)
        teacher[0].weight.copy_(torch.tensor([[-1.0, 0.0]]))
        teacher[0].bias.fill_(1.0)
        student[1].running_mean.fill_(0.5)
        student[1].running_var.fill_(2.0)
        student[1].num_batches_tracked.fill_(7)
    return student, teacher


def test_update_momentum_exact_values() -> None:
    student, teacher = _pair()
    update_momentum(student, teacher, 0.75)
    # 0.75 * teacher + 0.25 * student, written out.
    torch.testing.assert_close(teacher[0].weight, torch.tensor([[-0.75 + 0.25, 0.0 + 0.5]]))
    torch.testing.assert_close(teacher[0].bias, torch.tensor([0.75 + 0.75]))
    # BN affine parameters (1 and 0 in both) stay 1 and 0; buffers are copied.
    torch.testing.assert_close(teacher[1].weight, torch.tensor([1.0]))
    torch.testing.assert_close(teacher[1].running_mean, torch.tensor([0.5]))
    torch.testing.assert_close(teacher[1].running_var, torch.tensor([2.0]))
    assert teacher[1].num_batches_tracked.item() == 7
    # The student is untouched.
    torch.testing.assert_close(student[0].weight, torch.tensor([[1.0, 2.0]]))


def test_update_momentum_limits_and_no_autograd() -> None:
    student, teacher = _pair()
    update_momentum(student, teacher, 1.0)
    torch.testing.assert_close(teacher[0].weight, torch.tensor([[-1.0, 0.0]]))
    update_momentum(student, teacher, 0.0)
    torch.testing.assert_close(teacher[0].weight, student[0].weight.detach())
    assert teacher[0].weight.grad_fn is None


def test_update_momentum_rejects_mismatch() -> None:
    student, _ = _pair()
    with pytest.raises(ValueError, match="m must lie"):
        update_momentum(student, student, 1.5)
    with pytest.raises(ValueError, match="differ in names"):
        update_momentum(student, nn.Sequential(nn.Linear(2, 1)), 0.9)
    with pytest.raises(ValueError, match=r"shape \(1, 2\).*\(1, 3\)"):
        update_momentum(student, nn.Sequential(nn.Linear(3, 1), nn.BatchNorm1d(1)), 0.9)


def test_queue_starts_with_deterministic_unit_keys() -> None:
    a = KeyQueue(6, 4, generator=torch.Generator().manual_seed(3))
    b = KeyQueue(6, 4, generator=torch.Generator().manual_seed(3))
    c = KeyQueue(6, 4)
    torch.testing.assert_close(a.keys, b.keys)
    torch.testing.assert_close(a.keys.norm(dim=1), torch.ones(6))
    assert not torch.equal(a.keys, c.keys)
    assert a.ptr.item() == 0
    assert set(a.state_dict()) == {"keys", "ptr", "filled"} and a.filled.item() == 0


def test_queue_wraps_around() -> None:
    queue = KeyQueue(5, 2)
    a = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    b = torch.tensor([[3.0, 0.0], [4.0, 0.0]])
    c = torch.tensor([[5.0, 0.0], [6.0, 0.0]])
    initial = queue.keys.clone()
    assert queue.fill.item() == 0.0
    queue.enqueue(a)
    assert queue.ptr.item() == 2 and queue.fill.item() == pytest.approx(2 / 5)
    torch.testing.assert_close(queue.keys[2:], initial[2:])
    queue.enqueue(b)
    assert queue.ptr.item() == 4 and queue.fill.item() == pytest.approx(4 / 5)
    queue.enqueue(c)
    assert queue.fill.item() == 1.0  # 6 keys into 5 rows: full, not 6 / 5
    # Rows 0..4: c[1] wrapped to row 0, a[1], b[0], b[1], c[0]; next write at row 1.
    expected = torch.tensor([[6.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0], [5.0, 0.0]])
    torch.testing.assert_close(queue.keys, expected)
    assert queue.ptr.item() == 1


def test_queue_batch_larger_than_queue_keeps_the_last_keys() -> None:
    queue = KeyQueue(3, 1)
    queue.enqueue(torch.tensor([[1.0]]))  # ptr 1
    queue.enqueue(torch.arange(10.0, 15.0).unsqueeze(1))  # 5 keys > K = 3
    # As if written one by one from row 1 (rows 1, 2, 0, 1, 2): only the last three keys
    # survive, 12 at row (1 + 2) % 3 = 0, 13 at row 1, 14 at row 2.
    torch.testing.assert_close(queue.keys, torch.tensor([[12.0], [13.0], [14.0]]))
    assert queue.ptr.item() == (1 + 5) % 3


def test_queue_rejects_wrong_dim() -> None:
    with pytest.raises(ValueError, match=r"\(B, 2\).*\(4, 3\)"):
        KeyQueue(5, 2).enqueue(torch.zeros(4, 3))


def test_single_process_gather_returns_the_batch_without_gradient() -> None:
    """Outside torch.distributed the gather is the batch itself, detached like the
    all-gathered keys (MoCo gathers without gradient), and leaves the input untouched."""
    t = torch.arange(6.0).view(3, 2).requires_grad_()
    gathered = concat_all_gather(t)
    torch.testing.assert_close(gathered, torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]))
    assert gathered.shape == (3, 2)


def test_batch_shuffle_round_trip_and_bn_equivariance() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.arange(8.0).view(8, 1) ** 2
    shuffled, idx = batch_shuffle(x, g)
    assert not torch.equal(shuffled, x)
    assert sorted(shuffled.flatten().tolist()) == sorted(x.flatten().tolist())
    torch.testing.assert_close(batch_unshuffle(shuffled, idx), x)
    # On one device the shuffle does not change batch statistics: BN(shuffle) unshuffled == BN.
    bn_a, bn_b = nn.BatchNorm1d(1), nn.BatchNorm1d(1)
    direct = bn_a(x)
    via_shuffle = batch_unshuffle(bn_b(shuffled), idx)
    torch.testing.assert_close(via_shuffle, direct)
    torch.testing.assert_close(bn_b.running_mean, bn_a.running_mean)
    # Same generator state, same permutation.
    again, idx2 = batch_shuffle(x, torch.Generator().manual_seed(0))
    assert torch.equal(again, shuffled) and torch.equal(idx2, idx)


# --------------------------------------------------------------------------- two processes

WORLD = 2
LOCAL = 4


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        # Global batch 0..7 (squared, so that the two halves have very different statistics).
        x_global = (torch.arange(WORLD * LOCAL, dtype=torch.float32) ** 2).view(-1, 1)
        x = x_global[rank * LOCAL : (rank + 1) * LOCAL]
        gathered = concat_all_gather(x)
        # Different generator seeds per rank: rank 0's permutation must win.
        shuffled, idx = batch_shuffle(x, torch.Generator().manual_seed(100 + rank))
        bn = nn.BatchNorm1d(1, affine=False)
        normalised = batch_unshuffle(bn(shuffled), idx)
        restored = batch_unshuffle(shuffled, idx)
        queue = KeyQueue(5, 1)
        queue.enqueue(x[:2])
        torch.save(
            {
                "gathered": gathered,
                "shuffled": shuffled,
                "idx": idx,
                "restored": restored,
                "x": x,
                "normalised": normalised,
                "queue": queue.keys.clone(),
                "ptr": queue.ptr.clone(),
            },
            f"{out_dir}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_two_process_gather_shuffle_and_enqueue(tmp_path: Path) -> None:
    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    res = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    x_global = (torch.arange(WORLD * LOCAL, dtype=torch.float32) ** 2).view(-1, 1)
    for r in range(WORLD):
        torch.testing.assert_close(res[r]["gathered"], x_global)
        torch.testing.assert_close(res[r]["restored"], res[r]["x"])
    # Both ranks hold the same (rank 0's) permutation; their slices partition the global batch.
    assert torch.equal(res[0]["idx"], res[1]["idx"])
    perm = torch.argsort(res[0]["idx"])
    torch.testing.assert_close(torch.cat([res[0]["shuffled"], res[1]["shuffled"]]), x_global[perm])
    # Shuffled BN: each sample was normalised with the statistics of the random half it was
    # sent to (not of its own rank's half), written out per group.
    normalised = torch.cat([res[0]["normalised"], res[1]["normalised"]])
    for r in range(WORLD):
        members = perm[r * LOCAL : (r + 1) * LOCAL]
        values = x_global[members, 0]
        mean, var = values.mean(), values.var(unbiased=False)
        expected = (values - mean) / torch.sqrt(var + 1e-5)
        torch.testing.assert_close(normalised[members, 0], expected)
    # Enqueue gathers first: ranks write [x0[:2], x1[:2]] at rows 0..3, ptr 4 on both.
    for r in range(WORLD):
        torch.testing.assert_close(res[r]["queue"][:4], torch.tensor([[0.0], [1.0], [16.0], [25.0]]))
        assert res[r]["ptr"].item() == 4


def test_a_checkpoint_without_the_fill_count_resumes_as_a_full_queue() -> None:
    old = KeyQueue(5, 2)
    old.enqueue(torch.tensor([[1.0, 0.0]]))
    state = {k: v for k, v in old.state_dict().items() if k != "filled"}  # written before `filled`
    queue = KeyQueue(5, 2)
    queue.load_state_dict(state)  # strict, as the trainer loads
    torch.testing.assert_close(queue.keys, old.keys)
    assert queue.filled.item() == 5 and queue.ptr.item() == 1
