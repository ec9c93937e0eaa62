"""Tests of pcrl.evaluation.gauges against hand computations and independent re-implementations."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from pcrl.evaluation.gauges import (
    effective_rank,
    encoder_parameters,
    psnr_gain,
    retrieval_accuracy,
    term_gradient_norms,
)

N, SHAPE = 4, (16, 16, 8)
NOT_ENCODER = ("up_tr", "out_tr", "fc", "aug_fc")


def _with_singular_values(s: list[float], n: int = 7, c: int = 5, seed: int = 0) -> torch.Tensor:
    """X = U diag(s) V^T, U's columns orthonormal and orthogonal to the ones vector (so the
    column means of X are 0 and centring leaves X as it is), V's orthonormal."""
    g = torch.Generator().manual_seed(seed)
    r = len(s)
    basis, _ = torch.linalg.qr(torch.cat([torch.ones(n, 1), torch.randn(n, r, generator=g)], dim=1).double())
    u = basis[:, 1:r + 1]  # orthogonal to basis[:, 0], the ones direction
    v, _ = torch.linalg.qr(torch.randn(c, r, generator=g).double())
    x = u @ torch.diag(torch.tensor(s, dtype=torch.float64)) @ v.T
    assert torch.allclose(x.mean(dim=0), torch.zeros(c, dtype=torch.float64), atol=1e-12)
    return x


# ------------------------------------------------------------------------ effective rank


def test_effective_rank_is_exp_entropy_of_the_singular_values_by_hand() -> None:
    x = _with_singular_values([3.0, 2.0, 1.0])
    # p = (1/2, 1/3, 1/6); H = 1/2 ln 2 + 1/3 ln 3 + 1/6 ln 6
    entropy = 0.5 * math.log(2) + math.log(3) / 3 + math.log(6) / 6
    assert effective_rank(x) == pytest.approx(math.exp(entropy), rel=1e-9)
    assert 2.0 < math.exp(entropy) < 3.0
    # float32 input: the same up to float32 rounding
    assert effective_rank(x.float()) == pytest.approx(math.exp(entropy), rel=1e-5)


@pytest.mark.parametrize("r", [1, 2, 3, 4])
def test_equal_singular_values_over_r_dimensions_give_r(r: int) -> None:
    assert effective_rank(_with_singular_values([2.5] * r, seed=r)) == pytest.approx(r, rel=1e-9)


def test_rank_one_after_centring_is_one_and_identical_rows_are_zero() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(9, 1, generator=g).double(), torch.randn(1, 6, generator=g).double()
    shared = torch.randn(1, 6, generator=g).double() * 10
    assert effective_rank(a @ b + shared) == pytest.approx(1.0, abs=1e-9)  # one direction plus a mean
    # in float32 the rounding of the shared vector leaves a trace of other directions
    assert effective_rank((a @ b + shared).float()) == pytest.approx(1.0, abs=1e-3)
    assert effective_rank(shared.repeat(9, 1)) == 0.0  # every crop the same: no variation
    assert effective_rank(torch.zeros(4, 3)) == 0.0


def test_effective_rank_ignores_a_vector_shared_by_every_row() -> None:
    x = _with_singular_values([4.0, 1.0, 0.5, 0.25])
    shift = torch.tensor([[100.0, -3.0, 7.0, 0.0, 55.0]], dtype=torch.float64)
    assert effective_rank(x + shift) == pytest.approx(effective_rank(x), rel=1e-9)
    p = torch.tensor([4.0, 1.0, 0.5, 0.25]) / 5.75
    assert effective_rank(x + shift) == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-6)


def test_effective_rank_errors() -> None:
    with pytest.raises(ValueError, match="N >= 2"):
        effective_rank(torch.ones(1, 4))
    with pytest.raises(ValueError, match="N >= 2"):
        effective_rank(torch.ones(5))
    x = torch.randn(4, 3)
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        effective_rank(x)
    x[2, 1] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        effective_rank(x)


# --------------------------------------------------------------------- retrieval accuracy


def test_retrieval_of_a_set_against_itself_is_perfect() -> None:
    x = torch.randn(10, 6, generator=torch.Generator().manual_seed(2))
    assert retrieval_accuracy(x, x.clone()) == 1.0


def test_retrieval_by_hand_with_centring_by_the_mean_of_both_sets() -> None:
    """Centred rows (mean of all six rows = 0) q = (1, 0), (0, 1), (1, -1) and
    k = (2, 0.2), (0.2, 2), (-4.2, -2.2), all shifted by (0, -5):

    * q0 . k: cos 0.995 (own), 0.0995, -0.886: hit;
    * q1 . k: cos 0.0995, 0.995 (own), -0.464: hit;
    * q2 . k: cos 0.633, -0.633, -0.298 (own): miss, q2 is nearest k0.

    Without the centring the shift makes every cosine about 0.75-1 and q0 picks k1
    (0.9915 > 0.9806): 1/3.
    """
    shift = torch.tensor([0.0, -5.0])
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]) + shift
    k = torch.tensor([[2.0, 0.2], [0.2, 2.0], [-4.2, -2.2]]) + shift
    assert torch.cat([q, k]).mean(dim=0).tolist() == pytest.approx([0.0, -5.0], abs=1e-6)
    assert retrieval_accuracy(q, k) == pytest.approx(2 / 3)
    # the roles swapped (columns of the same cosines): k0 -> 0.995 (q0, own), 0.0995, 0.633: hit;
    # k1 -> 0.0995, 0.995 (own), -0.633: hit; k2 -> -0.886, -0.464, -0.298 (own): hit
    assert retrieval_accuracy(k, q) == pytest.approx(1.0)


