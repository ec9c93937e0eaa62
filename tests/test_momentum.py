"""Tests of pcrl.methods.momentum: EMA, key queue, shuffled batch norm (one and two processes)."""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pcrl.methods.momentum import (
    TIME_CONSTANT_SHARE,
    KeyQueue,
    MomentumSchedule,
    batch_shuffle,
    batch_unshuffle,
    concat_all_gather,
    momentum_at,
    momentum_time_constant,
    recommended_momentum,
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


# ------------------------------------------------------------------ the momentum schedule

SQRT_HALF = 0.5**0.5


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.9),
        (5, 0.95),  # cos(pi/2) = 0: half way, 1 - 0.1 * 1/2
        (10, 1.0),  # cos(pi) = -1
        (20, 1.0),  # past the end: held at 1
        (-3, 0.9),  # before the start: held at m0
    ],
)
def test_cosine_momentum_by_hand(step: int, expected: float) -> None:
    assert momentum_at(step, 10, 0.9, "cosine") == pytest.approx(expected, abs=1e-12)


def test_cosine_momentum_at_thirds_and_quarters() -> None:
    # T = 3: cos(pi/3) = 1/2, cos(2 pi/3) = -1/2 -> 1 - 0.1 * 3/4 and 1 - 0.1 * 1/4
    assert momentum_at(1, 3, 0.9, "cosine") == pytest.approx(0.925, abs=1e-12)
    assert momentum_at(2, 3, 0.9, "cosine") == pytest.approx(0.975, abs=1e-12)
    # T = 4, m0 = 0.5: cos(pi/4) = sqrt(1/2)
    assert momentum_at(1, 4, 0.5, "cosine") == pytest.approx(1 - 0.25 * (1 + SQRT_HALF), abs=1e-12)
    assert momentum_at(3, 4, 0.5, "cosine") == pytest.approx(1 - 0.25 * (1 - SQRT_HALF), abs=1e-12)
    # m0 = 1 stays 1; m0 = 0 ramps from 0 to 1
    assert momentum_at(2, 4, 1.0, "cosine") == 1.0
    assert momentum_at(2, 4, 0.0, "cosine") == pytest.approx(0.5, abs=1e-12)


def test_constant_momentum_ignores_the_steps() -> None:
    for step, total in [(0, None), (7, None), (5, 10), (1000, 3)]:
        assert momentum_at(step, total, 0.99, "constant") == 0.99
    assert momentum_at(3, None, 0.99) == 0.99  # constant is the default


def test_momentum_at_errors() -> None:
    with pytest.raises(ValueError, match="schedule must be one of"):
        momentum_at(0, 10, 0.9, "linear")
    with pytest.raises(ValueError, match="total steps"):
        momentum_at(0, None, 0.9, "cosine")
    with pytest.raises(ValueError, match="total steps"):
        momentum_at(0, 0, 0.9, "cosine")
    for m0 in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            momentum_at(0, 10, m0, "constant")
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            momentum_at(0, 10, m0, "cosine")
    with pytest.raises(ValueError):
        MomentumSchedule(0.9, "cosine")  # no total steps


def test_time_constant_and_recommended_momentum_by_hand() -> None:
    assert momentum_time_constant(0.75) == 4.0
    assert momentum_time_constant(0.999) == pytest.approx(1000.0)
    assert momentum_time_constant(1.0) == math.inf
    assert TIME_CONSTANT_SHARE == 0.1
    assert recommended_momentum(420) == pytest.approx(1 - 1 / 42)  # tau = 42 = 420 / 10
    assert recommended_momentum(1000) == pytest.approx(0.99)
    assert recommended_momentum(20) == pytest.approx(0.5)
    assert recommended_momentum(10) == 0.0 and recommended_momentum(3) == 0.0  # never negative


