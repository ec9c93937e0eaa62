"""Tests of the baselines (Models Genesis, MoCo v2) and of the method registry."""

from __future__ import annotations

import copy

import pytest
import torch

from pcrl import transforms
from pcrl.errors import ConfigError
from pcrl.methods import (
    METHODS,
    PCRL,
    Genesis,
    GenesisConfig,
    MoCoConfig,
    MoCoV2,
    PCRLConfig,
    build_method,
)

N, SHAPE = 4, (16, 16, 8)


def _moco_query_and_key(ref: MoCoV2, x1: torch.Tensor, x2: torch.Tensor,
                        seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """By hand: the query of view 1 and the momentum key of view 2, both augmented and corrupted
    with the draws of ``generator(seed)`` in the method's order."""
    g = torch.Generator().manual_seed(seed)
    cfg = transforms.CorruptionConfig()
    input1 = transforms.corrupt(transforms.augment(x1, g), cfg, g)
    input2 = transforms.corrupt(transforms.augment(x2, g), cfg, g)
    with torch.no_grad():
        k = ref.momentum_encoder.project(ref.momentum_encoder.encode(input2)[-1])
    return ref.student.project(ref.student.encode(input1)[-1]), k


def _pairs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(N, 1, *SHAPE, generator=g), torch.rand(N, 1, *SHAPE, generator=g)


# ------------------------------------------------------------------------------ Genesis


def test_genesis_restores_the_clean_views_of_both_crops() -> None:
    method = Genesis(GenesisConfig(base=4))
    ref = copy.deepcopy(method)
    x1, x2 = _pairs()
    out = method(x1, x2, torch.Generator().manual_seed(3))
    assert set(out) == {"loss", "reconstruction"}
    g = torch.Generator().manual_seed(3)
    clean = transforms.augment(torch.cat([x1, x2]), g)
    corrupted = transforms.corrupt(clean, transforms.CorruptionConfig(), g)
    expected = ((ref.net(corrupted) - clean) ** 2).mean()
    torch.testing.assert_close(out["loss"], expected, rtol=1e-5, atol=1e-7)
    out["loss"].backward()
    assert all(p.grad is not None for p in method.net.parameters())
    # restoration only: every trainable weight is the network's (no momentum encoder, no
    # projection head, no queue), and the network is what fine-tuning receives
    assert sum(p.numel() for p in method.parameters()) == sum(p.numel() for p in method.net.parameters())
    assert not any(name.startswith(("momentum", "queue", "head")) for name, _ in method.named_buffers())
    assert set(method.encoder_state_dict()) == set(method.net.state_dict())
    assert "up_tr64.up_conv.weight" in method.encoder_state_dict()


# --------------------------------------------------------------------------------- MoCo


def test_moco_is_infonce_of_query_and_momentum_key_against_the_queue() -> None:
    method = MoCoV2(MoCoConfig(base=4, queue_size=16, proj_dim=8))
    ref = copy.deepcopy(method)
    queue0 = method.queue.keys.clone()
    x1, x2 = _pairs()
    out = method(x1, x2, torch.Generator().manual_seed(5))
    assert set(out) == {"loss", "contrastive", "con_acc", "queue_fill", "ema_momentum"}

    q, k = _moco_query_and_key(ref, x1, x2, 5)
    rows = []
    for i in range(N):
        logits = torch.cat([(q[i] * k[i]).sum().view(1), queue0 @ q[i]]) / 0.2
        rows.append(torch.logsumexp(logits, 0) - logits[0])
    torch.testing.assert_close(out["loss"], torch.stack(rows).mean(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(method.queue.keys[:N], k, rtol=1e-5, atol=1e-7)
    assert method.queue.ptr.item() == N


@pytest.mark.parametrize("shuffle", [False, True])
def test_moco_shuffle_positives_rolls_the_keys_by_one(shuffle: bool) -> None:
    """The negative control: query i's positive is key i - 1 (row 0 takes the last key)."""
    method = MoCoV2(MoCoConfig(base=4, queue_size=16, proj_dim=8, shuffle_positives=shuffle))
    ref = copy.deepcopy(method)
    queue0 = method.queue.keys.clone()
    x1, x2 = _pairs()
    out = method(x1, x2, torch.Generator().manual_seed(5))

    q, k = _moco_query_and_key(ref, x1, x2, 5)
    positives = [k[(i - 1) % N] if shuffle else k[i] for i in range(N)]
    rows = []
    for i in range(N):
        logits = torch.cat([(q[i] * positives[i]).sum().view(1), queue0 @ q[i]]) / 0.2
        rows.append(torch.logsumexp(logits, 0) - logits[0])
    torch.testing.assert_close(out["loss"], torch.stack(rows).mean(), rtol=1e-5, atol=1e-7)
    # the two references differ, so the test tells the control from the plain loss
    plain = torch.stack([torch.logsumexp(torch.cat([(q[i] * k[i]).sum().view(1), queue0 @ q[i]]) / 0.2, 0)
                         - (q[i] * k[i]).sum() / 0.2 for i in range(N)]).mean()
    assert shuffle != bool(torch.allclose(out["loss"], plain, rtol=1e-5, atol=1e-7))
    assert out["ema_momentum"].item() == pytest.approx(0.999)


def test_moco_cosine_schedule_ramps_the_ema() -> None:
    """m0 = 0.5 over 2 steps: m_0 = 0.5, m_1 = 1 - 0.5 (cos(pi/2) + 1) / 2 = 0.75, then 1."""
    method = MoCoV2(MoCoConfig(base=4, queue_size=16, proj_dim=8, momentum=0.5, momentum_schedule="cosine",
                               momentum_steps=2))
    with torch.no_grad():
        method.student.fc1.weight.add_(1.0)
    t0 = method.momentum_encoder.fc1.weight.detach().clone()
    s = method.student.fc1.weight.detach().clone()
    expected = t0
    for m in (0.5, 0.75, 1.0):
        assert method(*_pairs(), torch.Generator().manual_seed(0))["ema_momentum"].item() == pytest.approx(m)
        method.after_step()
        expected = m * expected + (1 - m) * s
        torch.testing.assert_close(method.momentum_encoder.fc1.weight, expected)
    # 0.5 * 0.75 = 0.375 of the initial gap is left
    torch.testing.assert_close(method.momentum_encoder.fc1.weight, s + 0.375 * (t0 - s))


def test_moco_trains_encoder_and_head_only_and_updates_by_ema() -> None:
    method = MoCoV2(MoCoConfig(base=4, queue_size=16, proj_dim=8, momentum=0.9))
    method(*_pairs(), torch.Generator().manual_seed(0))["loss"].backward()
    for name, p in method.student.named_parameters():
        if name.startswith(("down_tr", "fc1", "fc2")):
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:  # decoder and TCA: unused, frozen
            assert not p.requires_grad and p.grad is None, name
    assert all(not p.requires_grad for p in method.momentum_encoder.parameters())
    before = {n: p.detach().clone() for n, p in method.momentum_encoder.named_parameters()}
    torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=1.0).step()
    method.after_step()
    student = dict(method.student.named_parameters())
    name = "fc1.weight"
    torch.testing.assert_close(
        dict(method.momentum_encoder.named_parameters())[name],
        0.9 * before[name] + 0.1 * student[name].detach(),
    )
    assert "aug_fc1.weight" in method.encoder_state_dict()


def test_moco_without_corruption_uses_augmented_views() -> None:
    a = MoCoV2(MoCoConfig(base=4, queue_size=16, proj_dim=8, corrupt=False))
    b = MoCoV2(MoCoConfig(base=4, queue_size=16, proj_dim=8, corrupt=True))
    b.load_state_dict(a.state_dict())
    x1, x2 = _pairs()
    la = a(x1, x2, torch.Generator().manual_seed(1))["loss"]
    lb = b(x1, x2, torch.Generator().manual_seed(1))["loss"]
    assert not torch.equal(la, lb)


@pytest.mark.parametrize("name", ["genesis", "moco"])
def test_baselines_are_deterministic_given_the_seed(name: str) -> None:
    config = GenesisConfig(base=4) if name == "genesis" else MoCoConfig(base=4, queue_size=16, proj_dim=8)
    a = build_method(name, config)
    b = copy.deepcopy(a)
    x1, x2 = _pairs()
    la = a(x1, x2, torch.Generator().manual_seed(7))["loss"]
    lb = b(x1, x2, torch.Generator().manual_seed(7))["loss"]
    assert torch.isfinite(la) and torch.equal(la, lb)


# ----------------------------------------------------------------------------- registry


def test_registry_builds_each_method_from_dataclass_or_mapping() -> None:
    assert METHODS == {"pcrl": PCRL, "genesis": Genesis, "moco": MoCoV2}
    assert isinstance(build_method("pcrl", PCRLConfig(base=4, queue_size=16, n_data=8)), PCRL)
    method = build_method(
        "pcrl",
        {"base": 4, "queue_size": 16, "loss": "infonce", "corruption": {"paint_prob": 0.5}},
    )
    assert isinstance(method, PCRL)
    assert method.config.corruption == transforms.CorruptionConfig(paint_prob=0.5)
    assert isinstance(build_method("genesis", {"base": 4}), Genesis)
    assert isinstance(build_method("moco", {"base": 4, "queue_size": 16}), MoCoV2)


def test_registry_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match=r"unknown method 'simclr'.*genesis, moco, pcrl"):
        build_method("simclr", {})
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) widht"):
        build_method("genesis", {"widht": 4})
    with pytest.raises(ConfigError, match=r"pcrl.corruption: unknown setting\(s\) blur"):
        build_method("pcrl", {"loss": "infonce", "corruption": {"blur": 1}})
    with pytest.raises(ConfigError, match="paint_prob"):
        build_method("pcrl", {"loss": "infonce", "corruption": {"paint_prob": 2.0}})
    with pytest.raises(ConfigError, match="needs a MoCoConfig, got GenesisConfig"):
        build_method("moco", GenesisConfig(base=4))
    with pytest.raises(ConfigError, match="GenesisConfig.base"):
        GenesisConfig(base=0)
    with pytest.raises(ConfigError, match="MoCoConfig.temperature"):
        MoCoConfig(temperature=0.0)


