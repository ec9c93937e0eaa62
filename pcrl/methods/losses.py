"""Contrastive and reconstruction losses of PCRL and its baselines.

docs/method.md "One training step": the contrastive term compares a query ``q`` with its
positive key ``k`` and with a queue of past momentum keys (16384 x 128, temperature 0.2).
Two estimators are offered:

* :class:`InfoNCELoss`: MoCo v2's softmax cross-entropy (He et al., CVPR 2020; Chen et al.,
  arXiv 2003.04297), ``-log(exp(q.k/T) / (exp(q.k/T) + sum_j exp(q.n_j/T)))``.
* :class:`NCELoss`: the noise-contrastive estimator of instance discrimination (Wu et al.,
  CVPR 2018, Sec. 3.2) that the PCRL release uses: non-parametric probabilities
  ``P(i|v) = exp(v.f_i/T) / Z`` with ``Z`` estimated once, from the first batch, as
  ``n_data * mean(exp(logits/T))`` and then frozen; a binary classifier against a uniform
  noise distribution ``Pn = 1/n_data`` with ``m = K`` noise samples per query.

``n_data`` is the number of training *samples*; the release passed the number of batches
(docs/method.md "Known defects of the release"). With ``Z`` estimated as above, ``n_data``
cancels out of ``P / (P + K Pn)`` (``P`` scales as ``1/n_data``, and so does ``K Pn``), so
the defect changes the loss only through ``eps``; it matters when a ``Z`` is reused with
another ``n_data`` (tests/test_losses.py checks both facts).

Both modules take unit-norm rows: ``q``, ``k`` of shape (N, D) and ``queue`` of shape (K, D).
They do not normalise nor detach their inputs: keys and queue come from the momentum encoder
under ``torch.no_grad`` in every method of this package.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "NCE_SETTINGS",
    "InfoNCELoss",
    "NCELoss",
    "contrastive_accuracy",
    "contrastive_logits",
    "reconstruction_loss",
]

#: ``eps`` and ``Z`` rule of :class:`NCELoss`: the estimator's authors' (Wu et al., CVPR 2018;
#: default) and the PCRL release's.
NCE_SETTINGS: dict[str, tuple[float, bool]] = {
    "intent": (1e-7, False),  # (eps, integer Z)
    "release": (1e-5, True),
}


def _check_qkq(name: str, q: Tensor, k: Tensor, queue: Tensor) -> None:
    """Raise ValueError unless q, k are (N, D) and queue is (K, D) with the same D."""
    shapes = f"q {tuple(q.shape)}, k {tuple(k.shape)}, queue {tuple(queue.shape)}"
    if q.ndim != 2 or k.ndim != 2 or queue.ndim != 2:
        raise ValueError(f"{name}: expected q (N, D), k (N, D) and queue (K, D), got {shapes}")
    if q.shape != k.shape:
        raise ValueError(f"{name}: q and k must have the same shape (N, D), got {shapes}")
    if queue.shape[1] != q.shape[1]:
        raise ValueError(f"{name}: queue rows must have q's dimension D, got {shapes}")
    if q.shape[0] == 0 or queue.shape[0] == 0:
        raise ValueError(f"{name}: empty batch or queue, got {shapes}")


def contrastive_logits(q: Tensor, k: Tensor, queue: Tensor) -> Tensor:
    """Similarities of each query with its positive key (column 0) and the queue.

    Args:
        q: (N, D) queries.
        k: (N, D) positive keys, row i the positive of query i.
        queue: (K, D) negative keys.

    Returns:
        (N, 1 + K) dot products ``[q_i . k_i, q_i . queue_0, ..., q_i . queue_{K-1}]``
        (not yet divided by the temperature).
    """
    positive = (q * k).sum(dim=1, keepdim=True)
    negative = q @ queue.to(q.dtype).t()
    return torch.cat((positive, negative), dim=1)


@torch.no_grad()
def contrastive_accuracy(q: Tensor, k: Tensor, queue: Tensor) -> Tensor:
    """Share of queries whose positive key is ranked first: ``q.k > max_j q.queue_j``.

    A readable companion of the contrastive loss (whose value depends on the queue size,
    the temperature and, for NCE, on ``Z``): chance is ``1 / (1 + K)``, a working
    instance discrimination approaches 1. A 0-d float tensor, no gradient.
    """
    _check_qkq("contrastive_accuracy", q, k, queue)
    logits = contrastive_logits(q, k, queue)
    return (logits[:, 0] > logits[:, 1:].amax(dim=1)).float().mean()


class InfoNCELoss(nn.Module):
    """MoCo v2 InfoNCE: cross-entropy of ``[q.k, q.queue] / T`` with the positive at index 0.

    Args:
        temperature: softmax temperature ``T`` (0.2 in MoCo v2 and PCRL).

    Raises:
        ValueError: if ``temperature`` is not positive.

    Example:
        >>> loss = InfoNCELoss(0.2)
        >>> q = F.normalize(torch.randn(4, 8), dim=1)
        >>> loss(q, q, F.normalize(torch.randn(16, 8), dim=1)).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"InfoNCELoss: temperature must be positive, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, q: Tensor, k: Tensor, queue: Tensor) -> Tensor:
        """Mean InfoNCE loss over the batch.

        Args:
            q: (N, D) L2-normalised queries.
            k: (N, D) L2-normalised positive keys.
            queue: (K, D) L2-normalised negative keys.

        Returns:
            Scalar loss.

        Raises:
            ValueError: if the shapes do not fit; the message gives them.
        """
        _check_qkq(type(self).__name__, q, k, queue)
        logits = contrastive_logits(q, k, queue) / self.temperature
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, target)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class NCELoss(nn.Module):
    """NCE estimator of instance discrimination (Wu et al., CVPR 2018) as used by PCRL.

    With ``s = exp(logits / T)`` (positive in column 0, ``K`` queue negatives after it),
    the probabilities are ``P = s / Z``; ``Z`` is set on the first call in training mode to
    ``n_data * mean(s)`` (over the whole first batch, all columns, without gradient; averaged
    over processes when torch.distributed is initialised) and kept in the buffer ``Z`` so
    that it is saved and restored with checkpoints. A call in eval mode before any training
    call uses its own batch's estimate without keeping it. With ``m = K`` noise samples from
    ``Pn = 1/n_data``, the loss is

        ``-(1/N) sum_i [ log(P_i0 / (P_i0 + m Pn + eps))
                         + sum_{j>=1} log(m Pn / (P_ij + m Pn + eps)) ]``

    (the posterior that the positive came from the data and each negative from the noise).

    Two settings differ between the estimator's authors and the PCRL release, and
    :data:`NCE_SETTINGS` names both: ``"intent"`` (default) — ``eps = 1e-7`` and a real-valued
    ``Z``, as in Wu et al.'s instance discrimination; ``"release"`` — ``eps = 1e-5`` and ``Z``
    truncated to an integer (the release keeps it in an integer buffer).

    Args:
        n_data: number of training samples (pairs) of the dataset, ``>= 1``.
        temperature: ``T`` (0.2 in PCRL's 3D release; 0.07 in Wu et al.).
        eps: added to the denominators (1e-7 intent; 1e-5 release).
        integer_z: truncate the estimated ``Z`` towards zero to an integer (release), at
            least 1.

    Attributes:
        Z: buffer holding the normalisation constant; negative until the first call.

    Raises:
        ValueError: if ``n_data < 1`` or ``temperature <= 0``.
    """

    Z: Tensor

    def __init__(
        self, n_data: int, temperature: float = 0.2, eps: float = 1e-7, *, integer_z: bool = False
    ) -> None:
        super().__init__()
        if isinstance(n_data, bool) or not isinstance(n_data, int) or n_data < 1:
            raise ValueError(
                f"NCELoss: n_data must be the number of training samples (>= 1), got {n_data!r}"
            )
        if not temperature > 0:
            raise ValueError(f"NCELoss: temperature must be positive, got {temperature}")
        self.n_data = n_data
        self.temperature = float(temperature)
        if not eps >= 0:
            raise ValueError(f"NCELoss: eps must be >= 0, got {eps}")
        self.eps = float(eps)
        self.integer_z = bool(integer_z)
        self.register_buffer("Z", torch.tensor(-1.0))

    @classmethod
    def from_setting(cls, setting: str, n_data: int, temperature: float = 0.2) -> NCELoss:
        """The loss with the ``eps`` and ``Z`` rule of ``setting`` (a key of :data:`NCE_SETTINGS`)."""
        if setting not in NCE_SETTINGS:
            raise ValueError(f"NCELoss: setting must be one of {sorted(NCE_SETTINGS)}, got {setting!r}")
        eps, integer_z = NCE_SETTINGS[setting]
        return cls(n_data, temperature, eps, integer_z=integer_z)

    @property
    def initialised(self) -> bool:
        """True once ``Z`` has been estimated (from the first batch or a checkpoint)."""
        return bool(self.Z > 0)

    @torch.no_grad()
    def _estimate_z(self, scores: Tensor) -> Tensor:
        z = scores.detach().float().mean() * self.n_data
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(z)
            z /= dist.get_world_size()
        if self.integer_z:
            z = torch.clamp(torch.trunc(z), min=1.0)
        return z

    def forward(self, q: Tensor, k: Tensor, queue: Tensor) -> Tensor:
        """Mean NCE loss over the batch.

        Args:
            q: (N, D) L2-normalised queries.
            k: (N, D) L2-normalised positive keys.
            queue: (K, D) L2-normalised negative keys (``m = K`` noise samples).

        Returns:
            Scalar loss.

        Raises:
            ValueError: if the shapes do not fit; the message gives them.
        """
        _check_qkq(type(self).__name__, q, k, queue)
        scores = torch.exp(contrastive_logits(q, k, queue).float() / self.temperature)
        if self.initialised:
            z = self.Z
        else:
            z = self._estimate_z(scores)
            if self.training:  # frozen from the first training batch; eval does not set it
                self.Z.copy_(z)
        probs = scores / z.to(scores.dtype)
        noise = queue.shape[0] / self.n_data  # m * Pn
        log_d1 = torch.log(probs[:, 0] / (probs[:, 0] + noise + self.eps))
        log_d0 = torch.log(noise / (probs[:, 1:] + noise + self.eps))
        return -(log_d1.sum() + log_d0.sum()) / q.shape[0]

    def extra_repr(self) -> str:
        return (f"n_data={self.n_data}, temperature={self.temperature}, eps={self.eps}, "
                f"integer_z={self.integer_z}")


def reconstruction_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean squared error between a reconstruction and its target (docs/method.md, Models Genesis).

    Args:
        prediction: decoder output (N, C, x, y, z).
        target: target of the same shape.

    Returns:
        Scalar mean over all voxels.

    Raises:
        ValueError: if the shapes differ (no broadcasting); the message gives them.
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"reconstruction_loss: prediction {tuple(prediction.shape)} and target "
            f"{tuple(target.shape)} must have the same shape"
        )
    return F.mse_loss(prediction, target.to(prediction.dtype))
