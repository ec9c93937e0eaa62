"""``pcrl download``: one dataset in its native layout, verified, with its manifest."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from pcrl.atomic import atomic_dir, write_json
from pcrl.data.layout import build_manifest
from pcrl.data.registry import DatasetSpec, get_dataset
from pcrl.errors import ConfigError

log = logging.getLogger(__name__)


def _phantom(dataset: str, data: dict[str, Any], into: Path) -> Path:
    from pcrl.data.phantom import GENERATORS

    if dataset not in GENERATORS:
        raise ConfigError(
            f"data.datasets: no phantom exists for {dataset}; known: {sorted(GENERATORS)}"
        )
    phantom = data.get("phantom", {})
    sizes = {k: tuple(v) if isinstance(v, list) else v for k, v in phantom.get(dataset, {}).items()}
    GENERATORS[dataset](into, seed=phantom.get("seed", 0), **sizes)
    return into


def with_mirror(spec: DatasetSpec, mirror: str | None) -> DatasetSpec:
    """``spec`` fetching every file from ``<mirror>/<filename>`` (same checksums), if set."""
    if not mirror:
        return spec
    files = tuple(
        dataclasses.replace(f, url=f"{mirror.rstrip('/')}/{f.filename}") for f in spec.files
    )
    return dataclasses.replace(spec, files=files)


def run_download(dataset: str, data: dict[str, Any], *, out: Path, progress: bool = True) -> Path:
    """Write ``out`` = the dataset's native layout (or a pointer to it) + ``manifest.json``.

    ``data.source`` picks how: ``phantom`` generates the embedded demo data, ``download``
    fetches the published archives (resumable, checksum-verified, cached in
    ``data.cache_dir``), ``local`` verifies a copy the user already has at
    ``data.local_paths.<dataset>`` and writes only the manifest pointing at it. The
    folder appears only once everything is verified. ``data.mirror`` (an institution's
    copy of the archives) replaces the published hosts; checksums still apply.
    """
    source = data["source"]
    spec = with_mirror(get_dataset(dataset), data.get("mirror"))
    with atomic_dir(out) as tmp:
        if source == "phantom":
            root = _phantom(dataset, data, tmp)
        elif source == "download":
            from pcrl.data.download import download_dataset

            cache = Path(data.get("cache_dir", "data/downloads"))
            root = download_dataset(spec, cache, tmp / "native", progress=progress)
        else:
            local = Path(data["local_paths"][dataset]).expanduser()
            if not local.is_dir():
                raise ConfigError(f"data.local_paths.{dataset}: {local} is not a folder")
            root = local.resolve()
        manifest = build_manifest(dataset, root, source=source, manifest_dir=tmp)
        write_json(tmp / "manifest.json", manifest)
        log.info("%s: %d cases verified (%s)", dataset, len(manifest["cases"]), source)
    return out
