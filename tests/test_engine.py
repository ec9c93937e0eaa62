"""Tests of pcrl.engine: resume equivalence, preemption, NaN stop, LR schedule, DDP, AMP.

The engine is exercised with a tiny method defined here (not the real PCRL): a 3D conv
student, an EMA teacher, buffers (a queue and a step counter) and noise drawn from the
engine's generator, so that resuming must restore weights, buffers, optimiser momentum
and RNG state to give bit-identical results.
"""

from __future__ import annotations

import copy
import csv
import datetime
import json
import math
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from pcrl.preprocessing.pairs import PairsDataset
from pcrl.distributed import DistInfo, cleanup, init_distributed
from pcrl.engine import (
    NonFiniteLossError,
    Preempted,
    TrainConfig,
    last_checkpoint,
    load_checkpoint,
    resolve_amp,
    train,
)
from pcrl.engine.sampler import _EpochSampler
from pcrl.errors import ConfigError, DataError

SHAPE = (8, 8, 4)


pytestmark = pytest.mark.usefixtures("one_thread")


class TinyMethod(nn.Module):
    """A method with the engine's interface: student, EMA teacher, buffers, random noise.

    Args:
        noise: Add generator-drawn noise to the input (False: fully deterministic).
        nan_from_step: Make the "rec" term NaN once this many SGD steps were taken.
        signal_at_step: Send SIGTERM to this process in the forward of that step count.
    """

    def __init__(self, noise: bool = True, nan_from_step: int | None = None,
                 signal_at_step: int | None = None) -> None:
        super().__init__()
        self.student = nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.ReLU(),
                                     nn.Conv3d(3, 1, 1))
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.register_buffer("queue", torch.zeros(5))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.noise = noise
        self.nan_from_step = nan_from_step
        self.signal_at_step = signal_at_step
        self._last_mean = torch.zeros(())

    def forward(self, x1: Tensor, x2: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        if self.signal_at_step is not None and int(self.steps) == self.signal_at_step:
            os.kill(os.getpid(), signal.SIGTERM)
        if self.noise:
            x1 = x1 + 0.1 * torch.randn(x1.shape, generator=generator, device=x1.device)
        pred = self.student(x1)
        with torch.no_grad():
            target = self.teacher(x2)
        rec = F.mse_loss(pred, x2)
        if self.nan_from_step is not None and int(self.steps) >= self.nan_from_step:
            rec = rec * float("nan")
        cons = F.mse_loss(pred, target) + (pred.mean() - self.queue.mean()) ** 2
        self._last_mean = pred.detach().mean()
        return {"loss": rec + cons, "rec": rec, "cons": cons, "pred": pred}

    @torch.no_grad()
    def after_step(self) -> None:
        for t, s in zip(self.teacher.parameters(), self.student.parameters()):
            t.mul_(0.9).add_(s, alpha=0.1)
        self.queue.copy_(torch.cat([self._last_mean.reshape(1), self.queue[:-1]]))
        self.steps += 1

    def encoder_state_dict(self) -> dict[str, Tensor]:
        return self.student.state_dict()


def make_method(**kwargs: object) -> TinyMethod:
    """The same initial weights every time, without touching the global RNG state."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return TinyMethod(**kwargs)


class ArrayPairs(Dataset):
    """In-memory pairs (x1, x2), each (1, X, Y, Z)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.data = torch.from_numpy(rng.random((n, 2, 1, *SHAPE), dtype=np.float32))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.data[index, 0], self.data[index, 1]


def config(**overrides: object) -> TrainConfig:
    settings = {"epochs": 3, "batch_size": 4, "lr": 0.05, "progress": False,
                "checkpoint_every": 2}
    settings.update(overrides)
    return TrainConfig(**settings)


def run(out_dir: Path, method: nn.Module | None = None, dataset: Dataset | None = None,
        hook: Callable | None = None, **overrides: object):
    """train() on the CPU with the test defaults (12 pairs: 3 steps per epoch)."""
    return train(method or make_method(), dataset or ArrayPairs(12), config(**overrides),
                 out_dir, device="cpu", on_epoch_end=hook)


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def without_speed(metrics: dict[str, float]) -> dict[str, float]:
    """Metrics that must be reproducible (throughput is not)."""
    return {k: v for k, v in metrics.items() if k != "train/samples_per_s"}


def tsv(out_dir: Path, name: str) -> list[tuple[int, float]]:
    """Rows (step, value) that dvclive wrote for a metric."""
    with open(out_dir / "live" / "plots" / "metrics" / f"{name}.tsv") as fh:
        return [(int(row["step"]), float(row[name.split("/")[-1]]))
                for row in csv.DictReader(fh, delimiter="\t")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """An uninterrupted 3-epoch run and its final checkpoint."""
    out = tmp_path_factory.mktemp("reference")
    result = run(out)
    assert result.epochs_run == [1, 2, 3]
    return out, load_checkpoint(result.checkpoint)


def test_resume_after_stop_gives_identical_weights(tmp_path: Path, reference) -> None:
    ref_dir, ref = reference
    first = run(tmp_path, stop_after_epoch=1)
    assert first.epochs_run == [1]
    assert load_checkpoint(first.checkpoint)["epoch"] == 1
    second = run(tmp_path)
    assert second.epochs_run == [2, 3]  # no epoch repeated
    final = load_checkpoint(second.checkpoint)
    assert_same_state(final["method"], ref["method"])  # weights AND buffers
    assert int(final["method"]["steps"]) == 9
    mom = final["optimizer"]["state"][0]["momentum_buffer"]
    assert torch.equal(mom, ref["optimizer"]["state"][0]["momentum_buffer"])
    assert without_speed(second.final_metrics) == without_speed(ref["metrics"])
    assert [step for step, _ in tsv(tmp_path, "train/loss")] == [1, 2, 3]
    assert tsv(tmp_path, "train/loss") == tsv(ref_dir, "train/loss")
    # Running again finds the run complete and trains nothing.
    again = run(tmp_path)
    assert again.epochs_run == []
    assert_same_state(load_checkpoint(again.checkpoint)["method"], ref["method"])


def test_periodic_checkpoints_and_weights_only_loading(reference) -> None:
    ref_dir, ref = reference
    ckpt_dir = ref_dir / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["epoch_002.pt", "last.pt"]
    loaded = torch.load(ckpt_dir / "last.pt", map_location="cpu", weights_only=True)
    assert {"method", "optimizer", "scheduler", "scaler", "epoch", "generator_state",
            "sampler", "config"} <= loaded.keys()
    assert loaded["epoch"] == 3 and loaded["step"] == 0
    assert loaded["config"]["epochs"] == 3
    assert all(s.dtype == torch.uint8 for s in loaded["generator_state"])
    assert load_checkpoint(ckpt_dir / "epoch_002.pt")["epoch"] == 2


def test_sigterm_from_hook_checkpoints_and_resumes(tmp_path: Path, reference) -> None:
    _, ref = reference
    before = signal.getsignal(signal.SIGTERM)

    def hook(epoch: int, method: nn.Module, live: object) -> None:
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Preempted) as info:
        run(tmp_path, hook=hook)
    assert info.value.exit_code == 143 and info.value.epoch == 1 and info.value.step == 0
    assert signal.getsignal(signal.SIGTERM) == before  # handler restored
    saved = load_checkpoint(last_checkpoint(tmp_path))
    assert (saved["epoch"], saved["step"]) == (1, 0)
    resumed = run(tmp_path)
    assert resumed.epochs_run == [2, 3]
    assert_same_state(load_checkpoint(resumed.checkpoint)["method"], ref["method"])


def test_sigterm_mid_epoch_resumes_exactly(tmp_path: Path, reference) -> None:
    ref_dir, ref = reference
    with pytest.raises(Preempted) as info:
        run(tmp_path, method=make_method(signal_at_step=4))  # during epoch 2, step 2
    assert (info.value.epoch, info.value.step) == (2, 2)
    saved = load_checkpoint(last_checkpoint(tmp_path))
    assert (saved["epoch"], saved["step"]) == (1, 2)
    assert int(saved["method"]["steps"]) == 5  # the signalled step was completed
    resumed = run(tmp_path)
    assert resumed.epochs_run == [2, 3]
    assert_same_state(load_checkpoint(resumed.checkpoint)["method"], ref["method"])
    # The epoch-2 mean includes the steps run before the preemption.
    for (step, value), (ref_step, ref_value) in zip(tsv(tmp_path, "train/loss"),
                                                    tsv(ref_dir, "train/loss")):
        assert step == ref_step and value == pytest.approx(ref_value, rel=1e-12)


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    snapshot: dict[str, bytes] = {}

    def hook(epoch: int, method: nn.Module, live: object) -> None:
        snapshot["bytes"] = last_checkpoint(tmp_path).read_bytes()

    with pytest.raises(NonFiniteLossError) as info:
        run(tmp_path, method=make_method(nan_from_step=3), hook=hook)  # epoch 2, step 1
    error = info.value
    assert (error.epoch, error.step) == (2, 1)
    assert set(error.terms) == {"loss", "rec"} and math.isnan(error.terms["rec"])
    assert "epoch 2, step 1" in str(error) and "rec=nan" in str(error)
    assert "cons" not in str(error)
    assert last_checkpoint(tmp_path).read_bytes() == snapshot["bytes"]
    saved = load_checkpoint(last_checkpoint(tmp_path))
    assert (saved["epoch"], saved["step"]) == (1, 0)
    assert all(torch.isfinite(v).all() for v in saved["method"].values() if v.is_floating_point())


def test_lr_follows_cosine_per_epoch_and_dvclive_logs(tmp_path: Path) -> None:
    epochs, lr = 5, 0.2
    result = run(tmp_path, epochs=epochs, lr=lr, checkpoint_every=60)
    expected = [lr * (1 + math.cos(math.pi * (e - 1) / epochs)) / 2 for e in range(1, epochs + 1)]
    logged = tsv(tmp_path, "train/lr")
    assert [step for step, _ in logged] == list(range(1, epochs + 1))
    assert [v for _, v in logged] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert logged[0][1] == lr and logged[-1][1] < lr / 5  # really decays
    metrics = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert set(metrics["train"]) == {"loss", "rec", "cons", "lr", "samples_per_s"}
    assert metrics["step"] == epochs and metrics["train"]["samples_per_s"] > 0
    assert metrics["train"]["loss"] == pytest.approx(result.final_metrics["train/loss"])
    assert not (tmp_path / "checkpoints" / "epoch_005.pt").exists()


def test_resume_refuses_changed_settings(tmp_path: Path) -> None:
    run(tmp_path, stop_after_epoch=1)
    with pytest.raises(ConfigError, match=r"lr: 0\.05 -> 0\.1"):
        run(tmp_path, lr=0.1)
    with pytest.raises(ConfigError, match="training pairs: 12 -> 16"):
        run(tmp_path, dataset=ArrayPairs(16))


def test_corrupt_checkpoint_is_a_data_error(tmp_path: Path) -> None:
    run(tmp_path, epochs=1)
    path = last_checkpoint(tmp_path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="last.pt"):
        run(tmp_path)
    # A pickle that would run code is refused, not executed.
    torch.save({"method": Path("x")}, path)
    with pytest.raises(DataError, match="last.pt"):
        load_checkpoint(path)


def test_pairs_dataset_with_worker_processes(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    files = []
    for i, n in enumerate((5, 3)):
        path = tmp_path / f"case{i}.npy"
        np.save(path, rng.random((n, 2, *SHAPE)).astype(np.float16))
        files.append(path)
    result = run(tmp_path / "out", dataset=PairsDataset(files), epochs=2, num_workers=1,
                 batch_size=4, progress=True)
    assert result.epochs_run == [1, 2]
    assert math.isfinite(result.final_metrics["train/loss"])


def test_amp_resolution() -> None:
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) == "off"
    assert resolve_amp("off", cpu) == "off"
    assert resolve_amp("bf16", cpu) == "bf16"
    with pytest.raises(ConfigError, match="fp16.*CUDA"):
        resolve_amp("fp16", cpu)
    with pytest.raises(ConfigError, match="amp"):
        resolve_amp("fp8", cpu)  # type: ignore[arg-type]


def test_bf16_autocast_on_cpu_trains_like_fp32_within_bf16_precision(tmp_path: Path) -> None:
    """bf16 autocast runs the same steps as fp32 up to bf16 rounding (8 bits of mantissa,
    a relative error of 2**-8 per operation): the epoch loss agrees within 5 %, but not
    bit for bit (autocast was really active)."""
    bf16 = run(tmp_path / "bf16", epochs=2, amp="bf16")
    fp32 = run(tmp_path / "fp32", epochs=2, amp="off")
    assert load_checkpoint(bf16.checkpoint)["amp"] == "bf16"
    assert load_checkpoint(fp32.checkpoint)["amp"] == "off"
    loss_bf16, loss_fp32 = bf16.final_metrics["train/loss"], fp32.final_metrics["train/loss"]
    assert abs(loss_bf16 - loss_fp32) <= 0.05 * abs(loss_fp32)
    assert loss_bf16 != loss_fp32


@pytest.mark.parametrize(("overrides", "key"), [
    ({"epochs": 0}, "epochs"), ({"lr": -1.0}, "lr"), ({"amp": "fp32"}, "amp"),
    ({"momentum": 1.0}, "momentum"), ({"max_grad_norm": 0.0}, "max_grad_norm"),
    ({"batch_size": True}, "batch_size"), ({"min_steps_per_epoch": 0}, "min_steps_per_epoch"),
    ({"min_steps_per_epoch": 2.0}, "min_steps_per_epoch"),
])
def test_config_validation_names_the_field(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"TrainConfig.{key}"):
        config(**overrides)


def test_batch_larger_than_dataset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="batch_size 16"):
        run(tmp_path, batch_size=16)


