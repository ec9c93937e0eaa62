"""Tests of pcrl.methods.config: the fields and checks the three method configs share."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from pcrl.errors import ConfigError
from pcrl.methods import GenesisConfig, MoCoConfig, PCRLConfig, method_config
from pcrl.methods.config import ContrastiveConfig, MethodConfig

# The keyword names of params.yaml's method sections, written out by hand.
SHARED = {"in_channels", "arch", "base", "norm", "corruption", "augment"}
CONTRASTIVE = SHARED | {"proj_dim", "queue_size", "temperature", "momentum", "momentum_schedule",
                        "momentum_steps", "shuffle_positives", "shuffle_bn"}
FIELDS = {
    GenesisConfig: SHARED,
    MoCoConfig: CONTRASTIVE | {"corrupt"},
    PCRLConfig: CONTRASTIVE | {"loss", "n_data", "nce", "target", "tca", "hybrid", "mixup"},
}
#: Settings that make each config valid (PCRL's default NCE loss needs n_data).
VALID: dict[type, dict[str, Any]] = {GenesisConfig: {}, MoCoConfig: {}, PCRLConfig: {"n_data": 3}}
ALL = list(FIELDS)
CONTRASTIVE_CONFIGS = [MoCoConfig, PCRLConfig]


@pytest.mark.parametrize("cls", ALL)
def test_each_config_has_the_params_yaml_keywords(cls: type) -> None:
    assert {f.name for f in dataclasses.fields(cls)} == FIELDS[cls]
    config = cls(**VALID[cls])
    assert isinstance(config, MethodConfig)
    assert isinstance(config, ContrastiveConfig) == (cls in CONTRASTIVE_CONFIGS)
    # the defaults of the paper and release
    assert (config.in_channels, config.arch, config.base, config.norm, config.augment) == (1, "unet3d", 32,
                                                                                           "batch", {})


@pytest.mark.parametrize("cls", ALL)
def test_fields_are_keyword_only(cls: type) -> None:
    with pytest.raises(TypeError):
        cls(1)


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("name", ["in_channels", "base"])
@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_shared_positive_ints_are_checked_under_the_configs_name(cls: type, name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"^{cls.__name__}\.{name} must be a positive integer"):
        cls(**VALID[cls], **{name: value})


@pytest.mark.parametrize("cls", CONTRASTIVE_CONFIGS)
@pytest.mark.parametrize("name", ["proj_dim", "queue_size"])
def test_contrastive_positive_ints(cls: type, name: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{cls.__name__}\.{name} must be a positive integer"):
        cls(**VALID[cls], **{name: 0})


@pytest.mark.parametrize("cls", ALL)
def test_arch_and_views_are_checked_under_the_configs_name(cls: type) -> None:
    with pytest.raises(ConfigError, match=rf"^{cls.__name__}\.arch must be one of"):
        cls(**VALID[cls], arch="unet2d")
    with pytest.raises(ConfigError, match=rf"^{cls.__name__}\.augment must be a mapping"):
        cls(**VALID[cls], augment=[("flip", False)])
    with pytest.raises(ConfigError, match=rf"^{cls.__name__}\.corruption must be a CorruptionConfig"):
        cls(**VALID[cls], corruption={"shuffle_prob": 0.5})
    assert cls(**VALID[cls], arch="resnet18_unet2d").arch == "resnet18_unet2d"


@pytest.mark.parametrize("cls", CONTRASTIVE_CONFIGS)
def test_temperature_and_momentum_are_checked_under_the_configs_name(cls: type) -> None:
    for temperature in (0.0, -0.1):
        with pytest.raises(ConfigError, match=rf"^{cls.__name__}\.temperature must be positive"):
            cls(**VALID[cls], temperature=temperature)
    with pytest.raises(ConfigError, match=rf"^{cls.__name__}\.momentum must lie in \[0, 1\]"):
        cls(**VALID[cls], momentum=1.5)
    with pytest.raises(ConfigError, match=rf"^{cls.__name__}\.momentum_steps"):
        cls(**VALID[cls], momentum_schedule="cosine", momentum_steps=0)


def test_genesis_has_no_contrastive_checks() -> None:
    # Models Genesis has no temperature nor momentum: such keys are unknown, not unchecked.
    with pytest.raises(ConfigError, match="unknown setting"):
        method_config("genesis", {"temperature": 0.0})


def test_checks_run_in_order_shared_ints_arch_own_then_views() -> None:
    # with several faults, the first in the order positive ints -> arch -> own checks -> views is named
    with pytest.raises(ConfigError, match=r"^PCRLConfig\.queue_size"):
        PCRLConfig(queue_size=0, arch="x", temperature=0.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^PCRLConfig\.arch"):
        PCRLConfig(arch="x", temperature=0.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^PCRLConfig\.temperature"):
        PCRLConfig(temperature=0.0, loss="ntxent", target="clean")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^PCRLConfig\.loss"):
        PCRLConfig(loss="ntxent", target="clean")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^PCRLConfig\.target must be one of"):
        PCRLConfig(n_data=3, target="clean")  # type: ignore[arg-type]


def test_views_follow_each_method() -> None:
    # PCRL's target mode and TCA switch reach its views; the baselines have no spatial transform.
    assert PCRLConfig(n_data=3, target="release").views.target == "release"
    assert PCRLConfig(n_data=3).views.spatial and not PCRLConfig(n_data=3, tca=False).views.spatial
    assert not MoCoConfig().views.spatial and not GenesisConfig().views.spatial
