"""Tests of pcrl.methods.losses against formulas written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from pcrl.methods.losses import InfoNCELoss, NCELoss, contrastive_logits, reconstruction_loss

# Two queries, their keys and a queue of three negatives, in D = 2 (unit rows).
Q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
K = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
QUEUE = torch.tensor([[1.0, 0.0], [0.0, -1.0], [0.8, -0.6]])
# Dot products written out: row i = [q_i.k_i, q_i.n_0, q_i.n_1, q_i.n_2].
DOTS = [[0.6, 1.0, 0.0, 0.8], [1.0, 0.0, -1.0, -0.6]]


def test_contrastive_logits_layout() -> None:
    torch.testing.assert_close(contrastive_logits(Q, K, QUEUE), torch.tensor(DOTS))


def test_infonce_matches_hand_computation() -> None:
    t = 0.2
    expected = 0.0
    for row in DOTS:
        denom = sum(math.exp(d / t) for d in row)
        expected += -math.log(math.exp(row[0] / t) / denom)
    expected /= len(DOTS)
    loss = InfoNCELoss(temperature=t)(Q, K, QUEUE)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_infonce_is_small_for_a_clear_positive_and_large_when_swapped() -> None:
    q = torch.tensor([[1.0, 0.0]])
    good = InfoNCELoss(0.2)(q, q, torch.tensor([[-1.0, 0.0]]))
    bad = InfoNCELoss(0.2)(q, torch.tensor([[-1.0, 0.0]]), q)
    # logits [5, -5] and [-5, 5]: -log(1 / (1 + e^-10)) and -log(e^-5 / (e^-5 + e^5)).
    assert good.item() == pytest.approx(math.log1p(math.exp(-10.0)), abs=1e-6)
    assert bad.item() == pytest.approx(10.0 + math.log1p(math.exp(-10.0)), rel=1e-5)


def _nce_reference(dots: list[list[float]], t: float, n_data: int, z: float, eps: float) -> float:
    m = len(dots[0]) - 1
    pn = 1.0 / n_data
    total = 0.0
    for row in dots:
        p_pos = math.exp(row[0] / t) / z
        total += math.log(p_pos / (p_pos + m * pn + eps))
        for d in row[1:]:
            p_neg = math.exp(d / t) / z
            total += math.log(m * pn / (p_neg + m * pn + eps))
    return -total / len(dots)


def test_nce_matches_hand_computation_and_estimates_z_from_first_batch() -> None:
    t, n_data, eps = 0.2, 10, 1e-7
    scores = [math.exp(d / t) for row in DOTS for d in row]
    z = sum(scores) / len(scores) * n_data
    loss_fn = NCELoss(n_data=n_data, temperature=t, eps=eps)
    assert not loss_fn.initialised
    loss = loss_fn(Q, K, QUEUE)
    assert loss_fn.Z.item() == pytest.approx(z, rel=1e-5)
    assert loss.item() == pytest.approx(_nce_reference(DOTS, t, n_data, z, eps), rel=1e-5)


def test_nce_z_frozen_after_first_call_and_saved() -> None:
    t, n_data = 0.2, 7
    loss_fn = NCELoss(n_data=n_data, temperature=t)
    loss_fn(Q, K, QUEUE)
    z_first = loss_fn.Z.item()
    # A second, different batch: Z stays, the loss uses the first Z.
    q2, k2 = K.flip(0), Q
    dots2 = contrastive_logits(q2, k2, QUEUE).tolist()
    loss2 = loss_fn(q2, k2, QUEUE)
    assert loss_fn.Z.item() == z_first
    assert loss2.item() == pytest.approx(_nce_reference(dots2, t, n_data, z_first, 1e-7), rel=1e-5)
    # Z is a buffer: saved, and restored into a fresh module (which then does not re-estimate).
    state = loss_fn.state_dict()
    assert state["Z"].item() == z_first
    fresh = NCELoss(n_data=n_data, temperature=t)
    fresh.load_state_dict(state)
    assert fresh.initialised
    fresh(q2, k2, QUEUE)
    assert fresh.Z.item() == z_first


def test_nce_in_eval_mode_does_not_freeze_z() -> None:
    loss_fn = NCELoss(n_data=10).eval()
    first = loss_fn(Q, K, QUEUE)
    assert not loss_fn.initialised
    loss_fn.train()
    torch.testing.assert_close(loss_fn(Q, K, QUEUE), first)  # same batch: same estimate
    assert loss_fn.initialised


def test_nce_n_data_cancels_out_when_z_is_estimated() -> None:
    """P = s / (n mean(s0)) and m Pn = m / n: n_data cancels in P / (P + m Pn) (eps aside).

    So the release's count (batches instead of samples) changes the loss only through eps;
    a wrong n_data is harmless, but a Z restored with a different n_data would not be.
    """
    a = NCELoss(n_data=100, eps=0.0)(Q, K, QUEUE).item()
    b = NCELoss(n_data=3, eps=0.0)(Q, K, QUEUE).item()
    assert a == pytest.approx(b, rel=1e-6)
    # ... whereas a fixed Z makes n_data matter.
    c = NCELoss(n_data=100, eps=0.0)
    c.Z.fill_(50.0)
    d = NCELoss(n_data=3, eps=0.0)
    d.Z.fill_(50.0)
    assert c(Q, K, QUEUE).item() != pytest.approx(d(Q, K, QUEUE).item(), rel=1e-3)


def test_nce_gradient_flows_to_queries_only() -> None:
    q = Q.clone().requires_grad_(True)
    NCELoss(n_data=5)(q, K, QUEUE).backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


@pytest.mark.parametrize("loss_fn", [InfoNCELoss(), NCELoss(n_data=4)])
@pytest.mark.parametrize(
    ("q", "k", "queue"),
    [
        (torch.zeros(2, 3), torch.zeros(3, 3), torch.zeros(4, 3)),  # N differs
        (torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(4, 5)),  # D differs
        (torch.zeros(2, 3, 1), torch.zeros(2, 3, 1), torch.zeros(4, 3)),  # not 2-D
    ],
)
def test_contrastive_losses_reject_bad_shapes(loss_fn, q, k, queue) -> None:
    with pytest.raises(ValueError, match=r"queue \(4, [35]\)"):
        loss_fn(q, k, queue)


def test_bad_hyperparameters_rejected() -> None:
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(0.0)
    with pytest.raises(ValueError, match="n_data"):
        NCELoss(n_data=0)
    with pytest.raises(ValueError, match="n_data"):
        NCELoss(n_data=2.5)  # type: ignore[arg-type]


def test_reconstruction_loss_is_mse_and_checks_shapes() -> None:
    pred = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    target = torch.tensor([[1.0, 1.0], [0.0, 0.5]])
    assert reconstruction_loss(pred, target).item() == pytest.approx((1.0 + 0.0 + 0.25 + 0.0) / 4)
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(2, 1\)"):
        reconstruction_loss(pred, target[:, :1])


@pytest.mark.parametrize("setting", ["intent", "release"])
def test_nce_settings_follow_their_sources(setting: str) -> None:
    """intent: eps 1e-7, real Z (Wu et al.); release: eps 1e-5, Z truncated to an integer."""
    t, n_data = 0.2, 10
    eps = {"intent": 1e-7, "release": 1e-5}[setting]
    scores = [math.exp(d / t) for row in DOTS for d in row]
    z = sum(scores) / len(scores) * n_data
    if setting == "release":
        z = float(math.floor(z))  # positive: truncation is the floor
    loss_fn = NCELoss.from_setting(setting, n_data, t)
    loss = loss_fn(Q, K, QUEUE)
    assert loss_fn.eps == eps
    assert loss_fn.Z.item() == pytest.approx(z, rel=1e-6)
    assert (loss_fn.Z.item() == int(loss_fn.Z.item())) == (setting == "release")
    assert loss.item() == pytest.approx(_nce_reference(DOTS, t, n_data, z, eps), rel=1e-5)


def test_nce_release_eps_matters_when_probabilities_are_small() -> None:
    """With a large n_data (m Pn tiny) eps 1e-5 vs 1e-7 changes the loss: the setting is not cosmetic."""
    t, n_data = 0.2, 10_000_000
    intent = NCELoss.from_setting("intent", n_data, t)(Q, K, QUEUE).item()
    release = NCELoss.from_setting("release", n_data, t)(Q, K, QUEUE).item()
    assert abs(intent - release) > 1e-3
    with pytest.raises(ValueError, match="setting must be one of"):
        NCELoss.from_setting("paper", n_data, t)
