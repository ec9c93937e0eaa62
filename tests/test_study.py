"""pcrl.runners.study: the known-answer study's design, workspace and a tiny end-to-end run.

The real study takes ~half an hour (``make study``); here a tiny config (1 epoch, 1 seed,
3 label sets) runs the whole procedure, and its report is checked against numbers
recomputed by hand from the scores it records.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from pcrl.config import load_yaml
from pcrl.errors import ConfigError
from pcrl.stages.check_params import momentum_warnings
from pcrl.runners.study import TARGETS, arm_settings, prepare_workspace, run_study, split_config


def test_the_study_config_asks_the_question_it_claims(repo_root: Path) -> None:
    """Scarce labels, plentiful unlabelled scans, >= 3 seeds an arm, >= 5 random inits, >= 20 label
    sets, a task no intensity feature solves, both controls, and momentum fit for the run."""
    params, design = split_config(repo_root / "configs" / "study.yaml")
    luna = params["data"]["phantom"]["luna16"]
    assert luna["ncc_task"] == "shapes"
    assert all(len(design["arms"][a]["seeds"]) >= 3 for a in ("pcrl", "moco", "genesis"))
    assert len(design["scratch_seeds"]) >= 5 and len(design["positive_control"]["seeds"]) >= 3
    assert design["label_sets"]["count"] >= 20
    negative = design["arms"][design["negative_control"]]
    assert negative["settings"] == {"shuffle_positives": True}
    scans_per_subset = luna["scans"] / luna["subsets"]
    ncc_train = len(params["cubes"]["ncc"]["groups"]["train"]) * scans_per_subset
    pretraining = len(params["cubes"]["pretrain"]["groups"]["train"]) * scans_per_subset
    assert design["label_sets"]["scans"] <= 0.15 * ncc_train and pretraining >= 5 * design["label_sets"]["scans"]
    assert momentum_warnings(params) == []  # the rule 1/(1-m) <= steps/10 holds for the study's run


def test_arm_settings_override_the_method_section_and_the_seed_only() -> None:
    pretrain = {"seed": 0, "epochs": 3, "moco": {"momentum": 0.9, "shuffle_bn": True}, "pcrl": {"loss": "nce"}}
    got = arm_settings(pretrain, "moco", {"shuffle_positives": True}, 2)
    assert got == {"seed": 2, "epochs": 3, "moco": {"momentum": 0.9, "shuffle_bn": True, "shuffle_positives": True},
                   "pcrl": {"loss": "nce"}}
    assert pretrain["moco"] == {"momentum": 0.9, "shuffle_bn": True} and pretrain["seed"] == 0  # not mutated


def test_workspace_is_a_git_copy_with_the_study_params_and_keeps_its_data(tmp_path: Path, repo_root: Path) -> None:
    work = tmp_path / "work"
    config = repo_root / "configs" / "study.yaml"
    prepare_workspace(config, work, repo_root)
    expected = load_yaml(config)
    expected.pop("study")
    assert yaml.safe_load((work / "params.yaml").read_text()) == expected
    assert (work / "dvc.yaml").read_text() == (repo_root / "dvc.yaml").read_text()
    assert (work / "pcrl" / "runners" / "study.py").is_file() and (work / ".dvc" / "config").is_file()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=work, capture_output=True, text=True, check=True)
    assert status.stdout.strip() == ""  # committed: DVC sees a clean tree
    (work / "data").mkdir()
    (work / "data" / "kept.txt").write_text("from an earlier run")
    prepare_workspace(config, work, repo_root)  # a rerun resumes
    assert (work / "data" / "kept.txt").read_text() == "from an earlier run"
    stages = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]
    assert all(target.split("@")[0] in stages for target in TARGETS)


@pytest.mark.parametrize(("section", "key", "value", "named"), [
    ("finetune", "seedz", [0], "seedz"),
    ("study", "label_setz", {}, "label_setz"),
])
def test_a_bad_study_config_is_refused_before_anything_runs(tmp_path: Path, repo_root: Path, section: str,
                                                             key: str, value: object, named: str) -> None:
    config = load_yaml(repo_root / "configs" / "study.yaml")
    config[section][key] = value
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=named):
        run_study(bad, tmp_path / "out", repo_root)
    assert not (tmp_path / "out").exists()


def test_a_config_without_a_study_section_is_refused(tmp_path: Path, repo_root: Path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text((repo_root / "params.yaml").read_text())
    with pytest.raises(ConfigError, match="no 'study' section"):
        split_config(bad)


def _tiny_config(repo_root: Path, path: Path) -> Path:
    config = load_yaml(repo_root / "configs" / "study.yaml")
    config["data"]["phantom"]["luna16"]["scans"] = 20
    config["cubes"]["pretrain"]["pairs_per_case"] = 4
    config["pretrain"].update(epochs=1, checkpoint_every=1)
    study = config["study"]
    for arm in study["arms"].values():
        arm["seeds"] = [0]
    study["positive_control"].update(seeds=[0], epochs=2)
    study["scratch_seeds"] = [0, 1]
    study["label_sets"]["count"] = 3
    study["bootstrap"]["samples"] = 200
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("study")
    out = root / "out"
    summary = run_study(_tiny_config(repo_root, root / "tiny.yaml"), out, repo_root)
    return out, summary


@pytest.mark.pipeline  # the tiny study runs the whole procedure: ~8 min on 2 cores
def test_a_tiny_study_writes_its_report_and_every_arm(tiny_study: tuple[Path, dict]) -> None:
    out, summary = tiny_study
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    for name in ("report.md", "gauges.png", "auc.png"):
        assert (out / name).stat().st_size > 0
    arms = {"pcrl", "moco", "genesis", "shuffled_positives"}
    assert set(summary["gates"]["arms"]) == arms
    assert set(summary["comparisons"]["probe"]) == arms | {"supervised"}
    report = (out / "report.md").read_text()
    assert summary["rules"]["outcome"] in report and "positive control" in report and "negative control" in report
    # one seed an arm: no verdict can be claimed
    assert {c["verdict"] for c in summary["comparisons"]["probe"].values()} == {"cannot tell"}
    assert "cannot tell" in report


@pytest.mark.pipeline  # the tiny study runs the whole procedure: ~8 min on 2 cores
def test_the_tiny_study_comparisons_follow_from_its_scores(tiny_study: tuple[Path, dict]) -> None:
    """The reported difference is the mean over the arm's seeds and label sets minus scratch's,
    recomputed here from the per-set AUCs the summary records; the interval holds it."""
    _, summary = tiny_study
    scores = summary["scores"]["probe"]
    scratch = np.mean([scores["scratch-s0"], scores["scratch-s1"]])
    assert all(len(v) == 3 and all(0.0 <= a <= 1.0 for a in v) for v in scores.values())
    for arm, c in summary["comparisons"]["probe"].items():
        mean = float(np.mean(scores[f"{arm}-s0"]))
        assert c["arm_mean"] == pytest.approx(mean) and c["difference"] == pytest.approx(mean - scratch)
        assert c["low"] <= c["difference"] + 1e-12 and c["difference"] <= c["high"] + 1e-12


@pytest.mark.pipeline  # the tiny study runs the whole procedure: ~8 min on 2 cores
def test_the_tiny_study_gate_reads_each_runs_last_gauges(tiny_study: tuple[Path, dict]) -> None:
    out, summary = tiny_study
    for name, gate in summary["gates"]["runs"].items():
        run = json.loads((out / "runs" / name / "summary.json").read_text())
        last = {k: v[max(v, key=int)] for k, v in run["gauges"].items() if v}
        recorded = {k: v for k, v in summary["gauges"][name].items() if v is not None}  # None: the half is absent
        assert recorded == pytest.approx(last)
        if name.startswith(("genesis", "pcrl")):  # reconstructing runs: the PSNR gain decides with the sign
            assert (last["psnr_gain"] > 0) or not gate["pass"]
    chance = summary["gauges"]["moco-s0"]["retrieval_chance"]
    retrieval = summary["gauges"]["moco-s0"]["retrieval_top1"]
    expected = retrieval >= 5 * chance and retrieval > summary["scratch_retrieval"]
    assert summary["gates"]["runs"]["moco-s0"]["pass"] == expected


def test_the_repository_is_found_from_where_the_study_runs_never_from_the_package(tmp_path: Path,
                                                                                   repo_root: Path) -> None:
    from pcrl.runners.study import repository

    assert repository(repo_root / "docs") == repo_root  # found above the working directory
    with pytest.raises(ConfigError, match="not inside the pipeline's repository"):
        repository(tmp_path)  # an installed package's location is never used instead
