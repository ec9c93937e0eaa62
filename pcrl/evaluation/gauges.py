"""Gauges of a pretraining run: is the encoder learning, or collapsing?

Logged each epoch by the pretrain stage on fixed held-out pairs (never trained on), so that
a run that learns nothing shows it while it runs, not only after fine-tuning:

* :func:`effective_rank` of the pooled features (Roy & Vetterli, EUSIPCO 2007; used as a
  collapse gauge by RankMe, Garrido et al., ICML 2023). The features are centred over the
  held-out crops first, so a vector shared by every crop (the mean) does not count as a
  dimension: 1 means the crops differ along one direction only (collapse).
* :func:`retrieval_accuracy`: for each held-out pair, is view 2 the nearest (cosine, after
  centring) of all the held-out views 2 to view 1? Chance is ``1 / N``. This is the
  contrastive half's own task, scored on the encoder's pooled features, so it is comparable
  across methods (Models Genesis included).
* :func:`psnr_gain`: the reconstruction's PSNR minus the corrupted input's PSNR against the
  same target; above 0 when the decoder restores more than it is given.
* :func:`term_gradient_norms`: the gradient norm of each loss half (contrastive,
  reconstruction) on the encoder's parameters, on one fixed batch: which half drives the
  encoder.

They are written here, not taken from a library: MONAI has no collapse or retrieval gauge,
and these are a few lines each.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ENCODER_EXCLUDED_PREFIXES",
    "effective_rank",
    "encoder_parameters",
    "psnr_gain",
    "retrieval_accuracy",
    "term_gradient_norms",
]

#: Module name prefixes of the pretraining networks that are not the encoder: the decoders
#: (``up_tr``/``out_tr`` of the 3D U-Net, ``decoder``/``out_tr`` of the 2D one), the projection
#: head (``fc1``/``fc2``) and TCA (``aug_fc1``/``aug_fc2``).
ENCODER_EXCLUDED_PREFIXES = ("up_tr", "out_tr", "decoder", "fc", "aug_fc")


def effective_rank(features: Tensor) -> float:
    """``exp(H(p))`` with ``p`` the normalised singular values of the centred ``features``.

    Args:
        features: (N, C), N >= 2.

    Returns:
        A value in [1, min(N - 1, C)]; 0 when every row is the same (no variation at all).

    Raises:
        ValueError: on fewer than two rows or non-finite values.
    """
    x = features.double()
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"effective_rank: need (N >= 2, C) features, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("effective_rank: non-finite features")
    s = torch.linalg.svdvals(x - x.mean(dim=0, keepdim=True))
    total = float(s.sum())
    if total <= 1e-12 * max(1.0, float(x.abs().max())):
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def retrieval_accuracy(queries: Tensor, keys: Tensor) -> float:
    """Top-1 accuracy of finding row i of ``keys`` as the nearest key to row i of ``queries``.

    Both sets are centred by the mean of all their rows together (pooled ReLU features share
    a large positive mean that would make every cosine close to 1), then compared by cosine.
    Chance is ``1 / N``. Ties count as misses (a constant encoder scores 0, not 1).

    Raises:
        ValueError: on sets of different shapes or fewer than two rows.
    """
    if queries.shape != keys.shape or queries.ndim != 2 or queries.shape[0] < 2:
        raise ValueError(f"retrieval_accuracy: need two (N >= 2, C) sets, got {tuple(queries.shape)} "
                         f"and {tuple(keys.shape)}")
    q, k = queries.double(), keys.double()
    centre = torch.cat([q, k]).mean(dim=0, keepdim=True)
    sim = F.normalize(q - centre, dim=1) @ F.normalize(k - centre, dim=1).T
    own = sim.diagonal()
    others = sim.masked_fill(torch.eye(sim.shape[0], dtype=torch.bool), -math.inf)
    return float((own > others.max(dim=1).values).double().mean())


def psnr_gain(output: Tensor, corrupted: Tensor, target: Tensor, *, peak: float = 1.0) -> float:
    """Mean over samples of PSNR(output, target) - PSNR(corrupted, target), in dB.

    Uses MONAI's ``PSNRMetric`` per sample (peak ``peak``); ``output`` is clamped to
    [0, peak] as the previews are.
    """
    from monai.metrics import PSNRMetric

    metric = PSNRMetric(max_val=peak)
    restored = metric(output.float().clamp(0, peak), target.float())
    given = metric(corrupted.float(), target.float())
    return float((torch.as_tensor(restored) - torch.as_tensor(given)).mean())


def encoder_parameters(network: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The named parameters of ``network``'s encoder (all but :data:`ENCODER_EXCLUDED_PREFIXES`)."""
    return [(name, p) for name, p in network.named_parameters()
            if not name.split(".")[0].startswith(ENCODER_EXCLUDED_PREFIXES)]


def _norm(grads: Iterable[Tensor | None]) -> float:
    total = sum(float(g.double().pow(2).sum()) for g in grads if g is not None)
    return math.sqrt(total)


def term_gradient_norms(method: nn.Module, network_attr: str, x1: Tensor, x2: Tensor,
                        generator: torch.Generator) -> dict[str, float]:
    """The L2 norm of the gradient of each loss half on the encoder, for one batch.

    The method is deep-copied first (the step enqueues keys and moves batch-norm statistics),
    so the run itself is untouched. The copy runs in training mode, as a training step does.

    Args:
        method: the pretraining method (``forward(x1, x2, generator)`` returns a dict with
            ``contrastive`` and/or ``reconstruction``).
        network_attr: the attribute holding the trained network (``student`` or ``net``).
        x1, x2: a batch of clean pairs.
        generator: draws the step's views (seed it for comparable epochs).

    Returns:
        ``{"contrastive": ..., "reconstruction": ...}`` for the halves the method has.
    """
    twin = copy.deepcopy(method).train()
    params = [p for _, p in encoder_parameters(getattr(twin, network_attr)) if p.requires_grad]
    out = twin(x1, x2, generator)
    norms = {}
    for term in ("contrastive", "reconstruction"):
        value = out.get(term)
        if isinstance(value, Tensor) and value.requires_grad:
            grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
            norms[term] = _norm(grads)
    return norms
