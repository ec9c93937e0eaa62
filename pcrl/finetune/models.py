"""Task networks: what each fine-tuning task trains, built with a seeded initialisation.

Networks (Models Genesis, Zhou et al., MICCAI 2019 / MedIA 2021, whose target models PCRL
reuses, docs/method.md "Protocol"):

- segmentation (LCS, BMS): the 3D U-Net :class:`pcrl.networks.unet3d.UNet3D` with one output
  channel per region, returning logits (the sigmoid belongs to the loss and the metrics);
- classification (NCC): the U-Net's encoder, global average pooling of the deepest
  features, then ``dense_1`` (16b -> 32b, i.e. 512 -> 1024 at base 32) + ReLU +
  ``dense_2`` (-> 1 logit), Models Genesis' ``TargetNet``;
- multi-label classification (Chest14, PCRL's 2D setting, Zhou et al., ICCV 2021):
  :class:`MultiLabelResNet`, a ResNet-18 of width ``network.base`` with one logit per
  finding; its initialisation loads the 2D pretraining's ResNet-18 encoder
  (:meth:`MultiLabelResNet.load_encoder`), never the decoder.

Their pretrained (or external) weights are read, imported and loaded by
:mod:`pcrl.finetune.checkpoints`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast, get_args

import torch
from torch import Tensor, nn

from pcrl.errors import ConfigError
from pcrl.tasks import TaskSpec, get_task
from pcrl.networks.resnet18 import ResNet18Encoder
from pcrl.networks.state_dict import adapt_first_conv, unwrap_state_dict, LoadReport
from pcrl.networks.unet3d import UNet3D
from pcrl.networks.resnet18 import Norm2dName
from pcrl.networks.unet3d import NormName

__all__ = [
    "DECODER_MODULES",
    "ClassificationNet",
    "MultiLabelResNet",
    "NetworkConfig",
    "build_network",
    "seeded_network",
]

#: UNet3D modules that only the decoder uses (removed from the classifier).
DECODER_MODULES = ("up_tr256", "up_tr128", "up_tr64", "out_tr")


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
    (:meth:`pcrl.networks.resnet_unet2d.ResNetUNet2D.encoder_state_dict`) and any torchvision-style
    ResNet-18 checkpoint load with :meth:`load_encoder`.

    Args:
        in_channels: image channels (1 for radiographs; 3 for a torchvision checkpoint as is).
        num_labels: logits (14 findings).
        width: the ResNet-18's width (64).
        norm: the encoder's normalisation (``"batch"`` as torchvision's; see
            :func:`pcrl.networks.resnet18.make_norm2d`).
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
        wrapped as :func:`pcrl.networks.state_dict.unwrap_state_dict` accepts (``state_dict``, ``module.``).
        A 3-channel first convolution (ImageNet) is summed over its input channels for a
        1-channel radiograph (:func:`pcrl.networks.state_dict.adapt_first_conv`).

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
