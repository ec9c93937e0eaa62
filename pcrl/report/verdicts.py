"""What the paired statistics allow one to say, in a label and in plain sentences.

The rule (:func:`judge`): a comparison is ``"better"`` or ``"worse"`` only with at least
:data:`MIN_PAIRED_SEEDS` paired seeds and when both the bootstrap and the Student-t interval
exclude 0 on the same side; otherwise it is ``"cannot tell"``, with the reason in words (no
paired seed, a single one, an interval containing 0, too few seeds, or the t interval
disagreeing). :func:`verdict` turns a summary's comparisons of PCRL with every other
initialisation into sentences; a missing PCRL or scratch run is stated, not guessed around.
The number formats (``+0.052``, ``[-0.020, +0.050]``, ``10%``) are shared with the tables of
:mod:`pcrl.report.render`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pcrl.report.statistics import CONFIDENCE, Summary, paired_statistics, task_metric

__all__ = [
    "BASELINE",
    "LEVEL",
    "MIN_PAIRED_SEEDS",
    "REFERENCE",
    "comparison",
    "fraction_label",
    "interval_text",
    "judge",
    "mean_std",
    "paired_difference",
    "signed",
    "verdict",
]

#: The initialisation the report is about, and random initialisation.
REFERENCE = "pcrl"
BASELINE = "scratch"
#: Fewest paired seeds for a "better" / "worse" verdict.
MIN_PAIRED_SEEDS = 3
#: The confidence level in words, e.g. ``95 %``.
LEVEL = f"{CONFIDENCE * 100:g} %"


# ------------------------------------------------------------------ the rule


def judge(stats: Mapping[str, Any]) -> dict[str, Any]:
    """``stats`` (:func:`pcrl.report.statistics.paired_statistics`) with its ``verdict`` and
    the ``reason`` for it in words appended."""
    n = stats["n"]
    if n == 0:
        return {**stats, "verdict": "cannot tell", "reason": "no seed was run by both"}
    if n == 1:
        return {**stats, "verdict": "cannot tell", "reason": "n = 1 paired seed"}
    low, high = stats["ci"]
    t_low, t_high = stats["t_ci"]
    interval = f"the {LEVEL} interval {interval_text(low, high)}"
    if not (low > 0.0 or high < 0.0):
        return {**stats, "verdict": "cannot tell", "reason": f"{interval} contains 0"}
    if n < MIN_PAIRED_SEEDS:
        return {**stats, "verdict": "cannot tell",
                "reason": f"{interval} excludes 0, but {n} paired seeds are too few (at least "
                          f"{MIN_PAIRED_SEEDS})"}
    if not (t_low > 0.0 or t_high < 0.0) or (low > 0.0) != (t_low > 0.0):
        return {**stats, "verdict": "cannot tell",
                "reason": f"{interval} excludes 0 but the Student-t interval {interval_text(t_low, t_high)} does not"}
    return {**stats, "verdict": "better" if low > 0.0 else "worse", "reason": f"{interval} excludes 0"}


def paired_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Cell ``a`` minus cell ``b`` of the headline metric, paired by seed, and its verdict.

    Returns ``{"n", "seeds", "differences", "mean", "ci", "t_ci", "verdict", "reason"}``
    (``t_ci`` from 2 paired seeds on; see :func:`pcrl.report.statistics.paired_statistics`
    and :func:`judge`).
    """
    return judge(paired_statistics(a, b))


def comparison(inits: Mapping[str, Mapping[str, Any]], a: str, b: str) -> dict[str, Any]:
    """``a`` − ``b`` at one task and fraction: the summary's record, or computed afresh."""
    stored = inits[a].get("paired", {}).get(b)
    return dict(stored) if stored is not None else paired_difference(inits[a], inits[b])


# ------------------------------------------------------------------ sentences


def verdict(summary: Summary) -> list[str]:
    """Plain sentences, computed from the paired statistics, comparing PCRL with each other init.

    One sentence per task and label fraction, giving PCRL's mean difference to each other
    initialisation over the seeds both ran, its 95 % bootstrap interval and the verdict of
    :func:`judge` ("better" / "worse" only with n >= 3 paired seeds and both the bootstrap and
    the Student-t interval excluding 0; otherwise "cannot tell", and why). Then one sentence per
    task: PCRL is *best at every label fraction* only when every comparison at every fraction
    is "better"; otherwise the sentence says where it is worse or what cannot be told. A
    missing PCRL or scratch run is stated, not guessed around.
    """
    sentences: list[str] = []
    for task, fractions in summary.items():
        metric = task_metric(fractions)
        outcomes: dict[str, dict[str, dict[str, Any]] | None] = {}
        for fraction, inits in fractions.items():
            sentence, outcome = _fraction_sentence(task, metric, fraction, inits)
            sentences.append(sentence)
            outcomes[fraction] = outcome
        sentences.append(_best_sentence(task, metric, outcomes))
    return sentences


