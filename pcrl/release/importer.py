"""An exported folder (``pcrl export``) back as an initialisation record (the round trip).

``pcrl init-weights --checkpoint data/export/3d/pcrl`` reads the folder through
:mod:`pcrl.hub` (every sha256 checked, the encoder's keys checked exactly), refuses it when
its adaptation plan differs from the fine-tuning preprocessing
(:func:`pcrl.release.plan.check_plan`), and returns a record in the pretrain stage's format:
3D with the release's keys (``down_tr*``, plus ``up_tr*``/``out_tr`` when the full model was
exported), 2D with the U-Net's ``encoder.`` keys.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from pcrl.errors import ConfigError
from pcrl.finetune.checkpoints import InitRecord
from pcrl.atomic import read_json
from pcrl.hub import EXPORT_HINT, build_encoder, check_keys, verify_checksums
from pcrl.release.layout import CONFIG, FULL_MODEL, MODEL, PLAN
from pcrl.release.plan import check_plan

log = logging.getLogger(__name__)

__all__ = ["import_export", "is_export"]


def is_export(path: str | Path) -> bool:
    """True for a folder holding an export's ``config.json`` and ``model.safetensors``."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG).is_file() and (path / MODEL).is_file()


def import_export(folder: str | Path, name: str, *, spatial_dims: int,
                  expected: Mapping[str, Any] | None = None) -> InitRecord:
    """The initialisation record of an exported folder.

    Args:
        expected: the fine-tuning preprocessing, ``{"spacing", "intensity", "channels"}``
            (see :func:`check_plan`); None skips the comparison.

    Raises:
        DataError: a file's sha256 differs, or the encoder's keys do not fit exactly.
        ConfigError: another setting's export, or a plan that differs from ``expected``.
    """
    folder = Path(folder)
    listing = verify_checksums(folder)
    config = read_json(folder / CONFIG, hint=EXPORT_HINT)
    if config.get("spatial_dims") != spatial_dims:
        raise ConfigError(f"{folder}: a {config.get('spatial_dims')}D export, the setting is {spatial_dims}D")
    if expected is not None:
        check_plan(read_json(folder / PLAN, hint=EXPORT_HINT), source=str(folder), spacing=expected.get("spacing"),
                   intensity=expected.get("intensity"), channels=int(expected.get("channels", 1)))
    encoder = load_file(str(folder / MODEL))
    check_keys(build_encoder(config), encoder, str(folder / MODEL))
    if spatial_dims == 2:
        state = {f"encoder.{k}": v for k, v in encoder.items()}
        parts: tuple[str, ...] = ("encoder",)
    elif FULL_MODEL in listing:
        state = dict(load_file(str(folder / FULL_MODEL)))
        parts = ("encoder", "decoder")
    else:
        state, parts = dict(encoder), ("encoder",)
    log.info("%s: export of %s (%s), parts %s loaded from %s", name, config.get("method"), config.get("family"),
             list(parts), FULL_MODEL if "decoder" in parts else MODEL)
    details = {"source": str(folder), "layout": "pcrl-export", "method": config.get("method"),
               "sha256": listing[MODEL], "base": config.get("width")}
    return InitRecord(name, "external", parts, state, json.dumps(details))
