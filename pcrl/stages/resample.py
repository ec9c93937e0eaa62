"""``pcrl resample``: every case of one dataset at the target spacing, normalised."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pcrl.atomic import atomic_dir
from pcrl.data.layout import load_manifest, resolve_case_paths
from pcrl.data.resample import Normalization, resample_dataset

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def run_resample(
    settings: dict[str, Any], *, raw: Path, out: Path, workers: int = 1, progress: bool = True
) -> list[dict[str, Any]]:
    """Resample the cases listed in ``raw/manifest.json`` into ``out`` (one file per case).

    ``settings`` is ``params.resample.<dataset>``: ``spacing`` (mm, x y z) and
    ``normalization``. ``out`` appears only when every case succeeded.
    """
    manifest_path = Path(raw) / MANIFEST
    manifest = load_manifest(manifest_path)
    cases = resolve_case_paths(manifest, manifest_path)
    with atomic_dir(out) as tmp:
        entries = resample_dataset(
            cases,
            tmp,
            spacing=settings["spacing"],
            normalization=Normalization(**settings["normalization"]),
            workers=min(workers, max(1, len(cases))),
            progress=progress,
        )
    log.info("%s: %d cases resampled to %s mm", manifest["dataset"], len(entries), settings["spacing"])
    return entries
