"""``pcrl export``: a pretrained encoder as a folder a researcher can take away.

Reads ``data/pretrain[2d]/<method>/`` (``weights.pt``, ``summary.json``) and writes
``data/export/<setting>/<method>/`` laid out as a Hugging Face model repository
(:mod:`pcrl.release.layout`): ``model.safetensors`` (the encoder, the release's key names),
``full_model.safetensors`` (encoder + decoder, when the decoder was pretrained),
``config.json``, ``adaptation_plan.json``, ``README.md`` (model card) and ``checksums.json``.
The encoder is loaded back strictly before anything is written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import save_file

from pcrl.atomic import atomic_dir, read_json, write_json, write_text
from pcrl.records import verify_files
from pcrl.finetune.checkpoints import read_init_record
from pcrl.hashing import file_digest
from pcrl.hub import build_encoder, check_keys
from pcrl.provenance import git_commit
from pcrl.release.card import model_card
from pcrl.release.layout import (CHECKSUMS, CONFIG, FULL_MODEL, MODEL, PLAN, README, encoder_config,
                                 encoder_tensors, full_tensors)
from pcrl.release.plan import adaptation_plan
from pcrl.settings import Setting, get_setting

log = logging.getLogger(__name__)


def lock_entry(lock: Path, stage: str) -> dict[str, Any] | None:
    """The ``dvc.lock`` record of ``stage`` (its deps' and outs' md5 and its params), or None."""
    if not lock.is_file():
        return None
    entry = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get(stage)
    if not entry:
        return None
    files = {f["path"]: f.get("md5") for key in ("deps", "outs") for f in entry.get(key) or []
             if not str(f.get("path", "")).startswith("pcrl/")}
    return {"stage": stage, "files": files, "params": entry.get("params") or {}}


def _data(pairs: Path | None, dataset: str, source: str) -> dict[str, Any]:
    """What the card says of the data: the pretraining split by patient (``patients.json`` of
    the 2D pairs, whose ``split.json`` lists pair files) or by scan (3D ``split.json``)."""
    if pairs is None:
        return {"dataset": dataset, "source": source, "split": {}, "scans": "unknown", "unit": "scans"}
    by_patient = (pairs / "patients.json").is_file()
    name = "patients.json" if by_patient else "split.json"
    split = read_json(pairs / name, hint="run the cubes stage first")
    verify_files(pairs, [name], stage="cubes")
    return {"dataset": dataset, "source": source, "split": split, "scans": sum(len(v) for v in split.values()),
            "unit": "patients" if by_patient else "scans"}


def run_export(method: str, *, setting: Setting | str, weights: Path, out: Path, resample: Mapping[str, Any],
               cube_size: list[int], source: str, pairs: Path | None = None,
               lock: Path = Path("dvc.lock")) -> Path:
    """Export ``weights`` (a pretrain stage's folder) of ``method`` to ``out``.

    Args:
        resample: params ``resample.<dataset>`` of the setting's pretraining dataset.
        cube_size: params ``cubes.<pretrain task>.cube_size``.
        source: the dataset's data source (``phantom``, ``download``, ``local``).
        pairs: the pretraining pairs' folder (its ``split.json`` gives the scan counts).
        lock: ``dvc.lock``, whose record of the pretrain stage goes into the card.

    Raises:
        DataError: missing or unreadable weights, or an encoder that does not load back.
    """
    spec = get_setting(setting)
    dims, weights = spec.spatial_dims, Path(weights)
    record = read_init_record(weights / "weights.pt", method)
    summary = read_json(weights / "summary.json", hint="run the pretrain stage") \
        if (weights / "summary.json").is_file() else {}
    settings = json.loads(record.config)
    encoder = encoder_tensors(record.state_dict, dims)
    config = encoder_config(encoder, dims, norm=str(settings.get("norm", "batch")), method=method,
                            parts=list(record.parts), setting=spec.name)
    check_keys(build_encoder(config), encoder, f"{weights / 'weights.pt'} (encoder)")
    dataset = spec.pretrain_dataset
    plan = adaptation_plan(dims=dims, dataset=dataset, resample=resample, cube_size=cube_size,
                           stride=spec.stride, in_channels=config["in_channels"])
    provenance = {"git_commit": git_commit(), "dvc_lock": lock_entry(Path(lock), f"{spec.pretrain_section}@{method}")}
    with atomic_dir(out) as tmp:
        save_file(encoder, str(tmp / MODEL), metadata={"format": "pt"})
        written = [MODEL, CONFIG, PLAN]
        if "decoder" in record.parts:
            save_file(full_tensors(record.state_dict, dims), str(tmp / FULL_MODEL), metadata={"format": "pt"})
            written.append(FULL_MODEL)
        write_json(tmp / CONFIG, config)
        write_json(tmp / PLAN, plan)
        checksums = {name: file_digest(tmp / name) for name in sorted(written)}
        write_text(tmp / README, model_card(config=config, plan=plan, data=_data(pairs, dataset, source),
                                            summary=summary, settings=settings, provenance=provenance,
                                            checksums=checksums))
        write_json(tmp / CHECKSUMS, {**checksums, README: file_digest(tmp / README)})
    log.info("export %s (%s): %d encoder tensors%s -> %s", method, spec.name, len(encoder),
             " + full model" if FULL_MODEL in written else " (decoder not pretrained: no full model)", out)
    return Path(out)
