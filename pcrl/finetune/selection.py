"""Model selection on the validation cases: early stopping and the best epoch's weights.

The Models Genesis fine-tuning protocol: the network is scored on the validation cases
after every epoch (AUC for NCC, mean Dice for segmentation, mean AUC over the findings for
Chest14), the best epoch's weights are kept, and training stops once the score has not
improved for ``patience`` epochs. :class:`ValidationHook` does this in the engine's
``on_epoch_end`` hook; its state (:class:`EarlyStopping`: the score of every epoch) lives in
``checkpoints/validation.json`` and the best weights in ``checkpoints/best.pt``, next to the
engine's ``last.pt``, so a resumed run continues with the same best and the same patience
count.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from torch import nn

from pcrl.atomic import write_json
from pcrl.errors import ConfigError, DataError
from pcrl.torchfile import load_checked, save_checked

__all__ = ["BEST_NAME", "STATE_NAME", "EarlyStopping", "ValidationHook", "Validator"]

log = logging.getLogger(__name__)

Validator = Callable[[nn.Module], dict[str, float]]

STATE_NAME = "validation.json"
BEST_NAME = "best.pt"


@dataclass
class EarlyStopping:
    """Validation scores of every epoch, and the decisions derived from them.

    The state is the history only; the best epoch and the stop decision are recomputed
    from it, so recording the same epoch twice (a replay after a crash) changes nothing.
    Higher is better; NaN never counts as an improvement; ties keep the earlier epoch.

    Attributes:
        monitor: The metric that selects the checkpoint (``auc``, ``dice_mean``,
            ``auc_mean``).
        patience: Stop once this many epochs passed without improving on the best.
        history: epoch -> validation metrics.
    """

    monitor: str
    patience: int
    history: dict[int, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) \
                or self.patience < 1:
            raise ConfigError(f"patience must be an integer >= 1, got {self.patience!r}")

    def record(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Store the validation metrics of ``epoch``.

        Raises:
            KeyError: ``metrics`` lacks the monitored metric.
        """
        if self.monitor not in metrics:
            raise KeyError(f"validation metrics {sorted(metrics)} lack {self.monitor!r}")
        self.history[int(epoch)] = {k: float(v) for k, v in metrics.items()}

    @property
    def best_epoch(self) -> int | None:
        """The first epoch with the highest finite score; None before any."""
        best: tuple[float, int] | None = None
        for epoch in sorted(self.history):
            value = self.history[epoch][self.monitor]
            if math.isfinite(value) and (best is None or value > best[0]):
                best = (value, epoch)
        return None if best is None else best[1]

    @property
    def last_epoch(self) -> int:
        """The last validated epoch (0 before any)."""
        return max(self.history, default=0)

    def should_stop(self) -> bool:
        """True once ``patience`` epochs passed since the best one (or since the start)."""
        best = self.best_epoch or 0
        return self.last_epoch - best >= self.patience

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable state (derived values included for readers)."""
        return {"monitor": self.monitor, "patience": self.patience,
                "best_epoch": self.best_epoch, "stopped": self.should_stop(),
                "history": {str(e): m for e, m in sorted(self.history.items())}}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> EarlyStopping:
        """Inverse of :meth:`to_json`."""
        history = {int(e): dict(m) for e, m in obj.get("history", {}).items()}
        return cls(str(obj["monitor"]), int(obj["patience"]), history)


class ValidationHook:
    """The engine's ``on_epoch_end``: validate, keep the best weights, decide to stop.

    Args:
        validate: Scores the task network (``net -> metrics``).
        state_dir: The run's state folder (the engine's ``out_dir``).
        monitor: The metric to maximise.
        patience: See :class:`EarlyStopping`.

    Raises:
        ConfigError: A state file of another monitor or patience is found.
    """

    def __init__(self, validate: Validator, state_dir: str | Path, *, monitor: str,
                 patience: int) -> None:
        self.validate = validate
        folder = Path(state_dir) / "checkpoints"
        self.state_path = folder / STATE_NAME
        self.best_path = folder / BEST_NAME
        self.state = EarlyStopping(monitor, patience)
        if self.state_path.is_file():
            try:
                saved = EarlyStopping.from_json(json.loads(self.state_path.read_text()))
            except (OSError, ValueError, KeyError) as exc:
                raise DataError(f"{self.state_path}: unreadable validation state ({exc})") from None
            if (saved.monitor, saved.patience) != (monitor, patience):
                raise ConfigError(f"{self.state_path}: written for monitor {saved.monitor!r}, "
                                  f"patience {saved.patience}; delete the state folder to restart")
            self.state = saved

    def __call__(self, epoch: int, method: nn.Module, live: Any) -> bool:
        """Validate ``method.net`` after ``epoch``; True to stop training."""
        net = cast(nn.Module, getattr(method, "module", method).net)
        return self.record(epoch, net, self.validate(net), live)

    def record(self, epoch: int, net: nn.Module, metrics: Mapping[str, float],
               live: Any = None) -> bool:
        """Store ``metrics`` of ``epoch``; save ``net`` if best; return whether to stop.

        The best weights are written before the state that points to them (both
        atomically), so a crash in between leaves a consistent pair.
        """
        self.state.record(epoch, metrics)
        if self.state.best_epoch == epoch:
            state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            save_checked({"state_dict": state, "epoch": epoch, "metrics": dict(metrics)},
                         self.best_path)
        write_json(self.state_path, self.state.to_json())
        if live is not None:
            for name, value in metrics.items():
                live.log_metric(f"val/{name}", value)
        log.info("epoch %d: validation %s (best epoch %s)", epoch,
                 ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()), self.state.best_epoch)
        return self.state.should_stop()

    def best(self) -> dict[str, Any]:
        """The saved best checkpoint ``{"state_dict", "epoch", "metrics"}``.

        Raises:
            DataError: No epoch was validated with a finite score.
        """
        if self.state.best_epoch is None or not self.best_path.is_file():
            raise DataError(f"{self.state_path}: no epoch has a finite validation "
                            f"{self.state.monitor}; nothing to keep")
        return load_checked(self.best_path, "best-epoch checkpoint")
