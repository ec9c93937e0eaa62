"""One DAG, two runners: Snakemake's rules equal DVC's stages (docs/design.md, principle 1)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from pcrl.resources import load_resources
from pcrl.runners.dag import Stage, load_stages
from pcrl.errors import ConfigError


def _dvc_stages(root: Path) -> dict[str, dict]:
    """DVC's own view of the pipeline, straight from its index (not via pcrl.runners.dag)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        out = {}
        for st in repo.index.stages:
            out[re.sub(r"\W", "_", st.name.replace("@", "_"))] = {
                "cmd": st.cmd,
                "deps": sorted(d.def_path for d in st.deps if getattr(d, "params", None) is None),
                "params": sorted(p for d in st.deps if getattr(d, "params", None) for p in d.params),
                "outs": sorted(o.def_path for o in st.outs),
            }
        return out


def _snakemake_rules(root: Path) -> dict[str, dict]:
    """Snakemake's parsed rules (its Python API), keyed by rule name."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings()) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            snakefile=root / "workflow" / "Snakefile",
            workdir=root,
        )._workflow
        return {
            r.name: {
                "cmd": dict(r.params.items()).get("cmd"),
                # one input function (planned from dvc.lock), which carries the declared paths
                "input": sorted(p for f in r.input for p in getattr(f, "declared", [str(f)])),
                "output": sorted(map(str, r.output)),
                "params": dict(r.params.items()).get("values"),
                "log": list(map(str, r.log)),
            }
            for r in workflow.rules
        }


@pytest.fixture(scope="module")
def both(repo_root: Path) -> tuple[dict, dict]:
    return _dvc_stages(repo_root), _snakemake_rules(repo_root)


def test_same_stage_names(both: tuple[dict, dict]) -> None:
    dvc, smk = both
    assert set(smk) - {"all"} == set(dvc)
    for expected in ("download_luna16_0", "download_luna16_1", "resample_msd_brain_1", "cubes_pretrain",
                     "cubes_ncc"):
        assert expected in dvc


def _gathered(deps: list[str], outs: list[str]) -> list[str]:
    """A dep that is a folder of other stages' outputs stands for them in Snakemake; a file
    inside another stage's output folder stands as that folder."""
    def one(dep: str) -> list[str]:
        holder = [o for o in outs if dep.startswith(o + "/")]
        return holder or [o for o in outs if o.startswith(dep + "/")] or [dep]

    return sorted({i for d in deps for i in one(d)})


def test_same_commands_deps_outs(both: tuple[dict, dict]) -> None:
    dvc, smk = both
    outs = [o for stage in dvc.values() for o in stage["outs"]]
    for name, stage in dvc.items():
        rule = smk[name]
        assert rule["cmd"] == stage["cmd"], name
        assert rule["input"] == _gathered(stage["deps"], outs), name
        assert rule["output"] == stage["outs"], name
        assert rule["log"] == [f"logs/{name}.log"]


def test_rule_params_track_the_stage_params(both: tuple[dict, dict], demo_params: dict) -> None:
    dvc, smk = both
    for name, stage in dvc.items():
        values = smk[name]["params"]
        assert sorted(values) == stage["params"], name
        for dotted, value in values.items():
            node = demo_params
            for part in dotted.split("."):
                node = node[part]
            assert value == node


def test_every_stage_is_one_cli_call_writing_folders(both: tuple[dict, dict]) -> None:
    dvc, _ = both
    for name, stage in dvc.items():
        assert stage["cmd"].startswith("pcrl "), name
        assert ";" not in stage["cmd"] and "&&" not in stage["cmd"], name
        for out in stage["outs"]:
            assert out.startswith("data/") or out.startswith("results/"), out
            assert Path(out).suffix == "", f"{name}: out {out} should be a folder"