def test_configs_reject_a_cosine_schedule_without_steps() -> None:
    from pcrl.errors import ConfigError
    from pcrl.methods import MoCoConfig, PCRLConfig

    with pytest.raises(ConfigError, match="momentum_schedule"):
        PCRLConfig(base=4, queue_size=16, loss="infonce", momentum_schedule="cosine")
    with pytest.raises(ConfigError, match="momentum_schedule"):
        MoCoConfig(base=4, queue_size=16, momentum_schedule="cosine")
    with pytest.raises(ConfigError, match="momentum_schedule"):
        PCRLConfig(base=4, queue_size=16, loss="infonce", momentum_schedule="step", momentum_steps=4)
    with pytest.raises(ConfigError, match="momentum_steps"):
        PCRLConfig(base=4, queue_size=16, loss="infonce", momentum_schedule="cosine", momentum_steps=0)
    PCRLConfig(base=4, queue_size=16, loss="infonce", momentum_schedule="cosine", momentum_steps=4)


def _linear_pair() -> tuple[nn.Linear, nn.Linear]:
    student, teacher = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        student.weight.copy_(torch.tensor([[1.0, 2.0]]))
        student.bias.fill_(3.0)
        teacher.weight.copy_(torch.tensor([[-1.0, 0.0]]))
        teacher.bias.fill_(1.0)
    return student, teacher


# m_t of the cosine ramp with m0 = 0.5 over T = 4 steps, 1 - 0.25 (cos(pi t / 4) + 1), written out.
RAMP = [0.5, 1 - 0.25 * (1 + SQRT_HALF), 0.75, 1 - 0.25 * (1 - SQRT_HALF), 1.0, 1.0]


