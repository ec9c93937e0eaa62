"""The training engine: one loop for pretraining methods and fine-tuning tasks alike.

SGD with per-epoch cosine decay, AMP, DDP and exact checkpoint/resume. The engine trains
any *method* module on a dataset of pairs: ``method(a, b, generator)`` returns a dict of
scalar loss terms with a ``"loss"`` key, the engine backpropagates ``"loss"``, steps the
optimiser, then calls ``method.after_step()``. Its two users:

- pretraining (:mod:`pcrl.stages.pretrain`): a method of :mod:`pcrl.methods` (PCRL, Models
  Genesis, MoCo v2; docs/INTERFACES.md) on pairs of views ``(x1, x2)``, ``after_step``
  updating the momentum encoder;
- fine-tuning (:mod:`pcrl.finetune.train`): :class:`~pcrl.finetune.train.FinetuneModule`
  on ``(image, target)`` pairs, with a validation hook (``on_epoch_end``) that keeps the
  best epoch and stops early.

Defaults follow the release (docs/method.md "Hyperparameters of the release"): SGD lr 1e-3,
momentum 0.9, weight decay 1e-4, cosine decay stepped once per epoch, a checkpoint every 60
epochs, mixed precision. ``TrainConfig.batch_size`` is the *global* batch, divided across
the processes.

Reproducibility and resumption (docs/design.md, principle 5): the data order depends on (seed,
epoch) only and the method's randomness on (seed, rank), ``<out_dir>/checkpoints/last.pt``
holds the whole training state after every epoch, a preemption signal stops training
after a checkpoint, a non-finite loss stops it before touching the weights, and an early
stop is recorded so that a rerun with the same ``out_dir`` continues exactly (or trains
nothing more). Logging (rank 0): a tqdm bar per epoch and dvclive under
``<out_dir>/live``.

The submodules, by job (details in their docstrings):

- :mod:`pcrl.engine.config`: :class:`TrainConfig`, :class:`TrainResult`, AMP selection.
- :mod:`pcrl.engine.checkpoint`: where checkpoints live, loading and checking them.
- :mod:`pcrl.engine.preemption`: :class:`Preempted` and the signal handling.
- :mod:`pcrl.engine.sampler`: the data order, worker and generator seeds.
- :mod:`pcrl.engine.collectives`: agreement and reductions across the processes.
- :mod:`pcrl.engine.logging`: the engine's logger, tqdm and dvclive.
- :mod:`pcrl.engine.determinism`: deterministic algorithms for a run, when asked.
- :mod:`pcrl.engine.trainer`: the training loop and :func:`train`.
"""

from __future__ import annotations

from pcrl.engine.checkpoint import (
    CHECKPOINT_DIR,
    CHECKPOINT_FORMAT,
    LAST_NAME,
    last_checkpoint,
    load_checkpoint,
)
from pcrl.engine.config import (
    AmpMode,
    AmpSetting,
    EpochHook,
    NonFiniteLossError,
    TrainConfig,
    TrainResult,
    resolve_amp,
)
from pcrl.engine.preemption import PREEMPTION_SIGNALS, Preempted
from pcrl.engine.sampler import seed_worker
from pcrl.engine.trainer import train

__all__ = [
    "CHECKPOINT_DIR",
    "CHECKPOINT_FORMAT",
    "LAST_NAME",
    "PREEMPTION_SIGNALS",
    "AmpMode",
    "AmpSetting",
    "EpochHook",
    "NonFiniteLossError",
    "Preempted",
    "TrainConfig",
    "TrainResult",
    "last_checkpoint",
    "load_checkpoint",
    "resolve_amp",
    "seed_worker",
    "train",
]
