"""Both runners plan the same stages, whichever ran last (pcrl/runners/staleness.py).

DVC reports the stages whose deps, params or outs differ from dvc.lock; a rerun of those
makes stale whatever reads their outputs. ``snakemake -n`` must plan exactly that closure,
after ``dvc repro`` (no Snakemake metadata at all) and after a Snakemake run, for a change
of each kind: a pretraining param, a fine-tuning param, a data param, a code file, a seed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from conftest import run
from pcrl.runners.staleness import describe_change, downstream

RULE_LINE = re.compile(r"^(\w+)\s+(\d+)$")


def test_describe_change_names_the_params_deps_and_outs() -> None:
    entries = [{"changed deps": {"pcrl/cli.py": "modified", "data/x": "modified"}},
               {"changed deps": {"params.yaml": {"pretrain.lr": "modified", "pretrain.epochs": "new"}}},
               {"changed outs": {"data/out": "deleted"}}, "always changed"]
    assert describe_change(entries) == ("deps data/x, pcrl/cli.py; deps pretrain.epochs, pretrain.lr; "
                                        "outs data/out; always changed")
    assert describe_change([]) == "changed"


def test_downstream_follows_folders_files_inside_them_and_gathering_folders() -> None:
    outs = {"a": ["data/a"], "b": ["data/b"], "c": ["data/eval/c"], "d": ["results/d"], "e": ["data/e"]}
    deps = {"a": ["pcrl/x.py"], "b": ["data/a/weights.pt"],  # a file inside a's output
            "c": ["data/b"], "d": ["data/eval"],  # d gathers every output under data/eval
            "e": ["data/ab"]}  # a sibling whose name starts like data/a: not a reader
    assert downstream(["a"], deps, outs) == {"a", "b", "c", "d"}
    assert downstream(["c"], deps, outs) == {"c", "d"}
    assert downstream([], deps, outs) == set()
    assert downstream(["a"], deps, outs, gates=["data/a"]) == {"a"}  # a gate changes nothing it feeds


def dvc_stale(work: Path) -> set[str]:
    proc = subprocess.run(["dvc", "status", "--json"], cwd=work, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout or "{}"))


def snakemake_plan(work: Path) -> tuple[set[str], str]:
    """The stages ``snakemake -n`` would run (names as in dvc.yaml), and its output."""
    from pcrl.runners.dag import load_stages

    by_rule = {st.rule_name: st.name for st in load_stages(work)}
    out = run(["snakemake", "-n", "--cores", "2"], work, timeout=600)
    planned = set()
    for line in out.splitlines():
        match = RULE_LINE.match(line.strip())
        if match and match.group(1) in by_rule:
            planned.add(by_rule[match.group(1)])
    return planned, out


def expected_plan(work: Path) -> set[str]:
    """The closure of what ``dvc status`` reports, over the DAG, but the params check: the
    Snakefile runs that check while parsing (a changed param of any kind makes it stale)
    and records it in dvc.lock when the run ends."""
    from pcrl.runners.dag import load_stages

    stages = load_stages(work)
    deps = {st.name: list(st.deps) for st in stages}
    outs = {st.name: list(st.outs) for st in stages}
    return downstream(dvc_stale(work), deps, outs) - {"check_params"}


def edit_params(work: Path, edit: Callable[[dict], None]) -> None:
    params = yaml.safe_load((work / "params.yaml").read_text())
    edit(params)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


EDITS: dict[str, Callable[[Path], None]] = {
    "pretraining param": lambda w: edit_params(w, lambda p: p["pretrain"]["pcrl"].update(temperature=0.3)),
    "fine-tuning param": lambda w: edit_params(w, lambda p: p["finetune"]["bms"].update(lr=0.02)),
    "data param": lambda w: edit_params(w, lambda p: p["resample"]["msd_liver"].update(spacing=[2.5, 2.5, 2.5])),
    "a seed added": lambda w: edit_params(w, lambda p: p["finetune"].update(seeds=[0, 1])),
    "code file": lambda w: (w / "pcrl" / "stages" / "probe.py").write_text(
        (w / "pcrl" / "stages" / "probe.py").read_text() + "\n# edited\n"),
}


@pytest.fixture(scope="module")
def demo_copy(dvc_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the narrowed demo after `dvc repro` (the session's run stays untouched)."""
    work = tmp_path_factory.mktemp("staleness") / "work"
    shutil.copytree(dvc_run, work, symlinks=True)
    # other tests of the session rerun some stages in dvc_run (the audit of reads and writes
    # rewrites wall-clock logs): record what is there, so the copy starts as a completed demo
    run(["dvc", "commit", "--force", "--quiet"], work)
    assert dvc_stale(work) == set()
    return work