def test_schedule_update_is_the_hand_written_ema_loop() -> None:
    student, teacher = _linear_pair()
    schedule = MomentumSchedule(0.5, "cosine", total_steps=4)
    w, b = [-1.0, 0.0], 1.0  # the teacher, by hand
    for t, m in enumerate(RAMP):
        with torch.no_grad():  # the student moves between updates (an optimiser step)
            student.weight.add_(torch.tensor([[0.5, -1.0]]))
            student.bias.add_(0.25)
        sw = [1.0 + 0.5 * (t + 1), 2.0 - 1.0 * (t + 1)]
        sb = 3.0 + 0.25 * (t + 1)
        assert schedule.steps.item() == t
        assert schedule.current == pytest.approx(m, abs=1e-12)
        assert schedule.update(student, teacher) == pytest.approx(m, abs=1e-12)
        w = [m * w[i] + (1 - m) * sw[i] for i in range(2)]
        b = m * b + (1 - m) * sb
        torch.testing.assert_close(teacher.weight, torch.tensor([w]), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(teacher.bias, torch.tensor([b]), rtol=1e-6, atol=1e-6)
    assert schedule.steps.item() == len(RAMP)
    # the last two updates had m = 1: the teacher stopped moving, the student did not
    assert not torch.allclose(teacher.weight, student.weight)


def test_schedule_with_a_fixed_student_has_the_product_closed_form() -> None:
    student, teacher = _linear_pair()
    schedule = MomentumSchedule(0.5, "cosine", total_steps=4)
    for _ in range(3):
        schedule.update(student, teacher)
    # teacher_3 = s + m0 m1 m2 (teacher_0 - s)
    prod = RAMP[0] * RAMP[1] * RAMP[2]
    expected = torch.tensor([[1.0, 2.0]]) + prod * (torch.tensor([[-1.0, 0.0]]) - torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(teacher.weight, expected, rtol=1e-6, atol=1e-6)


def test_constant_schedule_counts_but_keeps_m() -> None:
    student, teacher = _linear_pair()
    schedule = MomentumSchedule(0.75, "constant")
    assert [schedule.update(student, teacher) for _ in range(3)] == [0.75, 0.75, 0.75]
    assert schedule.steps.item() == 3
    # 0.75^3 of the way from the student back to the initial teacher
    torch.testing.assert_close(teacher.bias, torch.tensor([3.0 + 0.75**3 * (1.0 - 3.0)]))


def test_schedule_steps_are_saved_and_a_reload_continues_the_ramp() -> None:
    k = 2
    ran = MomentumSchedule(0.5, "cosine", total_steps=4)
    s1, t1 = _linear_pair()
    for _ in range(k):
        ran.update(s1, t1)
    state = ran.state_dict()
    assert set(state) == {"steps"} and state["steps"].item() == k
    restored = MomentumSchedule(0.5, "cosine", total_steps=4)
    restored.load_state_dict(state)  # strict
    assert restored.steps.item() == k
    assert restored.current == ran.current == pytest.approx(RAMP[k], abs=1e-12)
    # the next updates match the uninterrupted schedule's, step by step
    s2, t2 = copy.deepcopy(s1), copy.deepcopy(t1)
    for step in range(k, 5):
        assert restored.update(s2, t2) == ran.update(s1, t1) == pytest.approx(RAMP[step], abs=1e-12)
    torch.testing.assert_close(t2.weight, t1.weight)


def test_a_state_dict_without_steps_warns_and_restarts_the_ramp(caplog: pytest.LogCaptureFixture) -> None:
    schedule = MomentumSchedule(0.5, "cosine", total_steps=4)
    schedule.steps.fill_(3)
    with caplog.at_level(logging.WARNING, logger="pcrl.methods.momentum"):
        schedule.load_state_dict({})  # strict: the missing key is filled, not reported
    assert schedule.steps.item() == 0 and schedule.current == pytest.approx(0.5)
    assert any("steps" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_a_method_checkpoint_without_ema_steps_loads_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    from pcrl.methods import MoCoConfig, MoCoV2

    method = MoCoV2(MoCoConfig(base=2, queue_size=8, proj_dim=4, momentum=0.5, momentum_schedule="cosine",
                               momentum_steps=4))
    method.after_step()
    assert method.state_dict()["ema.steps"].item() == 1
    old = {k: v for k, v in method.state_dict().items() if k != "ema.steps"}  # written before the schedule
    fresh = MoCoV2(method.config)
    fresh.ema.steps.fill_(2)
    with caplog.at_level(logging.WARNING, logger="pcrl.methods.momentum"):
        fresh.load_state_dict(old)  # strict, as the trainer loads
    assert fresh.ema.steps.item() == 0
    assert any("ema.steps" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------- the rule m vs. run length


def test_run_steps_by_hand() -> None:
    from pcrl.stages.pretrain import run_steps

    assert run_steps(336, 8, 10) == 420  # 42 full batches a epoch
    assert run_steps(16, 4, 3) == 12
    assert run_steps(18, 4, 3) == 12  # the incomplete batch is dropped


def test_momentum_warning_follows_the_time_constant_rule() -> None:
    from pcrl.stages.pretrain import momentum_warning

    # tau = 1 / (1 - 0.9) = 10 <= 100 / 10: kept (the boundary counts as kept)
    assert momentum_warning("pcrl", {"pcrl": {"momentum": 0.9}}, 100) is None
    assert momentum_warning("moco", {"moco": {"momentum": 0.75}}, 40) is None  # tau 4 == 40 / 10
    # tau = 1000 > 420 / 10 = 42
    message = momentum_warning("pcrl", {"pcrl": {"momentum": 0.999}}, 420)
    assert message is not None and "pretrain.pcrl.momentum" in message
    assert "420" in message and "0.9762" in message  # suggests 1 - 1/42
    moco = momentum_warning("moco", {"moco": {"momentum": 0.99}}, 500)  # tau 100 > 50
    assert moco is not None and "pretrain.moco.momentum" in moco
    # a missing momentum is the methods' default, 0.999
    assert momentum_warning("pcrl", {"pcrl": {}}, 420) is not None
    assert momentum_warning("pcrl", {}, 20000) is None  # tau 1000 <= 2000
    # Genesis has no momentum encoder
    assert momentum_warning("genesis", {"genesis": {"momentum": 0.999}}, 420) is None


@pytest.mark.parametrize("steps", [11, 20, 30, 31, 33, 37, 100, 420, 1000, 4321])
def test_the_recommended_momentum_passes_its_own_rule(steps: int) -> None:
    from pcrl.stages.pretrain import momentum_warning

    m = recommended_momentum(steps)
    assert momentum_time_constant(m) == pytest.approx(TIME_CONSTANT_SHARE * steps, rel=1e-9)
    assert momentum_warning("pcrl", {"pcrl": {"momentum": m}}, steps) is None
    # and a clearly larger m breaks it
    assert momentum_warning("pcrl", {"pcrl": {"momentum": 1 - (1 - m) / 2}}, steps) is not None
