"""Tests of pcrl.methods.views and pcrl.methods.pcrl (docs/method.md "One training step").

Tiny configuration everywhere: base width 4, cubes 16x16x8, batch 4, queue 16.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from pcrl import transforms
from pcrl.errors import ConfigError
from pcrl.methods.pcrl import CONTRASTIVE_TERMS, PCRL, READABLE_TERMS, RECONSTRUCTION_TERMS, PCRLConfig
from pcrl.methods.views import (
    ViewConfig,
    draw_mixup,
    folded_uniform,
    identity_codes,
    make_views,
)

N, SHAPE = 4, (16, 16, 8)
TINY = dict(base=4, queue_size=16, proj_dim=8, n_data=32)


def _pairs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(N, 1, *SHAPE, generator=g), torch.rand(N, 1, *SHAPE, generator=g)


@pytest.fixture(scope="module")
def fresh() -> dict[str, PCRL]:
    """Methods built once per module; tests deep-copy them (weights, queue, Z untouched).

    Weight initialisation is torch's (global RNG): seeded here, in a forked RNG state, so
    that the tests see the same networks on every run.
    """
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return {
            "nce": PCRL(PCRLConfig(**TINY)),
            "infonce": PCRL(PCRLConfig(**TINY, loss="infonce")),
        }


# ------------------------------------------------------------------------------- views


@pytest.mark.parametrize("target", ["intent", "release"])
def test_views_follow_the_documented_draw_order_and_targets(target: str) -> None:
    x1, x2 = _pairs()
    cfg = ViewConfig(target=target)
    views = make_views(x1, x2, cfg, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    clean1 = transforms.augment(x1, g)
    input1 = transforms.corrupt(clean1, cfg.corruption, g)
    clean2 = transforms.augment(x2, g)
    input2 = transforms.corrupt(clean2, cfg.corruption, g)
    codes1 = transforms.spatial_codes(N, g)
    codes2 = transforms.spatial_codes(N, g)
    for got, want in [(views.clean1, clean1), (views.input1, input1), (views.clean2, clean2),
                      (views.input2, input2), (views.codes1, codes1), (views.codes2, codes2)]:
        assert torch.equal(got, want)
    assert not torch.equal(views.input1, views.clean1)  # corruption did something
    base1, base2 = (clean1, clean2) if target == "intent" else (input1, input2)
    assert torch.equal(views.base1, base1) and torch.equal(views.base2, base2)
    assert torch.equal(views.target1, transforms.apply_spatial(base1, codes1))
    assert torch.equal(views.target2, transforms.apply_spatial(base2, codes2))


def test_views_without_spatial_transform_use_identity_codes() -> None:
    x1, x2 = _pairs()
    views = make_views(x1, x2, ViewConfig(spatial=False), torch.Generator().manual_seed(1))
    codes = identity_codes(N, "cpu")
    assert codes[0].tolist() == [0, 0, 0, 1, 0, 0, 0]
    assert torch.equal(views.codes1, codes) and torch.equal(views.target1, views.clean1)


def test_views_reject_bad_shapes_and_config() -> None:
    g = torch.Generator()
    with pytest.raises(ValueError, match=r"\(4, 1, 16, 16, 8\) and \(4, 1, 8, 8, 8\)"):
        make_views(torch.rand(4, 1, 16, 16, 8), torch.rand(4, 1, 8, 8, 8), ViewConfig(), g)
    with pytest.raises(ValueError, match=r"x and y sizes must be equal.*\(2, 1, 16, 8, 8\)"):
        make_views(torch.rand(2, 1, 16, 8, 8), torch.rand(2, 1, 16, 8, 8), ViewConfig(), g)
    with pytest.raises(ConfigError, match="target"):
        ViewConfig(target="other")  # type: ignore[arg-type]


# ------------------------------------------------------------------------- mixing helpers


def test_folded_uniform_is_max_of_u_and_one_minus_u() -> None:
    g = torch.Generator().manual_seed(3)
    draws = torch.stack([folded_uniform(g, "cpu") for _ in range(400)])
    g = torch.Generator().manual_seed(3)
    u = torch.stack([torch.rand((), generator=g) for _ in range(400)])
    torch.testing.assert_close(draws, torch.maximum(u, 1 - u))
    assert draws.min() >= 0.5 and draws.max() <= 1.0
    # Folded Uniform(0, 1) is Uniform(0.5, 1): mean 0.75.
    assert abs(draws.mean().item() - 0.75) < 0.03


def test_mixup_algebra_with_recorded_lambda_and_permutation() -> None:
    mix = draw_mixup(N, torch.Generator().manual_seed(11), "cpu")
    lam, perm = mix.lam.item(), mix.perm.tolist()
    assert 0.5 <= lam <= 1.0
    assert sorted(perm) == list(range(N))
    a = torch.arange(N * 3, dtype=torch.float32).view(N, 3) ** 2
    expected = torch.stack([lam * a[i] + (1 - lam) * a[perm[i]] for i in range(N)])
    torch.testing.assert_close(mix(a), expected)
    # The same lambda and permutation for every tensor of the step.
    b = torch.randn(N, 2, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(mix(b)[1], lam * b[1] + (1 - lam) * b[perm[1]])
    with pytest.raises(ValueError, match=r"batch of 4.*\(3, 3\)"):
        mix(a[:3])


# ------------------------------------------------------------------------- the step


def _ranking_accuracy(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> float:
    """By hand: the share of queries whose positive key scores above every queue key."""
    dots_pos, dots_neg = (q * k).sum(dim=1), q @ queue.t()
    return sum(bool(dots_pos[i] > dots_neg[i].max()) for i in range(q.shape[0])) / q.shape[0]


def _infonce_ref(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, t: float) -> torch.Tensor:
    rows = []
    for i in range(q.shape[0]):
        logits = torch.cat([(q[i] * k[i]).sum().view(1), queue @ q[i]]) / t
        rows.append(torch.logsumexp(logits, 0) - logits[0])
    return torch.stack(rows).mean()


@pytest.mark.parametrize("target", ["intent", "release"])
def test_forward_reproduces_every_term_of_the_spec(fresh, target: str) -> None:
    """All seven terms recomputed by hand from the same draws (infonce, T = 0.2).

    In both target modes the mixup pass reconstructs the mixed *clean* views (the release
    reconstructs its raw crops there); only the TCA passes' targets follow ``target``.
    """
    method = copy.deepcopy(fresh["infonce"])
    method.config = dataclasses.replace(method.config, target=target)
    with torch.no_grad():  # sharpen the TCA gates so that using the wrong code shows
        method.student.aug_fc2.weight.mul_(40.0)
    ref = copy.deepcopy(method)
    queue0 = method.queue.keys.clone()
    x1, x2 = _pairs()
    out = method(x1, x2, torch.Generator().manual_seed(21))

    g = torch.Generator().manual_seed(21)
    v = make_views(x1, x2, ref.config.views, g)
    student, mom, t = ref.student, ref.momentum_encoder, 0.2
    with torch.no_grad():  # one device: batch norm is equivariant, the shuffle only draws
        torch.randperm(N, generator=g)
        fk = mom.encode(v.input2)
        k = mom.project(fk[-1])
    alpha1 = folded_uniform(g, "cpu")
    fq = student.encode(v.input1)
    q = student.project(fq[-1])
    g1, g2 = student.tca_gate(v.codes1), student.tca_gate(v.codes2)
    plain = student.decode([*fq[:3], fq[3] * g1])
    hybrid_feats = [alpha1 * a + (1 - alpha1) * b for a, b in zip(fq[:3], fk[:3])]
    hybrid_feats.append(alpha1 * fq[3] * g1 + (1 - alpha1) * fk[3] * g2)
    hybrid = student.decode(hybrid_feats)
    lam = folded_uniform(g, "cpu")
    perm = torch.randperm(N, generator=g)

    def mixed(a):
        return lam * a + (1 - lam) * a[perm]

    with torch.no_grad():
        torch.randperm(N, generator=g)
        fkm = mom.encode(mixed(v.input2))
        km = mom.project(fkm[-1])
    alpha2 = folded_uniform(g, "cpu")
    fqm = student.encode(mixed(v.input1))
    qm = student.project(fqm[-1])
    mix_plain = student.decode(fqm)
    mix_hybrid = student.decode([alpha2 * a + (1 - alpha2) * b for a, b in zip(fqm, fkm)])

    expected = {
        "con_plain": _infonce_ref(q, k, queue0, t),
        "con_mix": _infonce_ref(qm, km, queue0, t),
        "con_mix_k": _infonce_ref(qm, F.normalize(mixed(k), dim=1), queue0, t),
        "mse_plain": ((plain - v.target1) ** 2).mean(),
        "mse_hybrid": ((hybrid - (alpha1 * v.target1 + (1 - alpha1) * v.target2)) ** 2).mean(),
        "mse_mix_plain": ((mix_plain - mixed(v.clean1)) ** 2).mean(),
        "mse_mix_hybrid": (
            (mix_hybrid - (alpha2 * mixed(v.clean1) + (1 - alpha2) * mixed(v.clean2))) ** 2
        ).mean(),
    }
    if target == "release":  # the TCA targets are the corrupted views, transformed
        torch.testing.assert_close(v.target1, transforms.apply_spatial(v.input1, v.codes1))
    for name, value in expected.items():
        torch.testing.assert_close(out[name], value, rtol=2e-5, atol=1e-7, msg=name)
    # Readable gauges: the positive ranked first among the queue; the queue held no real key yet.
    assert out["con_acc"].item() == pytest.approx(_ranking_accuracy(q, k, queue0))
    assert out["queue_fill"].item() == 0.0 and method.queue.fill.item() == N / method.queue.size
    # Keys of this step enqueued once: rows 0..3 hold k, ptr moved by N (not 3N).
    torch.testing.assert_close(method.queue.keys[:N], k, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(method.queue.keys[N:], queue0[N:])
    assert method.queue.ptr.item() == N


def test_forward_returns_finite_scalars_and_total_is_mean_plus_mean(fresh) -> None:
    method = copy.deepcopy(fresh["nce"])
    out = method(*_pairs(), torch.Generator().manual_seed(0))
    names = {"loss", "contrastive", "reconstruction", *CONTRASTIVE_TERMS, *RECONSTRUCTION_TERMS,
             *READABLE_TERMS}
    assert set(out) == names
    for name, value in out.items():
        assert value.shape == () and torch.isfinite(value), name
    con = sum(out[n] for n in CONTRASTIVE_TERMS) / 3
    mse = sum(out[n] for n in RECONSTRUCTION_TERMS) / 4
    torch.testing.assert_close(out["contrastive"], con)
    torch.testing.assert_close(out["reconstruction"], mse)
    torch.testing.assert_close(out["loss"], con + mse)
    # NCE's Z was estimated on this first step and is part of the state.
    assert method.contrastive.Z.item() > 0
    assert {"queue.keys", "queue.ptr", "contrastive.Z"} <= set(method.state_dict())


def test_gradients_reach_the_student_only_and_ema_moves_the_momentum_encoder(fresh) -> None:
    method = copy.deepcopy(fresh["nce"])
    before = {n: p.detach().clone() for n, p in method.momentum_encoder.named_parameters()}
    method(*_pairs(), torch.Generator().manual_seed(1))["loss"].backward()
    grads = {n: p.grad for n, p in method.student.named_parameters()}
    for prefix in ("down_tr64", "down_tr512", "up_tr256", "up_tr64", "out_tr", "fc1", "fc2",
                   "aug_fc1", "aug_fc2"):
        group = [g for n, g in grads.items() if n.startswith(prefix)]
        assert group and all(g is not None and g.abs().sum() > 0 for g in group), prefix
    for p in method.momentum_encoder.parameters():
        assert not p.requires_grad and p.grad is None
    torch.optim.SGD(method.student.parameters(), lr=0.5).step()
    for n, p in method.momentum_encoder.named_parameters():
        assert torch.equal(p, before[n]), n  # the optimiser does not touch it
    method.after_step()
    m = method.config.momentum
    student = dict(method.student.named_parameters())
    for n, p in method.momentum_encoder.named_parameters():
        torch.testing.assert_close(p, m * before[n] + (1 - m) * student[n].detach())
    bn = "down_tr64.ops.0.bn1.running_mean"
    assert torch.equal(method.momentum_encoder.state_dict()[bn], method.student.state_dict()[bn])


@pytest.mark.parametrize(
    ("switches", "expected"),
    [
        (dict(hybrid=False), {"con_plain", "con_mix", "con_mix_k", "mse_plain", "mse_mix_plain"}),
        (dict(mixup=False), {"con_plain", "mse_plain", "mse_hybrid"}),
        (dict(hybrid=False, mixup=False), {"con_plain", "mse_plain"}),
        (dict(tca=False), {*CONTRASTIVE_TERMS, *RECONSTRUCTION_TERMS}),
    ],
)
def test_ablations_drop_the_right_terms(switches: dict, expected: set[str]) -> None:
    method = PCRL(PCRLConfig(**TINY, **switches))
    out = method(*_pairs(), torch.Generator().manual_seed(2))
    assert set(out) - {"loss", "contrastive", "reconstruction", *READABLE_TERMS} == expected
    con = [out[n] for n in CONTRASTIVE_TERMS if n in out]
    mse = [out[n] for n in RECONSTRUCTION_TERMS if n in out]
    torch.testing.assert_close(out["loss"], sum(con) / len(con) + sum(mse) / len(mse))
    out["loss"].backward()
    tca_grad = method.student.aug_fc1.weight.grad
    if switches.get("tca", True):
        assert tca_grad is not None and tca_grad.abs().sum() > 0
    else:
        assert tca_grad is None  # no gate: TCA is out of the graph, and frozen (for DDP)
        assert not method.student.aug_fc1.weight.requires_grad
    assert method.queue.ptr.item() == N


def test_eval_mode_leaves_the_queue_alone(fresh) -> None:
    method = copy.deepcopy(fresh["infonce"]).eval()
    queue0 = copy.deepcopy(method.queue.state_dict())
    with torch.no_grad():
        out = method(*_pairs(), torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"])
    assert torch.equal(method.queue.keys, queue0["keys"]) and method.queue.ptr.item() == 0


def test_same_seed_same_losses_other_seed_other_losses(fresh) -> None:
    a, b, c = (copy.deepcopy(fresh["nce"]) for _ in range(3))
    x1, x2 = _pairs()
    out_a = a(x1, x2, torch.Generator().manual_seed(9))
    out_b = b(x1, x2, torch.Generator().manual_seed(9))
    out_c = c(x1, x2, torch.Generator().manual_seed(10))
    for name in out_a:
        assert torch.equal(out_a[name], out_b[name]), name
    assert not torch.equal(out_a["loss"], out_c["loss"])
    assert torch.equal(a.queue.keys, b.queue.keys)


def test_short_training_on_a_fixed_batch_decreases_the_loss(fresh) -> None:
    """SGD on one batch with the same draws and negatives each step: the objective falls.

    The queue is reset after each step; otherwise it fills with this batch's own keys and
    the contrastive task changes under the optimiser.
    """
    method = copy.deepcopy(fresh["nce"])
    queue0 = copy.deepcopy(method.queue.state_dict())
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.02, momentum=0.9)
    x1, x2 = _pairs(3)
    losses = []
    for _ in range(8):
        out = method(x1, x2, torch.Generator().manual_seed(4))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        method.after_step()
        method.queue.load_state_dict(queue0)
        losses.append(out["loss"].item())
    last = losses[-3:]
    assert max(last) < losses[0] - 0.03, losses


def test_encoder_state_dict_uses_release_names(fresh) -> None:
    state = fresh["nce"].encoder_state_dict()
    assert set(state) == set(fresh["nce"].student.state_dict())
    for key in ("down_tr64.ops.0.conv1.weight", "down_tr512.ops.1.bn1.running_var",
                "up_tr64.up_conv.weight", "out_tr.final_conv.weight", "fc1.weight", "fc2.bias",
                "aug_fc1.weight", "aug_fc2.bias"):
        assert key in state, key
    assert not any(k.startswith(("queue", "momentum", "contrastive")) for k in state)


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ConfigError, match="n_data"):
        PCRLConfig(base=4)  # NCE needs the number of training samples
    PCRLConfig(base=4, loss="infonce")  # ... InfoNCE does not
    with pytest.raises(ConfigError, match="PCRLConfig.loss"):
        PCRLConfig(loss="ntxent", n_data=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="PCRLConfig.target"):
        PCRLConfig(target="clean", n_data=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="PCRLConfig.momentum"):
        PCRLConfig(momentum=1.5, n_data=3)
    with pytest.raises(ConfigError, match="PCRLConfig.queue_size"):
        PCRLConfig(queue_size=0, n_data=3)


# ------------------------------------------------------------- 2D (ChestX-ray14 setting)


def test_2d_views_use_6_entry_codes_and_2d_targets() -> None:
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.rand(N, 1, 32, 32, generator=g), torch.rand(N, 1, 32, 32, generator=g)
    views = make_views(x1, x2, ViewConfig(), torch.Generator().manual_seed(9))
    assert views.codes1.shape == (N, 6) and views.input1.shape == x1.shape and views.target2.shape == x2.shape
    for i in range(N):  # target = the 2D flip then quarter turn of the clean view, by hand
        code = views.codes1[i]
        dims = [1 + a for a in range(2) if code[a] == 1]
        clean = views.clean1[i]
        expected = torch.rot90(torch.flip(clean, dims) if dims else clean, int(code[2:].argmax()), (1, 2))
        torch.testing.assert_close(views.target1[i], expected)
    assert not torch.equal(views.input1, views.clean1)  # corrupted


@pytest.mark.parametrize("name", ["pcrl", "genesis", "moco"])
def test_every_method_trains_the_2d_resnet_unet(name: str) -> None:
    from pcrl.methods import build_method

    extra = {"pcrl": {"n_data": 32, "queue_size": 16, "proj_dim": 8}, "moco": {"queue_size": 16, "proj_dim": 8}}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        method = build_method(name, {"arch": "resnet18_unet2d", "base": 4, **extra.get(name, {})})
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.rand(N, 1, 32, 32, generator=g), torch.rand(N, 1, 32, 32, generator=g)
    out = method(x1, x2, torch.Generator().manual_seed(2))
    assert all(torch.isfinite(v) for v in out.values())
    if name == "pcrl":
        assert {*CONTRASTIVE_TERMS, *RECONSTRUCTION_TERMS} <= set(out)
    out["loss"].backward()
    trained = [(n, p) for n, p in method.named_parameters() if p.requires_grad]
    assert trained and all(p.grad is not None for _, p in trained), [n for n, p in trained if p.grad is None][:3]
    assert all(k.startswith(("encoder.", "decoder.", "out_tr.", "fc", "aug_fc")) for k in method.encoder_state_dict())


# ------------------------------------------------- momentum schedule, negative control


def test_cosine_schedule_two_after_steps_are_the_hand_computed_ema() -> None:
    """m0 = 0.9 over 4 steps: m_0 = 0.9, m_1 = 1 - 0.1 (cos(pi/4) + 1) / 2; with the student
    held fixed, the momentum encoder after two updates is m_0 m_1 theta_k + (1 - m_0 m_1) theta_q."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        method = PCRL(PCRLConfig(base=4, queue_size=16, proj_dim=8, loss="infonce", momentum=0.9,
                                 momentum_schedule="cosine", momentum_steps=4))
        with torch.no_grad():  # as after an optimiser step: the student differs from its EMA copy
            for p in method.student.parameters():
                p.add_(0.1 * torch.randn_like(p))
    m0, m1 = 0.9, 1 - 0.1 * (0.5**0.5 + 1) / 2
    teacher0 = {n: p.detach().clone() for n, p in method.momentum_encoder.named_parameters()}
    student = {n: p.detach().clone() for n, p in method.student.named_parameters()}
    assert any(not torch.equal(teacher0[n], student[n]) for n in student)
    x1, x2 = _pairs()

    out = method(x1, x2, torch.Generator().manual_seed(0))
    assert out["ema_momentum"].item() == pytest.approx(m0)
    method.after_step()
    for n, p in method.momentum_encoder.named_parameters():
        torch.testing.assert_close(p, m0 * teacher0[n] + (1 - m0) * student[n], rtol=1e-5, atol=1e-7, msg=n)
    out = method(x1, x2, torch.Generator().manual_seed(1))
    assert out["ema_momentum"].item() == pytest.approx(m1, abs=1e-6)
    method.after_step()
    for n, p in method.student.named_parameters():  # forward passes did not move the student
        assert torch.equal(p, student[n]), n
    prod = m0 * m1
    for n, p in method.momentum_encoder.named_parameters():
        torch.testing.assert_close(p, prod * teacher0[n] + (1 - prod) * student[n], rtol=1e-5, atol=1e-7, msg=n)
    assert method.state_dict()["ema.steps"].item() == 2
    assert method.ema.current == pytest.approx(0.95, abs=1e-12)  # step 2 of 4: 1 - 0.1 (cos(pi/2) + 1) / 2


