"""``pcrl check-params``: validate params.yaml before any stage deletes its outputs.

DVC and Snakemake delete a stage's outputs before running it, so a dataset that
``data.local_paths`` points at inside ``data/`` would be gone before ``pcrl download``
could refuse it; and a cross-reference gone wrong (an init that is no method, a label
fraction no cubes stage draws) would otherwise surface as a runner's own error ("No such
file or directory", "Parameters ... are missing") or in the middle of the DAG. So this
stage depends on every params section and lies upstream of every other stage: any params
edit reruns it first, under either runner, and bad params stop the DAG there with the
one-line message of :func:`pcrl.config.load_params` (the CLI has validated the whole file
by the time it runs). Its output is the same whatever the params, so a rerun that passes
makes nothing downstream stale: each stage declares the params it reads itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pcrl.atomic import atomic_dir, write_json
from pcrl.config import shard_count, source_of
from pcrl.datasets.registry import get_dataset
from pcrl.errors import ConfigError
from pcrl.momentum_rule import momentum_warning, run_steps


#: What ``out/checked.json`` holds: the same for every params file that passes.
CHECKED = {"params": "params.yaml", "checked": ["schema", "cross-references", "data sources", "shards"]}


def check_data(data: dict[str, Any]) -> None:
    """The data settings beyond the schema and the cross-references (checked when
    params.yaml was read): ``data.shards`` must be ``[0, ..., n-1]``, as every shard's
    ``--shard k`` is read against it; a dataset to download that has no public links
    (ChestX-ray14) needs ``data.mirror`` or its own source (``data.sources``).
    The Snakefile runs this too, before any job (pcrl/runners/staleness.py: GATES)."""
    shard_count(data.get("shards", [0]))
    for name in data["datasets"]:
        spec = get_dataset(name)
        if source_of(data, name) == "download" and not spec.downloadable and not data.get("mirror"):
            raise ConfigError(f"data.datasets: {name} cannot be downloaded automatically and data.mirror is not "
                              f"set: set data.sources.{name}: local with data.local_paths.{name}, or a mirror "
                              f"({spec.manual})")


def run_check_params(data: dict[str, Any], *, out: Path) -> Path:
    """Write ``out/checked.json`` (:data:`CHECKED`) once :func:`check_data` passes."""
    check_data(data)
    with atomic_dir(out) as tmp:
        write_json(tmp / "checked.json", CHECKED)
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
