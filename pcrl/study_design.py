"""The known-answer study's design (the ``study`` section of configs/study.yaml) and its rules.

The design is written before the study runs and is not tuned afterwards: which arms, how many
seeds, the label sets, the gate and the falsification rules. :func:`parse_design` validates
it (a bad key is named), :func:`gate_outcome` and :func:`apply_rules` read the result against
it. See pcrl/runners/study.py for the procedure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pcrl.errors import ConfigError

__all__ = ["CORE_ARMS", "apply_rules", "gate_outcome", "parse_design"]

#: The three methods the falsification rules speak of.
CORE_ARMS = ("pcrl", "moco", "genesis")
_METHODS = ("pcrl", "moco", "genesis")
_TOP_KEYS = {"arms", "negative_control", "positive_control", "scratch_seeds", "label_sets", "knn_k", "bootstrap",
             "gate", "criterion", "rules"}


def _seeds(value: Any, key: str) -> list[int]:
    if not isinstance(value, list) or not value or not all(isinstance(s, int) and s >= 0 for s in value) \
            or len(set(value)) != len(value):
        raise ConfigError(f"study.{key} must be a list of distinct seeds >= 0, got {value!r}")
    return list(value)


def _positive(mapping: Mapping[str, Any], key: str, where: str, kind: type = int) -> Any:
    value: Any = mapping.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) or not float(value) > 0:  # type: ignore[arg-type]
        raise ConfigError(f"study.{where}.{key} must be a positive {kind.__name__}, got {value!r}")
    return value


def parse_design(raw: Any) -> dict[str, Any]:
    """The validated design.

    Raises:
        ConfigError: naming the key at fault.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"study must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"study: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_TOP_KEYS))}")
    arms = raw.get("arms")
    if not isinstance(arms, Mapping) or not arms:
        raise ConfigError("study.arms must map arm names to {method, seeds[, settings]}")
    parsed_arms = {}
    for name, arm in arms.items():
        if not isinstance(arm, Mapping) or arm.get("method") not in _METHODS:
            raise ConfigError(f"study.arms.{name}.method must be one of {_METHODS}, got {arm!r}")
        bad = sorted(set(arm) - {"method", "seeds", "settings"})
        if bad:
            raise ConfigError(f"study.arms.{name}: unknown key(s) {', '.join(bad)}")
        settings = arm.get("settings") or {}
        if not isinstance(settings, Mapping):
            raise ConfigError(f"study.arms.{name}.settings must be a mapping of pretrain.{arm['method']} keys")
        parsed_arms[name] = {"method": arm["method"], "seeds": _seeds(arm.get("seeds"), f"arms.{name}.seeds"),
                             "settings": dict(settings)}
    missing = [a for a in CORE_ARMS if a not in parsed_arms]
    if missing:
        raise ConfigError(f"study.arms: the rules need the arms {', '.join(missing)}")
    negative = raw.get("negative_control")
    if negative not in parsed_arms or negative in CORE_ARMS:
        raise ConfigError(f"study.negative_control must name an arm other than {CORE_ARMS}, got {negative!r}")
    positive = raw.get("positive_control")
    if not isinstance(positive, Mapping):
        raise ConfigError("study.positive_control must be {seeds, epochs, batch_size, lr}")
    label_sets, bootstrap, gate = raw.get("label_sets"), raw.get("bootstrap"), raw.get("gate")
    for key, value in (("label_sets", label_sets), ("bootstrap", bootstrap), ("gate", gate)):
        if not isinstance(value, Mapping):
            raise ConfigError(f"study.{key} must be a mapping")
    assert isinstance(label_sets, Mapping) and isinstance(bootstrap, Mapping) and isinstance(gate, Mapping)
    level = bootstrap.get("level", 0.95)
    if not isinstance(level, float) or not 0.5 < level < 1.0:
        raise ConfigError(f"study.bootstrap.level must lie in (0.5, 1), got {level!r}")
    if raw.get("criterion", "probe") not in ("probe", "knn"):
        raise ConfigError(f"study.criterion must be probe or knn, got {raw.get('criterion')!r}")
    return {
        "arms": parsed_arms,
        "negative_control": negative,
        "positive_control": {"seeds": _seeds(positive.get("seeds"), "positive_control.seeds"),
                             "epochs": _positive(positive, "epochs", "positive_control"),
                             "batch_size": _positive(positive, "batch_size", "positive_control"),
                             "lr": _positive(positive, "lr", "positive_control", float)},
        "scratch_seeds": _seeds(raw.get("scratch_seeds"), "scratch_seeds"),
        "label_sets": {"count": _positive(label_sets, "count", "label_sets"),
                       "scans": _positive(label_sets, "scans", "label_sets"),
                       "seed": int(label_sets.get("seed", 0))},
        "knn_k": _positive(raw, "knn_k", "knn_k") if "knn_k" in raw else 5,
        "bootstrap": {"samples": _positive(bootstrap, "samples", "bootstrap"), "seed": int(bootstrap.get("seed", 0)),
                      "level": level},
        "gate": {"retrieval_over_chance": _positive(gate, "retrieval_over_chance", "gate", float),
                 "psnr_gain_db": float(gate.get("psnr_gain_db", 0.0))},
        "criterion": raw.get("criterion", "probe"),
        "rules": list(raw.get("rules") or []),
    }


