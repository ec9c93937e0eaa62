"""Checkpoint files that are verified when read back: one writer and one reader for all.

Every ``.pt`` file the pipeline writes (training checkpoints, initialisation records,
fine-tuned models, the best epoch) is a mapping saved with :func:`save_checked`, which
adds :data:`DIGEST_KEY`: the sha256 of everything else in the mapping
(:func:`object_digest`). :func:`load_checked` loads with
``weights_only=True`` (no code can run from a checkpoint), verifies that digest, and turns
every failure into a :class:`pcrl.errors.DataError` naming the file, without torch's
advice to retry with ``weights_only=False``, which would execute the file's code.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from pcrl.atomic import atomic_path
from pcrl.errors import DataError

#: Key of the sha256 of a checkpoint's content, stored in the checkpoint itself.
DIGEST_KEY = "content_sha256"
#: Lines of torch's error that advise loading with ``weights_only=False`` (unsafe).
_ADVICE = re.compile(r"weights_only|arbitrary code|safe_globals|can still be loaded|trust the "
                     r"source|Check the documentation", re.IGNORECASE)


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


def save_checked(obj: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write the mapping ``obj`` to ``path`` atomically, with the digest of its content.

    torch.save is given an open file, not the temporary path: given a path, it names the
    zip's root folder after the file, and the temporary name is random, so equal contents
    would give different bytes (and DVC would see a rerun's equal weights as changed).
    Given a file, the root is always ``archive``: equal contents, equal bytes.
    """
    content = {k: v for k, v in obj.items() if k != DIGEST_KEY}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save({**content, DIGEST_KEY: object_digest(content)}, fh)


def _reason(exc: BaseException) -> str:
    """The first line of torch's error, without the advice to load unsafely."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    kept = [line for line in lines if not _ADVICE.search(line)]
    named = [line for line in kept if "Unsupported" in line]  # e.g. the global it refused
    return re.sub(r"^WeightsUnpickler error:\s*", "", (named or kept or [type(exc).__name__])[0])[:300]


def load_checked(
    path: str | os.PathLike[str],
    what: str,
    *,
    require_digest: bool = True,
    allowed: Iterable[type] = (),
) -> dict[str, Any]:
    """Load a checkpoint mapping without executing code, verifying its digest.

    Args:
        path: The file.
        what: What it is, for messages ("training checkpoint", "fine-tuned model").
        require_digest: Refuse a file without :data:`DIGEST_KEY` (every file the pipeline
            writes has one); False for external checkpoints, verified when present.
        allowed: Extra classes the unpickler may build (e.g. ``argparse.Namespace``).

    Returns:
        The mapping, without its digest key.

    Raises:
        DataError: naming the file when it is missing, truncated, corrupt, not a mapping,
            would need code execution to load, or does not match its digest.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        with torch.serialization.safe_globals(list(allowed)):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # RuntimeError, EOFError, UnpicklingError, zip errors, ...
        raise DataError(
            f"{path}: not a readable {what}: it is truncated or corrupt, or holds Python "
            f"objects that would need code execution to load ({_reason(exc)})"
        ) from None
    if not isinstance(obj, Mapping):
        raise DataError(f"{path}: expected a {what} (a mapping), found {type(obj).__name__}")
    content = {str(k): v for k, v in obj.items() if k != DIGEST_KEY}
    stored = obj.get(DIGEST_KEY)
    if stored is None:
        if require_digest:
            raise DataError(f"{path}: {what} carries no content digest ({DIGEST_KEY}); it was "
                            "not written by this version of the pipeline: rerun its stage")
        return content
    if object_digest(content) != stored:
        raise DataError(f"{path}: {what} is corrupt: its content does not match the sha256 "
                        "stored when it was written (bit flip or partial copy); rerun its stage")
    return content


def first_nonfinite(tensors: Mapping[str, Any]) -> str | None:
    """The name of the first floating-point tensor holding NaN or inf, or None."""
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            if not bool(torch.isfinite(value).all()):
                return str(name)
    return None


def require_finite(tensors: Mapping[str, Any], path: str | os.PathLike[str], what: str) -> None:
    """Raise DataError naming ``path`` and the first tensor with NaN/inf values."""
    bad = first_nonfinite(tensors)
    if bad is not None:
        count = sum(1 for v in tensors.values() if isinstance(v, torch.Tensor)
                    and v.is_floating_point() and not bool(torch.isfinite(v).all()))
        raise DataError(f"{path}: {what} holds non-finite weights (NaN or inf) in {bad}"
                        + (f" and {count - 1} more tensor(s)" if count > 1 else ""))
