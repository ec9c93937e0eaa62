"""Seeds and generators derived from a run's seed: one home for every stream of randomness.

All streams come from numpy's ``SeedSequence``, which mixes its entropy words so that
nearby keys (rank 0 and 1, epoch 3 and 4, case 7 and 8) give independent streams. Nothing
here touches a global RNG (docs/design.md, principle 4).
"""

from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np


def mix_seed(*keys: int, bits: Literal[32, 64] = 64) -> int:
    """A ``bits``-bit seed mixing the integers ``keys`` (each taken modulo 2**63).

    Used for the training generator of a (seed, rank, epoch) and the augmentation of a
    (loader seed, item index).
    """
    words = np.random.SeedSequence([k % 2**63 for k in keys]).generate_state(bits // 32, dtype=np.uint32)
    return int(words[0]) if bits == 32 else int(words[1]) << 32 | int(words[0])


def indexed_rng(seed: int, *keys: int) -> np.random.Generator:
    """Generator of the stream (seed, key, ...), e.g. (seed, dataset stream, case index)."""
    return np.random.default_rng([seed, *keys])


def named_rng(seed: int, name: str) -> np.random.Generator:
    """Generator of the stream (seed, name), keyed by a name (e.g. a case id) rather than a
    position, so it does not change when items are reordered, added or run in parallel."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    key = tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))
