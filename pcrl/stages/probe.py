"""``pcrl probe``: the frozen-encoder probe of every initialisation, at every label fraction.

For each initialisation of ``finetune.inits`` (``scratch`` included: its seeded random
encoder) and each label fraction of ``finetune.fractions``, the probe of
:mod:`pcrl.evaluation.probe` is fitted on the NCC candidates of the fraction's training
scans and scored on the test scans: how well the encoder separates nodules from false
positives *before* any fine-tuning. The random encoder of ``scratch`` depends on the
network seed, so the probe is run once per seed of ``finetune.seeds``; a pretrained
encoder gives the same number for every seed (only its unused head is random).

Outputs (the folder is swapped in whole)::

    metrics.json   {init: {fraction: mean test AUC over seeds}}    (dvc metrics)
    probe.csv      init, fraction, seed, auc, train and test candidate counts
    probe.png      AUC vs label fraction, one line per initialisation
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from pcrl.atomic import atomic_dir, atomic_path, write_json, write_text
from pcrl.plotting import colour_of, fraction_axis
from pcrl.preprocessing.splits import fraction_key
from pcrl.evaluation.probe import probe_auc, probe_split
from pcrl.preprocessing.task_data import load_split
from pcrl.finetune.checkpoints import apply_init, read_init_record
from pcrl.finetune.models import NetworkConfig, seeded_network

log = logging.getLogger(__name__)


def run_probe(finetune: dict[str, Any], settings: dict[str, Any], *, pretrained: Path, processed: Path,
              out: Path) -> Path:
    """Probe every (init, fraction, seed) and write ``out`` (see the module docstring).

    Raises:
        DataError: a missing initialisation, NCC split or cube file (named).
        ConfigError: a fraction the cubes stage did not write.
    """
    network = NetworkConfig(**finetune["network"])
    records = {init: read_init_record(Path(pretrained) / init / "weights.pt", init) for init in finetune["inits"]}
    rows: list[dict[str, Any]] = []
    for fraction in finetune["fractions"]:
        split = load_split(processed, fraction, "ncc")
        data = probe_split(str(processed), split.train, split.test, max_per_class=settings.get("max_per_class"))
        for init, record in records.items():
            for seed in finetune["seeds"]:
                net = seeded_network("ncc", network, seed)
                apply_init(net, record, "ncc")
                auc = probe_auc(cast(torch.nn.Module, net.backbone), data, l2=float(settings["l2"]))
                log.info("probe %s f%s s%d: test AUC %.3f", init, fraction_key(fraction), seed, auc)
                rows.append({"init": init, "fraction": fraction_key(fraction), "seed": seed, "auc": auc,
                             "train": len(data.train), "test": len(data.held_out)})
    values: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        values.setdefault(row["init"], {}).setdefault(row["fraction"], []).append(row["auc"])
    means = {init: {f: float(np.mean(v)) for f, v in by_f.items()} for init, by_f in values.items()}
    with atomic_dir(out) as tmp:
        write_json(tmp / "metrics.json", means)
        write_text(tmp / "probe.csv", _csv(rows))
        _plot(means, tmp / "probe.png")
    log.info("probe of %d initialisations x %d fractions -> %s", len(finetune["inits"]),
             len(finetune["fractions"]), out)
    return Path(out)


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["init", "fraction", "seed", "auc", "train", "test"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _plot(means: dict[str, dict[str, float]], path: Path) -> None:
    """Probe AUC vs label fraction, one line per initialisation in its colour
    (:mod:`pcrl.plotting`), chance dashed; PNG, atomic."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 3.6))
    ax = fig.add_subplot()
    for init in means:
        fractions = sorted(means[init], key=float)
        ax.plot([float(f) * 100 for f in fractions], [means[init][f] for f in fractions], marker="o", label=init,
                color=colour_of(init, means))
    ax.axhline(0.5, color="grey", lw=0.8, ls="--", label="chance")
    fraction_axis(ax, sorted({float(f) for by_f in means.values() for f in by_f}), "labelled training scans")
    ax.set_ylabel("probe test AUC")
    ax.set_title("NCC frozen-encoder probe")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
