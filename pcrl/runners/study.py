"""The known-answer study: does pretraining give a frozen encoder better features where labels
are scarce, and can the study tell? (``make study``)

PCRL's claim (Zhou et al., ICCV 2021) is that its pretraining transfers, most visibly with few
labels. The study asks it of this pipeline on a phantom where learnt features must matter
(``data.phantom.luna16.ncc_task: shapes``: nodules and decoys of equal HU and volume, told
apart only by shape), and its design is fixed in ``configs/study.yaml`` (the ``study``
section) before any result is seen:

1. **Data** through the pipeline itself: the repository is copied into ``<out>/work`` (a git
   repository of its own), the config's params become its params.yaml, and ``dvc repro``
   builds the pretraining pairs and the NCC cubes.
2. **Pretraining arms**, several seeds each, run by the pretrain stage's own function
   (:func:`pcrl.stages.pretrain.run_pretrain`): PCRL, MoCo v2, Models Genesis, and the
   *negative control* (MoCo v2 with each positive replaced by another sample's key: a
   contrastive run that carries no information, which must not beat scratch). Every run logs
   the gauges of pcrl/evaluation/gauges.py.
3. **The positive control**: an encoder pretrained with the NCC labels of every training
   scan (:mod:`pcrl.finetune.supervised`), which must beat scratch.
4. **Scratch**: several random inits of the same network.
5. **Criterion**: each encoder's pooled features of the NCC candidates are cached once; many
   random label sets of a few training scans (the same sets for every encoder) are scored
   on the test scans by the logistic probe and by k-NN (pcrl/evaluation/lowlabel.py);
   each arm is compared with scratch by a paired bootstrap over seed x label set.
6. **The gate**, checked before any comparison is read: each contrastive run's held-out
   retrieval well above chance, each reconstructing run's output better than its corrupted
   input.
7. **Falsification**: the rules written in the config are evaluated on the result.

Outputs (``<out>``)::

    report.md     the tables, the gate, the controls and the rules' outcome
    summary.json  every number of the report, the settings' digest, the commit, the time
    gauges.png    the gauges of every run over epochs; auc.png: AUC per label set
    runs/         each pretraining run's output (weights, live/, summary.json)

Usage: ``python -m pcrl.runners.study [--config configs/study.yaml] [--out results/study]``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from pcrl.atomic import write_text
from pcrl.config import load_yaml, validate_params
from pcrl.errors import ConfigError
from pcrl.study_design import parse_design

log = logging.getLogger(__name__)

#: What the study's workspace needs of the repository (copied, not linked: DVC hashes them).
WORKSPACE_FILES = ("dvc.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore", ".gitignore", "pyproject.toml")
WORKSPACE_DIRS = ("pcrl", "workflow")
#: The DVC targets: the pretraining pairs and the NCC cubes (with everything they depend on).
TARGETS = ("cubes@pretrain", "cubes@ncc")
#: The study's results in ``out``, written when everything has run (summary.json last).
RESULTS = ("report.md", "gauges.png", "auc.png", "summary.json")
GIT_ENV = {"GIT_AUTHOR_NAME": "pcrl study", "GIT_AUTHOR_EMAIL": "study@example.invalid",
           "GIT_COMMITTER_NAME": "pcrl study", "GIT_COMMITTER_EMAIL": "study@example.invalid"}


#: Where ``make study`` writes (``--out``).
DEFAULT_OUT = Path("results/study")


def repository(start: Path | None = None) -> Path:
    """The pipeline's repository: ``start`` (default: the working directory) or the first
    folder above it holding ``dvc.yaml`` and ``pcrl/`` (the study copies it, never an
    installed package's location).

    Raises:
        ConfigError: No such folder.
    """
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "dvc.yaml").is_file() and (folder / "pcrl").is_dir():
            return folder
    raise ConfigError(f"{start}: not inside the pipeline's repository (no dvc.yaml and pcrl/ here or above): "
                      "run the study from the repository, or give --repo")


def workspace(out: Path) -> Path:
    """The pipeline copy the study runs in: ``<out>/work``."""
    return Path(out) / "work"


def workspace_cubes(out: Path, task: str) -> Path:
    """A cubes stage's output in the study's workspace (``pretrain``: the pairs; ``ncc``)."""
    return workspace(out) / "data" / "processed" / task


def split_config(config: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(params, design)``: the config's pipeline params (validated, the schema of
    params.yaml) and its ``study`` section (validated by :func:`pcrl.study_design.parse_design`).

    Raises:
        ConfigError: naming the key at fault, before anything runs.
    """
    raw = load_yaml(Path(config))
    if not isinstance(raw, dict) or "study" not in raw:
        raise ConfigError(f"{config}: no 'study' section (the study's design: arms, seeds, label sets, gate)")
    raw = dict(raw)
    design = parse_design(raw.pop("study"))
    return validate_params(raw, str(config)), design


def prepare_workspace(config: Path, work: Path, repo: Path) -> None:
    """Copy the pipeline of ``repo`` into ``work`` with ``config``'s params (without its ``study``
    section) as its params.yaml; a git repository.

    An existing workspace is updated in place (its ``data/`` and DVC cache are kept, so a
    rerun resumes: DVC skips what is up to date).
    """
    work.mkdir(parents=True, exist_ok=True)
    for name in WORKSPACE_FILES:
        if (repo / name).is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / name, work / name)
    for name in WORKSPACE_DIRS:  # mirrored: a module deleted here is deleted there
        shutil.rmtree(work / name, ignore_errors=True)
        shutil.copytree(repo / name, work / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    params, _ = split_config(config)
    write_text(work / "params.yaml", yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, **GIT_ENV}
    if not (work / ".git").is_dir():
        subprocess.run(["git", "init", "-q"], cwd=work, check=True, env=env)
    subprocess.run(["git", "add", "-A", "--", *WORKSPACE_FILES, *WORKSPACE_DIRS, "params.yaml"],
                   cwd=work, check=True, env=env, capture_output=True)
    subprocess.run(["git", "commit", "-qm", "study workspace", "--allow-empty"], cwd=work, check=True, env=env,
                   capture_output=True)


def _run(cmd: list[str], cwd: Path) -> None:
    """Run ``cmd`` in the workspace with the workspace's copy of the package first on the path,
    so the code that runs is the code DVC hashed (not an installed or edited copy)."""
    log.info("study: %s", " ".join(cmd))
    path = os.pathsep.join([str(cwd), *filter(None, [os.environ.get("PYTHONPATH")])])
    subprocess.run(cmd, cwd=cwd, check=True, env={**os.environ, "PCRL_NO_DVC_COMMIT": "1", "PYTHONPATH": path})


def _git_head(repo: Path) -> str:
    """The repository's commit (and ``-dirty`` when its tracked files differ), or ``unknown``."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def arm_settings(pretrain: dict[str, Any], method: str, overrides: dict[str, Any], seed: int) -> dict[str, Any]:
    """The ``pretrain`` params of one run: the config's, with the arm's overrides of
    ``pretrain.<method>`` and the run's seed."""
    settings = copy.deepcopy(pretrain)
    settings["seed"] = seed
    settings[method] = {**(settings.get(method) or {}), **overrides}
    return settings


def _pretrain_runs(params: dict[str, Any], design: dict[str, Any], pairs: Path, out: Path) -> dict[str, Path]:
    """Every arm's runs (skipped when their output exists: a rerun resumes); name -> folder."""
    from pcrl.stages.pretrain import run_pretrain

    runs = {}
    for arm, spec in design["arms"].items():
        for seed in spec["seeds"]:
            name = f"{arm}-s{seed}"
            folder = out / "runs" / name
            if not (folder / "summary.json").is_file():
                log.info("study: pretraining %s (%s, seed %d)", name, spec["method"], seed)
                run_pretrain(spec["method"], arm_settings(params["pretrain"], spec["method"], spec["settings"], seed),
                             pairs=pairs, out=folder, state=out / "state" / name, device="cpu", progress=True)
            runs[name] = folder
    return runs


def _fresh_encoder(params: dict[str, Any], seed: int) -> torch.nn.Module:
    """A random init of the study's network (PCRL's student), seeded."""
    from pcrl.methods import build_method, method_config
    from pcrl.stages.pretrain import encoder_of, method_settings, used_settings

    values = method_settings("pcrl", used_settings("pcrl", params["pretrain"]), n_data=1, steps=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return encoder_of(build_method("pcrl", method_config("pcrl", values)))


def _pretrained_encoder(folder: Path) -> torch.nn.Module:
    """The encoder of a pretraining run's ``weights.pt`` (digest verified)."""
    from pcrl.methods import build_method, method_config
    from pcrl.stages.pretrain import encoder_of
    from pcrl.torchfile import load_checked

    weights = load_checked(folder / "weights.pt", "pretrained weights")
    method = weights["method"]
    model = build_method(method, method_config(method, json.loads(weights["config"])))
    encoder = encoder_of(model)
    encoder.load_state_dict(weights["state_dict"])
    return encoder


def _held_out_pairs(pairs: Path, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` validation pairs, as the pretrain stage's gauges take them."""
    from pcrl.preprocessing.pairs import PairsDataset, pair_files
    from pcrl.stages.pretrain import first_pairs

    split = json.loads((pairs / "split.json").read_text())
    index = {entry["id"] for entry in json.loads((pairs / "pairs.json").read_text())}
    return first_pairs(PairsDataset(pair_files(pairs / "pairs", [i for i in split.get("val", []) if i in index])),
                       count)


def _init_gauges(encoder: torch.nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> dict[str, float]:
    """Retrieval and effective rank of an encoder on the held-out pairs (the runs' gauges)."""
    from pcrl.evaluation.gauges import effective_rank, retrieval_accuracy
    from pcrl.evaluation.probe import pooled_tensor_features

    f1, f2 = pooled_tensor_features(encoder, x1), pooled_tensor_features(encoder, x2)
    return {"retrieval_top1": retrieval_accuracy(f1, f2), "effective_rank": effective_rank(f1),
            "retrieval_chance": 1.0 / x1.shape[0]}


def _last(series: dict[str, float]) -> float | None:
    return series[max(series, key=int)] if series else None


def _run_gauges(folder: Path) -> dict[str, Any]:
    """A run's gauge series (epoch -> value) and their last values."""
    summary = json.loads((folder / "summary.json").read_text())
    series = summary.get("gauges", {})
    return {"series": series, "last": {name: _last(values) for name, values in series.items()},
            "warnings": summary.get("warnings", [])}


def _evaluate(features: dict[str, tuple[torch.Tensor, torch.Tensor]], train: Any, test: Any,
              label_sets: list[list[str]], design: dict[str, Any], l2: float) -> dict[str, dict[str, list[float]]]:
    """criterion -> init -> AUC per label set (and ``<criterion>_full``: every training scan)."""
    from pcrl.evaluation.lowlabel import knn_auc, probe_auc_on

    scores: dict[str, dict[str, list[float]]] = {"probe": {}, "knn": {}, "probe_full": {}, "knn_full": {}}
    masks = [np.isin(train.case, s) for s in label_sets]
    for init, (f_train, f_test) in features.items():
        for criterion, fn in (("probe", lambda a, b, c, d: probe_auc_on(a, b, c, d, l2=l2)),
                              ("knn", lambda a, b, c, d: knn_auc(a, b, c, d, k=design["knn_k"]))):
            scores[criterion][init] = [fn(f_train[m], train.label[m], f_test, test.label) for m in masks]
            scores[f"{criterion}_full"][init] = [fn(f_train, train.label, f_test, test.label)]
    return scores


def _compare(scores: dict[str, list[float]], groups: dict[str, list[str]], scratch: list[str],
             design: dict[str, Any]) -> dict[str, Any]:
    """Each group (arm or control) against scratch: the paired bootstrap of lowlabel.py."""
    from pcrl.evaluation.lowlabel import paired_bootstrap

    base = np.array([scores[i] for i in scratch])
    boot = design["bootstrap"]
    return {group: paired_bootstrap(np.array([scores[i] for i in inits]), base, samples=boot["samples"],
                                    seed=boot["seed"], level=boot["level"]).to_json()
            for group, inits in groups.items()}


def run_study(config: Path, out: Path, repo: Path | None = None) -> dict:
    """Run the study of ``config`` into ``out`` (see the module docstring); its summary."""
    from pcrl.evaluation.probe import pooled_features
    from pcrl.evaluation.lowlabel import draw_label_sets
    from pcrl.preprocessing.task_data import read_candidate_rows
    from pcrl.finetune.supervised import supervised_pretrain
    from pcrl.study_design import apply_rules, gate_outcome
    from pcrl.study_report import render_report, save_plots

    config, out = Path(config).resolve(), Path(out).resolve()
    params, design = split_config(config)  # validate before anything runs: a bad key is named here
    repo = repository(repo)
    start, code = time.monotonic(), _git_head(repo)  # the code that runs, read before anything can change it
    for name in RESULTS:  # a failed rerun must not leave an earlier run's results looking current
        (out / name).unlink(missing_ok=True)
    work = workspace(out)
    prepare_workspace(config, work, repo)
    _run(["dvc", "repro", *TARGETS], work)
    pairs = workspace_cubes(out, "pretrain")
    runs = _pretrain_runs(params, design, pairs, out)

    ncc = workspace_cubes(out, "ncc")
    split = json.loads((ncc / "split.json").read_text())
    train, test = read_candidate_rows(ncc, split["train"]), read_candidate_rows(ncc, split["test"])
    encoders: dict[str, Any] = {f"scratch-s{s}": (lambda s=s: _fresh_encoder(params, s))
                                for s in design["scratch_seeds"]}
    encoders.update({name: (lambda f=folder: _pretrained_encoder(f)) for name, folder in runs.items()})
    positive = design["positive_control"]
    encoders.update({f"supervised-s{s}": (lambda s=s: supervised_pretrain(
        _fresh_encoder(params, 1000 + s), train, epochs=positive["epochs"], batch_size=positive["batch_size"],
        lr=positive["lr"], seed=s)) for s in positive["seeds"]})
    from pcrl.stages.pretrain import GAUGE_PAIRS

    held_out = _held_out_pairs(pairs, GAUGE_PAIRS)
    features, scratch_gauges = {}, {}
    for name, build in encoders.items():
        log.info("study: features of %s", name)
        encoder = build()
        features[name] = (pooled_features(encoder, train), pooled_features(encoder, test))
        if name.startswith("scratch-"):
            scratch_gauges[name] = _init_gauges(encoder, *held_out)
    scratch_retrieval = float(np.mean([g["retrieval_top1"] for g in scratch_gauges.values()]))
    labels_by_case = {c: train.label[train.case == c] for c in split["train"]}
    sets = design["label_sets"]
    label_sets = draw_label_sets(split["train"], labels_by_case, count=sets["count"], scans=sets["scans"],
                                 seed=sets["seed"])
    scores = _evaluate(features, train, test, label_sets, design, float(params["probe"]["l2"]))

    groups = {arm: [f"{arm}-s{s}" for s in spec["seeds"]] for arm, spec in design["arms"].items()}
    groups["supervised"] = [f"supervised-s{s}" for s in positive["seeds"]]
    scratch = [f"scratch-s{s}" for s in design["scratch_seeds"]]
    comparisons = {criterion: _compare(scores[criterion], groups, scratch, design) for criterion in ("probe", "knn")}
    gauges = {name: _run_gauges(folder) for name, folder in runs.items()}
    gate_runs = {name: gate_outcome(design["arms"][name.rsplit("-s", 1)[0]]["method"], g["last"], design["gate"],
                                    scratch_retrieval=scratch_retrieval)
                 for name, g in gauges.items()}
    gates = {arm: all(gate_runs[i][0] for i in inits) for arm, inits in groups.items() if arm in design["arms"]}
    primary = comparisons[design["criterion"]]
    rules = apply_rules(gates, {a: c["verdict"] for a, c in primary.items()},
                        {a: c["difference"] for a, c in primary.items()}, design["negative_control"])
    summary: dict[str, Any] = {
        "config": str(config),
        "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest(),
        "code": code,
        "elapsed_s": round(time.monotonic() - start, 1),
        "design": design,
        "label_sets": label_sets,
        "test": {"scans": len(split["test"]), "candidates": len(test), "nodules": int(test.label.sum())},
        "train": {"scans": len(split["train"]), "candidates": len(train), "nodules": int(train.label.sum())},
        "scores": scores,
        "comparisons": comparisons,
        "gates": {"arms": gates, "runs": {n: {"pass": ok, "reasons": why} for n, (ok, why) in gate_runs.items()}},
        "gauges": {name: g["last"] for name, g in gauges.items()},
        "scratch_gauges": scratch_gauges,
        "scratch_retrieval": scratch_retrieval,
        "warnings": {name: g["warnings"] for name, g in gauges.items() if g["warnings"]},
        "rules": rules,
        "commands": [f"dvc repro {' '.join(TARGETS)}", "python -m pcrl.runners.study --config <config> --out <out>"],
    }
    save_plots(out, {name: g["series"] for name, g in gauges.items()}, scores, groups, scratch, design["criterion"],
               scratch_retrieval)
    write_text(out / "report.md", render_report(summary))
    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")  # last: the run is complete
    log.info("study done in %.1f min: %s", (time.monotonic() - start) / 60, out / "report.md")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pcrl.runners.study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/study.yaml", help="the study's config")
    parser.add_argument("--repo", default=".", help="the pipeline's repository, copied into the workspace")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (its work/ subfolder is the pipeline)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_study(Path(args.config), Path(args.out), Path(args.repo))
    except subprocess.CalledProcessError as exc:
        print(f"study: {' '.join(map(str, exc.cmd))} failed with exit code {exc.returncode}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"study: {exc}", file=sys.stderr)
        return 2
    print((Path(args.out) / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
