"""``pcrl check-params``: validate params.yaml before any stage deletes its outputs.

DVC and Snakemake delete a stage's outputs before running it, so a dataset that
``data.local_paths`` points at inside ``data/`` would be gone before ``pcrl download``
could refuse it. This stage runs first (every download stage depends on its output) and
stops the DAG on invalid params, before anything is deleted; the CLI has validated the
params by the time it runs (:func:`pcrl.config.load_params`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pcrl.atomic import atomic_dir, write_json
from pcrl.config import source_of
from pcrl.datasets.registry import get_dataset
from pcrl.datasets.shards import shard_count
from pcrl.errors import ConfigError
from pcrl.momentum_rule import momentum_warning, run_steps


def run_check_params(data: dict[str, Any], *, out: Path) -> Path:
    """Write ``out/data.json``: the validated ``data`` section the downloads will use.

    Beyond the schema (checked when params.yaml was read): ``data.shards`` must be
    ``[0, ..., n-1]``, as every shard's ``--shard k`` is read against it; a dataset to
    download that has no public links (ChestX-ray14) needs ``data.mirror`` or its own
    source (``data.sources``).
    """
    shard_count(data.get("shards", [0]))
    for name in data["datasets"]:
        spec = get_dataset(name)
        if source_of(data, name) == "download" and not spec.downloadable and not data.get("mirror"):
            raise ConfigError(f"data.datasets: {name} cannot be downloaded automatically and data.mirror is not "
                              f"set: set data.sources.{name}: local with data.local_paths.{name}, or a mirror "
                              f"({spec.manual})")
    with atomic_dir(out) as tmp:
        write_json(tmp / "data.json", data)
    return Path(out)


#: LUNA16's scans per subset (888 in 10 subsets), for the step estimate of real data.
LUNA16_SCANS_PER_SUBSET = 88.8


def pretrain_steps_estimate(params: dict[str, Any]) -> int | None:
    """The 3D pretraining run's optimiser steps as params.yaml implies them (None: no LUNA16).

    Pairs = training scans x ``cubes.pretrain.pairs_per_case``; the phantom's training scans
    are counted exactly (scan i lies in subset i mod subsets), real LUNA16's from its 888 scans.
    """
    data, cubes, pretrain = params.get("data", {}), params.get("cubes", {}), params.get("pretrain", {})
    if "luna16" not in data.get("datasets", []) or "pretrain" not in cubes or not pretrain:
        return None
    train = {int(str(g).removeprefix("subset")) for g in cubes["pretrain"]["groups"]["train"]}
    if source_of(data, "luna16") == "phantom":
        phantom = data.get("phantom", {}).get("luna16", {})
        scans, subsets = int(phantom.get("scans", 10)), int(phantom.get("subsets", 10))
        n_scans = float(sum(1 for i in range(scans) if i % subsets in train))
    else:
        n_scans = LUNA16_SCANS_PER_SUBSET * len(train)
    pairs = int(n_scans * int(cubes["pretrain"]["pairs_per_case"]))
    return run_steps(pairs, int(pretrain["batch_size"]), int(pretrain["epochs"]))


def momentum_warnings(params: dict[str, Any]) -> list[str]:
    """The momentum rule (pcrl/momentum_rule.py) for every 3D method with a momentum encoder.

    Only warnings: the run's exact step count is known when the pairs exist, and the
    pretrain stage checks it again then (and records it in its summary).
    """
    steps = pretrain_steps_estimate(params)
    if steps is None:
        return []
    pretrain = params["pretrain"]
    found = (momentum_warning(m, pretrain, steps) for m in pretrain.get("methods", []))
    return [f"about {steps} steps: {w}" for w in found if w]
