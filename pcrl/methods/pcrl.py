"""PCRL: preservational contrastive representation learning (Zhou et al., ICCV 2021).

The method is assembled from parts (docs/method.md "Networks", "One training step"):

* a student :class:`~pcrl.networks.pcrl_net.PCRLNet3D` (encoder, decoder, projection head
  ``fc1/fc2``, TCA ``aug_fc1/aug_fc2``) trained by SGD;
* a momentum copy of it (no gradient), updated by :func:`update_momentum` in
  :meth:`PCRL.after_step`;
* a :class:`KeyQueue` of past momentum keys;
* a contrastive loss (:class:`NCELoss`, the release's, default; or :class:`InfoNCELoss`)
  and the MSE reconstruction loss.

One step (:meth:`PCRL.forward`), on the views of :func:`make_views`:

1. ``k`` and the momentum features (4 levels) = momentum encoder(input2), shuffled BN, no
   gradient.
2. The student encodes input1: ``q`` = projection of the deepest map; plain reconstruction
   = decode(student features, deepest gated by TCA(c1)) vs ``target1``; hybrid
   reconstruction = decode(alpha1 * student + (1 - alpha1) * momentum, level by level, the
   momentum deepest gated by TCA(c2)) vs ``alpha1 * target1 + (1 - alpha1) * target2``;
   contrastive(q, k).
3. Batch mixup (lambda, permutation) of input1, input2, the targets and k; steps 1-2 again
   on the mixed batch with a new alpha2 and without TCA; contrastive(mixed q, momentum
   keys of mixed input2) and contrastive(mixed q, mixture of k).
4. loss = mean of the contrastive terms + mean of the reconstruction terms (1:1).

The step's keys ``k`` are enqueued once, at the end (the release enqueued three times).

Choices where the release and the paper leave room (each documented at its place):

* both TCA gates come from the student's ``aug_fc`` layers (the momentum copy's are unused);
* the mixup pass has no TCA, so its targets are the untransformed *clean* views in both
  target modes (``target="release"`` corrupts only the TCA passes' targets: the release
  reconstructs the raw crops in its mixup pass), mixed after the augmentation, aligned with
  the mixed inputs (the release mixed copies taken before the augmentation: docs/method.md
  "Known defects");
* the mixture of keys ``lam * k + (1 - lam) * k[perm]`` is re-normalised to unit length
  before the loss, like every other key; the mixture of the vectors ``q`` is not needed by
  any of the three terms and is not formed;
* ablation ``tca=False`` removes the gates *and* the spatial transforms of the targets
  (identity codes): without a code the decoder cannot know which transform to produce.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcrl.errors import ConfigError
from pcrl.methods.config import ContrastiveConfig
from pcrl.methods.losses import NCE_SETTINGS, InfoNCELoss, NCELoss, contrastive_accuracy, reconstruction_loss
from pcrl.methods.momentum import KeyQueue, MomentumSchedule, forward_shuffled
from pcrl.methods.views import (
    TargetMode,
    ViewConfig,
    draw_mixup,
    folded_uniform,
    make_views,
)
from pcrl.networks.blocks import require_positive_int
from pcrl.networks.factory import pretraining_network

__all__ = ["CONTRASTIVE_TERMS", "PCRL", "PCRLConfig", "READABLE_TERMS", "RECONSTRUCTION_TERMS", "ContrastiveLoss"]

ContrastiveLoss = Literal["nce", "infonce"]

#: Names of the contrastive terms returned by :meth:`PCRL.forward` (when enabled).
CONTRASTIVE_TERMS = ("con_plain", "con_mix", "con_mix_k")
#: Names of the reconstruction (MSE) terms returned by :meth:`PCRL.forward` (when enabled).
RECONSTRUCTION_TERMS = ("mse_plain", "mse_hybrid", "mse_mix_plain", "mse_mix_hybrid")
#: Gauges without gradient returned by :meth:`PCRL.forward`, logged with the losses.
READABLE_TERMS = ("con_acc", "queue_fill", "ema_momentum")


@dataclass(frozen=True, kw_only=True)
class PCRLConfig(ContrastiveConfig):
    """Settings of :class:`PCRL` (docs/method.md "Networks" and "One training step"): those of
    :class:`~pcrl.methods.config.ContrastiveConfig` (network, views, projection, queue,
    temperature, momentum) and:

    Attributes:
        loss: ``"nce"`` (default: the release's NCE estimator; the spec names no other
            intent) or ``"infonce"`` (MoCo v2's softmax).
        n_data: number of training samples (pairs); required by ``loss="nce"``.
        nce: ``"intent"`` (default: ``eps`` 1e-7, real ``Z``, Wu et al.) or ``"release"``
            (``eps`` 1e-5, integer ``Z``); see :class:`NCELoss`.
        target: ``"intent"`` (default) or ``"release"`` reconstruction targets.
        tca: transformation-conditioned attention (and transformed targets) on; off, the
            ``aug_fc`` layers are frozen (``requires_grad`` False).
        hybrid: hybrid-encoder reconstruction terms on.
        mixup: batch-mixup pass on.

    Raises:
        ConfigError: naming the field, on an invalid value.
    """

    loss: ContrastiveLoss = "nce"
    n_data: int | None = None
    nce: Literal["intent", "release"] = "intent"
    target: TargetMode = "intent"
    tca: bool = True
    hybrid: bool = True
    mixup: bool = True

    def check(self) -> None:
        """The shared contrastive checks, then the loss, NCE setting and ``n_data``."""
        super().check()
        if self.loss not in get_args(ContrastiveLoss):
            raise ConfigError(
                f"PCRLConfig.loss must be one of {get_args(ContrastiveLoss)}, got {self.loss!r}"
            )
        if self.nce not in NCE_SETTINGS:
            raise ConfigError(f"PCRLConfig.nce must be one of {sorted(NCE_SETTINGS)}, got {self.nce!r}")
        if self.loss == "nce":
            if self.n_data is None:
                raise ConfigError(
                    "PCRLConfig.n_data: loss 'nce' needs the number of training samples (pairs)"
                )
            require_positive_int("PCRLConfig.n_data", self.n_data)

    @property
    def views(self) -> ViewConfig:
        """The :class:`ViewConfig` of these settings (validates ``target`` too)."""
        return ViewConfig(
            target=self.target, corruption=self.corruption, augment=self.augment, spatial=self.tca
        )


def _mix_levels(a: Sequence[Tensor], b: Sequence[Tensor], alpha: Tensor) -> list[Tensor]:
    """Level-by-level ``alpha * a + (1 - alpha) * b`` (PCRL's hybrid encoder)."""
    return [alpha.to(x.dtype) * x + (1.0 - alpha.to(x.dtype)) * y for x, y in zip(a, b, strict=True)]


def _gate_deepest(features: Sequence[Tensor], gate: Tensor | None) -> list[Tensor]:
    """The features with the deepest map multiplied by a TCA gate (unchanged if None)."""
    if gate is None:
        return list(features)
    return [*features[:-1], features[-1] * gate.to(features[-1].dtype)]


def _mean(terms: Sequence[Tensor]) -> Tensor:
    return torch.stack(list(terms)).mean()


class PCRL(nn.Module):
    """PCRL pretraining method: one training step's losses in :meth:`forward`.

    Args:
        config: settings (see :class:`PCRLConfig`).
        generator: draws the initial queue keys; None uses a CPU generator seeded with 0.

    Attributes:
        student: the network trained by SGD (its weights are the pretrained model).
        momentum_encoder: its EMA copy; ``requires_grad`` False everywhere.
        queue: negative keys.
        contrastive: the contrastive loss module (holds NCE's ``Z`` buffer).

    Example:
        >>> method = PCRL(PCRLConfig(base=4, queue_size=16, loss="infonce"))
        >>> x = torch.rand(4, 1, 16, 16, 8)
        >>> out = method(x, x, torch.Generator().manual_seed(0))
        >>> out["loss"].backward(); method.after_step()
    """

    def __init__(self, config: PCRLConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not isinstance(config, PCRLConfig):
            raise ConfigError(f"PCRL needs a PCRLConfig, got {type(config).__name__}")
        self.config = config
        self.student = pretraining_network(
            config.arch, in_channels=config.in_channels, base=config.base, norm=config.norm,
            proj_dim=config.proj_dim,
        )
        if not config.tca:  # unused: frozen, so that DDP and weight decay leave them alone
            self.student.aug_fc1.requires_grad_(False)
            self.student.aug_fc2.requires_grad_(False)
        self.momentum_encoder = copy.deepcopy(self.student).requires_grad_(False)
        self.queue = KeyQueue(config.queue_size, config.proj_dim, generator=generator)
        self.ema = MomentumSchedule(config.momentum, config.momentum_schedule, config.momentum_steps)
        self.contrastive: nn.Module = (
            NCELoss.from_setting(config.nce, config.n_data, config.temperature)  # type: ignore[arg-type]
            if config.loss == "nce"
            else InfoNCELoss(config.temperature)
        )

    @torch.no_grad()
    def _momentum_forward(
        self, x: Tensor, generator: torch.Generator, *, features: bool
    ) -> tuple[Tensor, list[Tensor]]:
        """Keys (and the 4 feature maps if ``features``) of the momentum encoder, no gradient.

        With ``shuffle_bn`` the batch is shuffled before and the outputs unshuffled after
        (across processes when distributed: the feature maps are then all-gathered, so
        ``features=False`` is passed when they are not needed).
        """
        net = self.momentum_encoder

        def run(batch: Tensor) -> list[Tensor]:
            feats = net.encode(batch)
            return [net.project(feats[-1]), *(feats if features else [])]

        outs = forward_shuffled(run, x, generator) if self.config.shuffle_bn else run(x)
        return outs[0], outs[1:]

    def forward(self, x1: Tensor, x2: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """One training step's losses (docs/method.md "One training step").

        Draws from ``generator``, in order: the views (:func:`make_views`), the momentum
        shuffle, alpha1; then lambda and the mixup permutation, the second shuffle, alpha2.

        Args:
            x1, x2: (N, C, x, y, z) clean pairs in [0, 1] (N >= 2 for mixup and BN).
            generator: torch.Generator on the batch's device.

        Returns:
            ``loss`` (to backpropagate), ``contrastive`` and ``reconstruction`` (the two
            means), the enabled terms among :data:`CONTRASTIVE_TERMS` and
            :data:`RECONSTRUCTION_TERMS`, and two readable gauges without gradient:
            ``con_acc`` (plain pass: positive key ranked first among the queue) and
            ``queue_fill`` (share of the queue holding real keys, before this step's), and
            ``ema_momentum`` (the EMA coefficient of the coming update); all
            scalars. In training mode the step's keys are
            enqueued; in eval mode (validation) the queue is left as it is.
        """
        cfg = self.config
        net = self.student
        views = make_views(x1, x2, cfg.views, generator)
        negatives = self.queue.keys.clone()  # the queue is written in place below
        terms: dict[str, Tensor] = {}

        # (1) keys and momentum features of view 2.
        k, feats_k = self._momentum_forward(views.input2, generator, features=cfg.hybrid)
        if cfg.shuffle_positives:  # negative control: another sample's key is the positive
            k = k.roll(1, dims=0)
        # (2) student on view 1: contrastive, plain and hybrid reconstruction.
        feats_q = net.encode(views.input1)
        q = net.project(feats_q[-1])
        gated_q = _gate_deepest(feats_q, net.tca_gate(views.codes1) if cfg.tca else None)
        terms["con_plain"] = self.contrastive(q, k, negatives)
        readable = {"con_acc": contrastive_accuracy(q.detach(), k, negatives), "queue_fill": self.queue.fill,
                    "ema_momentum": torch.tensor(self.ema.current)}
        terms["mse_plain"] = reconstruction_loss(net.decode(gated_q), views.target1)
        if cfg.hybrid:
            alpha1 = folded_uniform(generator, x1.device)
            gated_k = _gate_deepest(feats_k, net.tca_gate(views.codes2) if cfg.tca else None)
            hybrid = net.decode(_mix_levels(gated_q, gated_k, alpha1))
            target = alpha1 * views.target1 + (1.0 - alpha1) * views.target2
            terms["mse_hybrid"] = reconstruction_loss(hybrid, target)

        # (3) batch mixup; the same pass on the mixed batch, without TCA.
        if cfg.mixup:
            mix = draw_mixup(x1.shape[0], generator, x1.device)
            # The mixup pass reconstructs the clean views in both target modes: the release
            # mixes the raw crops there (docs/method.md "One training step"); its corrupted
            # views would make this term an identity.
            base1, base2 = mix(views.clean1), mix(views.clean2)
            k_mix, feats_k_mix = self._momentum_forward(mix(views.input2), generator, features=cfg.hybrid)
            if cfg.shuffle_positives:
                k_mix = k_mix.roll(1, dims=0)
            feats_q_mix = net.encode(mix(views.input1))
            q_mix = net.project(feats_q_mix[-1])
            terms["con_mix"] = self.contrastive(q_mix, k_mix, negatives)
            terms["con_mix_k"] = self.contrastive(q_mix, F.normalize(mix(k), dim=1), negatives)
            terms["mse_mix_plain"] = reconstruction_loss(net.decode(feats_q_mix), base1)
            if cfg.hybrid:
                alpha2 = folded_uniform(generator, x1.device)
                hybrid = net.decode(_mix_levels(feats_q_mix, feats_k_mix, alpha2))
                target = alpha2 * base1 + (1.0 - alpha2) * base2
                terms["mse_mix_hybrid"] = reconstruction_loss(hybrid, target)

        # (4) 1:1 weighting of the two means; enqueue this step's keys once (training only).
        contrastive = _mean([terms[n] for n in CONTRASTIVE_TERMS if n in terms])
        reconstruction = _mean([terms[n] for n in RECONSTRUCTION_TERMS if n in terms])
        if self.training:
            self.queue.enqueue(k)
        return {
            "loss": contrastive + reconstruction,
            "contrastive": contrastive,
            "reconstruction": reconstruction,
            **terms,
            **readable,
        }

    @torch.no_grad()
    def preview(self, x1: Tensor, x2: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """The plain reconstruction of view 1 for a look: clean, input, target, output.

        Uses the same views as :meth:`forward` (augmentation, corruption, TCA-conditioned
        decoding of the transformed target); no loss, no queue update.
        """
        net = self.student
        views = make_views(x1, x2, self.config.views, generator)
        feats = net.encode(views.input1)
        gate = net.tca_gate(views.codes1) if self.config.tca else None
        output = net.decode(_gate_deepest(feats, gate))
        return {"clean": views.clean1, "input": views.input1, "target": views.target1, "output": output}

    @torch.no_grad()
    def after_step(self) -> None:
        """EMA update of the momentum encoder (call after the optimiser step)."""
        self.ema.update(self.student, self.momentum_encoder)

    def encoder_state_dict(self) -> dict[str, Tensor]:
        """The student's weights under the release's key names (``down_tr64...``, ``fc1``...)."""
        return dict(self.student.state_dict())
