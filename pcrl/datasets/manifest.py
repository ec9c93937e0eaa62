"""``manifest.json``: the download stage's description of a dataset's cases, read back.

The manifest format is defined in docs/CONVENTIONS.md ("Data layout"): the dataset, its
source, its root (relative to the manifest's folder when inside it), the cases (id, image,
label, group, relative to the root) and the extras (CSVs, dataset.json). It is written by
:func:`pcrl.datasets.layout.build_manifest`; this module validates it, resolves its paths and
gathers the cases of every download shard.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema

from pcrl.datasets.shards import check_shard_set, shard_folders
from pcrl.errors import DataError

MANIFEST_NAME = "manifest.json"
SOURCES: tuple[str, ...] = ("phantom", "download", "local")

_MANIFEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["dataset", "source", "root", "cases", "extras"],
    "properties": {
        "dataset": {"type": "string", "minLength": 1},
        "source": {"enum": list(SOURCES)},
        "root": {"type": "string", "minLength": 1},
        "cases": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "image", "label", "group"],
                "properties": {
                    "id": {"type": "string", "minLength": 1},
                    "image": {"type": "string", "minLength": 1},
                    "label": {"type": ["string", "null"]},
                    "group": {"type": "string", "minLength": 1},
                },
            },
        },
        "extras": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def empty_manifest(dataset: str, source: str, shard: tuple[int, int] = (0, 1)) -> dict[str, Any]:
    """The manifest of a download shard with no case (more shards than archives)."""
    return {"dataset": dataset, "source": source, "root": ".", "cases": [], "extras": {}, "shard": list(shard)}


def validate_manifest(manifest: Any, where: str) -> None:
    """Check the structure of a manifest; DataError naming ``where`` and the bad key."""
    try:
        jsonschema.validate(manifest, _MANIFEST_SCHEMA)
    except jsonschema.ValidationError as err:
        key = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise DataError(f"{where}: invalid manifest at {key}: {err.message}") from None
    ids = [case["id"] for case in manifest["cases"]]
    if len(set(ids)) != len(ids):
        raise DataError(f"{where}: invalid manifest: duplicate case ids")


def load_manifest(path: Path) -> dict[str, Any]:
    """Read and validate ``manifest.json``.

    Raises:
        DataError: the file is missing, is not JSON, or does not have the manifest structure.
    """
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"manifest {path} does not exist (run 'pcrl download' first)") from None
    except (OSError, ValueError) as err:
        raise DataError(f"cannot parse manifest {path}: {err}") from err
    validate_manifest(manifest, str(path))
    return manifest


def manifest_root(manifest: dict[str, Any], manifest_path: Path) -> Path:
    """Absolute dataset root of a manifest (``root`` is relative to the manifest's folder)."""
    root = Path(manifest["root"])
    return root if root.is_absolute() else (Path(manifest_path).parent / root).resolve()


def _resolve(root: Path, rel: str, manifest_path: Path, check: bool) -> Path:
    """``root / rel``; DataError naming the manifest when ``check`` and the file is missing."""
    path = root / rel
    if check and not path.is_file():
        raise DataError(f"manifest {manifest_path}: file {path} is missing")
    return path


def resolve_case_paths(
    manifest: dict[str, Any], manifest_path: Path, *, check: bool = True
) -> list[dict[str, Any]]:
    """Cases of a manifest with absolute ``image`` / ``label`` paths.

    Args:
        manifest: A manifest as returned by :func:`load_manifest`.
        manifest_path: Where it was read from.
        check: Also check that every image and label file exists.

    Returns:
        ``[{"id", "group", "image": Path, "label": Path | None}, ...]`` in manifest order.
    """
    root = manifest_root(manifest, manifest_path)
    return [
        {
            "id": case["id"],
            "group": case["group"],
            "image": _resolve(root, case["image"], manifest_path, check),
            "label": None if case["label"] is None
            else _resolve(root, case["label"], manifest_path, check),
        }
        for case in manifest["cases"]
    ]


def resolve_extras(manifest: dict[str, Any], manifest_path: Path) -> dict[str, Path]:
    """The manifest's ``extras`` (CSVs, dataset.json) as absolute paths."""
    root = manifest_root(manifest, manifest_path)
    return {key: root / rel for key, rel in manifest["extras"].items()}


# --------------------------------------------------------------------------- shards


def read_manifests(raw: Path, *, dataset: str | None = None, count: int | None = None
                   ) -> list[tuple[Path, dict[str, Any]]]:
    """``(path, manifest)`` of every download shard of ``raw`` (:mod:`pcrl.datasets.shards`), in
    shard order; ``raw`` itself when it holds ``manifest.json``. The shards must be the
    complete shard set of one dataset (``dataset`` when given; ``count`` shards when given):
    :func:`pcrl.datasets.shards.check_shard_set`. A lone manifest without ``shard`` is the
    whole dataset."""
    raw = Path(raw)
    listed = [(folder / MANIFEST_NAME, load_manifest(folder / MANIFEST_NAME))
              for folder in shard_folders(raw, MANIFEST_NAME)]
    check_shard_set(raw, [(path, manifest["dataset"], manifest.get("shard", [0, 1] if path.parent == raw else None))
                          for path, manifest in listed], dataset=dataset, count=count)
    return listed


def gathered_cases(raw: Path, order: Callable[[dict[str, Any]], Any], *, dataset: str | None = None,
                   count: int | None = None) -> list[dict[str, Any]]:
    """Every case of every download shard (absolute paths), sorted by ``order``; the shards
    checked as by :func:`read_manifests`.

    Raises:
        DataError: The shards hold no case, or two shards hold the same case id.
    """
    cases: list[dict[str, Any]] = []
    seen: dict[str, Path] = {}
    for path, manifest in read_manifests(raw, dataset=dataset, count=count):
        for case in resolve_case_paths(manifest, path):
            if case["id"] in seen:
                raise DataError(f"case {case['id']!r} is in {seen[case['id']]} and in {path}")
            seen[case["id"]] = path
            cases.append(case)
    if not cases:
        raise DataError(f"{raw}: no download shard lists a case")
    return sorted(cases, key=order)
