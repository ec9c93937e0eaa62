"""File digests: of downloads (against published checksums) and of initialisation weights
(in fine-tuning fingerprints). The digest of a checkpoint's content is
:func:`pcrl.torchfile.object_digest`."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256",
                chunk_size: int = 1 << 20) -> str:
    """Hex digest of the file ``path`` with the hashlib ``algorithm`` (read in chunks)."""
    digest = hashlib.new(algorithm)
    with Path(path).open("rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
