"""A frozen-encoder linear probe: does a pretrained encoder already separate the classes?

The probe answers, without fine-tuning, the question PCRL's paper asks of pretraining
(Zhou et al., ICCV 2021): has the encoder learnt features that transfer? On NCC cubes
(nodule vs false-positive candidate, docs/method.md "Protocol") every cube is encoded by
the frozen encoder (eval mode, no gradient), its deepest feature map is averaged over
space (the same pooled 16b-vector the projection head and NCC's classifier read), and an
L2-regularised logistic regression fitted on the training cubes scores held-out ones;
the score is their ROC AUC (MONAI's ``compute_roc_auc``, as the evaluate stage).

The logistic regression is written here (a few lines of L-BFGS on torch) rather than
taken from scikit-learn, which the pipeline does not otherwise need: features are
standardised with the training mean and standard deviation, classes are weighted to equal
total weight (nodules are rare), and the penalty ``l2 * |w|^2 / 2`` is added to the mean
weighted log-loss. The optimum is unique (strictly convex); L-BFGS runs until the largest
gradient entry is below :data:`GRAD_TOLERANCE` (a warning says when it is not reached).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from pcrl.errors import DataError
from pcrl.evaluation.metrics import classification_metrics
from pcrl.preprocessing.task_data import CandidateRows, cube_batches, read_candidate_rows

__all__ = ["LogisticProbe", "ProbeSplit", "fit_logistic", "pooled_features", "pooled_tensor_features", "probe_auc",
           "probe_split"]

#: Default strength of the L2 penalty on the standardised features.
DEFAULT_L2 = 1e-2
#: Convergence: largest gradient entry, and L-BFGS rounds of ``max_iter`` iterations at most.
GRAD_TOLERANCE = 1e-8
#: A fit stopped above this gradient is reported (nearly separable classes, e.g. a few
#: labelled scans, approach GRAD_TOLERANCE slowly; 1e-6 changes no AUC).
WARN_TOLERANCE = 1e-6
MAX_ROUNDS = 20

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeSplit:
    """Labelled candidates to fit the probe on (``train``) and to score it on (``held_out``)."""

    train: CandidateRows
    held_out: CandidateRows


def probe_split(processed: str, train_ids: Sequence[str], held_out_ids: Sequence[str],
                *, max_per_class: int | None = None, seed: int = 0) -> ProbeSplit:
    """The NCC candidates of two disjoint lists of scans, each class capped at ``max_per_class``.

    The cap (a seeded subsample per class and split; None keeps all) bounds the cost of
    encoding when a real LUNA16 split holds hundreds of thousands of candidates.

    Raises:
        DataError: the lists share scans, or a split lacks one of the two classes.
    """
    shared = sorted(set(train_ids) & set(held_out_ids))
    if shared:
        raise DataError(f"probe: scans in both the probe's training and held-out sets: {shared[:5]}")
    rng = np.random.default_rng(seed)
    parts = []
    for name, ids in (("train", train_ids), ("held-out", held_out_ids)):
        rows = read_candidate_rows(processed, list(ids))
        keep = []
        for label in (0, 1):
            index = np.flatnonzero(rows.label == label)
            if index.size == 0:
                raise DataError(f"{processed}: the probe's {name} scans have no candidate of class {label}")
            if max_per_class is not None and index.size > max_per_class:
                index = np.sort(rng.choice(index, size=max_per_class, replace=False))
            keep.append(index)
        parts.append(rows.take(np.sort(np.concatenate(keep))))
    return ProbeSplit(parts[0], parts[1])


@torch.no_grad()
def _pooled_batches(encoder: nn.Module, batches: Iterable[Tensor], device: torch.device | str) -> Tensor:
    """(N, C) float64: the spatial mean of the deepest map of ``encoder.encode`` per image.

    The encoder is put in eval mode for the call (batch norm with running statistics) and
    restored afterwards.
    """
    was_training = encoder.training
    encoder.eval()
    try:
        out = [encoder.encode(x.to(device))[-1].flatten(2).mean(dim=2).double().cpu()  # type: ignore[operator]
               for x in batches]
    finally:
        encoder.train(was_training)
    return torch.cat(out)


def pooled_features(encoder: nn.Module, rows: CandidateRows, *, device: torch.device | str = "cpu",
                    batch_size: int = 32) -> Tensor:
    """(N, C) float64: the pooled deepest features (:func:`pooled_tensor_features`) of NCC cubes.

    With ``norm: batch_stats`` a feature depends on the other cubes of its batch (batch
    statistics in eval mode too): batches are formed in candidate order.
    """
    return _pooled_batches(encoder, (cubes for cubes, _ in cube_batches(rows, batch_size)), device)


def pooled_tensor_features(encoder: nn.Module, x: Tensor, *, device: torch.device | str = "cpu",
                           batch_size: int = 32) -> Tensor:
    """(N, C) float64: the spatial mean of the deepest encoder map of each image of ``x``
    (N, C, ...), in batches of ``batch_size``, eval mode (restored afterwards)."""
    return _pooled_batches(encoder, (x[i:i + batch_size] for i in range(0, x.shape[0], batch_size)), device)


@dataclass(frozen=True)
class LogisticProbe:
    """A fitted probe: ``p(nodule | f) = sigmoid(((f - mean) / std) @ weight + bias)``."""

    mean: Tensor
    std: Tensor
    weight: Tensor
    bias: Tensor

    def scores(self, features: Tensor) -> Tensor:
        """Logits of ``features`` (N, C)."""
        return ((features.double() - self.mean) / self.std) @ self.weight + self.bias


def fit_logistic(features: Tensor, labels: np.ndarray | Tensor, *, l2: float = DEFAULT_L2,
                 max_iter: int = 200) -> LogisticProbe:
    """Fit the class-balanced, L2-regularised logistic regression of the module docstring.

    Args:
        features: (N, C) training features.
        labels: (N,) classes in {0, 1}, both present.
        l2: penalty strength (> 0).
        max_iter: L-BFGS iterations.

    Raises:
        ValueError: shapes that do not fit, a single class, or non-finite features.
    """
    x = features.double()
    y = torch.as_tensor(np.asarray(labels), dtype=torch.float64).reshape(-1)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"fit_logistic: features {tuple(x.shape)} and labels {tuple(y.shape)} do not fit")
    if not torch.isfinite(x).all():
        raise ValueError("fit_logistic: non-finite features (did the encoder diverge?)")
    positives = float(y.sum())
    if positives == 0 or positives == y.numel():
        raise ValueError("fit_logistic: both classes are needed")
    if not l2 > 0:
        raise ValueError(f"fit_logistic: l2 must be positive, got {l2}")
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False).clamp_min(1e-12)
    z = (x - mean) / std
    sample_weight = torch.where(y > 0, 0.5 / positives, 0.5 / (y.numel() - positives))
    weight = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10,
                                  tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimiser.zero_grad()
        logits = z @ weight + bias
        loss = (sample_weight * nn.functional.binary_cross_entropy_with_logits(
            logits, y, reduction="none")).sum() + 0.5 * l2 * (weight**2).sum()
        loss.backward()
        return loss

    for _ in range(MAX_ROUNDS):  # each step stops at max_iter; go on until the gradient vanishes
        optimiser.step(closure)
        grad = torch.cat([weight.grad.reshape(-1), bias.grad.reshape(1)])  # type: ignore[union-attr]
        if float(grad.abs().max()) < GRAD_TOLERANCE:
            break
    else:
        if float(grad.abs().max()) > WARN_TOLERANCE:
            log.warning("logistic probe: not converged after %d L-BFGS rounds (gradient %.2e)",
                        MAX_ROUNDS, float(grad.abs().max()))
    return LogisticProbe(mean, std, weight.detach(), bias.detach())


def probe_auc(encoder: nn.Module, split: ProbeSplit, *, device: torch.device | str = "cpu",
              l2: float = DEFAULT_L2, batch_size: int = 32) -> float:
    """ROC AUC on ``split.held_out`` of the probe fitted on ``split.train`` (frozen ``encoder``)."""
    train = pooled_features(encoder, split.train, device=device, batch_size=batch_size)
    held_out = pooled_features(encoder, split.held_out, device=device, batch_size=batch_size)
    probe = fit_logistic(train, split.train.label, l2=l2)
    scores = probe.scores(held_out).numpy()
    return float(classification_metrics(scores, split.held_out.label)["auc"])