@pytest.mark.pipeline
def test_after_dvc_repro_snakemake_plans_what_dvc_finds_stale(demo_copy: Path) -> None:
    """No Snakemake metadata exists (DVC built everything): each edit is planned alike."""
    work = demo_copy
    planned, out = snakemake_plan(work)
    assert planned == set() == dvc_stale(work), out
    for kind, edit in EDITS.items():
        saved = {p: (work / p).read_text() for p in ("params.yaml", "pcrl/stages/probe.py")}
        try:
            edit(work)
            expected = expected_plan(work)
            planned, out = snakemake_plan(work)
            assert expected, kind  # the edit is seen beyond the params check
            assert planned == expected, f"{kind}: snakemake {sorted(planned ^ expected)} differ\n{out[-3000:]}"
            assert "stage(s) to run; changed:" in out  # the reason is printed
        finally:
            for path, text in saved.items():
                (work / path).write_text(text)
    assert dvc_stale(work) == set()


@pytest.mark.pipeline
def test_after_a_snakemake_run_dvc_and_snakemake_agree(demo_copy: Path) -> None:
    """Snakemake rebuilds after a fine-tuning edit and records it in dvc.lock; then both
    runners find nothing to do, and undoing the edit makes both plan the same stages."""
    work = demo_copy
    original = (work / "params.yaml").read_text()
    EDITS["fine-tuning param"](work)
    try:
        run(["snakemake", "--cores", "2"], work)
        assert dvc_stale(work) == set()
        assert snakemake_plan(work)[0] == set()
    finally:
        (work / "params.yaml").write_text(original)
    expected = expected_plan(work)
    assert expected and all("bms" in name or name == "report" for name in expected), expected
    assert snakemake_plan(work)[0] == expected
    EDITS["pretraining param"](work)
    try:
        assert snakemake_plan(work)[0] == expected_plan(work)
    finally:
        (work / "params.yaml").write_text(original)


@pytest.mark.pipeline
def test_snakemake_says_when_it_cannot_compare_with_dvc_lock(demo_copy: Path) -> None:
    """A DVC lock held by another process: the plan says it cannot tell, not 'nothing to do'."""
    work = demo_copy
    lock = work / ".dvc" / "tmp" / "rwlock"
    saved = lock.read_text() if lock.exists() else None
    lock.write_text(json.dumps({"write": {str(work / "data" / "probe"): {"pid": 1, "cmd": "dvc repro"}},
                                "read": {}}))
    try:
        out = run(["snakemake", "-n", "--cores", "2"], work, timeout=600)
    finally:
        lock.unlink()
        if saved is not None:
            lock.write_text(saved)
    assert "cannot compare with dvc.lock" in out, out[-3000:]


def _drop_moco_section(p: dict) -> None:
    p["pretrain"]["methods"] = ["pcrl", "moco"]
    del p["pretrain"]["moco"]


#: Params that every stage would accept alone but that refer to what does not exist, and
#: the key the one-line message names (config._check_semantics, pcrl check-params).
BAD_REFERENCES: dict[str, tuple[Callable[[dict], None], str]] = {
    "an init that is no method": (lambda p: p["finetune"].update(inits=["scratch", "pcrl", "mcoo"]),
                                  "finetune.inits: ['mcoo']"),
    "an unknown method": (lambda p: p["pretrain"].update(methods=["pcrl", "mocov2"]), "pretrain.methods"),
    "a method without its section": (_drop_moco_section, "pretrain.methods: ['moco'] listed"),
    "a fraction no cubes stage draws": (lambda p: p["finetune"].update(fractions=[0.3, 1.0]),
                                        "finetune.fractions: [0.3]"),
    "a Chest14 init with no 2D pretraining": (lambda p: p["finetune"]["chest14"].update(inits=["scratch", "pcrl"]),
                                              "finetune.chest14.inits: ['pcrl']"),
    "shards that skip one": (lambda p: p["data"].update(shards=[0, 2]), "data.shards"),
}


@pytest.mark.pipeline
@pytest.mark.parametrize("case", sorted(BAD_REFERENCES))
def test_bad_cross_references_stop_both_runners_before_any_stage(demo_copy: Path, case: str) -> None:
    """`dvc repro` runs check_params first (it depends on every section) and stops there;
    the Snakefile refuses while parsing. Both name the key; nothing else runs or changes."""
    work = demo_copy
    edit, message = BAD_REFERENCES[case]
    original = (work / "params.yaml").read_text()
    lock = (work / "dvc.lock").read_text()
    edit_params(work, edit)
    try:
        dvc = subprocess.run(["dvc", "repro"], cwd=work, capture_output=True, text=True, timeout=600)
        smk = subprocess.run(["snakemake", "-n", "--cores", "2"], cwd=work, capture_output=True, text=True,
                             timeout=600)
    finally:
        (work / "params.yaml").write_text(original)
    dvc_out, smk_out = dvc.stdout + dvc.stderr, smk.stdout + smk.stderr
    assert dvc.returncode != 0 and "pcrl check-params: error: params.yaml" in dvc_out, dvc_out[-3000:]
    assert message in dvc_out, dvc_out[-3000:]
    assert re.findall(r"Running stage '([^']+)'", dvc_out) == ["check_params"], dvc_out[-3000:]
    assert (work / "dvc.lock").read_text() == lock
    assert smk.returncode != 0 and message in smk_out and "Traceback" not in smk_out, smk_out[-3000:]
