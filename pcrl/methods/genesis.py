"""Models Genesis baseline: restoration only (Zhou et al., MICCAI 2019 / MedIA 2021).

The Models Genesis 3D U-Net (:class:`~pcrl.networks.unet3d.UNet3D`) restores the clean
view from its corrupted version (local pixel shuffling, in-/out-painting, optionally the
Bezier intensity curve) with a mean-squared error; there is no contrastive term, no
momentum encoder and no spatial transform of the target (docs/method.md "Protocol":
"Models Genesis (restoration only)"). The two crops of a pretraining pair are used as
two independent samples, so a step sees ``2N`` volumes, the same data as a PCRL step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pcrl.errors import ConfigError
from pcrl.methods.config import MethodConfig
from pcrl.methods.losses import reconstruction_loss
from pcrl.methods.views import augment_and_corrupt
from pcrl.networks.factory import restoration_network

__all__ = ["Genesis", "GenesisConfig"]


@dataclass(frozen=True, kw_only=True)
class GenesisConfig(MethodConfig):
    """Settings of :class:`Genesis`: those of :class:`~pcrl.methods.config.MethodConfig`, no more.

    ``corruption``: Models Genesis itself used the non-linear intensity transform
    (``nonlinear_prob=0.9``); the default here is PCRL's chain, so the two methods see the
    same inputs.

    Raises:
        ConfigError: naming the field, on an invalid value.
    """


class Genesis(nn.Module):
    """Models Genesis pretraining: MSE between U-Net(corrupted view) and the clean view.

    Args:
        config: settings (see :class:`GenesisConfig`).

    Attributes:
        net: the U-Net (sigmoid output), whose weights are the pretrained model.
    """

    def __init__(self, config: GenesisConfig) -> None:
        super().__init__()
        if not isinstance(config, GenesisConfig):
            raise ConfigError(f"Genesis needs a GenesisConfig, got {type(config).__name__}")
        self.config = config
        self.net = restoration_network(config.arch, in_channels=config.in_channels, base=config.base,
                                       norm=config.norm)

    def forward(self, x1: Tensor, x2: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """One training step's loss on the ``2N`` crops of a batch of pairs.

        Args:
            x1, x2: (N, C, x, y, z) clean crops in [0, 1].
            generator: torch.Generator on the batch's device (augmentation, corruption).

        Returns:
            ``loss`` and ``reconstruction`` (the same scalar).

        Raises:
            ValueError: if ``x1`` and ``x2`` differ in shape.
        """
        if x1.shape != x2.shape:
            raise ValueError(
                f"x1 and x2 must have the same shape, got {tuple(x1.shape)} and {tuple(x2.shape)}"
            )
        clean, corrupted = augment_and_corrupt(torch.cat((x1, x2)), self.config.views, generator)
        mse = reconstruction_loss(self.net(corrupted), clean)
        return {"loss": mse, "reconstruction": mse}

    @torch.no_grad()
    def preview(self, x1: Tensor, x2: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """The restoration of view 1 for a look: clean, input (corrupted), target, output."""
        clean, corrupted = augment_and_corrupt(x1, self.config.views, generator)
        return {"clean": clean, "input": corrupted, "target": clean, "output": self.net(corrupted)}

    def after_step(self) -> None:
        """Nothing to do: Models Genesis has no momentum encoder."""

    def encoder_state_dict(self) -> dict[str, Tensor]:
        """The U-Net's weights under the release's key names (``down_tr64``, ``up_tr256``...)."""
        return dict(self.net.state_dict())
