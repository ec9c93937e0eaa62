"""params.yaml validation: every bad value names its key."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from pcrl.config import load_params, section, validate_params
from pcrl.errors import ConfigError


def test_demo_and_paper_params_are_valid(repo_root: Path) -> None:
    demo = load_params(repo_root / "params.yaml")
    paper = load_params(repo_root / "configs" / "paper.yaml")
    assert demo["data"]["source"] == "phantom"
    assert paper["data"]["source"] == "download"
    # the paper's protocol (docs/method.md): 64x64x32 cubes, LUNA16 at 1 mm, IoU > 0.25
    assert paper["cubes"]["pretrain"]["cube_size"] == [64, 64, 32]
    assert paper["resample"]["luna16"]["spacing"] == [1.0, 1.0, 1.0]
    assert paper["cubes"]["pretrain"]["min_iou"] == 0.25
    assert [64, 64, 32] in paper["cubes"]["pretrain"]["crop_sizes"]
    assert len(paper["cubes"]["pretrain"]["crop_sizes"]) == 5


def _settings(node: object, path: str = "") -> set[str]:
    """The dotted path of every key at every depth of ``node`` (sections and settings)."""
    if not isinstance(node, dict):
        return set()
    paths = {f"{path}.{key}" if path else str(key) for key in node}
    return paths.union(*(_settings(value, f"{path}.{key}" if path else str(key))
                         for key, value in node.items()))


def test_demo_and_paper_set_the_same_settings_at_every_depth(repo_root: Path) -> None:
    """The paper's config is the demo's at full scale: the same settings in every section
    and subsection, plus two of its own (listed by hand: where ChestX-ray14 comes from), and
    the release's pretraining hyperparameters (docs/method.md) as
    the stages read them."""
    demo = yaml.safe_load((repo_root / "params.yaml").read_text())
    paper = yaml.safe_load((repo_root / "configs" / "paper.yaml").read_text())
    assert {"pretrain.pcrl.tca", "pretrain.genesis", "finetune.bms.patience"} <= _settings(demo)
    assert _settings(paper) - _settings(demo) == {"data.local_paths.chestxray14", "data.sources.chestxray14"}
    assert _settings(demo) - _settings(paper) == set()
    release = section(load_params(repo_root / "configs" / "paper.yaml"), "pretrain")
    assert {k: release[k] for k in ("epochs", "batch_size", "lr", "momentum", "weight_decay",
                                    "checkpoint_every")} == {
        "epochs": 240, "batch_size": 16, "lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4,
        "checkpoint_every": 60}


def test_unknown_key_is_named(demo_params: dict) -> None:
    demo_params["cubes"]["pretrain"]["pairs_per_scan"] = 3
    with pytest.raises(ConfigError, match=r"cubes\.pretrain\.pairs_per_scan: unknown key"):
        validate_params(demo_params)


def test_unknown_top_level_section_is_named(demo_params: dict) -> None:
    demo_params["pretrian"] = {}
    with pytest.raises(ConfigError, match=r"pretrian: unknown key"):
        validate_params(demo_params)


@pytest.mark.parametrize(
    ("keys", "value", "dotted"),
    [
        (("resample", "luna16", "spacing"), [1.0, -1.0, 1.0], r"resample\.luna16\.spacing\.1"),
        (("cubes", "pretrain", "min_iou"), 1.5, r"cubes\.pretrain\.min_iou"),
        (("cubes", "pretrain", "pairs_per_case"), "many", r"cubes\.pretrain\.pairs_per_case"),
        (("cubes", "ncc", "fractions"), [0.0, 0.5], r"cubes\.ncc\.fractions\.0"),
        (("data", "source"), "ftp", r"data\.source"),
        (("cubes", "pretrain", "cube_size"), [64, 64], r"cubes\.pretrain\.cube_size"),
        (("pretrain", "augment", "flip_axes"), [0, 3], r"pretrain\.augment\.flip_axes\.1"),
        (("pretrain", "pcrl", "nce"), "paper", r"pretrain\.pcrl\.nce"),
        (("finetune", "network", "norm"), "batchstats", r"finetune\.network\.norm"),
        (("finetune", "ncc", "min_steps_per_epoch"), 0, r"finetune\.ncc\.min_steps_per_epoch"),
        (("finetune", "chest14", "min_steps_per_epoch"), 1.5,
         r"finetune\.chest14\.min_steps_per_epoch"),
    ],
)
def test_bad_values_name_their_key(demo_params: dict, keys: tuple, value, dotted: str) -> None:
    node = demo_params
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    with pytest.raises(ConfigError, match=dotted):
        validate_params(demo_params)


def test_nan_is_refused(demo_params: dict) -> None:
    demo_params["cubes"]["pretrain"]["min_iou"] = float("nan")
    with pytest.raises(ConfigError, match=r"cubes\.pretrain\.min_iou: nan is not a finite"):
        validate_params(demo_params)


def test_semantic_rules(demo_params: dict) -> None:
    bad = {**demo_params, "cubes": {**demo_params["cubes"], "lcs": {"val": 0.5, "test": 0.5, "fractions": [1.0]}}}
    with pytest.raises(ConfigError, match=r"cubes\.lcs: val \+ test = 1\.0"):
        validate_params(bad)
    demo_params["cubes"]["ncc"]["groups"]["test"].append("subset0")
    with pytest.raises(ConfigError, match=r"subset0 in both train and test"):
        validate_params(demo_params)


def test_local_source_needs_paths(demo_params: dict) -> None:
    demo_params["data"]["source"] = "local"
    demo_params["data"]["local_paths"] = {"luna16": "/somewhere"}
    with pytest.raises(ConfigError, match=r"no folder is given for msd_liver, msd_brain"):
        validate_params(demo_params)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.yaml: params file not found"):
        load_params(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_params(broken)


def test_section_names_missing_key(demo_params: dict) -> None:
    assert section(demo_params, "cubes", "ncc", "cube_size") == [32, 32, 16]
    with pytest.raises(ConfigError, match=r"cubes\.pretrain2"):
        section(demo_params, "cubes", "pretrain2", "x")


def test_finetune_inits_must_name_a_pretraining(demo_params: dict) -> None:
    demo_params["finetune"]["inits"] = ["scratch", "pcrl", "simclr"]
    with pytest.raises(ConfigError, match=r"finetune\.inits: \['simclr'\] is neither"):
        validate_params(demo_params)
    demo_params["finetune"]["external"] = {"simclr": "/models/simclr.pt"}
    validate_params(demo_params)


def test_duplicate_key_is_an_error_naming_key_and_lines(tmp_path: Path, repo_root: Path) -> None:
    text = (repo_root / "params.yaml").read_text()
    assert "\ndata:\n" in text
    path = tmp_path / "params.yaml"
    path.write_text(text.replace("\ndata:\n", "\ndata:\n  source: download\n  source: phantom\n", 1))
    with pytest.raises(ConfigError, match=r"params\.yaml: key 'source' appears twice .*lines (\d+) and (\d+)") as info:
        load_params(path)
    first, second = map(int, re.search(r"lines (\d+) and (\d+)", str(info.value)).groups())
    lines = path.read_text().splitlines()
    assert lines[first - 1].strip() == "source: download" and lines[second - 1].strip() == "source: phantom"


@pytest.mark.parametrize("inside", ["data/raw/msd_liver", "data", "./data/../data/interim/x", "results/r"])
def test_local_paths_inside_the_pipelines_folders_are_refused(tmp_path: Path, demo_params: dict,
                                                              inside: str) -> None:
    demo_params["data"]["local_paths"] = {"msd_liver": inside}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(demo_params))
    with pytest.raises(ConfigError, match=rf"data\.local_paths\.msd_liver: {re.escape(inside)} lies inside"):
        load_params(path)


def test_local_paths_outside_are_accepted(tmp_path: Path, demo_params: dict) -> None:
    demo_params["data"]["local_paths"] = {"msd_liver": str(tmp_path / "datasets" / "Task03_Liver"),
                                          "luna16": "database/luna16"}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(demo_params))
    assert load_params(path)["data"]["local_paths"]["luna16"] == "database/luna16"


def test_2d_setting_sizes_and_widths_are_checked_before_any_stage(demo_params: dict) -> None:
    from pcrl.networks import resnet18, unet3d
    from pcrl.settings import SETTINGS

    # the settings table reads no torch module: its strides must match the networks'
    assert SETTINGS["2d"].stride == resnet18.DOWNSAMPLING_FACTOR == 2 ** 5  # ResNet-18: stem 4, 3 stages 2 each
    assert SETTINGS["3d"].stride == unet3d.DOWNSAMPLING_FACTOR == 2 ** 3  # three max-poolings
    demo_params["resample"]["chestxray14"]["size"] = [64, 48]
    with pytest.raises(ConfigError, match=r"resample\.chestxray14\.size: \[64, 48\] must be multiples of 32"):
        validate_params(copy.deepcopy(demo_params))
    demo_params["resample"]["chestxray14"]["size"] = [64, 64]
    demo_params["finetune"]["chest14"]["network"]["base"] = 16
    with pytest.raises(ConfigError, match=r"finetune\.chest14\.network\.base 16 differs .* width 8"):
        validate_params(copy.deepcopy(demo_params))
    demo_params["finetune"]["chest14"]["inits"] = ["scratch"]  # nothing pretrained is loaded: any width
    validate_params(copy.deepcopy(demo_params))


def test_a_dataset_can_come_from_its_own_source(demo_params: dict) -> None:
    from pcrl.config import source_of

    demo_params["data"]["sources"] = {"chestxray14": "local"}
    with pytest.raises(ConfigError, match="no folder is given for chestxray14"):
        validate_params(copy.deepcopy(demo_params))
    demo_params["data"]["local_paths"] = {"chestxray14": "/data/cxr14"}
    params = validate_params(demo_params)
    assert source_of(params["data"], "chestxray14") == "local" and source_of(params["data"], "luna16") == "phantom"


@pytest.mark.parametrize(("edit", "message"), [
    (lambda p: p["finetune"].update(fractions=[0.3, 1.0]),
     r"finetune\.fractions: \[0\.3\] not among cubes\.ncc\.fractions"),
    (lambda p: p["cubes"]["chest14"].update(fractions=[0.1, 1.0]),
     r"finetune\.fractions: \[0\.5\] not among cubes\.chest14\.fractions"),
    (lambda p: (p["pretrain"].pop("moco"), None),
     r"pretrain\.methods: \['moco'\] listed but pretrain has no section"),
    (lambda p: p["data"].update(shards=[0, 2]), r"data\.shards: expected the shard numbers"),
    (lambda p: p["resample"]["chestxray14"].pop("expected_size"),
     r"invalid parameters:\s+resample\.chestxray14: 'expected_size' is a required property"),
    (lambda p: p["resample"]["chestxray14"].update(expected_size=None),
     r"invalid parameters:\s+resample\.chestxray14\.expected_size: None is invalid"),
    (lambda p: p["resample"]["chestxray14"].update(expected_size=[1024, 1024]),
     r"resample\.chestxray14\.expected_size: \[1024, 1024\] differs from the phantom's "
     r"data\.phantom\.chestxray14\.size \[96, 96\]"),
    (lambda p: p["cubes"]["pretrain2d"].update(crop_sizes=[[32, 32, 1], [96, 48, 1]]),
     r"cubes\.pretrain2d\.crop_sizes: \[\[96, 48, 1\]\] \(x, y\) larger than the stored radiograph, "
     r"resample\.chestxray14\.size \[64, 64\]"),
    (lambda p: p["cubes"]["pretrain2d"].update(crop_sizes=[[32, 65, 1]]),
     r"cubes\.pretrain2d\.crop_sizes: \[\[32, 65, 1\]\]"),
])
def test_cross_references_are_checked_with_the_file_named(demo_params: dict, edit, message: str) -> None:
    """What a stage would only find out when it runs (or a runner as a bare 'No such file')."""
    edit(demo_params)
    with pytest.raises(ConfigError, match=f"^params: {message}"):
        validate_params(demo_params)


def test_the_2d_fractions_are_not_checked_when_chest14_is_left_out(demo_params: dict) -> None:
    demo_params["cubes"]["chest14"]["fractions"] = [1.0]
    demo_params["finetune"]["chest14"]["inits"] = []
    validate_params(demo_params)  # the 2D tasks run no fine-tune: nothing reads the fractions


def test_an_alias_bomb_is_refused_while_parsing(tmp_path: Path) -> None:
    """Ten levels of twelve aliases each would expand to 12**10 leaves for the validation
    to walk; the loader stops at the 101st alias, before building anything."""
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 12)}]" for i in range(1, 11)]
    bomb = tmp_path / "params.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"params\.yaml: more than 100 YAML aliases \(line 10\)"):
        load_params(bomb)


def test_a_few_aliases_are_fine(tmp_path: Path, repo_root: Path) -> None:
    text = (repo_root / "params.yaml").read_text().replace("seeds: [0]", "seeds: &seeds [0]", 1)
    text = text.replace("\nreport:", "\nx_seeds: *seeds\nreport:", 1)
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ConfigError, match="x_seeds"):  # the alias is read (then the key is unknown)
        load_params(tmp_path / "params.yaml")


def test_the_2d_settings_are_written_out_in_full(demo_params: dict) -> None:
    """No run setting is inherited from pretrain (the 2D stages do not depend on pretrain's)."""
    del demo_params["pretrain2d"]["settings"]["lr"]
    with pytest.raises(ConfigError, match=r"pretrain2d\.settings: 'lr' is a required property"):
        validate_params(demo_params)
    demo_params["pretrain2d"].update(methods=[], settings={})  # no 2D pretraining: nothing to set
    demo_params["finetune"]["chest14"]["inits"] = []
    validate_params(demo_params)
