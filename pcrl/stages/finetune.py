"""``pcrl finetune``: one task, initialisation, label fraction and seed.

Reads the task's splits (``data/processed/<task>``), the resampled volumes for LCS/BMS
(``data/interim/<dataset>``) or the preprocessed radiographs for Chest14
(``data/interim/chestxray14``, with ``images.csv`` of ``data/processed/chest14``), and the
initialisation record (``data/pretrain/<init>/weights.pt``; Chest14:
``data/pretrain2d/<init>``); trains with :func:`pcrl.finetune.train.finetune`
(validation every epoch, early stopping, best checkpoint) in a resumable state folder
outside the stage's output; then swaps in the output folder:

    model.pt          the best epoch's network and what is needed to evaluate it (its
                      network settings; roi_size: the patch, cube or radiograph size)
    summary.json      cases, epochs, the best epoch and its validation metrics, init report
    validation.json   the validation metrics of every epoch
    live/             dvclive: train/loss, train/lr and val/<metric> per epoch
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import shutil
from collections.abc import Sized
from pathlib import Path
from typing import Any, cast

import torch

from pcrl.torchfile import save_checked
from pcrl.hashing import file_digest
from pcrl.run_state import discard_state, files_listing_digest, prepare_state, state_lock
from pcrl.atomic import atomic_dir, write_json
from pcrl.distributed import DistInfo, cleanup, init_distributed
from pcrl.engine import TrainConfig
from pcrl.preprocessing.task_data import TaskSplit, load_split
from pcrl.finetune.checkpoints import InitRecord, apply_init, read_init_record
from pcrl.finetune.flips import flip_dims
from pcrl.finetune.losses import build_loss
from pcrl.finetune.models import NetworkConfig, seeded_network
from pcrl.finetune.selection import STATE_NAME
from pcrl.finetune.train import FinetuneModule, FinetuneResult, finetune
from pcrl.tasks import TaskSpec, get_task
from pcrl.networks.state_dict import LoadReport
from pcrl.provenance import provenance
from pcrl.stages.kinds import kind_module

log = logging.getLogger(__name__)

MODEL_NAME = "model.pt"
WEIGHTS_NAME = "weights.pt"
#: Validation metric that selects the checkpoint, per task kind.
MONITOR = {"classification": "auc", "segmentation": "dice_mean", "multilabel": "auc_mean"}
#: ``finetune.<task>`` keys passed to the engine's TrainConfig as they are;
#: ``min_steps_per_epoch`` pads an epoch of few labels to that many SGD steps (absent: None).
TRAIN_KEYS = ("epochs", "lr", "momentum", "weight_decay", "max_grad_norm", "deterministic",
              "min_steps_per_epoch")


def network_settings(task: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The task's network settings: ``finetune.network`` with ``finetune.<task>.network``
    over it (Chest14's ResNet-18 has the 2D pretraining's width, not the 3D U-Net's)."""
    own = settings[task].get("network") or {}
    return {**settings["network"], **own}


