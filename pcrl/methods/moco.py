"""MoCo v2 baseline: contrastive only (He et al., CVPR 2020; Chen et al., arXiv 2003.04297).

The contrastive half of PCRL on the same backbone (docs/method.md "Protocol": "contrastive
baselines (MoCo v2 style)"): the encoder of :class:`~pcrl.networks.pcrl_net.PCRLNet3D`
and its projection head give the query of view 1; a momentum copy with shuffled BN gives
the key of view 2; InfoNCE against a queue of past keys (T = 0.2, K = 16384, m = 0.999).
The decoder and the TCA layers exist (so that checkpoints have PCRL's keys) but are
frozen: no term uses them, and frozen parameters keep DistributedDataParallel and weight
decay from touching them.

Inputs are the augmented and corrupted views by default, the same inputs as PCRL's
contrastive branch, so that the two methods differ only by the preservational terms;
``corrupt=False`` gives the augmented views alone.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pcrl.errors import ConfigError
from pcrl.methods.config import ContrastiveConfig
from pcrl.methods.losses import InfoNCELoss, contrastive_accuracy
from pcrl.methods.momentum import KeyQueue, MomentumSchedule, forward_shuffled
from pcrl.methods.views import augment_and_corrupt
from pcrl.networks.factory import DECODER_PREFIXES, pretraining_network

__all__ = ["MoCoConfig", "MoCoV2"]


@dataclass(frozen=True, kw_only=True)
class MoCoConfig(ContrastiveConfig):
    """Settings of :class:`MoCoV2`: those of :class:`~pcrl.methods.config.ContrastiveConfig`
    (network, views, projection, queue, temperature 0.2 as MoCo v2, momentum) and:

    Attributes:
        corrupt: feed the corrupted views (True, as PCRL) or the augmented views only.

    Raises:
        ConfigError: naming the field, on an invalid value.
    """

    corrupt: bool = True


class MoCoV2(nn.Module):
    """MoCo v2 pretraining on PCRL's encoder and projection head.

    Args:
        config: settings (see :class:`MoCoConfig`).
        generator: draws the initial queue keys; None uses a CPU generator seeded with 0.

    Attributes:
        student: the query network (decoder and TCA frozen).
        momentum_encoder: its EMA copy (no gradient).
        queue: negative keys.
        contrastive: the InfoNCE loss.
    """

    def __init__(self, config: MoCoConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not isinstance(config, MoCoConfig):
            raise ConfigError(f"MoCoV2 needs a MoCoConfig, got {type(config).__name__}")
        self.config = config
        self.student = pretraining_network(
            config.arch, in_channels=config.in_channels, base=config.base, norm=config.norm,
            proj_dim=config.proj_dim,
        )
        for name, module in self.student.named_children():
            if name.startswith((*DECODER_PREFIXES[config.arch], "aug_fc")):
                module.requires_grad_(False)
        self.momentum_encoder = copy.deepcopy(self.student).requires_grad_(False)
        self.queue = KeyQueue(config.queue_size, config.proj_dim, generator=generator)
        self.ema = MomentumSchedule(config.momentum, config.momentum_schedule, config.momentum_steps)
        self.contrastive = InfoNCELoss(config.temperature)

    def _inputs(self, x: Tensor, generator: torch.Generator) -> Tensor:
        clean, corrupted = augment_and_corrupt(x, self.config.views, generator)
        return corrupted if self.config.corrupt else clean

    def forward(self, x1: Tensor, x2: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """One step's loss: InfoNCE(q(view 1), k(view 2), queue); keys enqueued once (training).

        Args:
            x1, x2: (N, C, x, y, z) clean pairs in [0, 1].
            generator: torch.Generator on the batch's device.

        Returns:
            ``loss`` and ``contrastive`` (the same scalar); ``con_acc`` (positive key ranked
            first among the queue), ``queue_fill`` (share of real keys in the queue) and
            ``ema_momentum`` (the coefficient of the coming EMA update), no gradient.

        Raises:
            ValueError: if ``x1`` and ``x2`` differ in shape.
        """
        if x1.shape != x2.shape:
            raise ValueError(
                f"x1 and x2 must have the same shape, got {tuple(x1.shape)} and {tuple(x2.shape)}"
            )
        input1 = self._inputs(x1, generator)
        input2 = self._inputs(x2, generator)
        negatives = self.queue.keys.clone()
        key_net = self.momentum_encoder

        def keys(batch: Tensor) -> list[Tensor]:
            return [key_net.project(key_net.encode(batch)[-1])]

        with torch.no_grad():
            k = forward_shuffled(keys, input2, generator)[0] if self.config.shuffle_bn else keys(input2)[0]
            if self.config.shuffle_positives:  # negative control: another sample's key is the positive
                k = k.roll(1, dims=0)
        q = self.student.project(self.student.encode(input1)[-1])
        loss = self.contrastive(q, k, negatives)
        readable = {"con_acc": contrastive_accuracy(q.detach(), k, negatives), "queue_fill": self.queue.fill,
                    "ema_momentum": torch.tensor(self.ema.current)}
        if self.training:  # validation leaves the queue as it is
            self.queue.enqueue(k)
        return {"loss": loss, "contrastive": loss, **readable}

    @torch.no_grad()
    def preview(self, x1: Tensor, x2: Tensor, generator: torch.Generator) -> None:
        """MoCo v2 reconstructs nothing: no preview."""
        return None

    def after_step(self) -> None:
        """EMA update of the momentum encoder (call after the optimiser step)."""
        self.ema.update(self.student, self.momentum_encoder)

    def encoder_state_dict(self) -> dict[str, Tensor]:
        """The student's weights under the release's key names."""
        return dict(self.student.state_dict())