# ------------------------------------------------------------------- data-parallel (gloo)

DDP_CASES = [
    ("pcrl", {"base": 4, "queue_size": 16, "n_data": 8}),
    ("pcrl", {"base": 4, "queue_size": 16, "n_data": 8, "tca": False, "hybrid": False}),
    ("moco", {"base": 4, "queue_size": 16}),
    ("genesis", {"base": 4}),
]


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        results = []
        for name, settings in DDP_CASES:
            torch.manual_seed(0)  # same initial weights on both ranks (DDP checks it too)
            method = build_method(name, settings)
            model = DistributedDataParallel(method)
            opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
            g = torch.Generator().manual_seed(100 + rank)  # different draws per rank
            losses = []
            for step in range(2):
                x1, x2 = _pairs(seed=10 * step + rank)  # each rank its own shard
                out = model(x1[:2], x2[:2], g)
                opt.zero_grad()
                out["loss"].backward()
                opt.step()
                method.after_step()
                losses.append(out["loss"].detach())
            state = {k: v.clone() for k, v in method.state_dict().items()}
            results.append({"losses": torch.stack(losses), "state": state})
        torch.save(results, f"{out_dir}/ddp{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(180)
def test_methods_train_under_distributed_data_parallel(tmp_path) -> None:
    """Two gloo processes: cross-process shuffled BN, gathered enqueue, averaged NCE Z.

    Every rank ends with the same weights, momentum encoder, queue (keys of both ranks,
    ptr = 2 steps x 2 ranks x 2 keys) and Z, although each rank drew its own views.
    """
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"ddp{r}.pt") for r in range(2)]
    for (name, _), r0, r1 in zip(DDP_CASES, *ranks):
        assert torch.isfinite(r0["losses"]).all() and torch.isfinite(r1["losses"]).all(), name
        assert r0["state"].keys() == r1["state"].keys()
        for key, value in r0["state"].items():
            if "running_" in key or "num_batches_tracked" in key:
                continue  # batch-norm statistics are per rank (DDP re-broadcasts rank 0's)
            torch.testing.assert_close(value, r1["state"][key], msg=f"{name}: {key}")
        if name != "genesis":
            assert r0["state"]["queue.ptr"].item() == 8 % 16
