"""``pcrl pretrain``: one method (pcrl, genesis, moco) on the pretraining pairs.

Training state (resumable checkpoints, the running dvclive log, previews) lives in a
state folder outside the stage's output, so neither DVC nor Snakemake deletes it when a
killed job is rerun: the rerun resumes from the last checkpoint. The output folder is
swapped in only when training has finished:

    weights.pt       the encoder/decoder weights to fine-tune (release key names)
    checkpoint.pt    the full resumable checkpoint of the last epoch
    live/            dvclive metrics.json and plots of every loss term, lr, throughput
    previews/        reconstruction previews, one PNG per epoch
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, cast

import torch

from pcrl.torchfile import save_checked
from pcrl.live_series import read_series
from pcrl.run_state import discard_state, prepare_state, state_lock
from pcrl.atomic import atomic_dir, read_json, write_json
from pcrl.records import verify_contents
from pcrl.preprocessing.pairs import PairsDataset, pair_files
from pcrl.distributed import DistInfo, cleanup, init_distributed
from pcrl.engine import TrainConfig, train
from pcrl.methods.momentum import is_distributed
from pcrl.momentum_rule import MOMENTUM_METHODS, momentum_warning, run_steps
from pcrl.evaluation.gauges import effective_rank, psnr_gain, retrieval_accuracy, term_gradient_norms
from pcrl.evaluation.probe import pooled_tensor_features
from pcrl.methods import build_method, method_config
from pcrl.networks.factory import spatial_dims
from pcrl.previews import save_preview
from pcrl.provenance import provenance

log = logging.getLogger(__name__)

#: The parts each method trains (MoCo v2 has no decoder loss: its decoder stays random).
PRETRAINED_PARTS = {"pcrl": ("encoder", "decoder"), "genesis": ("encoder", "decoder"), "moco": ("encoder",)}
TRAIN_KEYS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "checkpoint_every", "amp", "seed",
              "max_grad_norm", "deterministic")
PREVIEW_SEED = 1234
#: Held-out pairs whose reconstruction PSNR is logged each epoch (the previews show the first 2).
PSNR_PAIRS = 8
#: The gauges' dvclive names (summary.json carries their series).
GAUGES = ("gauges/effective_rank", "gauges/retrieval_top1", "gauges/retrieval_chance", "val/psnr_gain",
          "gauges/grad_contrastive", "gauges/grad_reconstruction")
#: Held-out pairs of the collapse and retrieval gauges (pcrl/evaluation/gauges.py).
GAUGE_PAIRS = 64
#: An effective rank below this at the end of a run is reported as collapse.
MIN_EFFECTIVE_RANK = 2.0
#: The pretrain params every method reads; each method also reads its own section
#: (``pretrain.<method>``). dvc.yaml lists exactly these as the params of ``pretrain@<method>``.
SHARED_KEYS = (*TRAIN_KEYS, "network", "corruption", "augment")


def used_settings(method: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The part of the ``pretrain`` params that ``method`` reads: the shared keys and its own
    section. Editing another method's section changes nothing here, so that method's stage
    and state are left alone."""
    used = {key: settings[key] for key in SHARED_KEYS if key in settings}
    used[method] = settings.get(method) or {}
    return used


def method_settings(method: str, settings: dict[str, Any], *, n_data: int, steps: int | None = None) -> dict[str, Any]:
    """The method's config mapping: shared network/corruption/augment + its own section.

    ``n_data``: training samples (NCE's normaliser); ``steps``: the run's optimiser steps
    (the momentum schedule's length, methods with a momentum encoder only).
    """
    own = dict(settings.get(method) or {})
    values: dict[str, Any] = {**settings["network"], **own}
    values["corruption"] = dict(settings.get("corruption", {}))
    values["augment"] = dict(settings.get("augment", {}))
    if method == "pcrl" and values.get("loss", "nce") == "nce":
        values["n_data"] = n_data  # the number of training samples (not of batches)
    if method in MOMENTUM_METHODS and steps is not None:
        values["momentum_steps"] = max(int(steps), 1)
    return values


