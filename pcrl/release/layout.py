"""What an exported model holds: its files, its tensors by key and its ``config.json``.

An export is a folder laid out as a Hugging Face model repository:

    model.safetensors        the encoder alone, under the key names of the release it
                             follows (2D: torchvision's / MONAI's ResNet-18 names, no
                             ``encoder.`` prefix; 3D: PCRL / Models Genesis ``down_tr*``)
    full_model.safetensors   encoder + decoder + output layer, the pipeline's names (for
                             U-Net fine-tuning); only when the decoder was pretrained
    config.json              what builds the encoder (:func:`encoder_config`)
    adaptation_plan.json     the preprocessing the weights expect (:mod:`pcrl.release.plan`)
    README.md                the model card (:mod:`pcrl.release.card`)
    checksums.json           sha256 of every other file (:mod:`pcrl.hub` verifies them)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from pcrl.errors import DataError

__all__ = ["CHECKSUMS", "CONFIG", "FORMAT", "FULL_MODEL", "MODEL", "PLAN", "README", "encoder_config",
           "encoder_tensors", "full_tensors", "monai_resnet_args"]

MODEL = "model.safetensors"
FULL_MODEL = "full_model.safetensors"
CONFIG = "config.json"
PLAN = "adaptation_plan.json"
README = "README.md"
CHECKSUMS = "checksums.json"
FORMAT = "pcrl-export/1"

#: Per spatial dims: the prefix of our encoder keys, and the prefixes of the full network.
_ENCODER_PREFIX = {2: "encoder.", 3: "down_tr"}
_FULL_PREFIXES = {2: ("encoder.", "decoder.", "out_tr."), 3: ("down_tr", "up_tr", "out_tr.")}
_STEM = {2: "conv1", 3: "down_tr64.ops.0.conv1"}


def _require_stem(state: Mapping[str, Tensor], dims: int) -> Tensor:
    key = f"{_STEM[dims]}.weight"
    weight = state.get(key)
    if weight is None or weight.ndim != dims + 2:
        raise DataError(f"no {dims}D stem weight {key!r} among the encoder keys "
                        f"(found {sorted(state)[:5]} ...): not a {dims}D PCRL encoder")
    return weight


def encoder_tensors(state: Mapping[str, Tensor], dims: int) -> dict[str, Tensor]:
    """The encoder's tensors of a pretrain record under the release's names (contiguous copies).

    2D: ``encoder.conv1.weight`` -> ``conv1.weight`` (torchvision / MONAI names); 3D: the
    ``down_tr*`` keys unchanged. Raises DataError when the record holds no such stem.
    """
    prefix = _ENCODER_PREFIX[dims]
    strip = prefix if prefix.endswith(".") else ""
    kept = {k.removeprefix(strip): v.detach().contiguous().clone() for k, v in state.items() if k.startswith(prefix)}
    _require_stem(kept, dims)
    return kept


def full_tensors(state: Mapping[str, Tensor], dims: int) -> dict[str, Tensor]:
    """Encoder, decoder and output layer under the pipeline's names (heads ``fc*``/``aug_fc*`` dropped)."""
    return {k: v.detach().contiguous().clone() for k, v in state.items() if k.startswith(_FULL_PREFIXES[dims])}


def monai_resnet_args(width: int, in_channels: int) -> dict[str, Any]:
    """``monai.networks.nets.ResNet`` keyword arguments that rebuild our 2D ResNet-18 encoder.

    Its keys then equal ``model.safetensors``' (MONAI uses torchvision's names); without
    ``conv1_t_stride=2`` the stem keeps full resolution, without ``bias_downsample=False`` the
    projection shortcuts gain a bias that no weight fills, and ``widen_factor`` scales
    ``block_inplanes`` (64 ... 512) to our width.
    """
    return {"block": "basic", "layers": [2, 2, 2, 2], "block_inplanes": [64, 128, 256, 512],
            "spatial_dims": 2, "n_input_channels": in_channels, "conv1_t_size": 7, "conv1_t_stride": 2,
            "no_max_pool": False, "shortcut_type": "B", "widen_factor": width / 64, "feed_forward": False,
            "bias_downsample": False}


def encoder_config(encoder: Mapping[str, Tensor], dims: int, *, norm: str, method: str,
                   parts: list[str], setting: str) -> dict[str, Any]:
    """``config.json``: the family, width, channels, norm and strides that rebuild the encoder."""
    stem = _require_stem(encoder, dims)
    width, in_channels = int(stem.shape[0]), int(stem.shape[1])
    config: dict[str, Any] = {"format": FORMAT, "setting": setting, "method": method, "pretrained_parts": parts,
                              "spatial_dims": dims, "in_channels": in_channels, "norm": norm,
                              "tensors": len(encoder)}
    if dims == 2:
        config.update(family="resnet18", width=width, feature_channels=[width, width, 2 * width, 4 * width, 8 * width],
                      strides={"stem_conv": 2, "max_pool": 2, "layers": [1, 2, 2, 2]}, downsampling_factor=32,
                      pcrl_class="pcrl.networks.resnet18.ResNet18Encoder",
                      pcrl_kwargs={"in_channels": in_channels, "width": width, "norm": norm},
                      monai_resnet=monai_resnet_args(width, in_channels) if norm == "batch" else None)
    else:
        config.update(family="unet3d_encoder", width=width, feature_channels=[2 * width * 2**d for d in range(4)],
                      strides={"levels": [1, 2, 2, 2], "pool": "max 2x2x2"}, downsampling_factor=8,
                      pcrl_class="pcrl.networks.encoder3d.UNet3DEncoder",
                      pcrl_kwargs={"in_channels": in_channels, "base": width, "norm": norm})
    return config
