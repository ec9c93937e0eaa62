"""The settings every pretraining method shares, checked in one place.

All three methods (PCRL, Zhou et al., ICCV 2021; Models Genesis; MoCo v2) train the same
network (``arch``, ``in_channels``, ``base``, ``norm``: :mod:`pcrl.networks.factory`) on
the same augmented and corrupted views (``corruption``, ``augment``: docs/method.md
"Protocol", same inputs for every method). PCRL and MoCo v2 add the momentum-contrast
settings of MoCo (He et al., CVPR 2020): projection size, queue of negative keys,
temperature and the momentum encoder's EMA. Each method's config adds only its own fields.

Fields are keyword-only: ``PCRLConfig(base=4, ...)``; the names are those of params.yaml.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pcrl.errors import ConfigError
from pcrl.methods.momentum import MomentumScheduleName, check_momentum_settings
from pcrl.methods.views import ViewConfig
from pcrl.networks.blocks import require_positive_int
from pcrl.networks.factory import Arch, check_arch
from pcrl.networks.unet3d import NormName
from pcrl.transforms import CorruptionConfig

__all__ = ["ContrastiveConfig", "MethodConfig"]


@dataclass(frozen=True, kw_only=True)
class MethodConfig:
    """Settings shared by every method: the network and the views.

    Attributes:
        in_channels: image channels (1 for CT and radiographs).
        arch: ``"unet3d"`` (the LUNA16 setting, default) or ``"resnet18_unet2d"`` (the
            ChestX-ray14 setting; batches (N, C, x, y), 6-entry codes).
        base: U-Net base width (32 in the paper; e.g. 4 in tests); the ResNet-18's width in 2D (64).
        norm: ``"batch"`` (release), ``"group"`` or ``"instance"``.
        corruption: settings of :func:`pcrl.transforms.corrupt`.
        augment: keyword arguments of :func:`pcrl.transforms.augment`.

    Raises:
        ConfigError: naming the config and the field (``PCRLConfig.base ...``), on an
            invalid value.
    """

    #: Fields that must be positive integers, checked in this order.
    positive_fields: ClassVar[tuple[str, ...]] = ("in_channels", "base")

    in_channels: int = 1
    arch: Arch = "unet3d"
    base: int = 32
    norm: NormName = "batch"
    corruption: CorruptionConfig = field(default_factory=CorruptionConfig)
    augment: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for name in self.positive_fields:
            require_positive_int(f"{owner}.{name}", getattr(self, name))
        check_arch(self.arch, f"{owner}.arch")
        self.check()
        try:
            self.views  # noqa: B018 - validates corruption, augment (and the subclass's view fields)
        except ConfigError as exc:
            raise ConfigError(f"{owner}.{exc}") from None

    def check(self) -> None:
        """The subclass's own checks, after the shared ones and before the views' (none here)."""

    @property
    def views(self) -> ViewConfig:
        """The :class:`ViewConfig` of these settings (no spatial transform)."""
        return ViewConfig(corruption=self.corruption, augment=self.augment, spatial=False)


@dataclass(frozen=True, kw_only=True)
class ContrastiveConfig(MethodConfig):
    """Settings shared by the momentum-contrast methods (PCRL, MoCo v2).

    Attributes:
        proj_dim: projection dimension (128).
        queue_size: number of negative keys (16384).
        temperature: contrastive temperature (0.2).
        momentum: EMA coefficient of the momentum encoder per step (0.999 in the release);
            the start of the ramp with ``momentum_schedule="cosine"``.
        momentum_schedule: ``"constant"`` (the release) or ``"cosine"`` (from ``momentum``
            to 1 over the run, BYOL); see :class:`~pcrl.methods.momentum.MomentumSchedule`.
        momentum_steps: the run's optimiser steps (set by the pretrain stage; needed by
            ``cosine``, and by the rule of :data:`~pcrl.methods.momentum.TIME_CONSTANT_SHARE`).
        shuffle_positives: the study's negative control: each query's positive key is the
            key of another sample of the batch (rolled by one), so the contrastive term
            carries no information about the sample.
        shuffle_bn: shuffle the batch around the momentum encoder (MoCo's shuffling BN).

    Raises:
        ConfigError: naming the config and the field, on an invalid value.
    """

    positive_fields: ClassVar[tuple[str, ...]] = ("in_channels", "base", "proj_dim", "queue_size")

    proj_dim: int = 128
    queue_size: int = 16384
    temperature: float = 0.2
    momentum: float = 0.999
    momentum_schedule: MomentumScheduleName = "constant"
    momentum_steps: int | None = None
    shuffle_positives: bool = False
    shuffle_bn: bool = True

    def check(self) -> None:
        """Positive temperature and consistent momentum settings."""
        owner = type(self).__name__
        if not self.temperature > 0:
            raise ConfigError(f"{owner}.temperature must be positive, got {self.temperature!r}")
        check_momentum_settings(owner, self.momentum, self.momentum_schedule, self.momentum_steps)
