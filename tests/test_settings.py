"""pcrl.settings: the two settings of the paper, checked against dvc.yaml, params.yaml and
the task table they describe (independent sources, not the table itself)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pcrl.errors import ConfigError
from pcrl.tasks import TASKS
from pcrl.settings import (
    CHEST14_FINDINGS,
    SETTINGS,
    get_setting,
    setting_of_cubes_task,
    setting_of_dataset,
    setting_of_task,
)

REPO = Path(__file__).resolve().parents[1]


def _dvc_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def test_every_task_belongs_to_one_setting_that_reads_its_dataset() -> None:
    assert [s.pretrain_dataset for s in SETTINGS.values()] == ["luna16", "chestxray14"]  # the paper's two
    owners = {task: [s.name for s in SETTINGS.values() if task in s.tasks] for task in TASKS}
    assert owners == {"ncc": ["3d"], "lcs": ["3d"], "bms": ["3d"], "chest14": ["2d"]}
    for name, spec in TASKS.items():
        assert setting_of_dataset(spec.dataset) is setting_of_task(name)
        assert name in setting_of_task(name).cubes_tasks  # each task has its cubes stage entry


def test_the_finetune_stages_load_the_weights_of_their_setting() -> None:
    """dvc.yaml's fine-tuning commands read ``--weights <root>/<init>``: the root is the
    setting's, and the 2D stages run with ``--setting 2d`` where they take one."""
    seen, pretrained = set(), set()
    for name, stage in _dvc_stages().items():
        body = stage.get("do", stage)
        cmd = body["cmd"]
        task = re.search(r"pcrl finetune --task (\w+)", cmd)
        if task:
            weights = re.search(r"--weights (\S+)/\$\{item\.init\}", cmd)
            assert weights and weights.group(1) == setting_of_task(task.group(1)).weights_root, name
            seen.add(task.group(1))
        pretrain = re.search(r"pcrl pretrain (--setting (\w+) )?.*--out (\S+)/\$\{item\}", cmd)
        if pretrain:
            setting = get_setting(pretrain.group(2) or "3d")
            assert pretrain.group(3) == setting.weights_root, name
            assert f"--pairs data/processed/{setting.pretrain_task}" in cmd, name
            pretrained.add(setting.name)
    assert seen == set(TASKS) and pretrained == set(SETTINGS)


def test_inits_and_externals_are_read_where_params_yaml_keeps_them() -> None:
    finetune = {"inits": ["scratch", "pcrl"], "external": {"release": "a.pt"},
                "chest14": {"inits": ["moco"], "external": {"imagenet": "r18.pth"}}}
    assert SETTINGS["3d"].inits(finetune) == ["scratch", "pcrl"]
    assert SETTINGS["3d"].externals(finetune) == {"release": "a.pt"}
    assert SETTINGS["2d"].inits(finetune) == ["moco"]
    assert SETTINGS["2d"].externals(finetune) == {"imagenet": "r18.pth"}
    assert SETTINGS["2d"].inits({"inits": ["scratch"]}) == []  # the 2D task left out
    assert (SETTINGS["3d"].inits_key, SETTINGS["2d"].external_key) == ("finetune.inits", "finetune.chest14.external")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for setting in SETTINGS.values():  # every dotted key names a real params entry
        node = params
        for part in setting.inits_key.split("."):
            node = node[part]
        assert node == setting.inits(params["finetune"])


def test_the_2d_pretraining_params_are_the_3d_ones_with_the_2d_settings_over_them() -> None:
    params = {"pretrain": {"methods": ["pcrl"], "epochs": 3, "network": {"base": 4, "norm": "batch"}},
              "pretrain2d": {"methods": ["moco"], "settings": {"epochs": 5, "network": {"base": 8}}}}
    assert SETTINGS["2d"].pretrain_params(params) == {"methods": ["moco"], "epochs": 5,
                                                      "network": {"base": 8, "norm": "batch"}}
    assert SETTINGS["3d"].pretrain_params(params) == params["pretrain"]
    with pytest.raises(ConfigError, match="missing section pretrain2d"):
        SETTINGS["2d"].pretrain_params({"pretrain": {}})


def test_the_findings_are_wang_et_al_s_fourteen_in_their_order() -> None:
    # Wang et al., CVPR 2017, Table 1 / the dataset's README: 14 labels in this order
    assert len(CHEST14_FINDINGS) == 14 and len(set(CHEST14_FINDINGS)) == 14
    assert (CHEST14_FINDINGS[0], CHEST14_FINDINGS[7], CHEST14_FINDINGS[-1]) == ("Atelectasis", "Pneumothorax", "Hernia")
    assert TASKS["chest14"].class_names[12] == "pleural_thickening"


def test_unknown_names_are_errors_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown setting '4d'; known: 3d, 2d"):
        get_setting("4d")
    with pytest.raises(ConfigError, match="unknown task 'mnist'.*chest14"):
        setting_of_task("mnist")
    with pytest.raises(ConfigError, match="unknown cubes task 'x'.*pretrain2d"):
        setting_of_cubes_task("x")


def _perturbed(value: object) -> object:
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, dict):
        return {**value, "__perturbed__": 1}
    return f"{value}-perturbed"


def test_the_2d_stage_declares_exactly_the_pretrain_keys_its_settings_read(repo_root: Path, demo_params: dict) -> None:
    """Perturb each key of pretrain: the 2D settings change for a key the pretrain2d stage
    declares in dvc.yaml and stay the same for one it does not (pretrain2d.settings writes
    every run setting out, so pretrain.epochs, lr, batch size... are not its deps)."""
    import copy

    stage = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]["pretrain2d"]["do"]
    declared = set(stage["params"])
    setting = get_setting("2d")
    before = setting.pretrain_params(demo_params)
    methods = set(demo_params["pretrain"]["methods"])
    for key in demo_params["pretrain"]:
        if key == "methods" or key in methods:
            continue  # the method list is pretrain2d's own; a method's section is pretrain.${item}
        params = copy.deepcopy(demo_params)
        params["pretrain"][key] = _perturbed(params["pretrain"][key])
        read = setting.pretrain_params(params) != before
        assert read == (f"pretrain.{key}" in declared), key
    assert {"pretrain.${item}", "pretrain2d.settings"} <= declared
