"""Tests of pcrl.report.verdicts: the rule that says "better", "worse" or "cannot tell" (and
why), and the verdict sentences."""

from __future__ import annotations

import pytest
from report_helpers import seed_runs

from pcrl.report.summary import summarise
from pcrl.report.verdicts import MIN_PAIRED_SEEDS, fraction_label, judge, paired_difference, verdict


def test_fraction_labels():
    assert [fraction_label(f) for f in ("0.1", 0.2, 0.5, "1.0", 0.125)] == ["10%", "20%", "50%", "100%", "12.5%"]



def _stats(n: int, ci: list[float] | None, t_ci: list[float] | None = None) -> dict:
    """Hand-made paired statistics (only what the rule reads, and a marker that is kept)."""
    stats = {"n": n, "seeds": list(range(n)), "mean": 0.0, "ci": ci}
    return stats if t_ci is None else {**stats, "t_ci": t_ci}


@pytest.mark.parametrize(
    ("stats", "expected"),
    [
        (_stats(0, None), ("cannot tell", "no seed was run by both")),
        (_stats(1, None), ("cannot tell", "n = 1 paired seed")),
        (_stats(3, [-0.01, 0.02], [-0.05, 0.06]), ("cannot tell", "the 95 % interval [-0.010, +0.020] contains 0")),
        (_stats(3, [0.0, 0.02], [0.001, 0.03]), ("cannot tell", "the 95 % interval [+0.000, +0.020] contains 0")),
        (_stats(2, [0.01, 0.03], [0.005, 0.04]),
         ("cannot tell", "the 95 % interval [+0.010, +0.030] excludes 0, but 2 paired seeds are too few "
                         "(at least 3)")),
        (_stats(3, [0.01, 0.02], [-0.01, 0.05]),
         ("cannot tell", "the 95 % interval [+0.010, +0.020] excludes 0 but the Student-t interval "
                         "[-0.010, +0.050] does not")),
        (_stats(3, [-0.02, -0.01], [-0.05, 0.01]),
         ("cannot tell", "the 95 % interval [-0.020, -0.010] excludes 0 but the Student-t interval "
                         "[-0.050, +0.010] does not")),
        (_stats(3, [0.01, 0.02], [-0.05, -0.01]),
         ("cannot tell", "the 95 % interval [+0.010, +0.020] excludes 0 but the Student-t interval "
                         "[-0.050, -0.010] does not")),
        (_stats(3, [0.01, 0.02], [0.0001, 0.03]), ("better", "the 95 % interval [+0.010, +0.020] excludes 0")),
        (_stats(4, [-0.02, -0.0004], [-0.03, -0.0001]),
         ("worse", "the 95 % interval [-0.020, -4.0e-04] excludes 0")),
    ],
    ids=["no-seed", "one-seed", "contains-0", "touches-0", "too-few", "t-contains-0", "t-contains-0-below",
         "t-other-side", "better", "worse"],
)
def test_the_rule_says_better_or_worse_only_when_every_condition_holds(stats, expected):
    judged = judge(stats)
    assert (judged["verdict"], judged["reason"]) == expected
    assert list(judged) == [*stats, "verdict", "reason"]  # the statistics kept, in order, the verdict last
    assert MIN_PAIRED_SEEDS == 3

def test_one_paired_seed_cannot_tell():
    pair = paired_difference({"seeds": [0, 1], "values": [0.9, 0.8]}, {"seeds": [1, 5], "values": [0.6, 0.1]})
    assert (pair["n"], pair["seeds"], pair["ci"]) == (1, [1], None)
    assert pair["mean"] == pytest.approx(0.2)
    assert (pair["verdict"], pair["reason"]) == ("cannot tell", "n = 1 paired seed")
    none = paired_difference({"seeds": [0], "values": [0.9]}, {"seeds": [1], "values": [0.6]})
    assert (none["n"], none["mean"], none["verdict"]) == (0, None, "cannot tell")


def test_interval_containing_zero_cannot_tell():
    runs = seed_runs({("scratch", 0.5): [0.70, 0.60], ("pcrl", 0.5): [0.68, 0.65]})  # differences -0.02, +0.05
    summary = summarise(runs)
    pair = summary["ncc"]["0.5"]["pcrl"]["paired"]["scratch"]
    assert pair["ci"] == pytest.approx([-0.02, 0.05])
    assert (pair["verdict"], pair["reason"]) == ("cannot tell", "the 95 % interval [-0.020, +0.050] contains 0")
    sentence, best = verdict(summary)
    assert sentence.endswith("Against scratch: +0.015 over 2 paired seeds; cannot tell "
                             "(the 95 % interval [-0.020, +0.050] contains 0).")
    assert best == ("ncc (auc): whether PCRL is best at every label fraction cannot be told; "
                    "undecided at 50% against scratch.")
    # an interval that touches 0 (differences 0 and +0.05: interval [0, +0.05]) does not exclude it
    touching = paired_difference({"seeds": [0, 1], "values": [0.7, 0.75]}, {"seeds": [0, 1], "values": [0.7, 0.7]})
    assert touching["ci"] == pytest.approx([0.0, 0.05])
    assert (touching["verdict"], touching["reason"]) == ("cannot tell", "the 95 % interval [+0.000, +0.050] contains 0")


