"""What the engine reports while it trains (rank 0): the engine's logger, tqdm, dvclive.

A tqdm bar per epoch, and dvclive under ``<out_dir>/live`` with the epoch mean of every
loss term (``train/<term>``), ``train/lr`` and ``train/samples_per_s``, one dvclive step
per epoch (step = epoch number).

This module is ``pcrl.engine.logging``; with absolute imports ``import logging`` below is
the standard library's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from pcrl.errors import OutputWriteError

__all__ = ["close_live", "epoch_bar", "log", "log_epoch", "next_live_step", "open_live"]

#: The engine's logger; every submodule logs under the package's name.
log = logging.getLogger("pcrl.engine")


def open_live(out_dir: Path, resuming: bool, enabled: bool) -> Any:
    """The dvclive logger writing to ``<out_dir>/live`` (None unless ``enabled``)."""
    if not enabled:
        return None
    import sqlite3

    from dvclive import Live  # heavy import, only where logging happens

    try:
        return Live(dir=str(out_dir / "live"), resume=resuming, save_dvc_exp=False,
                    dvcyaml=None)
    except sqlite3.OperationalError as exc:  # DVC's index, written beside the repository
        raise OutputWriteError(f"{out_dir / 'live'}: cannot write dvclive's DVC index: {exc} "
                               "(disk full or file size limit?)") from exc


def close_live(live: Any) -> None:
    """End the dvclive log (no-op without one)."""
    if live is not None:
        live.end()


def log_epoch(live: Any, epoch: int, epochs: int, metrics: Mapping[str, float]) -> None:
    """Record a completed epoch's metrics in dvclive (step = epoch) and the log."""
    if live is not None:
        live.step = epoch
        for name, value in metrics.items():
            live.log_metric(name, value)
    log.info("epoch %d/%d: %s", epoch, epochs,
             ", ".join(f"{k}={v:.5g}" for k, v in metrics.items()))


def next_live_step(live: Any) -> None:
    """Close the epoch's dvclive step (no-op without dvclive)."""
    if live is not None:
        live.next_step()


def epoch_bar(total: int, initial: int, epoch: int, epochs: int, enabled: bool) -> tqdm:
    """The progress bar of one epoch: ``total`` steps, ``initial`` already done."""
    return tqdm(total=total, initial=initial, desc=f"epoch {epoch}/{epochs}",
                disable=not enabled, leave=False, dynamic_ncols=True)
