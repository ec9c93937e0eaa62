"""``pcrl init-weights``: the initialisations that no pretraining stage writes.

Every initialisation a fine-tuning run can start from is a folder
``data/pretrain/<name>/weights.pt`` holding an initialisation record (see
:mod:`pcrl.finetune.checkpoints`): the pretrain stage writes ``pcrl``, ``genesis`` and ``moco``;
this stage writes

- ``scratch``: the random initialisation, a record with no weights;
- an external checkpoint named in ``finetune.external`` (the PCRL release's or Models
  Genesis' public weights): its encoder and decoder keys, checked and unwrapped once here;
- for the 2D setting (``data/pretrain2d/<name>``), an external ResNet-18 named in
  ``finetune.chest14.external`` (e.g. torchvision's ImageNet weights): its encoder keys;
- in either setting, a folder written by ``pcrl export`` (:mod:`pcrl.release.importer`),
  refused when its adaptation plan differs from the fine-tuning preprocessing.

so that the fine-tuning stage reads one format and depends on one folder per init.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pcrl.atomic import atomic_dir, write_json
from pcrl.torchfile import save_checked
from pcrl.errors import ConfigError
from pcrl.finetune.checkpoints import import_checkpoint, import_resnet18_checkpoint, scratch_record
from pcrl.release.importer import import_export, is_export
from pcrl.release.plan import expected_preprocessing
from pcrl.settings import Setting, get_setting

log = logging.getLogger(__name__)

SCRATCH = "scratch"
#: The importer of an external checkpoint, by the setting's spatial dims: a PCRL / Models
#: Genesis 3D U-Net, or a ResNet-18.
IMPORTERS = {3: import_checkpoint, 2: import_resnet18_checkpoint}


def run_init_weights(name: str, *, checkpoint: Path | None, out: Path, setting: Setting | str = "3d",
                     resample: Mapping[str, Any] | None = None) -> Path:
    """Write ``out/weights.pt`` (and ``summary.json``) for initialisation ``name``.

    Args:
        name: ``scratch`` (no ``checkpoint``), or the name of an external checkpoint.
        checkpoint: The external checkpoint file; None for ``scratch``.
        out: Output folder, e.g. ``data/pretrain/<name>``.
        setting: The :class:`~pcrl.settings.Setting` (or its name): ``3d`` reads a PCRL /
            Models Genesis 3D U-Net checkpoint, ``2d`` a ResNet-18.
        resample: params ``resample.<dataset>`` of the setting's fine-tuning data: an
            exported folder's plan must match it (None: not compared).

    Raises:
        ConfigError: ``scratch`` with a checkpoint, another name without one, or a
            checkpoint without encoder weights.
        DataError: An unreadable checkpoint.
    """
    if (name == SCRATCH) != (checkpoint is None):
        raise ConfigError(f"init {name!r}: 'scratch' takes no checkpoint and every other "
                          "initialisation needs one (finetune.external)")
    dims = get_setting(setting).spatial_dims
    if checkpoint is not None and is_export(checkpoint):
        expected = None if resample is None else expected_preprocessing(dims, resample)
        record = import_export(checkpoint, name, spatial_dims=dims, expected=expected)
    else:
        record = scratch_record() if checkpoint is None else IMPORTERS[dims](checkpoint, name)
    with atomic_dir(out) as tmp:
        save_checked(record.to_file(), tmp / "weights.pt")
        write_json(tmp / "summary.json", {"name": name, "method": record.method,
                                          "parts": list(record.parts),
                                          "tensors": len(record.state_dict),
                                          "config": json.loads(record.config)})
    log.info("init %s: %s -> %s", name, list(record.parts) or "random weights", out)
    return Path(out)
