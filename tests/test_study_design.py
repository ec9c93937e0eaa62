"""pcrl.study_design: the study's design is validated key by key, and its gate and falsification
rules read results as configs/study.yaml's ``study.rules`` say (cases derived by hand from that text)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pcrl.errors import ConfigError
from pcrl.study_design import CORE_ARMS, apply_rules, gate_outcome, parse_design


@pytest.fixture(scope="module")
def raw_study(repo_root: Path) -> dict:
    return yaml.safe_load((repo_root / "configs" / "study.yaml").read_text())["study"]


# ------------------------------------------------------------------ parse_design


def test_the_study_design_parses_with_its_arms_and_seeds(raw_study: dict) -> None:
    design = parse_design(copy.deepcopy(raw_study))
    assert set(design["arms"]) == {"pcrl", "moco", "genesis", "shuffled_positives"}
    assert design["arms"]["pcrl"] == {"method": "pcrl", "seeds": [0, 1, 2], "settings": {}}
    assert design["arms"]["moco"] == {"method": "moco", "seeds": [0, 1, 2], "settings": {}}
    assert design["arms"]["genesis"] == {"method": "genesis", "seeds": [0, 1, 2], "settings": {}}
    assert design["arms"]["shuffled_positives"] == {"method": "moco", "seeds": [0, 1, 2],
                                                    "settings": {"shuffle_positives": True}}
    assert design["negative_control"] == "shuffled_positives"
    assert design["positive_control"] == {"seeds": [0, 1, 2], "epochs": 30, "batch_size": 16, "lr": 0.001}
    assert design["scratch_seeds"] == [0, 1, 2, 3, 4]
    assert design["label_sets"] == {"count": 24, "scans": 2, "seed": 0}
    assert design["knn_k"] == 5
    assert design["bootstrap"] == {"samples": 2000, "seed": 0, "level": 0.95}
    assert design["gate"] == {"retrieval_over_chance": 5.0, "psnr_gain_db": 0.0}
    assert design["criterion"] == "probe"
    assert len(design["rules"]) == 4


def _unknown_top_key(raw: dict) -> None:
    raw["arm"] = {}


def _unknown_method(raw: dict) -> None:
    raw["arms"]["simclr"] = {"method": "simclr", "seeds": [0, 1, 2]}


def _duplicate_seeds(raw: dict) -> None:
    raw["arms"]["moco"]["seeds"] = [0, 1, 1]


def _negative_control_is_core(raw: dict) -> None:
    raw["negative_control"] = "moco"


def _negative_control_missing(raw: dict) -> None:
    raw["negative_control"] = "no_such_arm"


def _core_arm_missing(raw: dict) -> None:
    del raw["arms"]["genesis"]


def _level_above_one(raw: dict) -> None:
    raw["bootstrap"]["level"] = 1.5


def _criterion_auc(raw: dict) -> None:
    raw["criterion"] = "auc"


def _duplicate_scratch_seeds(raw: dict) -> None:
    raw["scratch_seeds"] = [0, 0, 1]


def _unknown_arm_key(raw: dict) -> None:
    raw["arms"]["pcrl"]["seed"] = 3


@pytest.mark.parametrize("corrupt, names", [
    (_unknown_top_key, ["study", "arm"]),
    (_unknown_method, ["study.arms.simclr.method", "simclr"]),
    (_duplicate_seeds, ["study.arms.moco.seeds"]),
    (_negative_control_is_core, ["study.negative_control", "moco"]),
    (_negative_control_missing, ["study.negative_control", "no_such_arm"]),
    (_core_arm_missing, ["study.arms", "genesis"]),
    (_level_above_one, ["study.bootstrap.level", "1.5"]),
    (_criterion_auc, ["study.criterion", "auc"]),
    (_duplicate_scratch_seeds, ["study.scratch_seeds"]),
    (_unknown_arm_key, ["study.arms.pcrl", "seed"]),
])
def test_each_bad_value_is_a_config_error_naming_its_key(raw_study: dict, corrupt, names: list[str]) -> None:
    raw = copy.deepcopy(raw_study)
    corrupt(raw)
    with pytest.raises(ConfigError) as info:
        parse_design(raw)
    for name in names:
        assert name in str(info.value)


def test_a_design_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(ConfigError, match="study must be a mapping"):
        parse_design(["arms"])


# ------------------------------------------------------------------ gate_outcome

GATE = {"retrieval_over_chance": 5.0, "psnr_gain_db": 0.0}
CHANCE = 1 / 64  # 5 x chance = 0.078125


def test_pcrl_passes_when_it_retrieves_well_above_chance_and_random_inits_and_restores() -> None:
    passed, reasons = gate_outcome("pcrl", {"retrieval_top1": 0.5, "retrieval_chance": CHANCE, "psnr_gain": 1.2},
                                   GATE, scratch_retrieval=0.2)
    assert (passed, reasons) == (True, [])


def test_retrieval_below_five_times_chance_fails_naming_chance() -> None:
    passed, reasons = gate_outcome("pcrl", {"retrieval_top1": 0.05, "retrieval_chance": CHANCE, "psnr_gain": 1.2},
                                   GATE, scratch_retrieval=0.2)
    assert not passed
    assert len(reasons) == 1 and "chance" in reasons[0]


def test_retrieval_above_chance_but_not_above_random_inits_fails_naming_them() -> None:
    """0.15 >= 5/64 = 0.078, but 0.15 <= 0.2, what a random encoder already retrieves."""
    passed, reasons = gate_outcome("pcrl", {"retrieval_top1": 0.15, "retrieval_chance": CHANCE, "psnr_gain": 1.2},
                                   GATE, scratch_retrieval=0.2)
    assert not passed
    assert len(reasons) == 1 and "random inits" in reasons[0]


def test_retrieval_at_exactly_five_times_chance_passes_the_chance_part() -> None:
    passed, _ = gate_outcome("moco", {"retrieval_top1": 5 / 64, "retrieval_chance": CHANCE}, GATE)
    assert passed


def test_genesis_ignores_retrieval_and_fails_on_a_negative_psnr_gain() -> None:
    bad_retrieval = {"retrieval_top1": 0.0, "retrieval_chance": CHANCE}
    assert gate_outcome("genesis", {**bad_retrieval, "psnr_gain": 0.8}, GATE, scratch_retrieval=0.9) == (True, [])
    assert gate_outcome("genesis", {"psnr_gain": 0.8}, GATE) == (True, [])  # no retrieval gauge needed
    passed, reasons = gate_outcome("genesis", {**bad_retrieval, "psnr_gain": -0.5}, GATE, scratch_retrieval=0.9)
    assert not passed
    assert len(reasons) == 1 and "PSNR" in reasons[0]


def test_a_psnr_gain_of_exactly_the_threshold_fails() -> None:
    passed, reasons = gate_outcome("genesis", {"psnr_gain": 0.0}, GATE)
    assert not passed and "PSNR" in reasons[0]


def test_moco_ignores_psnr() -> None:
    gauges = {"retrieval_top1": 0.5, "retrieval_chance": CHANCE, "psnr_gain": -3.0}
    assert gate_outcome("moco", gauges, GATE, scratch_retrieval=0.2) == (True, [])
    assert gate_outcome("moco", {"retrieval_top1": 0.5, "retrieval_chance": CHANCE}, GATE) == (True, [])


def test_pcrl_needs_both_halves_and_reports_both_failures() -> None:
    passed, reasons = gate_outcome("pcrl", {"retrieval_top1": 0.05, "retrieval_chance": CHANCE, "psnr_gain": -0.5},
                                   GATE, scratch_retrieval=0.2)
    assert not passed and len(reasons) == 2
    assert "chance" in reasons[0] and "PSNR" in reasons[1]
    passed, reasons = gate_outcome("pcrl", {"psnr_gain": 1.0}, GATE)
    assert not passed and reasons == ["no retrieval gauge"]


# ------------------------------------------------------------------ apply_rules

ABOVE, BELOW, CANNOT = "above scratch", "below scratch", "cannot tell"
NEGATIVE = "shuffled_positives"


def test_the_rules_text_is_the_one_the_cases_below_are_derived_from(raw_study: dict) -> None:
    rules = raw_study["rules"]
    assert rules[0].startswith("controls: the positive control (supervised) must be above scratch and the "
                               "negative control (shuffled_positives) must")
    assert rules[0].endswith("otherwise the study cannot tell")
    assert rules[1] == "implementation at fault: MoCo v2 passes the gate and PCRL does not"
    assert rules[2].startswith("implementation at fault: PCRL - scratch <= 0 while MoCo v2 and Models Genesis are "
                               "above scratch")
    assert rules[3] == ("study at fault: PCRL, MoCo v2 and Models Genesis all fail (the gate, or no gain over "
                        "scratch)")
    assert raw_study["negative_control"] == NEGATIVE
    assert CORE_ARMS == ("pcrl", "moco", "genesis")


def _good() -> tuple[dict, dict, dict]:
    gates = {"pcrl": True, "moco": True, "genesis": True, NEGATIVE: True}
    verdicts = {"pcrl": ABOVE, "moco": ABOVE, "genesis": ABOVE, NEGATIVE: CANNOT, "supervised": ABOVE}
    differences = {"pcrl": 0.05, "moco": 0.04, "genesis": 0.03, NEGATIVE: 0.0, "supervised": 0.2}
    return gates, verdicts, differences


# (changes to the all-good result, expected controls_ok, expected outcome, words of a finding)
CASES = [
    ("all good", {}, True, "no rule fired", None),
    ("negative control below scratch is fine", {"verdicts": {NEGATIVE: BELOW}}, True, "no rule fired", None),
    ("positive control cannot tell", {"verdicts": {"supervised": CANNOT}}, False, "study cannot tell",
     "positive control"),
    ("positive control below scratch", {"verdicts": {"supervised": BELOW}}, False, "study cannot tell",
     "positive control"),
    ("negative control above scratch", {"verdicts": {NEGATIVE: ABOVE}}, False, "study cannot tell",
     "negative control"),
    ("moco passes the gate, pcrl does not", {"gates": {"pcrl": False}}, True, "implementation at fault",
     "gate"),
    ("pcrl at or below scratch while moco and genesis above", {"differences": {"pcrl": -0.01},
                                                              "verdicts": {"pcrl": CANNOT}},
     True, "implementation at fault", "PCRL - scratch <= 0"),
    ("pcrl difference exactly 0", {"differences": {"pcrl": 0.0}, "verdicts": {"pcrl": CANNOT}}, True,
     "implementation at fault", "PCRL - scratch <= 0"),
    ("pcrl below scratch but genesis only cannot tell: rule 3 needs both above",
     {"differences": {"pcrl": -0.01}, "verdicts": {"pcrl": CANNOT, "genesis": CANNOT}}, True, "no rule fired",
     None),
    ("both fail the gate: rule 2 does not fire",
     {"gates": {"pcrl": False, "moco": False}}, True, "no rule fired", None),
    ("all three core arms cannot tell", {"verdicts": {"pcrl": CANNOT, "moco": CANNOT, "genesis": CANNOT}},
     True, "study at fault", "all three"),
    ("all three fail, each differently (gate or no gain)",
     {"gates": {"genesis": False}, "verdicts": {"pcrl": BELOW, "moco": CANNOT}, "differences": {"pcrl": 0.01}},
     True, "study at fault", "all three"),
    ("two of three fail: no rule", {"verdicts": {"moco": CANNOT, "genesis": CANNOT}}, True, "no rule fired", None),
]


@pytest.mark.parametrize("label, changes, controls_ok, outcome, finding", CASES, ids=[c[0] for c in CASES])
def test_apply_rules(label: str, changes: dict, controls_ok: bool, outcome: str, finding: str | None) -> None:
    gates, verdicts, differences = _good()
    gates.update(changes.get("gates", {}))
    verdicts.update(changes.get("verdicts", {}))
    differences.update(changes.get("differences", {}))
    result = apply_rules(gates, verdicts, differences, NEGATIVE)
    assert result["controls_ok"] is controls_ok
    assert result["outcome"] == outcome
    if finding is None:
        assert result["findings"] == []
    else:
        assert any(finding in f for f in result["findings"]), result["findings"]