def _rolled(k: torch.Tensor) -> torch.Tensor:
    """Row i holds key i - 1 (row 0 the last): each query's positive is another sample's key."""
    return torch.cat([k[-1:], k[:-1]])


@pytest.mark.parametrize("shuffle", [False, True])
def test_shuffle_positives_pairs_each_query_with_another_samples_key(fresh, shuffle: bool) -> None:
    """The three contrastive terms recomputed by hand (no hybrid: the draws are views, shuffle,
    lambda and permutation, shuffle), with the keys rolled by one under the negative control."""
    method = copy.deepcopy(fresh["infonce"])
    method.config = dataclasses.replace(method.config, hybrid=False, shuffle_positives=shuffle)
    ref = copy.deepcopy(method)
    queue0 = method.queue.keys.clone()
    x1, x2 = _pairs()
    out = method(x1, x2, torch.Generator().manual_seed(13))

    g = torch.Generator().manual_seed(13)
    v = make_views(x1, x2, ref.config.views, g)
    student, mom = ref.student, ref.momentum_encoder
    with torch.no_grad():
        torch.randperm(N, generator=g)
        k = mom.project(mom.encode(v.input2)[-1])
    q = student.project(student.encode(v.input1)[-1])
    lam = folded_uniform(g, "cpu")
    perm = torch.randperm(N, generator=g)

    def mixed(a):
        return lam * a + (1 - lam) * a[perm]

    with torch.no_grad():
        torch.randperm(N, generator=g)
        km = mom.project(mom.encode(mixed(v.input2))[-1])
    qm = student.project(student.encode(mixed(v.input1))[-1])
    if shuffle:
        k, km = _rolled(k), _rolled(km)
    expected = {
        "con_plain": _infonce_ref(q, k, queue0, 0.2),
        "con_mix": _infonce_ref(qm, km, queue0, 0.2),
        "con_mix_k": _infonce_ref(qm, F.normalize(mixed(k), dim=1), queue0, 0.2),
    }
    for name, value in expected.items():
        torch.testing.assert_close(out[name], value, rtol=2e-5, atol=1e-7, msg=name)
    assert out["con_acc"].item() == pytest.approx(_ranking_accuracy(q, k, queue0))
    # the control changes the loss: the rolled and unrolled references differ
    other = _rolled(k) if not shuffle else torch.cat([k[1:], k[:1]])
    assert not torch.allclose(_infonce_ref(q, other, queue0, 0.2), expected["con_plain"], rtol=1e-3)
