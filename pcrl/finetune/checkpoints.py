"""Initialisations of the task networks: records of pretrained weights, imported checkpoints.

Initialisations are *records* (``weights.pt`` of the pretrain stage): ``{"state_dict",
"method", "parts", "config"}`` where ``parts`` says what was trained: ``["encoder",
"decoder"]`` (PCRL, Models Genesis), ``["encoder"]`` (MoCo v2, whose decoder has no loss),
``[]`` (``scratch``: nothing to load, the network keeps its seeded random initialisation).
:func:`apply_init` loads the encoder (``down_tr*``) for every task and the decoder
(``up_tr*``) for segmentation when it was pretrained, never ``out_tr``, whose channels are
the task's (the networks: :mod:`pcrl.finetune.models`). The pretrained single-channel first
convolution is adapted to BraTS' four channels by :func:`pcrl.networks.state_dict.adapt_first_conv`
(inside :func:`pcrl.networks.state_dict.load_pretrained`). :func:`import_checkpoint` turns a checkpoint
of another release (PCRL's, Models Genesis' public weights; ``state_dict`` wrapper and
``module.`` prefix accepted) into such a record, :func:`import_resnet18_checkpoint` a
ResNet-18 encoder (the 2D setting).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from pcrl.errors import ConfigError, DataError
from pcrl.finetune.models import ClassificationNet, MultiLabelResNet
from pcrl.tasks import TaskSpec, get_task
from pcrl.hashing import file_digest
from pcrl.networks.resnet18 import ResNet18Encoder
from pcrl.networks.state_dict import load_pretrained, unwrap_state_dict, LoadReport
from pcrl.networks.state_dict import FIRST_CONV_KEY
from pcrl.torchfile import load_checked, require_finite

log = logging.getLogger(__name__)

__all__ = [
    "DECODER_PREFIX",
    "ENCODER_PREFIX",
    "PCRL_HEAD_KEY",
    "InitRecord",
    "apply_init",
    "import_checkpoint",
    "import_resnet18_checkpoint",
    "read_init_record",
    "scratch_record",
]

#: A PCRL release checkpoint has its projection head; Models Genesis' public weights do not.
PCRL_HEAD_KEY = "fc1.weight"
ENCODER_PREFIX = "down_tr"
DECODER_PREFIX = "up_tr"
_PARTS = {"encoder": ENCODER_PREFIX, "decoder": DECODER_PREFIX}


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
            unexpected and mismatched keys (see :func:`pcrl.networks.state_dict.load_pretrained`).
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
