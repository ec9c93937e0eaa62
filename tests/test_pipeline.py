"""The whole DAG on the phantom, from a fresh copy of the repository, with both runners.

`dvc repro` runs every stage (download -> report) and a second `dvc repro` finds everything
up to date; `snakemake --cores 2` writes the same data stages byte for byte. To keep the
suite short the fan-out is narrowed (conftest.narrowed: one pretraining method, scratch vs
PCRL, one label fraction); the full demo is `make demo`. The `dvc repro` run is the session's
(conftest.dvc_run), shared with the SLURM test.
"""

from __future__ import annotations

import hashlib
import os
import json
from pathlib import Path

import pytest
import yaml

from conftest import fresh_copy, narrowed, run

pytestmark = pytest.mark.pipeline


def _digest_tree(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (by relative path)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in {".gitignore", ".snakemake_timestamp"}
    }


@pytest.fixture(scope="module")
def snakemake_run(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = narrowed(fresh_copy(repo_root, tmp_path_factory.mktemp("smk_clone")))
    run(["snakemake", "--cores", "2"], work)  # the whole (narrowed) DAG
    return work


def test_dvc_repro_builds_every_stage(dvc_run: Path) -> None:
    from pcrl.datasets.shards import read_cases

    for ds in ("luna16", "msd_liver", "msd_brain"):
        for shard in ("0", "1"):  # data.shards: [0, 1]
            assert (dvc_run / "data" / "raw" / ds / shard / "manifest.json").is_file()
            assert (dvc_run / "data" / "interim" / ds / shard / "cases.json").is_file()
        cases = read_cases(dvc_run / "data" / "interim" / ds)
        assert cases and [c["order"] for c in cases] == list(range(len(cases)))
        assert all((dvc_run / "data" / "interim" / ds / c["image"]).is_file() for c in cases)
    split = json.loads((dvc_run / "data/processed/pretrain/split.json").read_text())
    assert set(split) == {"train", "val"} and split["train"] and split["val"]
    pairs = json.loads((dvc_run / "data/processed/pretrain/pairs.json").read_text())
    assert {p["id"] for p in pairs} == set(split["train"]) | set(split["val"])
    for task in ("ncc", "lcs", "bms"):
        fractions = json.loads((dvc_run / f"data/processed/{task}/fractions.json").read_text())
        sizes = [len(v) for v in fractions.values()]
        assert sizes == sorted(sizes) and sizes[-1] == len(
            json.loads((dvc_run / f"data/processed/{task}/split.json").read_text())["train"]
        )


def test_dvc_repro_reaches_the_report(dvc_run: Path) -> None:
    for task, metric in (("ncc", "auc"), ("lcs", "dice_liver"), ("bms", "dice_mean")):
        for init in ("scratch", "pcrl"):
            run_dir = Path(task) / init / "f1.0" / "s0"
            numbers = json.loads((dvc_run / "data" / "evaluate" / run_dir / "metrics.json").read_text())
            assert 0.0 <= numbers[metric] <= 1.0
            assert all(isinstance(v, (int, float)) for v in numbers.values())  # numbers only
            assert (dvc_run / "data" / "evaluate" / run_dir / ".pcrl-output").read_bytes() == b""
            result = json.loads((dvc_run / "data" / "records" / "evaluate" / run_dir / "record.json").read_text())
            assert (result["task"], result["init"], result["seed"]) == (task, init, 0)
            assert result["primary"] == metric and result["metrics"][metric] == numbers[metric]
            assert result["provenance"]["params_sha256"] and "threads" in result["provenance"]
    report = (dvc_run / "results" / "report" / "report.md").read_text()
    for task in ("ncc", "lcs", "bms"):
        assert task in report
    assert "PCRL" in report and "scratch" in report
    assert (dvc_run / "results" / "report" / "plots" / "ncc.png").is_file()
    # one seed: no win is claimed; the probe of every initialisation is in the report
    assert "cannot tell" in report and " beats " not in report and "PCRL is better" not in report
    assert "## Frozen-encoder probe (NCC)" in report
    probe = json.loads((dvc_run / "data" / "probe" / "metrics.json").read_text())
    assert set(probe) == {"scratch", "pcrl"} and all(0.0 <= v <= 1.0 for by_f in probe.values() for v in by_f.values())


def test_the_probe_and_readable_losses_appear_in_dvc_plots(dvc_run: Path) -> None:
    live = dvc_run / "data" / "pretrain" / "pcrl" / "live" / "plots" / "metrics"
    gauges = ("gauges/effective_rank", "gauges/retrieval_top1", "gauges/retrieval_chance", "val/psnr_gain",
              "gauges/grad_contrastive", "gauges/grad_reconstruction", "train/ema_momentum")
    for name in ("probe/val_auc", "val/psnr", "train/con_acc", "train/queue_fill", *gauges):
        rows = (live / f"{name}.tsv").read_text().splitlines()[1:]
        assert [int(r.split("\t")[0]) for r in rows] == [1, 2], name  # one value per epoch
    import subprocess

    # stdout only: DVC warns on stderr about the charts' methods this narrowed demo left out
    proc = subprocess.run(["dvc", "plots", "show", "--json"], cwd=dvc_run, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = json.loads(proc.stdout)["data"]
    text = json.dumps(shown)
    assert "probe/val_auc" in text and "data/probe/probe.png" in shown
    # the collapse and learning gauges are DVC plots, the methods of each on one chart
    assert all(f"{name}.tsv" in text for name in gauges)
    losses = json.dumps(shown["pretraining loss (3D)"])
    assert "pcrl/live/plots/metrics/train/loss.tsv" in losses  # (the narrowed demo pretrains pcrl only)
    inits = {row.get("init") for plot in shown["results/report/plots/ncc.csv"]
             for row in plot["content"]["data"]["values"]}
    assert inits == {"scratch", "pcrl"}  # one chart, every initialisation


def test_second_dvc_repro_is_a_no_op(dvc_run: Path) -> None:
    out = run(["dvc", "status"], dvc_run)
    assert "up to date" in out
    out = run(["dvc", "repro"], dvc_run)
    assert "Running stage" not in out


def test_snakemake_and_dvc_write_identical_outputs(dvc_run: Path, snakemake_run: Path) -> None:
    for folder in ("data/interim/luna16", "data/processed/pretrain", "data/processed/ncc", "data/processed/lcs"):
        a, b = _digest_tree(dvc_run / folder), _digest_tree(snakemake_run / folder)
        assert a and a == b, folder
    logs = sorted(p.name for p in (snakemake_run / "logs").glob("*.log"))
    assert "cubes_pretrain.log" in logs and {"download_luna16_0.log", "download_luna16_1.log"} <= set(logs)


def test_snakemake_and_dvc_give_the_same_numbers(dvc_run: Path, snakemake_run: Path) -> None:
    """Both runners give every stage the same thread count (workflow/resources.yaml), so the
    trained and evaluated numbers are equal, not merely close."""
    paths = sorted((dvc_run / "data" / "evaluate").rglob("metrics.json"))
    assert len(paths) == 6
    for path in paths:
        rel = path.relative_to(dvc_run)
        assert json.loads(path.read_text()) == json.loads((snakemake_run / rel).read_text()), rel
    for run_dir in ("ncc/pcrl/f1.0/s0", "lcs/scratch/f1.0/s0"):
        records = [json.loads((w / "data/records/evaluate" / run_dir / "record.json").read_text())
                   for w in (dvc_run, snakemake_run)]
        assert records[0]["provenance"]["threads"] == records[1]["provenance"]["threads"]


def test_dvc_repro_never_deletes_a_dataset_in_the_pipelines_folders(
        repo_root: Path, tmp_path: Path) -> None:
    """DVC deletes a stage's outputs before running it: a dataset that data.local_paths puts
    at data/raw/msd_liver would be gone before `pcrl download` could object. The
    check_params stage runs first and stops the DAG instead."""
    import subprocess

    from pcrl.phantom import generate_msd_liver

    work = fresh_copy(repo_root, tmp_path / "clone")
    dataset = work / "data" / "raw" / "msd_liver"
    generate_msd_liver(dataset, cases=2, test_cases=0, seed=0, shape=(48, 48, 20))
    before = _digest_tree(dataset)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["data"].update(source="local", datasets=["msd_liver"],
                          local_paths={"msd_liver": "data/raw/msd_liver"})
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run(["dvc", "repro", "download@msd_liver-0"], cwd=work, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode != 0
    assert "data.local_paths.msd_liver: data/raw/msd_liver lies inside the pipeline's own data/" \
        in proc.stdout + proc.stderr
    assert _digest_tree(dataset) == before


def test_editing_one_methods_params_leaves_the_others_up_to_date(dvc_run: Path) -> None:
    """pretrain@pcrl depends on the shared pretrain keys and pretrain.pcrl only."""
    params_file = dvc_run / "params.yaml"
    original = params_file.read_text()

    def changed_after(edit) -> set[str]:
        params = yaml.safe_load(original)
        edit(params["pretrain"])
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        return _dvc_status(dvc_run)

    try:
        assert "pretrain@pcrl" not in changed_after(lambda p: p["moco"].update(temperature=0.3))
        assert "pretrain@pcrl" not in changed_after(lambda p: p.update(methods=["pcrl", "moco"]))
        assert "pretrain@pcrl" in changed_after(lambda p: p["pcrl"].update(temperature=0.3))
        assert "pretrain@pcrl" in changed_after(lambda p: p.update(lr=0.5))
    finally:
        params_file.write_text(original)
    assert _dvc_status(dvc_run) == set()


def test_a_pretraining_rerun_with_the_same_weights_reruns_no_fine_tune(dvc_run: Path) -> None:
    """Fine-tuning depends on weights.pt, not on the pretraining folder, whose live/ logs hold
    wall-clock figures (samples_per_s): a rerun giving the same weights leaves every fine-tune,
    evaluation and export up to date (only the pretraining stage sees its changed output)."""
    live = dvc_run / "data" / "pretrain" / "pcrl" / "live" / "metrics.json"
    original = live.read_text()
    try:
        logged = json.loads(original)
        logged["train"]["samples_per_s"] = logged["train"]["samples_per_s"] * 2 + 1
        live.write_text(json.dumps(logged))
        stale = _dvc_status(dvc_run)
        assert "pretrain@pcrl" in stale  # the check can see the change
        assert not {s for s in stale if s.startswith(("finetune", "evaluate", "export"))}, stale
    finally:
        live.write_text(original)
    assert _dvc_status(dvc_run) == set()


def _dvc_status(work: Path) -> set[str]:
    """Names of the stages `dvc status` reports as changed."""
    import subprocess

    proc = subprocess.run(["dvc", "status", "--json"], cwd=work, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout or "{}"))


AUDITED = ["check_params", "download@luna16-1", "resample@msd_liver-0", "cubes@lcs", "pretrain@pcrl",
           "init_scratch@pretrain", "finetune_lcs@pcrl-1.0-0", "evaluate_lcs@pcrl-1.0-0", "report"]
HARNESS = Path(__file__).resolve().parent / "tools" / "audited_pcrl.py"
#: DVC's own files, which dvclive reads to find the repository it logs in, and its scratch
#: folder .dvc/tmp, where dvclive marks each completed step for DVC's editor extension:
#: neither is pipeline data (nor are the git files it reads to name the experiment).
DVC_OWN = [".dvc", ".dvcignore", ".git", ".gitignore"]
#: params.yaml, declared per key (`params:`), and the stage's thread count, read from
#: workflow/resources.yaml as Snakemake does (how a stage runs, recorded in provenance,
#: not a dep: neither runner reruns a stage when its resources change).
RUN_SETTINGS = {Path("params.yaml"), Path("workflow/resources.yaml")}
#: Read for provenance only, as the commit is (pcrl/report/context.py): the report's header
#: digests the download outputs dvc.lock records; a dep on dvc.lock, which DVC rewrites as
#: each stage ends, would make the report stale after every run.
PROVENANCE = {"report": {Path("dvc.lock")}}


def _observed(work: Path, cmd: str, log: Path) -> tuple[set[Path], set[Path], set[Path]]:
    """(files read, paths written, folders made) inside ``work`` by one run of the stage's command,
    which imports the package from ``work`` itself (PYTHONPATH), so code reads show."""
    import subprocess
    import sys

    argv = cmd.split()[1:]
    env = {**os.environ, "PYTHONPATH": str(work), "PYTHONDONTWRITEBYTECODE": "1",
           "PCRL_NO_DVC_COMMIT": "1"}
    proc = subprocess.run([sys.executable, str(HARNESS), str(log), "--", *argv], cwd=work, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reads, writes, folders = set(), set(), set()
    for line in log.read_text().splitlines():
        kind, path = line.split("\t", 1)
        p = Path(path)
        if p == work or work not in p.parents or "__pycache__" in p.parts or "__editable__" in p.name:
            continue  # outside the copy, bytecode caches, the import system's path hooks
        {"read": reads, "write": writes, "mkdir": folders}[kind].add(p.relative_to(work))
    return reads, writes, folders


def _within(path: Path, folders: list[str]) -> bool:
    return any(path == Path(f) or Path(f) in path.parents for f in folders)


def _atomic_sibling(path: Path, outs: list[str]) -> bool:
    """Inside a temporary sibling ``.<out name>.*`` that pcrl.atomic builds an out in."""
    for out in map(Path, outs):
        for folder in (path, *path.parents):
            name = folder.name
            if folder.parent == out.parent and name.startswith(".") and name.lstrip(".").startswith(f"{out.name}."):
                return True
    return False


def test_every_stage_reads_only_its_deps_and_writes_only_its_outs(dvc_run: Path, tmp_path: Path) -> None:
    """Observed, not inferred: each stage group's command runs once more under an audit hook
    (sys.addaudithook on open, rename, mkdir, remove); every file it reads inside the
    repository is a declared dep (or params.yaml, read per key), every path it writes lies in
    a declared out, its temporary sibling, or the stage's state folder under data/state.
    ITK reads image bytes in C++, unseen by the hook; pcrl opens every image file in Python
    first (gzip CRC, header checks), so those reads are seen."""
    from pcrl.runners.dag import load_stages

    stages = {s.name: s for s in load_stages(dvc_run)}
    problems = {}
    for name in AUDITED:
        stage = stages[name]
        reads, writes, folders = _observed(dvc_run, stage.cmd, tmp_path / f"{name}.log")
        assert any(str(p).startswith("pcrl/") for p in reads), f"{name}: no code read observed"
        deps, outs = list(stage.deps), list(stage.outs)
        owned = [*outs, "data/state"]
        undeclared = sorted(str(p) for p in reads if not _within(p, deps + owned + DVC_OWN)
                            and not _atomic_sibling(p, outs) and p not in RUN_SETTINGS
                            and p not in PROVENANCE.get(name, set()))
        parents = {q for o in owned for q in Path(o).parents}  # made with parents=True
        stray = sorted(str(p) for p in writes | (folders - parents)
                       if not _within(p, owned + [".dvc/tmp"]) and not _atomic_sibling(p, outs))
        if undeclared or stray:
            problems[name] = {"reads not declared": undeclared[:10], "writes outside outs": stray[:10]}
    if problems:
        pytest.fail(json.dumps(problems, indent=1))


def test_snakemake_records_only_what_it_built(snakemake_run: Path) -> None:
    """After a params edit, a partial Snakemake run records in dvc.lock the stages it built
    (cubes@ncc, rebuilt here) and not the stale ones it left alone (resample@msd_liver-*,
    whose spacing changed): `dvc status` still reports those as changed."""
    import shutil

    work = snakemake_run
    params_file = work / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["resample"]["msd_liver"]["spacing"] = [2.5, 2.5, 2.5]
    try:
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        shutil.rmtree(work / "data" / "processed" / "ncc")
        out = run(["snakemake", "--cores", "2", "data/processed/ncc"], work)
        assert "recorded" in out
        changed = _dvc_status(work)
        assert {"resample@msd_liver-0", "resample@msd_liver-1"} <= changed  # stale: left alone
        assert "cubes@ncc" not in changed and "resample@luna16-0" not in changed
    finally:
        params_file.write_text(original)


def test_two_queued_experiments_run_apart_and_show_side_by_side(repo_root: Path, tmp_path: Path) -> None:
    """`dvc exp run --queue -S ...` twice, then `dvc queue start -j 2`: each experiment runs
    the DAG in its own workspace, so its training state is its own, and `dvc exp show` lists
    both with their params and outputs. (They run up to the pretraining, whose weights the
    learning rate changes, to keep the suite short; the headline metrics come from the report.)"""
    import subprocess
    import time

    work = narrowed(fresh_copy(repo_root, tmp_path / "exp_clone"))
    for lr in ("0.02", "0.05"):  # one epoch and no probe: the learning rate shows after a step
        run(["dvc", "exp", "run", "--queue", "-S", f"pretrain.lr={lr}", "-S", "pretrain.epochs=1",
             "-S", "probe.every=0", "pretrain@pcrl"], work)
    run(["dvc", "queue", "start", "-j", "2"], work)
    deadline = time.time() + 1500
    while time.time() < deadline:
        status = subprocess.run(["dvc", "queue", "status"], cwd=work, capture_output=True, text=True).stdout
        if not any(word in status for word in ("Running", "Queued")):
            break
        time.sleep(2)
    assert status.count("Success") == 2, status
    shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], cwd=work, capture_output=True,
                                      text=True, check=True).stdout)
    found = {}
    for rev in shown:
        for group in rev.get("experiments") or []:
            for exp in group["revs"]:
                data = exp["data"]
                lr = data["params"]["params.yaml"]["data"]["pretrain"]["lr"]
                found[lr] = data["outs"]["data/pretrain/pcrl"]["hash"]
    assert set(found) == {0.02, 0.05}, shown
    assert found[0.02] != found[0.05]  # each experiment trained with its own learning rate
    assert not (work / "data" / "state").exists()  # nothing ran in the workspace itself


