"""The paper's two settings as one typed value: everything that differs between them.

Zhou et al. (ICCV 2021) pretrain PCRL in two settings:

- ``3d``: a 3D U-Net on LUNA16 crops, fine-tuned on NCC, LCS and BMS (the Models Genesis
  benchmark);
- ``2d``: a ResNet-18 U-Net on NIH ChestX-ray14 radiographs, fine-tuned on Chest14.

Every place that behaves differently per setting asks its :class:`Setting` (found by name,
by task or by cubes task) instead of comparing names: which params section holds the
pretraining settings, which ``finetune`` key lists its initialisations and external
checkpoints, which network family and reader it uses, and which folder holds its
initialisations. This module reads no file and imports neither numpy nor torch, so the
CLI and params checks use it freely.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pcrl.errors import ConfigError

__all__ = ["CHEST14_FINDINGS", "SETTINGS", "Reader", "Setting", "get_setting", "setting_of_cubes_task",
           "setting_of_dataset", "setting_of_task"]

Reader = Literal["volumes", "radiographs"]

#: The 14 findings of NIH ChestX-ray14, in the order of Wang et al. (CVPR 2017), as the
#: dataset's ``Finding Labels`` column spells them: the order of Chest14's label vectors.
CHEST14_FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)


@dataclass(frozen=True)
class Setting:
    """One pretraining setting of the paper and what the pipeline does differently in it.

    Attributes:
        name: ``3d`` or ``2d``: the CLI's ``--setting`` value and the suffix of its
            dvc.yaml stages (``pretrain2d``, ``cubes2d``, ``init_external2d``).
        spatial_dims: 3 (volumes) or 2 (radiographs).
        arch: The pretraining network family (``pretrain.network.arch`` default).
        stride: The network's total downsampling: image sizes must be its multiples.
        reader: What the setting's images are: resampled ``volumes`` (MHD/NIfTI read into
            npy) or a store of ``radiographs`` (PNG read into one memory-mapped array).
        pretrain_task: The cubes task that writes its pretraining pairs.
        pretrain_section: The params section of its pretraining: ``pretrain``; the 2D
            setting's ``pretrain2d.settings`` apply over ``pretrain`` (:meth:`pretrain_params`).
        finetune_keys: Where its fine-tuning's ``inits`` and ``external`` live below
            ``finetune`` (``()``: ``finetune.inits``; ``("chest14",)``: ``finetune.chest14.inits``).
        datasets: The datasets it reads (:mod:`pcrl.datasets.registry` names), its
            pretraining dataset first (:attr:`pretrain_dataset`).
        tasks: Its downstream tasks.
        cubes_tasks: Its cubes stage tasks (pretraining pairs and downstream data).
        weights_root: The folder of its initialisations (``<root>/<init>/weights.pt``).
    """

    name: Literal["3d", "2d"]
    spatial_dims: int
    arch: str
    stride: int
    reader: Reader
    pretrain_task: str
    pretrain_section: str
    finetune_keys: tuple[str, ...]
    datasets: tuple[str, ...]
    tasks: tuple[str, ...]
    cubes_tasks: tuple[str, ...]
    weights_root: str

    @property
    def pretrain_dataset(self) -> str:
        """The dataset it pretrains on (LUNA16, ChestX-ray14): the first of :attr:`datasets`."""
        return self.datasets[0]

    @property
    def finetune_key(self) -> str:
        """The dotted params key of its fine-tuning section (``finetune``, ``finetune.chest14``)."""
        return ".".join(("finetune", *self.finetune_keys))

    @property
    def inits_key(self) -> str:
        """The dotted params key listing the setting's initialisations."""
        return f"{self.finetune_key}.inits"

    @property
    def external_key(self) -> str:
        """The dotted params key naming the setting's external checkpoints."""
        return f"{self.finetune_key}.external"

    def _finetune_section(self, finetune: Mapping[str, Any]) -> Mapping[str, Any]:
        node: Any = finetune
        for key in self.finetune_keys:
            node = (node.get(key) or {}) if isinstance(node, Mapping) else {}
        return node if isinstance(node, Mapping) else {}

    def inits(self, finetune: Mapping[str, Any]) -> list[str]:
        """The initialisations its tasks are fine-tuned from ([] when the section is absent)."""
        return list(self._finetune_section(finetune).get("inits") or [])

    def externals(self, finetune: Mapping[str, Any]) -> dict[str, str]:
        """Its external checkpoints, name -> file ({} when none)."""
        return dict(self._finetune_section(finetune).get("external") or {})

    def pretrain_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Its pretraining params: ``pretrain``; for ``2d``, ``pretrain`` with
        ``pretrain2d.settings`` over it and ``pretrain2d.methods``.

        ``pretrain2d.settings`` holds what differs for ChestX-ray14 (``network.arch:
        resnet18_unet2d``, its width, epochs, batch size, ...); a key that is a mapping in
        both (``network``, ``augment``, a method's section) is merged one level deep, so the
        2D setting inherits every other corruption, augmentation and method setting.

        Raises:
            ConfigError: A section it needs is missing (named).
        """
        if "pretrain" not in params:
            raise ConfigError("params: missing section pretrain")
        merged = dict(params["pretrain"])
        if self.pretrain_section == "pretrain":
            return merged
        if self.pretrain_section not in params:
            raise ConfigError(f"params: missing section {self.pretrain_section}")
        over = params[self.pretrain_section]
        for key, value in (over.get("settings") or {}).items():
            below = merged.get(key)
            merged[key] = {**below, **value} if isinstance(below, dict) and isinstance(value, dict) else value
        merged["methods"] = list(over.get("methods") or [])
        return merged

    def methods_key(self) -> str:
        """The dotted params key listing its pretraining methods."""
        return f"{self.pretrain_section}.methods"


SETTINGS: dict[str, Setting] = {
    "3d": Setting(name="3d", spatial_dims=3, arch="unet3d", stride=8, reader="volumes",
                  pretrain_task="pretrain", pretrain_section="pretrain", finetune_keys=(),
                  datasets=("luna16", "msd_liver", "msd_brain"), tasks=("ncc", "lcs", "bms"),
                  cubes_tasks=("pretrain", "ncc", "lcs", "bms"),
                  weights_root="data/pretrain"),
    "2d": Setting(name="2d", spatial_dims=2, arch="resnet18_unet2d", stride=32, reader="radiographs",
                  pretrain_task="pretrain2d", pretrain_section="pretrain2d", finetune_keys=("chest14",),
                  datasets=("chestxray14",), tasks=("chest14",), cubes_tasks=("pretrain2d", "chest14"),
                  weights_root="data/pretrain2d"),
}


def get_setting(name: str | Setting) -> Setting:
    """The setting called ``name`` (a setting is returned as it is); ConfigError otherwise."""
    if isinstance(name, Setting):
        return name
    try:
        return SETTINGS[name]
    except KeyError:
        raise ConfigError(f"unknown setting {name!r}; known: {', '.join(SETTINGS)}") from None


def _owner(attribute: str, name: str, what: str) -> Setting:
    """The setting whose ``attribute`` (a tuple of names) holds ``name``; ConfigError naming the known ones."""
    for setting in SETTINGS.values():
        if name in getattr(setting, attribute):
            return setting
    known = [n for s in SETTINGS.values() for n in getattr(s, attribute)]
    raise ConfigError(f"unknown {what} {name!r}; known: {', '.join(known)}")


def setting_of_task(task: str) -> Setting:
    """The setting of a downstream task (``ncc`` -> 3d, ``chest14`` -> 2d)."""
    return _owner("tasks", task, "task")


def setting_of_dataset(dataset: str) -> Setting:
    """The setting that reads ``dataset`` (``chestxray14`` -> 2d)."""
    return _owner("datasets", dataset, "dataset")


def setting_of_cubes_task(task: str) -> Setting:
    """The setting of a cubes stage task (``pretrain2d`` -> 2d)."""
    return _owner("cubes_tasks", task, "cubes task")
