"""The PCRL corruption chain: local shuffling -> non-linear intensity -> painting."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from pcrl.errors import ConfigError
from pcrl.transforms._checks import _check_batch, _check_generator
from pcrl.transforms.intensity import bezier_intensity
from pcrl.transforms.painting import paint
from pcrl.transforms.shuffle import local_pixel_shuffle

__all__ = ["CorruptionConfig", "corrupt"]


@dataclass(frozen=True)
class CorruptionConfig:
    """Probabilities of the PCRL corruption chain (docs/method.md "Views, corruptions and targets").

    Attributes:
        shuffle_prob: probability of local pixel shuffling (release 0.5).
        shuffle_coverage: fraction of shuffling blocks that are shuffled (see
            :func:`local_pixel_shuffle`).
        shuffle_max_block_fraction: largest shuffling block side / volume side (1/10).
        nonlinear_prob: probability of the Bezier intensity transform (release 0: off;
            Models Genesis 0.9).
        paint_prob: probability of painting (release 0.9).
        inpaint_prob: probability that painting is in-painting rather than out-painting
            (release 0.2).
    """

    shuffle_prob: float = 0.5
    shuffle_coverage: float = 0.8
    shuffle_max_block_fraction: float = 0.1
    nonlinear_prob: float = 0.0
    paint_prob: float = 0.9
    inpaint_prob: float = 0.2

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"{field.name}: must be a number in [0, 1]; got {value!r}")


def corrupt(x: Tensor, config: CorruptionConfig, generator: torch.Generator) -> Tensor:
    """The PCRL corruption chain: local shuffling -> non-linear intensity -> painting.

    docs/method.md "Views, corruptions and targets", rules of Models Genesis. The non-linear
    transform is skipped (and draws nothing) when ``config.nonlinear_prob`` is 0.

    Args:
        x: (N, C, x, y, z) batch in [0, 1] (usually after :func:`augment`).
        config: probabilities of each corruption.
        generator: randomness, on ``x.device``.

    Returns:
        The corrupted batch (a new tensor).
    """
    _check_batch(x)
    _check_generator(generator, x.device)
    out = local_pixel_shuffle(
        x, generator,
        prob=config.shuffle_prob, coverage=config.shuffle_coverage,
        max_block_fraction=config.shuffle_max_block_fraction,
    )  # fmt: skip
    if config.nonlinear_prob > 0:
        out = bezier_intensity(out, generator, prob=config.nonlinear_prob)
    return paint(out, generator, prob=config.paint_prob, inpaint_prob=config.inpaint_prob)
