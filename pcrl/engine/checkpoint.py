"""Training checkpoints: where they live, how they are read, written and checked.

``<out_dir>/checkpoints/last.pt`` is rewritten atomically (rank 0) after every epoch and
copied to ``epoch_XXX.pt`` every ``checkpoint_every`` epochs. It holds tensors and plain
Python values only and is always loaded with ``weights_only=True``. A resumed run must
use the settings that change the result (``_RESUME_FIELDS``, the dataset size and the
resolved AMP mode) unchanged.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pcrl.atomic import atomic_path
from pcrl.engine.config import TrainConfig
from pcrl.errors import ConfigError, DataError
from pcrl.torchfile import load_checked, save_checked

__all__ = ["CHECKPOINT_DIR", "CHECKPOINT_FORMAT", "LAST_NAME", "last_checkpoint",
           "load_checkpoint"]

CHECKPOINT_FORMAT = 1
CHECKPOINT_DIR = "checkpoints"
LAST_NAME = "last.pt"
# Settings that change the result: a resumed run must use the same values.
_RESUME_FIELDS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "seed",
                  "max_grad_norm", "min_steps_per_epoch")
_CHECKPOINT_KEYS = ("format", "epoch", "step", "method", "optimizer", "scheduler", "scaler",
                    "generator_state", "sampler", "partial_sums", "metrics", "config", "amp")


def last_checkpoint(out_dir: str | Path) -> Path:
    """The path of the checkpoint a run in ``out_dir`` resumes from."""
    return Path(out_dir) / CHECKPOINT_DIR / LAST_NAME


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a training checkpoint on the CPU, never executing code (``weights_only=True``).

    Args:
        path: A checkpoint written by :func:`~pcrl.engine.train`.

    Returns:
        The checkpoint dict ("method", "optimizer", "scheduler", "scaler", "epoch",
        "step", "generator_state", "sampler", "metrics", "config", ...).

    Raises:
        DataError: Naming the file if it is missing, truncated, not a checkpoint of this
            engine, or would need code execution to load.
    """
    path = Path(path)
    checkpoint = load_checked(path, "training checkpoint")
    missing = [key for key in _CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise DataError(f"{path}: not a pcrl training checkpoint (missing {missing})")
    if checkpoint["format"] != CHECKPOINT_FORMAT:
        raise DataError(f"{path}: checkpoint format {checkpoint['format']} is not "
                        f"{CHECKPOINT_FORMAT}")
    return checkpoint


def _write_checkpoint(checkpoint: Mapping[str, Any], last: Path, every: int) -> None:
    """Write ``checkpoint`` to ``last`` atomically; copy it to ``epoch_XXX.pt`` at the end
    of every ``every``-th epoch (``step`` 0)."""
    save_checked(checkpoint, last)
    epoch, step = checkpoint["epoch"], checkpoint["step"]
    if step == 0 and epoch % every == 0:
        with atomic_path(last.with_name(f"epoch_{epoch:03d}.pt")) as tmp:
            shutil.copyfile(last, tmp)


def _check_compatible(checkpoint: Mapping[str, Any], path: Path, config: TrainConfig,
                      dataset_size: int, amp: str) -> None:
    """Refuse to resume from ``checkpoint`` (at ``path``) with settings that would change
    the result.

    Raises:
        ConfigError: Listing every setting that differs.
    """
    saved = checkpoint["config"]
    differ = [f"{name}: {saved.get(name)!r} -> {getattr(config, name)!r}"
              for name in _RESUME_FIELDS if saved.get(name) != getattr(config, name)]
    saved_size = checkpoint["sampler"].get("dataset_size")
    if saved_size != dataset_size:
        differ.append(f"training pairs: {saved_size} -> {dataset_size}")
    if checkpoint["amp"] != amp:
        differ.append(f"amp (resolved): {checkpoint['amp']!r} -> {amp!r}")
    if differ:
        raise ConfigError(f"{path}: cannot resume with changed settings ("
                          + "; ".join(differ) + "); delete the checkpoints to restart")
