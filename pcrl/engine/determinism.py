"""Deterministic algorithms for the duration of a training run (``TrainConfig.deterministic``).

Bit-exact results on a GPU need torch's deterministic algorithms and cuDNN's deterministic,
non-benchmarking kernels; the flags are process-wide, so they are set for the run only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

__all__ = ["determinism"]


@contextlib.contextmanager
def determinism(enabled: bool) -> Iterator[None]:
    """Deterministic algorithms and cuDNN flags for the block when ``enabled``; the
    process's previous settings are restored afterwards. cuBLAS needs a fixed workspace
    for deterministic matrix products (CUBLAS_WORKSPACE_CONFIG, set if absent)."""
    if not enabled:
        yield
        return
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[1], saved[2]
