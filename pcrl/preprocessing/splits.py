"""Patient-level splits and nested label fractions (docs/method.md protocol).

Splits are always by case (patient / scan id), never by cube, so no cube of a test patient
is ever seen in training. LUNA16 is split by its subsets (the release pretrains on subsets
0-6 and validates on 7-9); other datasets by a seeded random draw. Label fractions (10 %,
20 %, 50 %, 100 % of the training cases) are nested prefixes of one seeded permutation, so a
smaller fraction is always a subset of a larger one.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from fractions import Fraction

import numpy as np

from pcrl.errors import ConfigError, DataError

__all__ = ["check_disjoint", "fraction_key", "nested_fractions", "split_by_group", "split_random"]


def split_by_group(cases: list[dict], groups: dict[str, list[str]]) -> dict[str, list[str]]:
    """Assign cases to splits by their ``group`` (e.g. the LUNA16 subset).

    Args:
        cases: Entries with ``id`` and ``group`` (``cases.json``).
        groups: Split name -> groups it takes, e.g. ``{"train": ["subset0", ...],
            "val": ["subset6"], "test": ["subset7", "subset8", "subset9"]}``. Cases of groups
            named by no split are left out.

    Returns:
        Split name -> case ids, in the order of ``cases``.

    Raises:
        ConfigError: a group is named by two splits.
        DataError: a split receives no case.
    """
    owner: dict[str, str] = {}
    for name, names in groups.items():
        for group in names:
            if group in owner:
                raise ConfigError(f"group {group!r} is assigned to both splits {owner[group]!r} and {name!r}")
            owner[group] = name
    split: dict[str, list[str]] = {name: [] for name in groups}
    for case in cases:
        owner_name = owner.get(str(case.get("group")))
        if owner_name is not None:
            split[owner_name].append(str(case["id"]))
    for name, ids in split.items():
        if not ids:
            raise DataError(f"split {name!r} is empty: no case has a group in {list(groups[name])}")
    check_disjoint(split)
    return split


def _rounded_count(fraction: float, n: int) -> int:
    """``fraction * n`` rounded half up, exact for decimal fractions such as 0.15."""
    return math.floor(Fraction(repr(float(fraction))) * n + Fraction(1, 2))


def split_random(case_ids: list[str], *, val: float, test: float, seed: int) -> dict[str, list[str]]:
    """Seeded random split of case ids into ``train`` / ``val`` / ``test``.

    Split sizes are ``val * n`` and ``test * n`` rounded half up; train takes the rest. The
    draw permutes the *sorted* ids, so it does not depend on the input order.

    Raises:
        ConfigError: a fraction is outside [0, 1) or val + test >= 1.
        DataError: duplicate ids, or a split with a non-zero fraction (or train) would be empty.
    """
    for key, value in (("val", val), ("test", test)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"split fraction {key!r} must be in [0, 1), got {value}")
    if val + test >= 1.0:
        raise ConfigError(f"split fractions val + test must be < 1, got {val} + {test}")
    ids = _sorted_unique(case_ids)
    n = len(ids)
    sizes = {"test": _rounded_count(test, n), "val": _rounded_count(val, n)}
    sizes["train"] = n - sizes["test"] - sizes["val"]
    for name, fraction in (("train", 1.0), ("val", val), ("test", test)):
        if fraction > 0 and sizes[name] < 1:
            raise DataError(
                f"split {name!r} would be empty with {n} case(s) (val={val}, test={test}); "
                "lower the other fractions or add cases"
            )
    shuffled = [ids[i] for i in np.random.default_rng(seed).permutation(n)]
    test_ids = shuffled[: sizes["test"]]
    val_ids = shuffled[sizes["test"] : sizes["test"] + sizes["val"]]
    train_ids = shuffled[sizes["test"] + sizes["val"] :]
    return {"train": sorted(train_ids), "val": sorted(val_ids), "test": sorted(test_ids)}


def fraction_key(fraction: float) -> str:
    """The key of a label fraction in ``fractions.json``: ``0.1`` -> ``"0.1"``, ``1`` -> ``"1.0"``."""
    return repr(float(fraction))


def nested_fractions(train_ids: list[str], fractions: list[float], seed: int) -> dict[str, list[str]]:
    """Nested subsets of the training cases, one per label fraction.

    One seeded permutation of the sorted ids; fraction ``f`` takes its first ``ceil(f * n)``
    ids, so 10 % is a subset of 20 %, of 50 %, of 100 %.

    Returns:
        ``fraction_key(f)`` -> ids, in permutation order.

    Raises:
        ConfigError: a fraction outside (0, 1], or the same fraction twice.
        DataError: duplicate ids, or a fraction that selects no case.
    """
    keys = [fraction_key(f) for f in fractions]
    for f in fractions:
        if not 0.0 < f <= 1.0:
            raise ConfigError(f"label fraction must be in (0, 1], got {f}")
    if len(set(keys)) != len(keys):
        raise ConfigError(f"label fractions repeat: {list(fractions)}")
    ids = _sorted_unique(train_ids)
    shuffled = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    subsets = {}
    for key, f in zip(keys, fractions):
        count = math.ceil(Fraction(repr(float(f))) * len(ids))
        if count < 1:
            raise DataError(f"label fraction {key} of {len(ids)} training case(s) selects no case")
        subsets[key] = shuffled[:count]
    return subsets


def check_disjoint(split: dict[str, list[str]]) -> None:
    """Raise DataError if an id appears twice in a split or in two splits (naming them)."""
    for name, ids in split.items():
        repeated = sorted(i for i, count in Counter(ids).items() if count > 1)
        if repeated:
            raise DataError(f"split {name!r} lists ids more than once: {repeated[:5]}")
    for (name_a, ids_a), (name_b, ids_b) in itertools.combinations(split.items(), 2):
        shared = sorted(set(ids_a) & set(ids_b))
        if shared:
            more = f" and {len(shared) - 5} more" if len(shared) > 5 else ""
            raise DataError(f"splits {name_a!r} and {name_b!r} share case ids {shared[:5]}{more}")


def _sorted_unique(case_ids: list[str]) -> list[str]:
    """Sorted ids; DataError naming the first duplicates."""
    ids = sorted(str(i) for i in case_ids)
    duplicates = sorted({a for a, b in zip(ids, ids[1:]) if a == b})
    if duplicates:
        raise DataError(f"case ids repeat: {duplicates[:5]}")
    return ids
