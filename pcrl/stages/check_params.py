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
from pcrl.data.shards import shard_count


def run_check_params(data: dict[str, Any], *, out: Path) -> Path:
    """Write ``out/data.json``: the validated ``data`` section the downloads will use.

    Beyond the schema (checked when params.yaml was read): ``data.shards`` must be
    ``[0, ..., n-1]``, as every shard's ``--shard k`` is read against it.
    """
    shard_count(data.get("shards", [0]))
    with atomic_dir(out) as tmp:
        write_json(tmp / "data.json", data)
    return Path(out)
