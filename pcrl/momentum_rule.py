"""The rule tying a momentum encoder's EMA coefficient to the run's length (no torch here).

The EMA's time constant ``1 / (1 - m)`` (in optimiser steps) should not exceed
:data:`TIME_CONSTANT_SHARE` of the run's steps. Past it the key encoder stays near its random
init for the whole run: with m = 0.999 (a time constant of 1000 steps) over a 420-step run the
keys of different crops sat at cosine 0.96, ranking accuracy among the queue was 0.02 and the
contrastive loss stayed at chance, while the contrastive gradient on the encoder was 6-200x
the reconstruction's (docs/method.md "Momentum and run length"). The release's 150k steps
are 150 time constants of m = 0.999. ``pcrl check-params`` and ``pcrl pretrain`` warn.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["MOMENTUM_METHODS", "TIME_CONSTANT_SHARE", "momentum_time_constant", "momentum_warning",
           "recommended_momentum", "run_steps"]

TIME_CONSTANT_SHARE = 0.1
#: The pretraining methods with a momentum encoder.
MOMENTUM_METHODS = ("pcrl", "moco")


def momentum_time_constant(m: float) -> float:
    """The EMA's time constant in steps, ``1 / (1 - m)`` (infinite for m = 1)."""
    return math.inf if m >= 1.0 else 1.0 / (1.0 - m)


def recommended_momentum(total_steps: int) -> float:
    """The largest m whose time constant is :data:`TIME_CONSTANT_SHARE` of ``total_steps``:
    ``1 - 1 / (0.1 * total_steps)``, 0 for runs of 10 steps or fewer."""
    return max(0.0, 1.0 - 1.0 / (TIME_CONSTANT_SHARE * max(int(total_steps), 1)))


def run_steps(n_data: int, batch_size: int, epochs: int) -> int:
    """The optimiser steps of a run: ``epochs`` epochs of ``n_data // batch_size`` full batches."""
    return int(epochs) * (int(n_data) // int(batch_size))


def momentum_warning(method: str, settings: dict[str, Any], steps: int, *, section: str = "pretrain") -> str | None:
    """The rule as a one-line warning naming the key, or None when ``method`` keeps it.

    Args:
        method: a pretraining method name (only :data:`MOMENTUM_METHODS` have a rule).
        settings: the ``pretrain`` params (``settings[method]["momentum"]`` is read; 0.999
            when absent, the methods' default).
        steps: the run's optimiser steps.
        section: the params section named in the message.
    """
    if method not in MOMENTUM_METHODS:
        return None
    m = float((settings.get(method) or {}).get("momentum", 0.999))
    tau = momentum_time_constant(m)
    if tau <= TIME_CONSTANT_SHARE * steps * (1.0 + 1e-9):  # 1 / (1 - 0.9) is 10.000000000000002 in floats
        return None
    return (f"{section}.{method}.momentum {m:g}: the momentum encoder's time constant 1/(1-m) = {tau:.0f} steps "
            f"exceeds a tenth of the run's {steps} steps, so its keys stay near their random init; use "
            f"m <= {recommended_momentum(steps):.4g} for this run length (docs/method.md \"Momentum and run length\")")
