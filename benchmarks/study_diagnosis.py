"""Why the study's contrastive runs rank their positives first yet retrieve nothing held out.

In the known-answer study (docs/study/report.md) MoCo v2 and PCRL reach a training ranking
accuracy (``train/con_acc``: the positive key above all 256 queue keys) of 0.9-0.99 by epoch
3, while their encoders retrieve held-out positives no better than random inits. This script
reruns MoCo v2 (the contrastive half alone, 40 s a run on 2 cores) on the study's pairs with
one setting changed at a time and prints, per run: the peak and final training ranking
accuracy, the final InfoNCE loss against its chance value ln(K + 1), and top-1 retrieval of
the partner view among 64 pairs spread over the held-out (and, for comparison, the training)
pairs, on the projection and on the pooled deepest features, next to random inits.

The hypothesis it tests: with a momentum time constant 1/(1 - m) of ~33 steps and a queue
spanning K / B = 32 steps, queue keys come from visibly older key encoders, so the current
step's key is found by its "age", not its content. A queue spanning 4 steps removes that
shortcut: if the accuracy then falls to chance too, the run is too short for the contrastive
task to be learnt at all; the last variant also drops the corruptions (augmented views only),
to tell the run's length from the corruptions' difficulty.

Usage (after ``make study``, which builds the pairs)::

    python benchmarks/study_diagnosis.py [--study-out <make study's --out>]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
from pathlib import Path

import torch
from torch.utils.data import Subset

from pcrl.preprocessing.pairs import PairsDataset, pair_files
from pcrl.evaluation.gauges import retrieval_accuracy
from pcrl.stages.pretrain import first_pairs, logged_series, run_pretrain
from pcrl.runners.study import DEFAULT_OUT, REPO, _fresh_encoder, _pretrained_encoder, split_config, workspace_cubes

#: One change at a time against the study's MoCo v2 settings.
VARIANTS = {
    "study (cosine from 0.97, K 256)": {},
    "constant m 0.97, K 256": {"momentum_schedule": "constant"},
    "constant m 0.99, K 256": {"momentum_schedule": "constant", "momentum": 0.99},
    "cosine from 0.97, K 32": {"queue_size": 32},
    "cosine from 0.97, K 32, no corruption": {"queue_size": 32, "corrupt": False},
}
PAIRS = 64


def _spread(pairs: Path, ids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``PAIRS`` pairs taken at a regular stride over ``ids``' pairs (every scan represented)."""
    data = PairsDataset(pair_files(pairs / "pairs", ids))
    return first_pairs(Subset(data, range(0, len(data), max(1, len(data) // PAIRS))), PAIRS)


@torch.no_grad()
def _retrieval(net: torch.nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> tuple[float, float]:
    """(projection, pooled) top-1 retrieval of view 2 from view 1, eval mode."""
    net.eval()
    f1, f2 = net.encode(x1)[-1], net.encode(x2)[-1]  # type: ignore[operator]
    return (retrieval_accuracy(net.project(f1), net.project(f2)),  # type: ignore[operator]
            retrieval_accuracy(f1.flatten(2).mean(2), f2.flatten(2).mean(2)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "study.yaml"))
    parser.add_argument("--study-out", default=str(DEFAULT_OUT),
                        help="the study's output folder (make study builds its pretraining pairs there)")
    parser.add_argument("--out", default="benchmarks/out/study_diagnosis")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    pairs, out = workspace_cubes(Path(args.study_out), "pretrain"), Path(args.out)
    if not (pairs / "split.json").is_file():
        print(f"{pairs}: no pretraining pairs; run 'make study' first", file=sys.stderr)
        return 2
    params, _ = split_config(Path(args.config))
    split = json.loads((pairs / "split.json").read_text())
    held_out, seen = _spread(pairs, split["val"]), _spread(pairs, split["train"])
    print(f"top-1 retrieval among {PAIRS} pairs (chance {1 / PAIRS:.3f}); held-out | training pairs")
    print("| run | peak / final ranking acc | final loss / chance | held-out proj, pooled | training proj, pooled |")
    print("|---|---|---|---|---|")
    for seed in range(3):
        net = _fresh_encoder(params, seed)
        ho, tr = _retrieval(net, *held_out), _retrieval(net, *seen)
        print(f"| random init {seed} | | | {ho[0]:.3f}, {ho[1]:.3f} | {tr[0]:.3f}, {tr[1]:.3f} |")
    for name, change in VARIANTS.items():
        settings = copy.deepcopy(params["pretrain"])
        settings["moco"] = {**settings["moco"], **change}
        folder = out / name.split(" (")[0].replace(" ", "_").replace(",", "")
        if not (folder / "summary.json").is_file():
            run_pretrain("moco", settings, pairs=pairs, out=folder, state=out / "state", device="cpu",
                         progress=False)
        net = _pretrained_encoder(folder)
        acc = list(logged_series(folder / "live", "train/con_acc").values())
        loss = list(logged_series(folder / "live", "train/contrastive").values())
        chance = float(torch.log(torch.tensor(settings["moco"]["queue_size"] + 1.0)))
        ho, tr = _retrieval(net, *held_out), _retrieval(net, *seen)
        print(f"| {name} | {max(acc):.3f} / {acc[-1]:.3f} | {loss[-1]:.2f} / {chance:.2f} | {ho[0]:.3f}, {ho[1]:.3f} "
              f"| {tr[0]:.3f}, {tr[1]:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