def test_gradient_clipping_bounds_the_first_update(tmp_path: Path) -> None:
    method = make_method(noise=False)
    start = [p.detach().clone() for p in method.student.parameters()]
    run(tmp_path, method=method, epochs=1, batch_size=12, lr=1.0, momentum=0.0,
        weight_decay=0.0, max_grad_norm=1e-3)
    moved = torch.cat([(p.detach() - s).flatten() for p, s in
                       zip(method.student.parameters(), start)])
    assert 0 < moved.norm() <= 1e-3 * 1.0001


# ------------------------------------------------------------ min_steps_per_epoch


class LoggedPairs(ArrayPairs):
    """ArrayPairs recording the index of every item loaded (no worker processes)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        super().__init__(n, seed)
        self.loaded: list[int] = []

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        self.loaded.append(int(index))
        return super().__getitem__(index)


def _epoch_indices(n: int, *, world: int = 1, rank: int = 0, seed: int = 0, epoch: int = 1,
                   start: int = 0, batch_size: int = 8, min_steps: int | None = 5) -> list[int]:
    sampler = _EpochSampler(ArrayPairs(n), world, rank, seed, batch_size=batch_size,
                            min_steps=min_steps)
    sampler.set_position(epoch, start)
    indices = list(sampler)
    assert len(indices) == len(sampler)
    return indices


def test_min_steps_fills_the_epoch_with_seeded_redraws() -> None:
    """12 items, batch 8, at least 5 steps: 40 indices, the first 12 a permutation (the
    DistributedSampler's), so every item 3 or 4 times (40 = 3 x 12 + 4)."""
    indices = _epoch_indices(12)
    assert len(indices) == 40
    assert sorted(indices[:12]) == list(range(12))
    assert indices[:12] == _epoch_indices(12, min_steps=None) != list(range(12))
    counts = np.bincount(indices, minlength=12)
    assert sorted(counts.tolist()) == [3] * 8 + [4] * 4
    assert _epoch_indices(12) == indices  # deterministic for (seed, epoch)
    assert _epoch_indices(12, epoch=2) != indices
    assert _epoch_indices(12, seed=1, epoch=2) != _epoch_indices(12, seed=0, epoch=2)
    assert _epoch_indices(12, start=16) == indices[16:]  # resuming after 2 steps
    # No item dropped and no extra step when the pass already has more steps: 12 at batch
    # 8 is 2 steps (8 + 4 filled with re-drawn items), not 1 with 4 items dropped.
    short = _epoch_indices(12, min_steps=1)
    assert len(short) == 16 and set(short) == set(range(12))
    # Fewer items than a batch: one full batch, every item in it.
    tiny = _epoch_indices(3, min_steps=1)
    assert len(tiny) == 8 and set(tiny) == {0, 1, 2}


def test_min_steps_shards_the_same_global_batches_over_two_ranks() -> None:
    """Global batch 8 over 2 ranks: each rank 5 local batches of 4, rank r taking every
    other index of the one-process order from the r-th, so the global batches (and the
    step count) do not depend on the number of processes."""
    single = _epoch_indices(12)
    ranks = [_epoch_indices(12, world=2, rank=r) for r in (0, 1)]
    assert [len(r) for r in ranks] == [20, 20]  # 5 steps of 4 on each rank
    assert ranks[0] == single[0::2] and ranks[1] == single[1::2]
    assert set(ranks[0]) | set(ranks[1]) == set(range(12))
    assert _epoch_indices(12, world=2, rank=1, start=8) == ranks[1][8:]


def test_min_steps_none_keeps_the_single_pass_with_the_last_batch_dropped() -> None:
    plain = _EpochSampler(ArrayPairs(12), 1, 0, 0)
    plain.set_position(1, 0)
    assert plain.per_rank() == 12 and _epoch_indices(12, min_steps=None) == list(plain)


def test_min_steps_trains_that_many_steps_on_every_item(tmp_path: Path) -> None:
    data = LoggedPairs(12)
    method = make_method()
    run(tmp_path / "filled", method=method, dataset=data, epochs=2, batch_size=8,
        min_steps_per_epoch=5)
    assert int(method.steps) == 10  # 5 SGD steps an epoch
    assert len(data.loaded) == 80
    assert data.loaded[:40] == _epoch_indices(12, epoch=1)
    assert data.loaded[40:] == _epoch_indices(12, epoch=2)
    assert set(data.loaded[:40]) == set(data.loaded[40:]) == set(range(12))
    # Without the setting: one step an epoch, the last 4 items of each epoch dropped.
    old = make_method()
    run(tmp_path / "plain", method=old, epochs=2, batch_size=8)
    assert int(old.steps) == 2
    # Fewer items than a batch: refused without it, one filled batch with it.
    with pytest.raises(ConfigError, match="batch_size 16"):
        run(tmp_path / "big", batch_size=16)
    big = make_method()
    run(tmp_path / "big", method=big, epochs=1, batch_size=16, min_steps_per_epoch=1)
    assert int(big.steps) == 1


def test_min_steps_resume_mid_epoch_is_exact(tmp_path: Path) -> None:
    reference = run(tmp_path / "ref", epochs=2, batch_size=8, min_steps_per_epoch=5)
    ref = load_checkpoint(reference.checkpoint)
    assert int(ref["method"]["steps"]) == 10
    with pytest.raises(Preempted) as info:  # the 8th step: epoch 2, step 3 of 5
        run(tmp_path / "cut", method=make_method(signal_at_step=7), epochs=2, batch_size=8,
            min_steps_per_epoch=5)
    assert (info.value.epoch, info.value.step) == (2, 3)
    saved = load_checkpoint(last_checkpoint(tmp_path / "cut"))
    assert (saved["epoch"], saved["step"]) == (1, 3) and int(saved["method"]["steps"]) == 8
    with pytest.raises(ConfigError, match="min_steps_per_epoch: 5 -> 6"):
        run(tmp_path / "cut", epochs=2, batch_size=8, min_steps_per_epoch=6)
    resumed = run(tmp_path / "cut", epochs=2, batch_size=8, min_steps_per_epoch=5)
    assert resumed.epochs_run == [2]
    final = load_checkpoint(resumed.checkpoint)
    assert_same_state(final["method"], ref["method"])
    assert torch.equal(final["optimizer"]["state"][0]["momentum_buffer"],
                       ref["optimizer"]["state"][0]["momentum_buffer"])
    assert without_speed(resumed.final_metrics) == pytest.approx(
        without_speed(reference.final_metrics), rel=1e-12)


# ------------------------------------------------------------------------------ DDP


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    """One of two processes (torchrun-style environment) running three scenarios.

    ``one_step``: one SGD step, deterministic method, half of a global batch of 4.
    ``filled``: 12 pairs, global batch 8, ``min_steps_per_epoch`` 5: 5 steps on each rank.
    ``full``: 3 epochs with generator noise, uninterrupted.
    ``cut``: the same, but only rank 1 receives SIGTERM (during epoch 2, step 2); both
    ranks must stop after the same step, then a rerun resumes.
    """
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    info = init_distributed("cpu", timeout=datetime.timedelta(seconds=60))  # no hang
    out = Path(out_dir)
    record: dict[str, object] = {}
    try:
        one = train(make_method(noise=False), ArrayPairs(4), config(epochs=1, lr=0.1),
                    out / "one_step", device=info.device, dist=info)
        record["one_step_loss"] = one.final_metrics["train/loss"]
        filled, logged = make_method(), LoggedPairs(12)
        train(filled, logged, config(epochs=1, batch_size=8, min_steps_per_epoch=5),
              out / "filled", device=info.device, dist=info)
        record["filled_steps"], record["filled_loaded"] = int(filled.steps), logged.loaded
        train(make_method(), ArrayPairs(12), config(), out / "full", device=info.device,
              dist=info)
        try:
            train(make_method(signal_at_step=4 if rank == 1 else None), ArrayPairs(12),
                  config(), out / "cut", device=info.device, dist=info)
        except Preempted as stop:
            record["preempted"] = [stop.epoch, stop.step, stop.signum]
        resumed = train(make_method(), ArrayPairs(12), config(), out / "cut",
                        device=info.device, dist=info)
        record["resumed_epochs"] = resumed.epochs_run
    finally:
        cleanup()
    torch.save(record, out / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """The scenarios of :func:`_ddp_worker`, run once by two spawned processes (gloo)."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_ddp_worker, args=(_free_port(), str(out)), nprocs=2, join=True)
    return out, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def test_ddp_two_processes_match_one_process_on_the_full_batch(tmp_path: Path,
                                                                ddp_runs) -> None:
    ddp_dir, records = ddp_runs
    single = train(make_method(noise=False), ArrayPairs(4), config(epochs=1, lr=0.1),
                   tmp_path, device="cpu")
    ref = load_checkpoint(single.checkpoint)["method"]
    got = load_checkpoint(last_checkpoint(ddp_dir / "one_step"))
    initial = make_method(noise=False).state_dict()
    for name, _ in make_method().named_parameters():
        assert not torch.equal(ref[name], initial[name]), name  # one step did move it
        torch.testing.assert_close(got["method"][name], ref[name], rtol=0, atol=1e-6)
    assert got["sampler"]["world_size"] == 2 and len(got["generator_state"]) == 2
    expected = single.final_metrics["train/loss"]
    assert [r["one_step_loss"] for r in records] == pytest.approx([expected] * 2, rel=1e-6)
    live = json.loads((ddp_dir / "one_step" / "live" / "metrics.json").read_text())
    assert live["train"]["loss"] == pytest.approx(expected, rel=1e-6)


def test_ddp_min_steps_gives_every_rank_the_same_steps_and_shards_the_epoch(ddp_runs) -> None:
    _, records = ddp_runs
    assert [r["filled_steps"] for r in records] == [5, 5]
    for rank, record in enumerate(records):
        assert record["filled_loaded"] == _epoch_indices(12, world=2, rank=rank)
    assert set(records[0]["filled_loaded"]) | set(records[1]["filled_loaded"]) == set(range(12))


def test_ddp_preemption_of_one_rank_stops_all_and_resumes_exactly(ddp_runs) -> None:
    ddp_dir, records = ddp_runs
    assert [r["preempted"] for r in records] == [[2, 2, signal.SIGTERM]] * 2
    assert [r["resumed_epochs"] for r in records] == [[2, 3]] * 2
    full = load_checkpoint(last_checkpoint(ddp_dir / "full"))
    cut = load_checkpoint(last_checkpoint(ddp_dir / "cut"))
    assert_same_state(cut["method"], full["method"])
    assert not torch.equal(full["generator_state"][0], full["generator_state"][1])
    for saved, ref in zip(cut["generator_state"], full["generator_state"]):
        assert torch.equal(saved, ref)
    assert without_speed(cut["metrics"]) == without_speed(full["metrics"])


def test_dist_info_without_process_group_is_refused(tmp_path: Path) -> None:
    info = DistInfo(rank=0, world_size=2, device=torch.device("cpu"))
    with pytest.raises(ConfigError, match="process group"):
        train(make_method(), ArrayPairs(8), config(), tmp_path, device="cpu", dist=info)


def test_deterministic_training_sets_the_flags_for_the_run_only(tmp_path: Path) -> None:
    seen = []

    def hook(epoch: int, method: nn.Module, live: object) -> bool:
        seen.append((torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
                     torch.backends.cudnn.benchmark))
        return False

    before = torch.are_deterministic_algorithms_enabled()
    first = run(tmp_path / "a", epochs=2, deterministic=True, hook=hook)
    assert seen == [(True, True, False)] * 2
    assert torch.are_deterministic_algorithms_enabled() == before
    second = run(tmp_path / "b", epochs=2, deterministic=True)
    assert_same_state(load_checkpoint(first.checkpoint)["method"], load_checkpoint(second.checkpoint)["method"])