def test_dry_run_prints_each_stage_command(repo_root: Path, both: tuple[dict, dict]) -> None:
    """What Snakemake would really execute (loop variables resolved per job)."""
    dvc, _ = both
    proc = subprocess.run(
        ["snakemake", "-n", "-p", "--forceall", "--cores", "1"],
        cwd=repo_root, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    shells = re.findall(r"^Shell command: (.*) > logs/(\w+)\.log 2>&1$", proc.stdout + proc.stderr, re.M)
    assert {rule: cmd for cmd, rule in shells} == {name: s["cmd"] for name, s in dvc.items()}


def test_rule_all_wants_every_output(both: tuple[dict, dict]) -> None:
    dvc, smk = both
    assert smk["all"]["input"] == sorted(o for s in dvc.values() for o in s["outs"])


def test_cubes_fan_out_reads_the_right_dataset(both: tuple[dict, dict]) -> None:
    dvc, _ = both
    assert "data/interim/msd_liver" in dvc["cubes_lcs"]["deps"]
    assert "data/interim/msd_brain" in dvc["cubes_bms"]["deps"]
    assert "data/interim/luna16" in dvc["cubes_ncc"]["deps"]


def test_a_file_inside_another_stages_output_is_that_folder_for_snakemake() -> None:
    from pcrl.runners.dag import gather_inputs

    pretrain = Stage("pretrain@pcrl", "pcrl pretrain", ("data/processed/pretrain",), (), ("data/pretrain/pcrl",))
    evaluate = Stage("evaluate@x", "pcrl evaluate", (), (), ("data/evaluate/x/s0",))
    finetune = Stage("finetune@pcrl", "pcrl finetune", ("data/pretrain/pcrl/weights.pt", "data/processed/ncc"), (),
                     ("data/finetune/pcrl",))
    report = Stage("report", "pcrl report", ("data/evaluate",), (), ("results/report",))
    resolved = {s.name: s for s in gather_inputs([pretrain, evaluate, finetune, report])}
    assert resolved["finetune@pcrl"].inputs == ["data/pretrain/pcrl", "data/processed/ncc"]
    assert resolved["finetune@pcrl"].deps == finetune.deps  # DVC keeps the file
    assert resolved["report"].inputs == ["data/evaluate/x/s0"]
    assert resolved["pretrain@pcrl"].inputs == ["data/processed/pretrain"]


def test_stage_helpers() -> None:
    st = Stage("resample@luna16", "pcrl x {a}", ("d",), ("resample.luna16",), ("data/interim/luna16",))
    assert st.group == "resample"
    assert st.rule_name == "resample_luna16"
    assert st.shell_command == "pcrl x {{a}}"
    assert st.param_values({"resample": {"luna16": {"s": 1}}}) == {"resample.luna16": {"s": 1}}
    with pytest.raises(ConfigError, match="needs missing key resample.luna16"):
        st.param_values({"resample": {}})


def test_resources(tmp_path: Path) -> None:
    path = tmp_path / "res.yaml"
    path.write_text(yaml.safe_dump({"default": {"threads": 2, "mem_mb": 100},
                                    "pretrain": {"gpus": 4, "slurm_extra": "--qos=x"}}))
    res = load_resources(path)
    pre = res.for_stage("pretrain")
    assert (pre.threads, pre.mem_mb, pre.gpus) == (2, 100, 4)
    assert pre.snakemake_resources()["gpu"] == 4
    assert pre.snakemake_resources()["slurm_extra"] == "--qos=x"
    assert "gpu" not in res.for_stage("cubes").snakemake_resources()
    path.write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="res.yaml"):
        load_resources(path)


def test_pcrl_dag_matches_dvc(repo_root: Path, both: tuple[dict, dict]) -> None:
    dvc, _ = both
    stages = {s.rule_name: s for s in load_stages(repo_root)}
    assert {n: (s.cmd, sorted(s.deps), sorted(s.outs)) for n, s in stages.items()} == {
        n: (s["cmd"], s["deps"], s["outs"]) for n, s in dvc.items()
    }


def test_snakemake_lint_is_clean(repo_root: Path) -> None:
    proc = subprocess.run(
        ["snakemake", "--lint"], cwd=repo_root, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for rule" not in proc.stdout + proc.stderr
