"""The known-answer study's report: markdown tables and two figures (pcrl/runners/study.py).

Reads the study's summary mapping only; computes nothing but means for display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pcrl.atomic import atomic_path

__all__ = ["render_report", "save_plots"]

_GAUGE_PANELS = (("retrieval_top1", "held-out retrieval (top-1)"), ("effective_rank", "effective rank"),
                 ("psnr_gain", "PSNR gain over the input (dB)"), ("grad_contrastive", "contrastive grad norm"),
                 ("grad_reconstruction", "reconstruction grad norm"))


def _role(arm: str, summary: Mapping[str, Any]) -> str:
    design = summary["design"]
    if arm == "supervised":
        return "positive control"
    if arm == design["negative_control"]:
        return "negative control"
    return design["arms"][arm]["method"]


def _comparison_table(comparisons: Mapping[str, Mapping[str, Any]], summary: Mapping[str, Any], level: float) -> str:
    rows = ["| arm | role | seeds | AUC (arm) | AUC (scratch) | arm - scratch | "
            f"{level:.0%} interval | verdict |", "|---|---|---|---|---|---|---|---|"]
    for arm, c in comparisons.items():
        rows.append(f"| {arm} | {_role(arm, summary)} | {c['seeds']} | {c['arm_mean']:.3f} | {c['scratch_mean']:.3f} "
                    f"| {c['difference']:+.3f} | [{c['low']:+.3f}, {c['high']:+.3f}] | {c['verdict']} |")
    return "\n".join(rows)


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _gate_table(summary: Mapping[str, Any]) -> str:
    rows = ["| run | retrieval / chance | effective rank | PSNR gain (dB) | grad contrastive / reconstruction | "
            "gate |", "|---|---|---|---|---|---|"]
    for name, g in summary["gauges"].items():
        chance = g.get("retrieval_chance")
        ratio = g["retrieval_top1"] / chance if chance and g.get("retrieval_top1") is not None else None
        con, rec = g.get("grad_contrastive"), g.get("grad_reconstruction")
        grads = f"{con:.3g} / {rec:.3g}" if con is not None and rec is not None else \
            f"{_fmt(con, '.3g')} / {_fmt(rec, '.3g')}"
        gate = summary["gates"]["runs"][name]
        verdict = "pass" if gate["pass"] else "FAIL: " + "; ".join(gate["reasons"])
        rows.append(f"| {name} | {_fmt(ratio, '.1f')}x | {_fmt(g.get('effective_rank'), '.2f')} | "
                    f"{_fmt(g.get('psnr_gain'), '+.2f')} | {grads} | {verdict} |")
    return "\n".join(rows)


def _full_table(summary: Mapping[str, Any], groups: Mapping[str, Sequence[str]]) -> str:
    rows = ["| init | probe AUC, all labels | k-NN AUC, all labels |", "|---|---|---|"]
    for group, inits in groups.items():
        probe = np.mean([summary["scores"]["probe_full"][i][0] for i in inits])
        knn = np.mean([summary["scores"]["knn_full"][i][0] for i in inits])
        rows.append(f"| {group} ({len(inits)}) | {probe:.3f} | {knn:.3f} |")
    return "\n".join(rows)


def _scratch_over_chance(summary: Mapping[str, Any]) -> float:
    chance = next(iter(summary["scratch_gauges"].values()))["retrieval_chance"]
    return float(summary["scratch_retrieval"] / chance)


def _groups(summary: Mapping[str, Any]) -> dict[str, list[str]]:
    design = summary["design"]
    groups = {"scratch": [f"scratch-s{s}" for s in design["scratch_seeds"]]}
    groups.update({arm: [f"{arm}-s{s}" for s in spec["seeds"]] for arm, spec in design["arms"].items()})
    groups["supervised"] = [f"supervised-s{s}" for s in design["positive_control"]["seeds"]]
    return groups


def render_report(summary: Mapping[str, Any]) -> str:
    """The study's report in markdown."""
    design, rules = summary["design"], summary["rules"]
    level = design["bootstrap"]["level"]
    sets = design["label_sets"]
    primary = design["criterion"]
    other = "knn" if primary == "probe" else "probe"
    lines = [
        "# Known-answer study: does pretraining help a frozen encoder where labels are scarce?",
        "",
        f"Code {summary['code']}, config sha256 {summary['config_sha256'][:12]}, {summary['elapsed_s'] / 60:.1f} min. "
        f"Command: `make study` (`python -m pcrl.runners.study --config configs/study.yaml --out results/study`).",
        "",
        f"NCC on the shapes phantom: {summary['train']['scans']} training scans ({summary['train']['candidates']} "
        f"candidates, {summary['train']['nodules']} nodules), {summary['test']['scans']} test scans "
        f"({summary['test']['candidates']} candidates, {summary['test']['nodules']} nodules). "
        f"{sets['count']} random label sets of {sets['scans']} training scans each, the same for every encoder. "
        f"Intervals: {level:.0%} percentile bootstrap ({design['bootstrap']['samples']} resamples) over pretraining "
        "seed x random init x label set, paired by label set.",
        "",
        f"## Outcome of the rules written before the run: **{rules['outcome']}**",
        "",
        *(f"- {finding}" for finding in rules["findings"] or ["no rule's condition was met"]),
        "",
        "## The gate (last epoch of each run, held-out pairs)",
        "",
        f"Contrastive runs must retrieve at >= {design['gate']['retrieval_over_chance']:g}x chance and above the "
        f"random inits' mean ({summary['scratch_retrieval']:.3f}, {_scratch_over_chance(summary):.1f}x chance); "
        f"reconstructing runs must gain > {design['gate']['psnr_gain_db']:g} dB over their corrupted input.",
        "",
        _gate_table(summary),
        "",
        f"## Primary criterion: frozen-encoder {primary}, low labels, against scratch",
        "",
        _comparison_table(summary["comparisons"][primary], summary, level),
        "",
        f"## Secondary criterion: {other}",
        "",
        _comparison_table(summary["comparisons"][other], summary, level),
        "",
        "## With every training label (one fit per encoder; a reference, no interval)",
        "",
        _full_table(summary, _groups(summary)),
        "",
        "Figures: `gauges.png` (the gauges of every run over epochs), `auc.png` (low-label AUC per init).",
    ]
    if summary.get("warnings"):
        lines += ["", "## Warnings of the runs", ""]
        lines += [f"- {name}: {w}" for name, ws in summary["warnings"].items() for w in ws]
    return "\n".join(lines) + "\n"