def test_clear_differences_over_five_seeds_are_better_and_worse():
    runs = seed_runs({
        ("scratch", 1.0): [0.70, 0.72, 0.69, 0.71, 0.70],
        ("genesis", 1.0): [0.90, 0.91, 0.89, 0.92, 0.90],
        ("pcrl", 1.0): [0.80, 0.83, 0.79, 0.82, 0.80],  # scratch + (0.10, 0.11, 0.10, 0.11, 0.10)
    })
    summary = summarise(runs)
    cells = summary["ncc"]["1.0"]
    up, down = cells["pcrl"]["paired"]["scratch"], cells["pcrl"]["paired"]["genesis"]
    assert (up["n"], up["verdict"], down["verdict"]) == (5, "better", "worse")
    assert up["mean"] == pytest.approx(0.104)
    assert 0.10 - 1e-12 <= up["ci"][0] <= up["mean"] <= up["ci"][1] <= 0.11 + 1e-12
    assert down["ci"][1] < 0
    assert set(cells["genesis"]["paired"]) == {"scratch", "pcrl"} and "paired" not in cells["scratch"]
    sentence, best = verdict(summary)
    assert "Against scratch: +0.104 over 5 paired seeds, 95 % interval [" in sentence
    assert "; PCRL is better (the interval excludes 0). Against genesis: -0.096" in sentence
    assert "PCRL is worse (the interval excludes 0)." in sentence
    assert best == "ncc (auc): PCRL is not best at every label fraction: it is worse at 100% than genesis."


def test_best_at_every_fraction_only_when_every_comparison_is_better():
    better = {("scratch", f): [0.6, 0.62, 0.61] for f in (0.1, 1.0)}
    better |= {("pcrl", f): [0.7, 0.73, 0.70] for f in (0.1, 1.0)}
    assert verdict(summarise(seed_runs(better)))[-1] == (
        "ncc (auc): PCRL is best at every label fraction (10% and 100%): better than every other initialisation.")
    mixed = better | {("moco", 1.0): [0.71, 0.70, 0.74], ("genesis", 0.1): [0.8, 0.81, 0.82]}
    assert verdict(summarise(seed_runs(mixed)))[-1] == (
        "ncc (auc): PCRL is not best at every label fraction: it is worse at 10% than genesis; "
        "undecided at 100% against moco.")


def test_demo_like_single_seed_never_claims_a_win():
    runs = seed_runs({("scratch", 1.0): [0.500], ("genesis", 1.0): [0.61], ("pcrl", 1.0): [0.903]})
    summary = summarise(runs)
    lines = verdict(summary)
    for line in lines:
        assert not any(word in line.lower() for word in ("beat", "better", "best at every label fraction (")), line
    assert lines[0] == ("ncc (auc, 100% labels): PCRL 0.903 ± 0.000 over 1 seed. Against scratch: +0.403 over "
                        "1 paired seed; cannot tell (n = 1 paired seed). Against genesis: +0.293 over 1 paired "
                        "seed; cannot tell (n = 1 paired seed).")
    assert lines[1] == ("ncc (auc): whether PCRL is best at every label fraction cannot be told; "
                        "undecided at 100% against scratch and genesis.")


def test_verdict_states_missing_pcrl_and_scratch():
    runs = seed_runs({("scratch", 0.1): [0.6], ("moco", 0.1): [0.7], ("pcrl", 1.0): [0.9, 0.92],
                      ("moco", 1.0): [0.8, 0.8]})
    lines = verdict(summarise(runs))
    assert lines[0] == "ncc (auc, 10% labels): no PCRL run, so PCRL cannot be compared (runs: scratch, moco)."
    assert lines[1].startswith("ncc (auc, 100% labels): PCRL 0.910 ± 0.014 over 2 seeds. Against moco: +0.110 "
                               "over 2 paired seeds; cannot tell (the 95 % interval [+0.100, +0.120] excludes 0, "
                               "but 2 paired seeds are too few (at least 3)).")
    assert lines[1].endswith("No scratch run, so the gain over random initialisation cannot be stated.")
    assert lines[2].startswith("ncc (auc): PCRL has no run at 10%, so whether it is best")
    assert not any("Against scratch" in line for line in lines)


def test_the_t_interval_guards_the_bootstrap():
    diffs = [0.30, 0.01, 0.02, 0.015, 0.012]  # all positive, but one outlier: the bootstrap excludes 0
    pair = paired_difference({"seeds": list(range(5)), "values": [0.5 + d for d in diffs]},
                             {"seeds": list(range(5)), "values": [0.5] * 5})
    assert pair["ci"][0] > 0 and pair["t_ci"][0] < 0
    assert pair["verdict"] == "cannot tell" and "Student-t interval" in pair["reason"]
