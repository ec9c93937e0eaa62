"""``pcrl download``: one dataset in its native layout, verified, with its manifest."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from pcrl.atomic import atomic_dir, write_json
from pcrl.config import source_of
from pcrl.datasets.layout import build_manifest
from pcrl.datasets.manifest import empty_manifest
from pcrl.datasets.registry import DatasetSpec, get_dataset
from pcrl.datasets.shards import shard_files
from pcrl.errors import ConfigError

log = logging.getLogger(__name__)


def _phantom(dataset: str, data: dict[str, Any], into: Path, shard: tuple[int, int]) -> bool:
    """Generate shard ``shard`` of ``dataset``'s phantom into ``into``; False when the shard
    holds no case (more shards than ChestX-ray14 phantom patients)."""
    from pcrl.phantom import GENERATORS

    if dataset not in GENERATORS:
        raise ConfigError(
            f"data.datasets: no phantom exists for {dataset}; known: {sorted(GENERATORS)}"
        )
    phantom = data.get("phantom", {})
    sizes = {k: tuple(v) if isinstance(v, list) else v for k, v in phantom.get(dataset, {}).items()}
    if dataset == "chestxray14" and shard[0] >= int(phantom.get(dataset, {}).get("patients", 8)):  # p mod n = k
        return False
    GENERATORS[dataset](into, seed=phantom.get("seed", 0), **sizes, shard=shard)
    return True


def with_mirror(spec: DatasetSpec, mirror: str | None) -> DatasetSpec:
    """``spec`` fetching every file from ``<mirror>/<filename>`` (same checksums), if set; a
    dataset without public links (ChestX-ray14) becomes downloadable from the mirror."""
    if not mirror:
        return spec
    files = tuple(
        dataclasses.replace(f, url=f"{mirror.rstrip('/')}/{f.filename}") for f in spec.files
    )
    return dataclasses.replace(spec, files=files, downloadable=True)


def run_download(dataset: str, data: dict[str, Any], *, out: Path, shard: tuple[int, int] = (0, 1),
                 progress: bool = True) -> Path:
    """Write ``out`` = the dataset's native layout (or a pointer to it) + ``manifest.json``.

    ``shard`` = (k, n): only download shard k of n (:mod:`pcrl.datasets.shards`): its archives,
    its phantom cases, or the cases of its slice of a local copy.

    ``data.source`` (or ``data.sources.<dataset>``) picks how: ``phantom`` generates the
    embedded demo data, ``download`` fetches the published archives (resumable,
    checksum-verified, cached in ``data.cache_dir``), ``local`` verifies a copy the user
    already has at ``data.local_paths.<dataset>`` and writes only the manifest pointing at it. The
    folder appears only once everything is verified. ``data.mirror`` (an institution's
    copy of the archives) replaces the published hosts; checksums still apply.
    """
    source = source_of(data, dataset)
    spec = with_mirror(get_dataset(dataset), data.get("mirror"))
    with atomic_dir(out) as tmp:
        keep = (0, 1)  # the cases of the folder: all, unless it holds the whole dataset
        if source == "phantom":
            if not _phantom(dataset, data, tmp, shard):
                log.info("%s: shard %d of %d has no phantom case", dataset, *shard)
                write_json(tmp / "manifest.json", empty_manifest(dataset, source, shard))
                return out
            root = tmp
        elif source == "download":
            from pcrl.datasets.download import download_dataset

            spec = dataclasses.replace(spec, files=tuple(shard_files(spec.files, *shard, together=not spec.shardable)))
            if not spec.files:  # more shards than archives: this one has nothing to fetch
                log.info("%s: shard %d of %d has no archive", dataset, *shard)
                write_json(tmp / "manifest.json", empty_manifest(dataset, source, shard))
                return out
            cache = Path(data.get("cache_dir", "data/downloads"))
            root = download_dataset(spec, cache, tmp / "native", progress=progress)
        else:
            local = Path(data["local_paths"][dataset]).expanduser()
            if not local.is_dir():
                raise ConfigError(f"data.local_paths.{dataset}: {local} is not a folder")
            root, keep = local.resolve(), shard
        manifest = {**build_manifest(dataset, root, source=source, manifest_dir=tmp, shard=keep),
                    "shard": list(shard)}
        write_json(tmp / "manifest.json", manifest)
        log.info("%s: %d cases verified (%s)", dataset, len(manifest["cases"]), source)
    return out
