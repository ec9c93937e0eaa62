"""Digests: of files (downloads, initialisation weights) and of the tensors a checkpoint holds."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256",
                chunk_size: int = 1 << 20) -> str:
    """Hex digest of the file ``path`` with the hashlib ``algorithm`` (read in chunks)."""
    digest = hashlib.new(algorithm)
    with Path(path).open("rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _update(digest: Any, key: str, value: Any) -> None:
    """Feed one (key path, value) leaf, or every leaf below a container, into ``digest``."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}|tensor|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    elif isinstance(value, Mapping):
        digest.update(f"{key}|mapping|{len(value)}|".encode())
        for name in sorted(value, key=str):
            _update(digest, f"{key}/{name}", value[name])
    elif isinstance(value, (list, tuple)):
        digest.update(f"{key}|{type(value).__name__}|{len(value)}|".encode())
        for i, item in enumerate(value):
            _update(digest, f"{key}/{i}", item)
    else:
        digest.update(f"{key}|{type(value).__name__}|{value!r}|".encode())


def object_digest(obj: Any) -> str:
    """sha256 over every tensor's bytes, dtype and shape and every other value of ``obj``.

    Containers are walked in a fixed order (mapping keys sorted), so the digest of a
    checkpoint depends only on its content: a flipped bit anywhere changes it.
    """
    digest = hashlib.sha256()
    _update(digest, "", obj)
    return digest.hexdigest()
