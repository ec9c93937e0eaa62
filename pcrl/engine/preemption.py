"""Preemption: a signal stops training cleanly after a checkpoint.

SIGTERM (and SIGUSR1, which ``sbatch --signal=USR1@<s>`` sends before the time limit)
sets a flag; all processes agree on it, finish the current step, write ``last.pt``
(mid-epoch if need be) and raise :class:`Preempted`. Rerunning with the same ``out_dir``
continues exactly where it stopped: same weights as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from pcrl.engine.logging import log

__all__ = ["PREEMPTION_SIGNALS", "Preempted"]

from pcrl.errors import PreemptedError

PREEMPTION_SIGNALS: tuple[int, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name)
)


class Preempted(PreemptedError):  # noqa: N818 - an event, not a fault
    """Training stopped on a preemption signal after writing a checkpoint.

    The CLI exits with :attr:`exit_code` (128 + signal number, e.g. 143 for SIGTERM), the
    status of a process killed by that signal, so schedulers treat it as preempted.

    Attributes:
        signum: The signal received (SIGTERM when another process received it).
        checkpoint: The checkpoint written, from which a rerun resumes.
        epoch: The epoch in progress when the signal arrived (1-based).
        step: Steps of that epoch completed and saved.
    """

    def __init__(self, signum: int, checkpoint: Path, epoch: int, step: int) -> None:
        self.signum = int(signum)
        self.checkpoint = checkpoint
        self.epoch = epoch
        self.step = step
        name = signal.Signals(signum).name
        super().__init__(f"{name} received: stopped at epoch {epoch} after step {step}; "
                         f"checkpoint {checkpoint}; rerun to resume")

    @property
    def exit_code(self) -> int:
        """128 + the signal number."""
        return 128 + self.signum


class _StopFlag:
    """Signal handler that only records the signal; the loop acts on it between steps."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: object) -> None:
        del frame
        if self.signum is None:
            log.warning("%s received: checkpointing after the current step",
                        signal.Signals(signum).name)
        self.signum = signum

    @property
    def requested(self) -> bool:
        """True once a preemption signal arrived."""
        return self.signum is not None


@contextlib.contextmanager
def _catch_preemption(flag: _StopFlag) -> Iterator[None]:
    """Route the preemption signals to ``flag`` for the block; restore the handlers after."""
    if threading.current_thread() is not threading.main_thread():
        log.warning("not in the main thread: preemption signals are not handled")
        yield
        return
    previous = {signum: signal.signal(signum, flag) for signum in PREEMPTION_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
