"""Tests of pcrl.preprocessing.splits: patient-level splits and nested label fractions."""

from __future__ import annotations

import pytest

from pcrl.preprocessing.splits import check_disjoint, nested_fractions, split_by_group, split_random
from pcrl.errors import ConfigError, DataError

LUNA_GROUPS = {
    "train": [f"subset{i}" for i in range(6)],
    "val": ["subset6"],
    "test": ["subset7", "subset8", "subset9"],
}


def _luna_cases() -> list[dict]:
    return [{"id": f"s{s}-c{c}", "group": f"subset{s}"} for s in range(10) for c in range(2)]


def _covers(split: dict[str, list[str]], ids: list[str]) -> bool:
    every = [i for part in split.values() for i in part]
    return sorted(every) == sorted(ids) and len(every) == len(set(every))


# ---------------------------------------------------------------------- by group


def test_split_by_luna_subsets():
    split = split_by_group(_luna_cases(), LUNA_GROUPS)
    assert split["val"] == ["s6-c0", "s6-c1"]
    assert split["test"] == ["s7-c0", "s7-c1", "s8-c0", "s8-c1", "s9-c0", "s9-c1"]
    assert split["train"] == [f"s{s}-c{c}" for s in range(6) for c in range(2)]
    assert _covers(split, [c["id"] for c in _luna_cases()])


def test_split_by_group_leaves_out_unnamed_groups():
    split = split_by_group(_luna_cases(), {"train": ["subset0"], "val": ["subset1"]})
    assert split == {"train": ["s0-c0", "s0-c1"], "val": ["s1-c0", "s1-c1"]}


def test_split_by_group_errors():
    with pytest.raises(ConfigError, match="subset6.*'train'.*'val'"):
        split_by_group(_luna_cases(), {"train": ["subset6"], "val": ["subset6"]})
    with pytest.raises(DataError, match="split 'test' is empty.*subset42"):
        split_by_group(_luna_cases(), {"train": ["subset0"], "test": ["subset42"]})


# ------------------------------------------------------------------------ random


def test_split_random_sizes_disjoint_covering_and_seeded():
    ids = [f"case{i:02d}" for i in range(20)]
    split = split_random(ids, val=0.1, test=0.2, seed=0)
    assert {k: len(v) for k, v in split.items()} == {"train": 14, "val": 2, "test": 4}
    assert _covers(split, ids)
    assert split == split_random(ids[::-1], val=0.1, test=0.2, seed=0)  # input order does not matter
    assert split != split_random(ids, val=0.1, test=0.2, seed=1)


def test_split_random_rounds_half_up():
    split = split_random([f"c{i}" for i in range(5)], val=0.1, test=0.3, seed=0)  # 0.5 -> 1, 1.5 -> 2
    assert {k: len(v) for k, v in split.items()} == {"train": 2, "val": 1, "test": 2}


def test_split_random_empty_split_raises():
    with pytest.raises(DataError, match="'val' would be empty with 3 case"):
        split_random(["a", "b", "c"], val=0.1, test=0.0, seed=0)
    with pytest.raises(ConfigError, match="val \\+ test"):
        split_random(["a", "b", "c"], val=0.5, test=0.5, seed=0)
    with pytest.raises(DataError, match="repeat.*'a'"):
        split_random(["a", "a", "b"], val=0.0, test=0.0, seed=0)


def test_split_random_zero_fraction_gives_empty_split():
    split = split_random(["a", "b", "c"], val=0.0, test=0.34, seed=0)
    assert split["val"] == [] and len(split["test"]) == 1 and len(split["train"]) == 2


# --------------------------------------------------------------------- fractions


def test_nested_fractions_exact_ceil_sizes_and_nesting():
    ids = [f"p{i:02d}" for i in range(17)]
    subsets = nested_fractions(ids, [0.1, 0.2, 0.5, 1.0], seed=4)
    assert list(subsets) == ["0.1", "0.2", "0.5", "1.0"]
    assert [len(v) for v in subsets.values()] == [2, 4, 9, 17]  # ceil(1.7), ceil(3.4), ceil(8.5), 17
    assert subsets["0.1"] == subsets["0.2"][:2] and subsets["0.2"] == subsets["0.5"][:4]
    assert subsets["0.5"] == subsets["1.0"][:9] and sorted(subsets["1.0"]) == ids
    assert subsets == nested_fractions(ids[::-1], [0.1, 0.2, 0.5, 1.0], seed=4)


def test_nested_fractions_no_float_overshoot():
    # 0.7 * 10 is 7.000000000000001 in floating point; the subset must still hold 7 cases
    assert len(nested_fractions([str(i) for i in range(10)], [0.7], seed=0)["0.7"]) == 7


def test_nested_fractions_errors():
    with pytest.raises(ConfigError, match="0, 1"):
        nested_fractions(["a", "b"], [0.0], seed=0)
    with pytest.raises(ConfigError, match="1.5"):
        nested_fractions(["a", "b"], [1.5], seed=0)
    with pytest.raises(DataError, match="fraction 0.1 of 0 training"):
        nested_fractions([], [0.1], seed=0)


# ------------------------------------------------------------------- disjointness


def test_check_disjoint_names_ids_and_splits():
    check_disjoint({"train": ["a", "b"], "val": ["c"], "test": ["d"]})
    with pytest.raises(DataError, match="'train' and 'test' share case ids \\['b'\\]"):
        check_disjoint({"train": ["a", "b"], "val": ["c"], "test": ["b", "d"]})
    with pytest.raises(DataError, match="'val' lists ids more than once: \\['c'\\]"):
        check_disjoint({"train": ["a"], "val": ["c", "c"]})