def gate_outcome(method: str, gauges: Mapping[str, float], gate: Mapping[str, float], *,
                 scratch_retrieval: float = 0.0) -> tuple[bool, list[str]]:
    """Whether one run passes the gate, and why not.

    A run with a contrastive half (pcrl, moco) must retrieve its held-out positives at
    ``retrieval_over_chance`` x chance or better, and better than the random inits do
    (``scratch_retrieval``: overlapping crops are found by a random encoder too); one with a
    reconstruction half (pcrl, genesis) must restore more than its corrupted input holds
    (PSNR gain above ``psnr_gain_db``). ``gauges``: the run's last-epoch values.
    """
    reasons = []
    if method in ("pcrl", "moco"):
        retrieval, chance = gauges.get("retrieval_top1"), gauges.get("retrieval_chance")
        if retrieval is None or chance is None:
            reasons.append("no retrieval gauge")
        elif retrieval < gate["retrieval_over_chance"] * chance:
            reasons.append(f"retrieval {retrieval:.3f} < {gate['retrieval_over_chance']:g} x chance {chance:.3f}")
        elif retrieval <= scratch_retrieval:
            reasons.append(f"retrieval {retrieval:.3f} <= the random inits' {scratch_retrieval:.3f}")
    if method in ("pcrl", "genesis"):
        gain = gauges.get("psnr_gain")
        if gain is None:
            reasons.append("no PSNR gain gauge")
        elif gain <= gate["psnr_gain_db"]:
            reasons.append(f"PSNR gain {gain:+.2f} dB <= {gate['psnr_gain_db']:g} dB")
    return not reasons, reasons


def apply_rules(gates: Mapping[str, bool], verdicts: Mapping[str, str], differences: Mapping[str, float],
                negative_control: str) -> dict[str, Any]:
    """The falsification rules of configs/study.yaml, on the result.

    Args:
        gates: arm -> every seed passed the gate.
        verdicts: arm (and ``supervised``) -> "above scratch" / "below scratch" / "cannot tell".
        differences: arm -> mean difference to scratch.
        negative_control: the negative control's arm.

    Returns:
        ``{"controls_ok", "findings": [...], "outcome"}``; outcome is one of ``implementation at
        fault``, ``study at fault``, ``study cannot tell`` (a control failed) or ``no rule fired``.
    """
    findings = []
    positive_ok = verdicts.get("supervised") == "above scratch"
    negative_ok = verdicts.get(negative_control) != "above scratch"
    if not positive_ok:
        findings.append("the positive control (supervised pretraining) does not beat scratch: the study cannot "
                        "detect a real gain")
    if not negative_ok:
        findings.append(f"the negative control ({negative_control}) beats scratch: the criterion rewards "
                        "pretraining that learnt nothing")
    implementation = []
    if gates.get("moco") and not gates.get("pcrl"):
        implementation.append("MoCo v2 passes the gate and PCRL does not")
    if differences.get("pcrl", 0.0) <= 0 and verdicts.get("moco") == "above scratch" \
            and verdicts.get("genesis") == "above scratch":
        implementation.append("PCRL - scratch <= 0 while MoCo v2 and Models Genesis are above scratch")
    failed = [a for a in CORE_ARMS if not gates.get(a) or verdicts.get(a) != "above scratch"]
    findings += implementation
    if implementation:
        outcome = "implementation at fault"
    elif len(failed) == len(CORE_ARMS):
        findings.append("all three methods fail (gate or no gain over scratch)")
        outcome = "study at fault"
    elif not (positive_ok and negative_ok):
        outcome = "study cannot tell"
    else:
        outcome = "no rule fired"
    return {"controls_ok": positive_ok and negative_ok, "findings": findings, "outcome": outcome}