def save_plots(out: Path, series: Mapping[str, Mapping[str, Mapping[str, float]]],
               scores: Mapping[str, Mapping[str, Sequence[float]]], groups: Mapping[str, Sequence[str]],
               scratch: Sequence[str], criterion: str, scratch_retrieval: float | None = None) -> None:
    """``gauges.png``: each gauge over epochs, a line per run coloured by arm; ``auc.png``: the
    low-label AUC of each group (scratch first) over seed x label set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(groups)
    colours = {arm: plt.get_cmap("tab10")(i % 10) for i, arm in enumerate(arms)}
    fig, axes = plt.subplots(1, len(_GAUGE_PANELS), figsize=(4 * len(_GAUGE_PANELS), 3.4))
    for ax, (key, title) in zip(axes, _GAUGE_PANELS):
        for run, gauges in series.items():
            values = gauges.get(key)
            if not values:
                continue
            arm = run.rsplit("-s", 1)[0]
            epochs = sorted(values, key=int)
            ax.plot([int(e) for e in epochs], [values[e] for e in epochs], "o-", ms=3, color=colours.get(arm, "k"),
                    alpha=0.8, label=arm)
            if key == "retrieval_top1" and gauges.get("retrieval_chance"):
                chance = gauges["retrieval_chance"]
                ax.axhline(chance[epochs[-1]], color="grey", ls=":", lw=1, label="chance")
        if key == "retrieval_top1" and scratch_retrieval is not None:
            ax.axhline(scratch_retrieval, color="black", ls="--", lw=1, label="random inits")
        if key.startswith("grad_"):
            ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    fig.legend(unique.values(), unique.keys(), loc="upper center", ncol=len(unique), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.88))
    with atomic_path(out / "gauges.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)

    order = ["scratch", *arms]
    data = [np.concatenate([scores[criterion][i] for i in (scratch if g == "scratch" else groups[g])]) for g in order]
    fig, ax = plt.subplots(figsize=(1.3 * len(order) + 2, 3.6))
    ax.boxplot(data, tick_labels=order)
    ax.axhline(float(np.mean(data[0])), color="grey", ls=":", lw=1)
    ax.set_ylabel(f"test AUC ({criterion}, low labels)")
    ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    with atomic_path(out / "auc.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