def fingerprint(method: str, settings: dict[str, Any], pairs_index: Any) -> str:
    """Hash of everything that defines a run: a state folder of another run is discarded."""
    blob = json.dumps({"method": method, "settings": settings, "pairs": pairs_index}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def encoder_of(method: torch.nn.Module) -> torch.nn.Module:
    """The network whose weights are the pretrained model (``student`` or Genesis' ``net``)."""
    unwrapped = getattr(method, "module", method)
    student = getattr(unwrapped, "student", None)
    return cast(torch.nn.Module, student if student is not None else unwrapped.net)


def _preview_hook(val: PairsDataset | None, previews: Path, device: torch.device, method_name: str):
    """Each epoch: the previews of the same 2 held-out pairs, and ``val/psnr``.

    The reconstruction PSNR (MONAI's ``PSNRMetric``, peak 1) of the plain reconstruction
    against its target, over the first :data:`PSNR_PAIRS` validation pairs with the same
    views every epoch (one fixed seed), so that epochs are comparable.
    """
    if val is None or len(val) == 0:
        return None
    from monai.metrics import PSNRMetric

    x1, x2 = first_pairs(val, PSNR_PAIRS)

    def hook(epoch: int, method: torch.nn.Module, live: Any) -> None:
        unwrapped = getattr(method, "module", method)
        generator = torch.Generator(device=device).manual_seed(PREVIEW_SEED)
        was_training = unwrapped.training
        unwrapped.eval()
        images = cast(Any, unwrapped).preview(x1.to(device), x2.to(device), generator)
        unwrapped.train(was_training)
        if images is None:  # MoCo v2 reconstructs nothing
            return
        shown = {name: value[:2] for name, value in images.items()}
        save_preview(shown, previews / f"epoch_{epoch:03d}.png", title=f"{method_name}, epoch {epoch}")
        psnr = PSNRMetric(max_val=1.0)(images["output"].float().clamp(0, 1), images["target"].float())
        value = float(cast(torch.Tensor, psnr).mean())
        gain = psnr_gain(images["output"], images["input"], images["target"])
        log.info("%s epoch %d: reconstruction PSNR %.2f dB on %d held-out pairs (%+.2f dB over the corrupted "
                 "input)", method_name, epoch, value, x1.shape[0], gain)
        if live is not None:
            live.log_metric("val/psnr", value)
            live.log_metric("val/psnr_gain", gain)

    return hook


def first_pairs(pairs: PairsDataset, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` pairs of ``pairs`` as two batches (views 1 and views 2)."""
    samples = [pairs[i] for i in range(min(count, len(pairs)))]
    return torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples])


def _gauge_hook(val: PairsDataset | None, device: torch.device, method_name: str):
    """Each epoch, on the first :data:`GAUGE_PAIRS` held-out pairs (the same every epoch):

    ``gauges/effective_rank`` of the pooled features of view 1, ``gauges/retrieval_top1``
    (view 2 found among all held-out views 2 from view 1) with ``gauges/retrieval_chance``,
    and ``gauges/grad_<half>``: each loss half's gradient norm on the encoder, on the first
    8 pairs with fixed views (pcrl/evaluation/gauges.py; one process only: with several,
    the hook runs on rank 0 alone, and a training step's collectives would wait for the
    other ranks). The method's state is untouched.
    """
    if val is None or len(val) < 2:
        return None
    x1, x2 = first_pairs(val, GAUGE_PAIRS)

    def hook(epoch: int, method: torch.nn.Module, live: Any) -> None:
        unwrapped = getattr(method, "module", method)
        encoder = encoder_of(unwrapped)
        f1 = pooled_tensor_features(encoder, x1, device=device)
        f2 = pooled_tensor_features(encoder, x2, device=device)
        values = {"gauges/effective_rank": effective_rank(f1), "gauges/retrieval_top1": retrieval_accuracy(f1, f2),
                  "gauges/retrieval_chance": 1.0 / x1.shape[0]}
        if not is_distributed():  # the step's collectives (shuffled BN, the queue) would wait for other ranks
            generator = torch.Generator(device=device).manual_seed(PREVIEW_SEED)
            attr = "student" if hasattr(unwrapped, "student") else "net"
            norms = term_gradient_norms(unwrapped, attr, x1[:8].to(device), x2[:8].to(device), generator)
            values.update({f"gauges/grad_{term}": norm for term, norm in norms.items()})
        log.info("%s epoch %d: %s", method_name, epoch, ", ".join(f"{k.split('/')[1]}={v:.4g}"
                                                                 for k, v in values.items()))
        if live is not None:
            for name, value in values.items():
                live.log_metric(name, value)

    return hook


def gauge_warnings(live: Path) -> list[str]:
    """Warnings on the last epoch's gauges: retrieval within 2x chance, effective rank below 2.

    Either means the encoder's features do not tell the held-out crops apart (the contrastive
    half learnt nothing, or the features collapsed); the run's summary carries them.
    """
    warnings = []
    retrieval = logged_series(live, "gauges/retrieval_top1")
    chance = logged_series(live, "gauges/retrieval_chance")
    rank = logged_series(live, "gauges/effective_rank")
    if retrieval and chance:
        last = max(retrieval, key=int)
        if retrieval[last] <= 2.0 * chance.get(last, 0.0):
            warnings.append(f"held-out retrieval {retrieval[last]:.3f} at epoch {last} is within 2x chance "
                            f"({chance[last]:.3f}): the encoder does not tell held-out crops apart")
    if rank:
        last = max(rank, key=int)
        if rank[last] < MIN_EFFECTIVE_RANK:
            warnings.append(f"effective rank of the pooled features {rank[last]:.2f} at epoch {last} is below "
                            f"{MIN_EFFECTIVE_RANK:g}: the features have collapsed")
    return warnings


def _probe_hook(processed: Path | None, settings: dict[str, Any], device: torch.device, method_name: str):
    """Every ``probe.every`` epochs (and the last): the frozen-encoder probe, ``probe/val_auc``.

    Fitted on the NCC train scans, scored on the val scans (pcrl/evaluation/probe.py). It runs
    after the epoch's checkpoint, in eval mode, and draws from no training stream, so the
    training trajectory is the same with or without it.
    """
    every = int(settings.get("every", 0))
    if processed is None or every <= 0:
        return None
    from pcrl.evaluation.probe import probe_auc, probe_split

    split = read_json(Path(processed) / "split.json", hint="run 'pcrl cubes --task ncc' first")
    verify_contents(processed, stage="cubes")
    data = probe_split(str(processed), split["train"], split["val"], max_per_class=settings.get("max_per_class"))
    epochs = int(settings["epochs"])

    def hook(epoch: int, method: torch.nn.Module, live: Any) -> None:
        if epoch % every and epoch != epochs:
            return
        auc = probe_auc(encoder_of(method), data, device=device, l2=float(settings["l2"]))
        log.info("%s epoch %d: frozen-encoder probe AUC %.3f on the NCC val scans (%d candidates)",
                 method_name, epoch, auc, len(data.held_out))
        if live is not None:
            live.log_metric("probe/val_auc", auc)

    return hook


def logged_series(live: Path, name: str) -> dict[str, float]:
    """``{epoch: value}`` of one dvclive metric, read back from its plot file.

    The plot file survives a resumed job (dvclive appends to it), unlike anything kept in
    memory, so a resumed run reports every epoch's value.
    """
    path = live / "plots" / "metrics" / f"{name}.tsv"
    if not path.is_file():
        return {}
    steps, values = read_series(path)
    return {str(step): value for step, value in zip(steps, values)}


def _hooks(*hooks: Any):
    """One ``on_epoch_end`` hook running ``hooks`` in order (None entries skipped)."""
    active = [h for h in hooks if h is not None]
    if not active:
        return None

    def hook(epoch: int, method: torch.nn.Module, live: Any) -> None:
        for h in active:
            h(epoch, method, live)

    return hook


def run_pretrain(
    method: str,
    settings: dict[str, Any],
    *,
    pairs: Path,
    out: Path,
    state: Path,
    device: str = "auto",
    num_workers: int = 0,
    progress: bool = True,
    probe: Path | None = None,
    probe_settings: dict[str, Any] | None = None,
) -> Path:
    """Pretrain ``method`` on ``pairs`` (the cubes@pretrain output); write ``out``.

    Only :func:`used_settings` of ``settings`` is read. With ``probe`` (the cubes@ncc
    output) and ``probe_settings`` (the ``probe`` params), the frozen-encoder probe is
    logged every ``probe.every`` epochs.
    """
    settings = used_settings(method, settings)
    pairs = Path(pairs)
    hint = "run 'pcrl cubes --task pretrain' first"
    split = read_json(pairs / "split.json", hint=hint)
    verify_contents(pairs, stage="cubes")
    index = read_json(pairs / "pairs.json", hint=hint)
    by_id = {entry["id"]: entry for entry in index}
    train_files = pair_files(pairs / "pairs", split["train"])
    val_files = pair_files(pairs / "pairs", [i for i in split.get("val", []) if i in by_id])
    dims = spatial_dims(settings["network"].get("arch", "unet3d"))
    dataset = PairsDataset(train_files, spatial_dims=dims)
    val = PairsDataset(val_files, spatial_dims=dims) if val_files else None

    dist: DistInfo = init_distributed(None if device == "auto" else device)
    steps = run_steps(len(dataset), settings["batch_size"], settings["epochs"])
    values = method_settings(method, settings, n_data=len(dataset), steps=steps)
    warning = momentum_warning(method, settings, steps)
    if warning:
        log.warning("%s", warning)
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG untouched
        torch.manual_seed(settings["seed"])
        model = build_method(method, method_config(method, values))
    config = TrainConfig(
        **{k: settings[k] for k in TRAIN_KEYS if k in settings},
        num_workers=num_workers,
        progress=progress and dist.rank == 0,
        find_unused_parameters=False,
    )
    state = Path(state)
    # one run per state folder: a second job given the same --state is refused at once
    with state_lock(state) if dist.rank == 0 else contextlib.nullcontext():
        if dist.rank == 0:
            prepare_state(state, fingerprint(method, settings, index))
        if dist.world_size > 1:
            torch.distributed.barrier()
        hook = _hooks(
            _preview_hook(val, state / "previews", dist.device, method),
            _gauge_hook(val, dist.device, method) if dist.rank == 0 else None,
            _probe_hook(probe, {**(probe_settings or {}), "epochs": settings["epochs"]}, dist.device, method)
            if dist.rank == 0 else None,
        )
        result = train(model, dataset, config, state, device=dist.device,
                       dist=dist if dist.world_size > 1 else None, on_epoch_end=hook)

        if dist.rank == 0:
            warnings = ([warning] if warning else []) + gauge_warnings(state / "live")
            for text in warnings:
                log.warning("%s: %s", method, text)
            with atomic_dir(out) as tmp:
                weights = {
                    "state_dict": cast(Any, getattr(model, "module", model)).encoder_state_dict(),
                    "method": method,
                    "parts": list(PRETRAINED_PARTS[method]),
                    "config": json.dumps(values, default=str),
                }
                save_checked(weights, tmp / "weights.pt")
                shutil.copy2(result.checkpoint, tmp / "checkpoint.pt")
                shutil.copytree(state / "live", tmp / "live")
                if (state / "previews").is_dir():
                    shutil.copytree(state / "previews", tmp / "previews")
                else:
                    (tmp / "previews").mkdir()
                write_json(tmp / "summary.json", {
                    "method": method,
                    "epochs": settings["epochs"],
                    "epochs_run_by_this_job": result.epochs_run,
                    "train_pairs": len(dataset),
                    "world_size": dist.world_size,
                    "final": result.final_metrics,
                    "probe_val_auc": logged_series(state / "live", "probe/val_auc"),
                    "gauges": {name.split("/")[1]: logged_series(state / "live", name) for name in GAUGES},
                    "warnings": warnings,
                    "provenance": provenance({"pretrain": settings}, device=dist.device),
                })
            log.info("%s: pretrained %d epochs on %d pairs -> %s", method, settings["epochs"], len(dataset), out)
            discard_state(state)
    cleanup()
    return Path(out)
