"""The cubes stage's pretraining pairs: ``pairs/<id>.npy`` of every resampled case.

Each case draws from its own generator keyed by (seed, case id) (:func:`case_rng`), so the
pairs of a case do not depend on the other cases or their order.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pcrl.atomic import save_npy
from pcrl.io.images import read_volume
from pcrl.preprocessing.pair_config import PairConfig
from pcrl.preprocessing.pair_sampling import sample_pairs
from pcrl.errors import ConfigError, DataError
from pcrl.seeding import named_rng

__all__ = ["case_rng", "write_pretrain_pairs"]

log = logging.getLogger(__name__)


def case_rng(seed: int, case_id: str) -> np.random.Generator:
    """Generator of one case, derived from (seed, case id) with ``numpy.random.SeedSequence``.

    Keyed by the id, not by the position, so the cubes of a case do not change when cases are
    reordered, added or processed in parallel.
    """
    return named_rng(seed, case_id)


def write_pretrain_pairs(
    cases: list[dict],
    interim_dir: Path,
    out_dir: Path,
    *,
    pairs_per_case: int,
    config: PairConfig,
    seed: int,
    progress: bool = True,
) -> list[dict]:
    """Write ``out_dir/pairs/<id>.npy`` (n, 2, *cube_size) float16 for every case.

    Args:
        cases: Entries of the resample stage's ``cases.json`` (``id``, ``group``, ``image``).
        interim_dir: Folder of ``cases.json``; ``image`` paths are relative to it.
        out_dir: Stage output folder.
        pairs_per_case: Pairs drawn from each volume.
        config: Sampling rule.
        seed: Root seed; each case draws from ``case_rng(seed, id)``.
        progress: Show a progress bar.

    Returns:
        One index entry per case: ``{"id", "group", "file", "n"}``, ``file`` relative to ``out_dir``.
    """
    if pairs_per_case < 1:
        raise ConfigError(f"pairs_per_case must be >= 1, got {pairs_per_case}")
    index = []
    for case in tqdm(cases, desc="pretraining pairs", disable=not progress):
        case_id = _case_field(case, "id", "?")
        volume, _ = read_volume(Path(interim_dir) / _case_field(case, "image", case_id), case_id)
        cubes, _ = sample_pairs(volume, pairs_per_case, config, case_rng(seed, case_id), case_id=case_id)
        relative = f"pairs/{case_id}.npy"
        save_npy(Path(out_dir) / relative, cubes.astype(np.float16))
        index.append({"id": case_id, "group": case.get("group"), "file": relative, "n": len(cubes)})
    log.info("wrote %d pairs for %d cases", pairs_per_case * len(index), len(index))
    return index


def _case_field(case: dict, key: str, case_id: str) -> str:
    """A required string field of a ``cases.json`` entry."""
    if key not in case or case[key] in (None, ""):
        raise DataError(f"cases.json: case {case_id} has no {key!r}")
    return str(case[key])
