"""Pretraining methods: PCRL and its baselines, one ``nn.Module`` per method.

Every method has the interface of docs/INTERFACES.md: ``forward(x1, x2, generator)``
returns a dict of scalar losses with the total under ``"loss"``; ``after_step()`` runs
after the optimiser step (EMA of a momentum encoder, or nothing);
``encoder_state_dict()`` gives the weights to fine-tune, under the release's key names.

- ``pcrl``: :class:`~pcrl.methods.pcrl.PCRL` (Zhou et al., ICCV 2021).
- ``genesis``: :class:`~pcrl.methods.genesis.Genesis`, restoration only (Models Genesis).
- ``moco``: :class:`~pcrl.methods.moco.MoCoV2`, contrastive only (MoCo v2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import nn

from pcrl.errors import ConfigError
from pcrl.methods.genesis import Genesis, GenesisConfig
from pcrl.methods.moco import MoCoConfig, MoCoV2
from pcrl.methods.pcrl import PCRL, PCRLConfig
from pcrl.transforms import CorruptionConfig

__all__ = [
    "CONFIGS",
    "METHODS",
    "Genesis",
    "GenesisConfig",
    "MoCoConfig",
    "MoCoV2",
    "PCRL",
    "PCRLConfig",
    "build_method",
    "method_config",
]

#: Registry of the pretraining methods by the name used in params.yaml.
METHODS: dict[str, type[nn.Module]] = {"pcrl": PCRL, "genesis": Genesis, "moco": MoCoV2}
#: The config dataclass of each method.
CONFIGS: dict[str, type] = {"pcrl": PCRLConfig, "genesis": GenesisConfig, "moco": MoCoConfig}


def _check_name(name: str) -> None:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}")


def method_config(name: str, settings: Mapping[str, Any]) -> Any:
    """Build the config dataclass of method ``name`` from a mapping (e.g. a params section).

    Nested ``corruption`` mappings become :class:`~pcrl.transforms.CorruptionConfig`.

    Args:
        name: a key of :data:`METHODS`.
        settings: field names of the method's config and their values.

    Returns:
        The validated config.

    Raises:
        ConfigError: on an unknown method, an unknown key (named) or an invalid value.
    """
    _check_name(name)
    cls = CONFIGS[name]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(
            f"{name}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    values = dict(settings)
    corruption = values.get("corruption")
    if isinstance(corruption, Mapping):
        fields = {f.name for f in dataclasses.fields(CorruptionConfig)}
        bad = sorted(set(corruption) - fields)
        if bad:
            raise ConfigError(f"{name}.corruption: unknown setting(s) {', '.join(bad)}")
        try:
            values["corruption"] = CorruptionConfig(**corruption)
        except ConfigError as exc:
            raise ConfigError(f"{name}.corruption.{exc}") from None
    return cls(**values)


def build_method(name: str, config: Any) -> nn.Module:
    """Build a pretraining method by name.

    Args:
        name: ``"pcrl"``, ``"genesis"`` or ``"moco"``.
        config: the method's config dataclass, or a mapping of its fields
            (see :func:`method_config`).

    Returns:
        The method module (fresh weights).

    Raises:
        ConfigError: if the method is unknown (the message lists the known ones) or the
            config is of the wrong type or invalid.
    """
    _check_name(name)
    if isinstance(config, Mapping):
        config = method_config(name, config)
    expected = CONFIGS[name]
    if not isinstance(config, expected):
        raise ConfigError(f"method {name!r} needs a {expected.__name__}, got {type(config).__name__}")
    return METHODS[name](config)
