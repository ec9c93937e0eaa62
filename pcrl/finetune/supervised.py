"""Supervised pretraining on labelled NCC cubes: the known-answer study's positive control.

An encoder trained with the labels of every training scan has, by construction, features
that separate the classes; a low-label probe on it must beat a random init. If it does not,
the study's criterion cannot detect a real gain (pcrl/runners/study.py). The encoder is the same
pretraining network as the other arms (so its weights load the same way); a linear head on
its pooled deepest features is trained with class-balanced BCE, Adam, random flips along
x, y and z.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from pcrl.preprocessing.task_data import CandidateRows, cube_batches

__all__ = ["supervised_pretrain"]


def _load_cubes(rows: CandidateRows) -> tuple[Tensor, Tensor]:
    """Every candidate's cube (N, 1, X, Y, Z) and label (N,) in memory (the study's few hundred)."""
    cubes, labels = zip(*cube_batches(rows, 64))
    return torch.cat(cubes), torch.as_tensor(np.concatenate(labels), dtype=torch.float32)


def supervised_pretrain(encoder: nn.Module, rows: CandidateRows, *, epochs: int, batch_size: int, lr: float,
                        seed: int, device: torch.device | str = "cpu") -> nn.Module:
    """Train ``encoder`` (in place; returned) with a linear head on the labels of ``rows``.

    Args:
        encoder: a network with ``encode(x)`` returning feature maps, deepest last.
        rows: the labelled candidates (both classes).
        epochs: passes over ``rows``.
        batch_size: cubes per step.
        lr: Adam's learning rate.
        seed: the head's init, the order and the flips.
        device: where to train.
    """
    x, y = _load_cubes(rows)
    generator = torch.Generator().manual_seed(seed)
    encoder.to(device).train()
    with torch.no_grad():
        width = encoder.encode(x[:2].to(device))[-1].shape[1]  # type: ignore[operator]
    head = nn.Linear(width, 1).to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head.reset_parameters()
    params = [p for p in encoder.parameters() if p.requires_grad] + list(head.parameters())
    optimiser = torch.optim.Adam(params, lr=lr)
    positives = float(y.sum())
    pos_weight = torch.tensor((len(y) - positives) / max(positives, 1.0), device=device)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y) - 1, batch_size):
            index = order[start:start + batch_size]
            if len(index) < 2:  # batch norm needs two samples
                continue
            batch = x[index]
            flips = torch.rand(3, generator=generator) < 0.5
            dims = [d + 2 for d in range(3) if flips[d]]
            if dims:
                batch = batch.flip(dims)
            features = encoder.encode(batch.to(device))[-1].flatten(2).mean(dim=2)  # type: ignore[operator]
            loss = loss_fn(head(features).squeeze(1), y[index].to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return encoder.eval()
