"""Fine-tuning augmentation: random flips of a batch, drawn from the engine's generator.

Along every axis of a CT/MRI cube or patch (Models Genesis), left-right only for a
radiograph (:func:`flip_dims`). The same flips apply to a segmentation target.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pcrl.tasks import TaskSpec, get_task

__all__ = ["flip_dims", "random_flips"]


def flip_dims(task: TaskSpec | str) -> tuple[int, ...] | None:
    """The batch dimensions that augmentation flips: None (every spatial axis of an
    (N, C, x, y, z) batch) for the 3D tasks; ``(3,)``, the width of an (N, 1, H, W)
    radiograph, i.e. left-right flips only, for Chest14 (a radiograph is not flipped
    upside down)."""
    return (3,) if get_task(task).kind == "multilabel" else None


def random_flips(x: Tensor, generator: torch.Generator, *others: Tensor,
                 dims: Sequence[int] | None = None) -> list[Tensor]:
    """Flip each sample of ``x`` along each of ``dims`` with probability 1/2.

    ``dims`` are batch dimensions, by default every spatial one (2, 3, 4 of an (N, C, x, y,
    z) batch); one draw per sample and dimension, ``(N, len(dims))`` uniforms from
    ``generator`` (on the batch's device). The same flips are applied to every tensor of
    ``others`` (e.g. the segmentation target).

    Returns:
        ``[x, *others]`` flipped.
    """
    axes = tuple(range(2, x.ndim)) if dims is None else tuple(int(d) for d in dims)
    if not axes or any(not 2 <= d < x.ndim for d in axes):
        raise ValueError(f"flip dims {list(axes)} are not spatial dimensions of a {x.ndim}-D batch")
    flips = torch.rand((x.shape[0], len(axes)), generator=generator, device=x.device) < 0.5
    out = [x, *others]
    for column, dim in enumerate(axes):
        mask = flips[:, column].view(-1, *([1] * (x.ndim - 1)))
        out = [torch.where(mask, t.flip(dim), t) for t in out]
    return out
