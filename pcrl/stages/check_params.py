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
from pcrl.data.registry import get_dataset
from pcrl.data.shards import shard_count
from pcrl.errors import ConfigError


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
