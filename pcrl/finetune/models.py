"""Task networks and their initialisation from pretrained (or external) weights.

Networks (Models Genesis, Zhou et al., MICCAI 2019 / MedIA 2021, whose target models PCRL
reuses, docs/method.md "Protocol"):

- segmentation (LCS, BMS): the 3D U-Net :class:`pcrl.networks.UNet3D` with one output
  channel per region, returning logits (the sigmoid belongs to the loss and the metrics);
- classification (NCC): the U-Net's encoder, global average pooling of the deepest
  features, then ``dense_1`` (16b -> 32b, i.e. 512 -> 1024 at base 32) + ReLU +
  ``dense_2`` (-> 1 logit), Models Genesis' ``TargetNet``;
- multi-label classification (Chest14, PCRL's 2D setting, Zhou et al., ICCV 2021):
  :class:`MultiLabelResNet`, a ResNet-18 of width ``network.base`` with one logit per
  finding; its initialisation loads the 2D pretraining's ResNet-18 encoder
  (:meth:`MultiLabelResNet.load_encoder`), never the decoder.

Initialisations are *records* (``weights.pt`` of the pretrain stage): ``{"state_dict",
"method", "parts", "config"}`` where ``parts`` says what was trained: ``["encoder",
"decoder"]`` (PCRL, Models Genesis), ``["encoder"]`` (MoCo v2, whose decoder has no loss),
``[]`` (``scratch``: nothing to load, the network keeps its seeded random initialisation).
:func:`apply_init` loads the encoder (``down_tr*``) for every task and the decoder
(``up_tr*``) for segmentation when it was pretrained, never ``out_tr``, whose channels are
the task's. The pretrained single-channel first convolution is adapted to BraTS' four
channels by :func:`pcrl.networks.adapt_first_conv` (inside
:func:`pcrl.networks.load_pretrained`). :func:`import_checkpoint` turns a checkpoint of
another release (PCRL's, Models Genesis' public weights; ``state_dict`` wrapper and
``module.`` prefix accepted) into such a record.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast, get_args

import torch
from torch import Tensor, nn

from pcrl.hashing import file_digest
from pcrl.torchfile import load_checked, require_finite
from pcrl.errors import ConfigError, DataError
from pcrl.tasks import TaskSpec, get_task
from pcrl.networks import (LoadReport, ResNet18Encoder, UNet3D, adapt_first_conv, load_pretrained,
                           unwrap_state_dict)
from pcrl.networks.resnet_unet2d import Norm2dName
from pcrl.networks.state_dict import FIRST_CONV_KEY
from pcrl.networks.unet3d import NormName

log = logging.getLogger(__name__)

#: A PCRL release checkpoint has its projection head; Models Genesis' public weights do not.
PCRL_HEAD_KEY = "fc1.weight"

__all__ = [
    "DECODER_MODULES",
    "ENCODER_PREFIX",
    "DECODER_PREFIX",
    "ClassificationNet",
    "MultiLabelResNet",
    "InitRecord",
    "NetworkConfig",
    "apply_init",
    "build_network",
    "import_checkpoint",
    "read_init_record",
    "scratch_record",
    "seeded_network",
]

ENCODER_PREFIX = "down_tr"
DECODER_PREFIX = "up_tr"
#: UNet3D modules that only the decoder uses (removed from the classifier).
DECODER_MODULES = ("up_tr256", "up_tr128", "up_tr64", "out_tr")
_PARTS = {"encoder": ENCODER_PREFIX, "decoder": DECODER_PREFIX}


@dataclass(frozen=True)
class NetworkConfig:
    """Backbone settings; they must match the pretrained weights (``pretrain.network``).

    Attributes:
        base: U-Net base width b (32 in the paper); for Chest14 the ResNet-18's width w
            (64 in He et al.), that of the 2D pretraining.
        norm: ``"batch"``, ``"batch_stats"`` (batch statistics in eval mode too: Models
            Genesis' public weights; 3D only), ``"group"`` or ``"instance"``.
    """

    base: int = 32
    norm: NormName = "batch"

    def __post_init__(self) -> None:
        if isinstance(self.base, bool) or not isinstance(self.base, int) or self.base < 1:
            raise ConfigError(f"network.base must be a positive integer, got {self.base!r}")
        if self.norm not in get_args(NormName):
            raise ConfigError(f"network.norm must be one of {get_args(NormName)}, "
                              f"got {self.norm!r}")


class ClassificationNet(nn.Module):
    """Models Genesis' classification target network on the U-Net encoder.

    ``logit = dense_2(relu(dense_1(GAP(encoder(x)[-1]))))``; the encoder keeps the
    release's module names (``backbone.down_tr64`` ...), so pretrained encoders load into
    :attr:`backbone`.

    Args:
        in_channels: Image channels.
        num_outputs: Logits (1 for a binary task).
        config: Backbone settings.
    """

    def __init__(self, in_channels: int, num_outputs: int, config: NetworkConfig) -> None:
        super().__init__()
        backbone = UNet3D(in_channels=in_channels, out_channels=1, base=config.base,
                          norm=config.norm, out_activation="none")
        for name in DECODER_MODULES:  # the classifier has no decoder
            delattr(backbone, name)
        self.backbone = backbone
        deepest = backbone.feature_channels[-1]
        self.dense_1 = nn.Linear(deepest, 2 * deepest)
        self.dense_2 = nn.Linear(2 * deepest, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, x, y, z) -> (N, num_outputs) logits."""
        deepest = self.backbone.encode(x)[-1]
        pooled = deepest.mean(dim=(2, 3, 4))
        return self.dense_2(torch.relu(self.dense_1(pooled)))


class MultiLabelResNet(nn.Module):
    """The Chest14 classifier: a ResNet-18 encoder, global average pooling, one logit per finding.

    PCRL's 2D setting (Zhou et al., ICCV 2021) fine-tunes its pretrained ResNet-18 on the 14
    findings of ChestX-ray14 (Wang et al., CVPR 2017) with binary cross-entropy per finding.
    The encoder keeps torchvision's key names (:attr:`encoder`), so weights pretrained here
    (:meth:`pcrl.networks.ResNetUNet2D.encoder_state_dict`) and any torchvision-style
    ResNet-18 checkpoint load with :meth:`load_encoder`.

    Args:
        in_channels: image channels (1 for radiographs; 3 for a torchvision checkpoint as is).
        num_labels: logits (14 findings).
        width: the ResNet-18's width (64).
        norm: the encoder's normalisation (``"batch"`` as torchvision's; see
            :func:`pcrl.networks.resnet_unet2d.make_norm2d`).
    """

    def __init__(self, in_channels: int = 1, num_labels: int = 14, width: int = 64,
                 norm: Norm2dName = "batch") -> None:
        super().__init__()
        self.encoder = ResNet18Encoder(in_channels=in_channels, width=width, norm=norm)
        self.classifier = nn.Linear(self.encoder.feature_channels[-1], num_labels)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, num_labels) logits."""
        return self.classifier(self.encoder.encode(x)[-1].mean(dim=(2, 3)))

    def load_encoder(self, state_dict: Mapping[str, Tensor]) -> list[str]:
        """Load a ResNet-18 encoder's weights (strict on the encoder); the dropped keys.

        See :meth:`load_encoder_report`, whose ``ignored`` keys this returns.
        """
        return self.load_encoder_report(state_dict).ignored

    def load_encoder_report(self, state_dict: Mapping[str, Tensor]) -> LoadReport:
        """Load a ResNet-18 encoder's weights (strict on the encoder); what was done.

        Accepted layouts: torchvision's (``conv1.weight`` ... ``layer4.1.bn2.*``; its ``fc.*``
        dropped), this package's 2D U-Net (``encoder.`` prefix; decoder and heads dropped),
        wrapped as :func:`pcrl.networks.unwrap_state_dict` accepts (``state_dict``, ``module.``).
        A 3-channel first convolution (ImageNet) is summed over its input channels for a
        1-channel radiograph (:func:`pcrl.networks.adapt_first_conv`).

        Returns:
            ``loaded``: every encoder key (``encoder.`` + torchvision's name); ``adapted``:
            the first convolution when its input channels were summed; ``ignored``: the
            checkpoint's other keys (decoder, heads, ``fc``), unwrapped.

        Raises:
            ConfigError: keys or shapes that do not fit, listed.
        """
        state = unwrap_state_dict(state_dict)
        prefix = "encoder." if any(k.startswith("encoder.") for k in state) else ""
        own_state = self.encoder.state_dict()
        kept = {k.removeprefix(prefix): v for k, v in state.items()
                if k.startswith(prefix) and k.removeprefix(prefix) in own_state}
        for name in own_state.keys() - kept.keys():  # torchvision's files predate num_batches_tracked
            if name.endswith("num_batches_tracked"):
                kept[name] = torch.zeros_like(own_state[name])
        first = kept.get("conv1.weight")
        adapted = False
        if first is not None and first.shape[1] != own_state["conv1.weight"].shape[1] == 1:
            kept["conv1.weight"] = adapt_first_conv(first, 1)
            adapted = True
        missing = sorted(own_state.keys() - kept.keys())
        mismatched = sorted(k for k, v in kept.items() if tuple(v.shape) != tuple(own_state[k].shape))
        if missing or mismatched:
            raise ConfigError(f"ResNet-18 encoder weights do not fit: missing {missing[:5]}"
                              f"{' ...' if len(missing) > 5 else ''}, mismatched shapes {mismatched[:5]}")
        self.encoder.load_state_dict(kept, strict=True)
        return LoadReport(loaded=[f"encoder.{k}" for k in own_state],
                          adapted=["encoder.conv1.weight"] if adapted else [],
                          ignored=sorted(set(state) - {prefix + k for k in kept}))


def build_network(task: TaskSpec | str, config: NetworkConfig) -> nn.Module:
    """The task's network: UNet3D (logits), :class:`ClassificationNet` or :class:`MultiLabelResNet`.

    The initial weights come from torch's default generator, as every torch layer's; use
    :func:`seeded_network` for a reproducible initialisation.

    Raises:
        ConfigError: A norm the 2D network does not have (``batch_stats``).
    """
    spec = get_task(task)
    if spec.kind == "multilabel":
        return MultiLabelResNet(spec.in_channels, spec.out_channels, width=config.base,
                                norm=_norm2d(config.norm, spec))
    if spec.kind == "classification":
        return ClassificationNet(spec.in_channels, spec.out_channels, config)
    return UNet3D(in_channels=spec.in_channels, out_channels=spec.out_channels,
                  base=config.base, norm=config.norm, out_activation="none")


def _norm2d(norm: str, spec: TaskSpec) -> Norm2dName:
    """``norm`` if the ResNet-18 has it; ConfigError naming the task otherwise."""
    if norm not in get_args(Norm2dName):
        raise ConfigError(f"finetune.{spec.name}.network.norm: the 2D ResNet-18 has norms "
                          f"{list(get_args(Norm2dName))}, not {norm!r}")
    return cast(Norm2dName, norm)


def seeded_network(task: TaskSpec | str, config: NetworkConfig, seed: int) -> nn.Module:
    """:func:`build_network` with initial weights that depend on ``seed`` only.

    The global RNG is forked, seeded, and restored afterwards, so nothing outside
    changes (torch's layer initialisers draw from the default generator).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_network(task, config)


# ------------------------------------------------------------------ init records


@dataclass(frozen=True)
class InitRecord:
    """An initialisation: the weights to load and which parts of the U-Net they cover.

    Attributes:
        name: The initialisation's name (``scratch``, ``pcrl``, ..., an external name).
        method: What produced it (``scratch``, ``pcrl``, ``genesis``, ``moco``, ``external``).
        parts: Trained parts: a subset of ``("encoder", "decoder")``.
        state_dict: Release key names (``down_tr64.ops.0.conv1.weight`` ...); empty for scratch.
        config: Free-form description (JSON text), e.g. the pretraining settings.
    """

    name: str
    method: str
    parts: tuple[str, ...]
    state_dict: Mapping[str, Tensor]
    config: str = "{}"

    def to_file(self) -> dict[str, Any]:
        """The ``weights.pt`` mapping (tensors and plain values only)."""
        return {"state_dict": dict(self.state_dict), "method": self.method,
                "parts": list(self.parts), "config": self.config, "name": self.name}


def scratch_record() -> InitRecord:
    """The random initialisation: no weights, nothing loaded."""
    return InitRecord("scratch", "scratch", (), {}, json.dumps({"description": "random init"}))


def read_init_record(path: str | Path, name: str) -> InitRecord:
    """Read ``weights.pt`` written by ``pcrl pretrain`` or ``pcrl init-weights``.

    Raises:
        DataError: Missing or unreadable file, or a file without ``parts`` (written
            before records declared them: rerun the stage that wrote it).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: initialisation weights not found (run the pretrain or "
                        "init-weights stage first)")
    obj = load_checked(path, "initialisation weights")
    if "parts" not in obj or "state_dict" not in obj:
        keys = sorted(map(str, obj))
        raise DataError(f"{path}: not an initialisation record (needs 'state_dict' and "
                        f"'parts'; found {keys}); rerun the stage that wrote it")
    parts = tuple(str(p) for p in obj["parts"])
    unknown = sorted(set(parts) - set(_PARTS))
    if unknown:
        raise DataError(f"{path}: unknown parts {unknown} (known: {sorted(_PARTS)})")
    state = obj["state_dict"]
    if parts and not state:
        raise DataError(f"{path}: declares parts {list(parts)} but holds no weights")
    require_finite(state, path, "initialisation")
    return InitRecord(name, str(obj.get("method", name)), parts, state,
                      str(obj.get("config", "{}")))


def _load_external(path: Path) -> Mapping[str, Any]:
    """``torch.load`` without code execution; argparse namespaces (release options) allowed."""
    if not path.is_file():
        raise ConfigError(f"{path}: external checkpoint not found (finetune.external)")
    return load_checked(path, "external checkpoint", require_digest=False,
                        allowed=[argparse.Namespace])


def import_checkpoint(path: str | Path, name: str) -> InitRecord:
    """An initialisation record from an external checkpoint (PCRL / Models Genesis layout).

    Keys under ``down_tr`` (encoder) and ``up_tr`` (decoder) are kept; the others (``out_tr``,
    the PCRL heads ``fc1``/``fc2``/``aug_fc*``, optimiser state) are dropped. Whether the
    checkpoint fits the task network (widths, norm) is checked when it is loaded
    (:func:`apply_init`), which lists the offending keys.

    Raises:
        ConfigError: The file does not exist, or holds no encoder key (``down_tr*``).
        DataError: The file is corrupt or needs code execution to load.
    """
    path = Path(path)
    state = unwrap_state_dict(_load_external(path))
    kept = {k: v for k, v in state.items() if k.startswith((ENCODER_PREFIX, DECODER_PREFIX))}
    if not any(k.startswith(ENCODER_PREFIX) for k in kept):
        sample = sorted(state)[:8]
        raise ConfigError(f"{path}: no encoder key ({ENCODER_PREFIX}*) in the checkpoint; "
                          f"keys found: {sample}{' ...' if len(state) > 8 else ''}")
    require_finite(kept, path, "external checkpoint")
    parts = tuple(p for p, prefix in _PARTS.items() if any(k.startswith(prefix) for k in kept))
    digest = file_digest(path)
    first = kept.get(FIRST_CONV_KEY)
    layout = "pcrl" if PCRL_HEAD_KEY in state else "genesis"
    if layout == "genesis" and any(k.endswith("running_mean") for k in kept):
        log.warning("%s: no PCRL projection head, so Models Genesis layout: its public weights were "
                    "trained with batch statistics always; finetune.network.norm: batch_stats "
                    "evaluates them as trained (norm: batch uses their running statistics)", path)
    config = {"source": str(path), "sha256": digest, "layout": layout,
              "base": int(first.shape[0]) if first is not None else None,
              "dropped_keys": len(state) - len(kept)}
    return InitRecord(name, "external", parts, kept, json.dumps(config))


#: Keys of a ResNet-18 encoder under torchvision's names (its stem and four layers; not ``fc``).
_RESNET18_KEY = re.compile(r"(conv1|bn1|layer[1-4])\.")


def import_resnet18_checkpoint(path: str | Path, name: str) -> InitRecord:
    """An initialisation record of the 2D setting from an external ResNet-18 checkpoint.

    For Chest14: e.g. torchvision's ImageNet ``resnet18`` weights, a timm or
    segmentation_models_pytorch ResNet-18 encoder, or this package's 2D U-Net (``encoder.``
    prefix); wrappers (``state_dict``, ``module.``) are unwrapped. The encoder keys are kept
    under torchvision's names, ``fc`` and everything else dropped, and the encoder checked
    against a ResNet-18 of the checkpoint's width and input channels here, so a wrong file
    fails at import, naming it, not in every fine-tuning run. A 3-channel stem is summed
    over its channels for radiographs when loaded (:meth:`MultiLabelResNet.load_encoder_report`).

    Raises:
        ConfigError: The file does not exist, holds no ResNet-18 stem (``conv1.weight``),
            or its encoder keys or shapes are not a ResNet-18's (listed).
        DataError: The file is corrupt, needs code execution to load, or holds NaN/inf.
    """
    path = Path(path)
    state = unwrap_state_dict(_load_external(path))
    prefix = "encoder." if any(k.startswith("encoder.") for k in state) else ""
    kept = {k.removeprefix(prefix): v for k, v in state.items()
            if k.startswith(prefix) and _RESNET18_KEY.match(k.removeprefix(prefix))}
    first = kept.get("conv1.weight")
    if first is None or first.ndim != 4:
        sample = sorted(state)[:8]
        raise ConfigError(f"{path}: no ResNet-18 stem (conv1.weight, 4-D) in the checkpoint; "
                          f"keys found: {sample}{' ...' if len(state) > 8 else ''}")
    expected = ResNet18Encoder(in_channels=int(first.shape[1]), width=int(first.shape[0])).state_dict()
    missing = sorted(k for k in expected.keys() - kept.keys() if not k.endswith("num_batches_tracked"))
    extra = sorted(kept.keys() - expected.keys())
    mismatched = sorted(k for k in kept.keys() & expected.keys() if kept[k].shape != expected[k].shape)
    if missing or extra or mismatched:
        raise ConfigError(f"{path}: not a ResNet-18 encoder of width {first.shape[0]}: missing {missing[:5]}, "
                          f"unexpected {extra[:5]}, mismatched shapes {mismatched[:5]}")
    require_finite(kept, path, "external checkpoint")
    config = {"source": str(path), "sha256": file_digest(path), "layout": "resnet18",
              "base": int(first.shape[0]), "in_channels": int(first.shape[1]),
              "dropped_keys": len(state) - len(kept)}
    return InitRecord(name, "external", ("encoder",), kept, json.dumps(config))


def apply_init(net: nn.Module, record: InitRecord, task: TaskSpec | str) -> LoadReport | None:
    """Load the record's trained parts into ``net``; None for scratch (nothing to load).

    Classification loads the encoder; segmentation the encoder and, when pretrained, the
    decoder; ``out_tr`` never. The first convolution is adapted when the task has another
    number of input channels (BraTS: 4). Chest14 loads the ResNet-18 encoder only
    (:meth:`MultiLabelResNet.load_encoder_report`; the 2D decoder has no place in the
    classifier), from any record whose parts include the encoder.

    Raises:
        ConfigError: The weights do not fit the network; the message lists the missing,
            unexpected and mismatched keys (see :func:`pcrl.networks.load_pretrained`).
    """
    spec = get_task(task)
    if spec.kind == "multilabel":
        return _apply_2d(net, record)
    wanted = ["encoder"] if spec.kind == "classification" else ["encoder", "decoder"]
    prefixes = tuple(_PARTS[p] for p in wanted if p in record.parts)
    if not prefixes:
        return None
    target = net.backbone if isinstance(net, ClassificationNet) else net
    try:
        return load_pretrained(target, record.state_dict, prefixes=prefixes, strict=True)
    except ConfigError as exc:
        raise ConfigError(f"initialisation {record.name!r} ({record.method}): {exc}") from None


def _apply_2d(net: nn.Module, record: InitRecord) -> LoadReport | None:
    """Load the record's ResNet-18 encoder into a :class:`MultiLabelResNet` (None: scratch)."""
    if "encoder" not in record.parts:
        return None
    if not isinstance(net, MultiLabelResNet):
        raise ConfigError(f"initialisation {record.name!r}: a Chest14 network is a "
                          f"MultiLabelResNet, got {type(net).__name__}")
    try:
        return net.load_encoder_report(record.state_dict)
    except ConfigError as exc:
        raise ConfigError(f"initialisation {record.name!r} ({record.method}): {exc}") from None