def test_the_2d_setting_runs_from_the_phantom_to_chest14_test_aucs(repo_root: Path, tmp_path: Path) -> None:
    """`dvc repro evaluate_chest14` runs the 2D setting alone: the ChestX-ray14 phantom in 2
    download shards, the radiograph store, the patient split and 2D pairs, PCRL on the
    ResNet-18 U-Net, Chest14 from scratch and from PCRL, the test AUC of every finding."""
    from pcrl.datasets.chestxray14 import FINDINGS

    work = fresh_copy(repo_root, tmp_path / "clone2d")
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["pretrain2d"]["methods"] = ["pcrl"]
    params["pretrain2d"]["settings"]["epochs"] = 1
    params["finetune"]["chest14"].update(inits=["scratch", "pcrl"], epochs=1)
    params["finetune"].update(fractions=[1.0], seeds=[0])
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["dvc", "repro", "evaluate_chest14"], work)
    assert not (work / "data" / "pretrain" / "pcrl").exists()  # nothing of the 3D setting ran
    test_patients = set(json.loads((work / "data" / "processed" / "chest14" / "split.json").read_text())["test"])
    pretrained = json.loads((work / "data" / "pretrain2d" / "pcrl" / "summary.json").read_text())
    assert pretrained["epochs"] == 1 and pretrained["train_pairs"] > 0
    for init in ("scratch", "pcrl"):
        evaluated = work / "data" / "evaluate" / "chest14" / init / "f1.0" / "s0"
        metrics = json.loads((evaluated / "metrics.json").read_text())
        keys = [f"auc_{name.lower()}" for name in FINDINGS]
        per_finding = [metrics[k] for k in keys if k in metrics]  # a phantom split may lack a finding
        assert len(per_finding) == metrics["labels_scored"] >= 1 and all(0.0 <= v <= 1.0 for v in per_finding)
        assert metrics["auc_mean"] == pytest.approx(sum(per_finding) / len(per_finding))
    summary = json.loads((work / "data" / "finetune" / "chest14" / "pcrl" / "f1.0" / "s0" / "summary.json").read_text())
    assert summary["init_loaded"] != "nothing (scratch)" and summary["train_cases"] == len(
        json.loads((work / "data" / "processed" / "chest14" / "split.json").read_text())["train"])
    assert test_patients and "chest14" in (work / "dvc.lock").read_text()
    # the official test list reaches neither pretraining nor fine-tuning
    pairs = json.loads((work / "data" / "processed" / "pretrain2d" / "pairs.json").read_text())
    assert not {name[:8] for entry in pairs for name in entry["images"]} & test_patients
    import torch

    model = torch.load(work / "data" / "finetune" / "chest14" / "pcrl" / "f1.0" / "s0" / "model.pt", weights_only=True)
    assert model["train_ids"] and not {*model["train_ids"], *model["val_ids"]} & test_patients