def run_params(task: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The params that define a fine-tuning run of ``task`` (its stage's params sections; for
    Chest14 not its ``inits`` and ``external``, which say which runs exist, not how one runs)."""
    own = {k: v for k, v in settings[task].items() if k not in ("inits", "external")}
    return {"network": network_settings(task, settings), "amp": settings["amp"],
            "validation": settings["validation"], task: own}


def _batch_size(wanted: int, items: int, world: int, what: str) -> int:
    """``wanted`` capped at the training items (small label fractions), divisible by ``world``."""
    size = min(int(wanted), items)
    size = max(world, size - size % world)
    if size != wanted:
        log.warning("%s: batch_size %d -> %d (%d training items, %d processes)", what, wanted,
                    size, items, world)
    return size


def _module(spec: TaskSpec, network: NetworkConfig, record: InitRecord,
            task_settings: dict[str, Any], *, task: str, init: str, seed: int
            ) -> tuple[FinetuneModule, LoadReport | None]:
    """The seeded task network with the initialisation loaded, wrapped with its loss."""
    net = seeded_network(spec, network, seed)
    report = apply_init(net, record, spec)
    if report is not None:
        log.info("%s: initialised from %s: %s", task, init, report.describe())
    module = FinetuneModule(net, build_loss(spec, task_settings.get("loss", "dice_bce")),
                            flip=task_settings.get("augment", True), flip_dims=flip_dims(spec))
    return module, report


def _train_config(task_settings: dict[str, Any], settings: dict[str, Any], items: int,
                  dist: DistInfo, *, seed: int, num_workers: int, progress: bool,
                  what: str) -> TrainConfig:
    """The engine's settings: the task's training keys, the capped batch size, AMP, workers."""
    return TrainConfig(**{k: task_settings[k] for k in TRAIN_KEYS if k in task_settings},
                       batch_size=_batch_size(task_settings["batch_size"], items,
                                              dist.world_size, what),
                       amp=settings["amp"],
                       seed=seed, checkpoint_every=task_settings["epochs"],
                       num_workers=max(1, num_workers), progress=progress and dist.is_main)


def _fingerprint(run: dict[str, Any], params: dict[str, Any], split: TaskSplit,
                 weights_file: Path, data: str) -> str:
    """What the resumable state belongs to: the run, its params, cases, initial weights and
    the data files it reads (``data``: :func:`pcrl.run_state.files_listing_digest`), so a
    run whose volumes were rewritten under the same ids starts afresh."""
    return hashlib.sha256(json.dumps(
        {**run, "params": params, "split": dataclasses.asdict(split),
         "weights": file_digest(weights_file), "data": data},
        sort_keys=True).encode()).hexdigest()


def _prepare_state(state: Path, fingerprint: str, dist: DistInfo) -> None:
    """Check or reset the state folder on the main process; the others wait for it."""
    if dist.is_main:
        prepare_state(state, fingerprint)
    if dist.is_distributed:
        torch.distributed.barrier()


def _write_outputs(out: Path, state: Path, result: FinetuneResult, run: dict[str, Any], *,
                   network: NetworkConfig, roi: tuple[int, ...], split: TaskSplit,
                   params: dict[str, Any], device: torch.device, report: LoadReport | None,
                   train_items: int, batch_size: int, epochs: int) -> None:
    """Swap in ``out`` (model.pt, summary.json, validation.json, the dvclive folder); log it."""
    with atomic_dir(out) as tmp:
        model = {
            "state_dict": result.best_state, **run, "network": dataclasses.asdict(network),
            "roi_size": list(roi), "train_ids": list(split.train), "val_ids": list(split.val),
            "best_epoch": result.best_epoch, "val_metrics": result.best_metrics,
            "provenance": provenance({"finetune": params}, device=device),
        }
        save_checked(model, tmp / MODEL_NAME)
        write_json(tmp / "summary.json", {
            **run,
            "train_cases": len(split.train), "val_cases": len(split.val),
            "train_items": train_items, "batch_size": batch_size,
            "epochs": epochs, "epochs_done": result.epochs_done,
            "stopped_early": result.stopped_early, "best_epoch": result.best_epoch,
            "val": result.best_metrics,
            "init_loaded": report.summary() if report is not None else "nothing (scratch)",
            "first_conv_adapted": bool(report and report.adapted),
        })
        shutil.copy2(state / "checkpoints" / STATE_NAME, tmp / "validation.json")
        if (state / "live").is_dir():
            shutil.copytree(state / "live", tmp / "live")
    log.info("%s/%s f%s s%s: best epoch %d of %d, val %s -> %s", run["task"], run["init"],
             run["fraction"], run["seed"], result.best_epoch, result.epochs_done,
             result.best_metrics, out)


def run_finetune(
    task: str,
    init: str,
    fraction: float,
    seed: int,
    settings: dict[str, Any],
    *,
    processed: Path,
    interim: Path | None,
    weights: Path,
    out: Path,
    state: Path,
    device: str = "auto",
    num_workers: int = 1,
    progress: bool = True,
) -> Path:
    """Fine-tune ``task`` from ``init`` on label fraction ``fraction`` with ``seed``; write ``out``.

    Args:
        task: ``ncc``, ``lcs``, ``bms`` or ``chest14``.
        init: The initialisation's name (recorded; the weights come from ``weights``).
        fraction: Label fraction (a key of ``fractions.json``).
        seed: Seed of the network's initial weights, the data order and the augmentation.
        settings: The ``finetune`` params section.
        processed: ``data/processed/<task>``.
        interim: ``data/interim/<dataset>`` (segmentation tasks, Chest14).
        weights: The initialisation's folder (holding ``weights.pt``).
        out: Output folder, swapped in when training has finished.
        state: Resumable state folder, kept across reruns.
        device: "auto", "cpu" or "cuda".
        num_workers: DataLoader workers (at least 1: the per-epoch randomness of the
            training items comes from the loader's base seed).
        progress: Show progress bars.
    """
    spec = get_task(task)
    task_settings = settings[task]
    network = NetworkConfig(**network_settings(task, settings))
    processed, weights, out, state = Path(processed), Path(weights), Path(out), Path(state)
    split = load_split(processed, fraction, task)
    record = read_init_record(weights / WEIGHTS_NAME, init)

    dist = init_distributed(None if device == "auto" else device)
    dataset, validate, roi = kind_module(spec).training_data(spec, task_settings, settings["validation"], split,
                                   processed=processed, interim=Path(interim) if interim else None,
                                   seed=seed, device=dist.device)
    module, report = _module(spec, network, record, task_settings, task=task, init=init, seed=seed)
    config = _train_config(task_settings, settings, len(cast(Sized, dataset)), dist, seed=seed,
                           num_workers=num_workers, progress=progress, what=f"{task} f{fraction}")
    params = run_params(task, settings)
    run = {"task": task, "init": init, "fraction": fraction, "seed": seed}
    data = files_listing_digest(processed, Path(interim) if interim else None)
    with state_lock(state) if dist.is_main else contextlib.nullcontext():
        _prepare_state(state, _fingerprint(run, params, split, weights / WEIGHTS_NAME, data), dist)
        result = finetune(module, dataset, validate, config, state, monitor=MONITOR[spec.kind],
                          patience=task_settings["patience"], device=dist.device,
                          dist=dist if dist.is_distributed else None)
        if result is not None:
            _write_outputs(out, state, result, run, network=network, roi=roi, split=split,
                           params=params, device=dist.device, report=report,
                           train_items=len(cast(Sized, dataset)), batch_size=config.batch_size,
                           epochs=task_settings["epochs"])
            discard_state(state)
    cleanup()
    return out