def _clause(name: str, pair: Mapping[str, Any]) -> str:
    """``Against scratch: +0.052 over 5 paired seeds, 95 % interval [...]; PCRL is better (...).``"""
    if pair["n"] == 0:
        return f"Against {name}: cannot tell ({pair['reason']})."
    seeds = _count(pair["n"], "paired seed")
    if pair["verdict"] == "cannot tell":
        return f"Against {name}: {signed(pair['mean'])} over {seeds}; cannot tell ({pair['reason']})."
    low, high = pair["ci"]
    return (f"Against {name}: {signed(pair['mean'])} over {seeds}, {LEVEL} interval "
            f"{interval_text(low, high)}; PCRL is {pair['verdict']} (the interval excludes 0).")


def _fraction_sentence(
    task: str, metric: str, fraction: str, inits: Mapping[str, Mapping[str, Any]]
) -> tuple[str, dict[str, dict[str, Any]] | None]:
    """The sentence of one task and fraction, and PCRL's paired comparison with each other init."""
    head = f"{task} ({metric}, {fraction_label(fraction)} labels)"
    if REFERENCE not in inits:
        present = ", ".join(inits) or "none"
        return f"{head}: no PCRL run, so PCRL cannot be compared (runs: {present}).", None
    ours = inits[REFERENCE]
    others = [name for name in inits if name != REFERENCE]
    text = f"{head}: PCRL {mean_std(ours)} over {_count(ours['n'], 'seed')}."
    if not others:
        return f"{text} It has no other initialisation to compare with.", {}
    outcome = {name: comparison(inits, REFERENCE, name) for name in others}
    sentence = " ".join([text] + [_clause(name, pair) for name, pair in outcome.items()])
    if BASELINE not in inits:
        sentence += f" No {BASELINE} run, so the gain over random initialisation cannot be stated."
    return sentence, outcome


def _best_sentence(task: str, metric: str, outcomes: Mapping[str, dict[str, dict[str, Any]] | None]) -> str:
    """Whether PCRL is better than every other init at every label fraction of ``task``
    (``None``: no PCRL run at that fraction)."""
    head = f"{task} ({metric})"
    unknown = "so whether it is best at every label fraction cannot be told"
    missing = [fraction_label(f) for f, o in outcomes.items() if o is None]
    if missing:
        return f"{head}: PCRL has no run at {_join(missing)}, {unknown}."
    alone = [fraction_label(f) for f, o in outcomes.items() if not o]
    if alone:
        return f"{head}: PCRL has no other initialisation to compare with at {_join(alone)}, {unknown}."
    results = {f: o for f, o in outcomes.items() if o is not None}
    worse = _where(results, "worse")
    undecided = _where(results, "cannot tell")
    if worse:
        sentence = f"{head}: PCRL is not best at every label fraction: it is worse {worse}"
        return sentence + (f"; undecided {undecided}." if undecided else ".")
    if undecided:
        return f"{head}: whether PCRL is best at every label fraction cannot be told; undecided {undecided}."
    labels = _join([fraction_label(f) for f in outcomes])
    return f"{head}: PCRL is best at every label fraction ({labels}): better than every other initialisation."


def _where(results: Mapping[str, Mapping[str, Mapping[str, Any]]], outcome: str) -> str:
    """``at 10% than moco and genesis; at 100% than scratch`` for one verdict ("" if none)."""
    word = "than" if outcome == "worse" else "against"
    parts = [f"at {fraction_label(f)} {word} {_join([n for n, p in o.items() if p['verdict'] == outcome])}"
             for f, o in results.items() if any(p["verdict"] == outcome for p in o.values())]
    return "; ".join(parts)


# ------------------------------------------------------------------ number formats


def fraction_label(fraction: str | float) -> str:
    """``0.1`` (or ``"0.1"``) -> ``"10%"``; ``0.125`` -> ``"12.5%"``."""
    return f"{float(fraction) * 100:.4g}%"


def signed(diff: float) -> str:
    """``+0.052``; a non-zero difference that rounds to zero keeps its sign and digits."""
    diff = float(diff) or 0.0  # -0.0 -> +0.000
    if diff != 0.0 and abs(diff) < 5e-4:
        return f"{diff:+.1e}"
    return f"{diff:+.3f}"


def interval_text(low: float, high: float) -> str:
    """``[-0.020, +0.050]``."""
    return f"[{signed(low)}, {signed(high)}]"


def mean_std(cell: Mapping[str, Any]) -> str:
    """``0.830 ± 0.042``: a cell's mean and sample std."""
    return f"{cell['mean']:.3f} ± {cell['std']:.3f}"


def _count(n: int, noun: str) -> str:
    """``1 seed`` / ``3 seeds``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _join(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"
