"""``adaptation_plan.json``: the preprocessing an exported encoder expects, and how to adapt it.

Modelled on the adaptation plans of nnssl (Wald et al., "An OpenMind for 3D medical vision
self-supervised learning", 2025): what a downstream user must reproduce for the weights to
see what they saw in pretraining (spacing and orientation, intensity normalisation, crop
size, input channels) and which keys are the encoder and its stem. :func:`check_plan`
compares a plan with a fine-tuning task's preprocessing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pcrl.errors import ConfigError

__all__ = ["adaptation_plan", "check_plan", "expected_preprocessing", "recommended_patch"]


def recommended_patch(cube_size: Sequence[int], stride: int, dims: int) -> list[int]:
    """The pretraining crop's spatial size rounded up to multiples of the encoder's stride."""
    size = [int(s) for s in cube_size][:dims]
    return [max(stride, -(-s // stride) * stride) for s in size]


def _intensity(resample: Mapping[str, Any], dims: int) -> dict[str, Any]:
    if dims == 2:
        return {"kind": "scale", "divide_by": 255, "range": [0.0, 1.0],
                "note": "8-bit radiographs (PNG grey values) divided by 255"}
    return dict(resample.get("normalization") or {})


def adaptation_plan(*, dims: int, dataset: str, resample: Mapping[str, Any], cube_size: Sequence[int],
                    stride: int, in_channels: int) -> dict[str, Any]:
    """The plan of an encoder pretrained on ``dataset`` with params ``resample.<dataset>``."""
    if dims == 2:
        geometry = {"spacing": None, "resize_to_height_width": list(resample.get("size") or []), "axes": "(x, y)",
                    "orientation": "as stored (frontal radiographs, not reoriented)",
                    "resampling": "area (anti-aliased) resize of the whole radiograph"}
        encoder_keys = {"ours": "encoder.", "release": "", "stem": ["conv1", "bn1"],
                        "release_names": "torchvision resnet18 / monai ResNet(block='basic') names, no fc"}
    else:
        geometry = {"spacing": list(resample.get("spacing") or []), "spacing_unit": "mm", "axes": "(x, y, z)",
                    "orientation": "as the scan's direction cosines (not reoriented)",
                    "resampling": "linear, SimpleITK"}
        encoder_keys = {"ours": "down_tr", "release": "down_tr", "stem": ["down_tr64.ops.0"],
                        "release_names": "PCRL / Models Genesis UNet3D names (checkpoints saved from "
                                         "DataParallel prefix 'module.')"}
    size = [int(s) for s in cube_size][:dims]
    return {"pretraining_dataset": dataset, **geometry, "intensity": _intensity(resample, dims),
            "input_channels": in_channels, "pretraining_crop_size": size,
            "recommended_patch_size": recommended_patch(size, stride, dims), "patch_multiple_of": stride,
            "key_map": encoder_keys}


def check_plan(plan: Mapping[str, Any], *, source: str, spacing: Sequence[float] | None,
               intensity: Mapping[str, Any] | None, channels: int) -> None:
    """Refuse weights whose plan differs from a task's preprocessing (spacing, intensity, channels).

    ``spacing`` / ``intensity`` None: the task does not define it (not compared).

    Raises:
        ConfigError: naming the field, the plan's value and the task's.
    """
    wanted: dict[str, Any] = {"input_channels": channels}
    if spacing is not None:
        wanted["spacing"] = [float(s) for s in spacing]
    if intensity is not None:
        wanted["intensity"] = dict(intensity)
    have = {"input_channels": plan.get("input_channels"),
            "spacing": [float(s) for s in plan["spacing"]] if plan.get("spacing") else plan.get("spacing"),
            "intensity": {k: v for k, v in dict(plan.get("intensity") or {}).items() if k in (intensity or {})}}
    bad = [f"{key}: weights {have[key]!r} vs task {value!r}" for key, value in wanted.items() if have[key] != value]
    if bad:
        raise ConfigError(f"{source}: the exported weights' adaptation plan does not match the task's "
                          f"preprocessing: {'; '.join(bad)}")


def expected_preprocessing(dims: int, resample: Mapping[str, Any], channels: int = 1) -> dict[str, Any]:
    """What this pipeline's fine-tuning feeds a network, from ``resample.<dataset>``, in the
    terms of :func:`check_plan`: spacing (3D), intensity normalisation, input channels."""
    if dims == 2:
        return {"spacing": None, "intensity": {"kind": "scale", "divide_by": 255}, "channels": channels}
    return {"spacing": list(resample.get("spacing") or []) or None,
            "intensity": dict(resample.get("normalization") or {}) or None, "channels": channels}