def test_constant_features_score_zero_not_one() -> None:
    x = torch.full((5, 3), 0.7)
    assert retrieval_accuracy(x, x.clone()) == 0.0  # every similarity ties: misses
    # all-zero features: cosines of zero vectors are 0, all tied
    assert retrieval_accuracy(torch.zeros(3, 2), torch.zeros(3, 2)) == 0.0


def test_retrieval_errors() -> None:
    with pytest.raises(ValueError):
        retrieval_accuracy(torch.ones(3, 2), torch.ones(4, 2))
    with pytest.raises(ValueError):
        retrieval_accuracy(torch.ones(1, 2), torch.ones(1, 2))


# ----------------------------------------------------------------------------- PSNR gain


def test_psnr_gain_is_the_mean_of_the_per_sample_differences_by_hand() -> None:
    target = torch.tensor([[0.5, 0.5, 0.5, 0.5], [1.0, 0.5, 0.5, 0.5]]).view(2, 1, 2, 2)
    # sample 0: output off by 0.1 everywhere (mse 0.01), corrupted by 0.2 (mse 0.04);
    # sample 1: output 1.4 clamped to 1 (no error) and 0.3 off once (mse 0.09 / 4), corrupted mse 0.01.
    output = torch.tensor([[0.6, 0.4, 0.6, 0.4], [1.4, 0.5, 0.5, 0.8]]).view(2, 1, 2, 2)
    corrupted = torch.tensor([[0.7, 0.7, 0.3, 0.7], [0.9, 0.6, 0.4, 0.6]]).view(2, 1, 2, 2)

    def psnr(mse: float) -> float:
        return 10 * math.log10(1.0 / mse)

    expected = ((psnr(0.01) - psnr(0.04)) + (psnr(0.0225) - psnr(0.01))) / 2
    assert expected == pytest.approx((10 * math.log10(4) + 10 * math.log10(0.01 / 0.0225)) / 2)
    assert psnr_gain(output, corrupted, target) == pytest.approx(expected, abs=1e-4)
    assert psnr_gain(corrupted, corrupted, target) == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------- per-term gradient norms


def _pairs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(N, 1, *SHAPE, generator=g), torch.rand(N, 1, *SHAPE, generator=g)


def _reference_norms(method: torch.nn.Module, attr: str, x1, x2, seed: int) -> dict[str, float]:
    """Each term backpropagated on its own through a copy; squared gradients summed over the
    parameters outside the decoder and heads."""
    twin = copy.deepcopy(method).train()
    out = twin(x1, x2, torch.Generator().manual_seed(seed))
    norms = {}
    for term in ("contrastive", "reconstruction"):
        if term not in out:
            continue
        twin.zero_grad(set_to_none=True)
        out[term].backward(retain_graph=True)
        total = 0.0
        for name, p in getattr(twin, attr).named_parameters():
            if name.split(".")[0].startswith(NOT_ENCODER) or p.grad is None:
                continue
            total += float((p.grad.double() ** 2).sum())
        norms[term] = math.sqrt(total)
    return norms


def _build(name: str) -> tuple[torch.nn.Module, str]:
    from pcrl.methods import PCRL, Genesis, GenesisConfig, PCRLConfig

    with torch.random.fork_rng():
        torch.manual_seed(0)
        if name == "genesis":
            return Genesis(GenesisConfig(base=4)), "net"
        return PCRL(PCRLConfig(base=4, queue_size=16, proj_dim=8, loss="infonce")), "student"


@pytest.mark.parametrize("name", ["genesis", "pcrl"])
def test_term_gradient_norms_match_a_separate_backward_of_each_term(name: str) -> None:
    method, attr = _build(name)
    method.eval()  # as the pretrain stage finds it after validation: the copy must train anyway
    before = {k: v.clone() for k, v in method.state_dict().items()}
    x1, x2 = _pairs()
    norms = term_gradient_norms(method, attr, x1, x2, torch.Generator().manual_seed(3))
    expected = _reference_norms(method, attr, x1, x2, seed=3)
    assert set(norms) == ({"reconstruction"} if name == "genesis" else {"contrastive", "reconstruction"})
    for term, value in expected.items():
        assert value > 0
        assert norms[term] == pytest.approx(value, rel=1e-5), term
    # the run is untouched: weights, queue, batch-norm statistics, mode, no gradients left
    after = method.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert not method.training
    assert all(p.grad is None for p in method.parameters())
    if name == "pcrl":
        assert method.queue.ptr.item() == 0 and method.ema.steps.item() == 0


def test_term_gradient_norms_leave_out_the_decoder() -> None:
    """Decoder weights carry reconstruction gradient: counting them would change the norm."""
    method, attr = _build("genesis")
    x1, x2 = _pairs(1)
    twin = copy.deepcopy(method).train()
    twin(x1, x2, torch.Generator().manual_seed(4))["reconstruction"].backward()
    everything = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in twin.net.parameters()))
    norm = term_gradient_norms(method, attr, x1, x2, torch.Generator().manual_seed(4))["reconstruction"]
    assert norm < everything


def test_encoder_parameters_are_the_down_path_only() -> None:
    method, _ = _build("pcrl")
    names = [n for n, _ in encoder_parameters(method.student)]
    assert names and all(n.startswith("down_tr") for n in names)
    expected = [n for n, _ in method.student.named_parameters() if n.startswith("down_tr")]
    assert names == expected
