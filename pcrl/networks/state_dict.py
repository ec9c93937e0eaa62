"""Loading released checkpoints (PCRL, Models Genesis) into the networks for fine-tuning.

docs/method.md "Networks": checkpoints of the PCRL release and Models Genesis' public 3D
weights use the module names of :class:`pcrl.networks.unet3d.UNet3D` (``down_tr64 ...``,
``up_tr256 ...``, ``out_tr``; PCRL adds ``fc1``, ``fc2``, ``aug_fc1``, ``aug_fc2``), are
stored under ``'state_dict'`` and, when saved from ``DataParallel``, prefix every key
with ``'module.'``. :func:`unwrap_state_dict` removes both wrappers;
:func:`load_pretrained` copies the keys of chosen modules (the encoder by default) and
refuses, listing the offending keys, a checkpoint of another architecture.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from pcrl.errors import ConfigError, DataError

__all__ = [
    "FIRST_CONV_KEY",
    "LoadReport",
    "adapt_first_conv",
    "load_pretrained",
    "unwrap_state_dict",
]

#: Weight of the first convolution, the only one whose input channels follow the image.
FIRST_CONV_KEY = "down_tr64.ops.0.conv1.weight"

#: Keys under which training scripts store the model's state dict, tried in this order.
WRAPPER_KEYS = ("state_dict", "model")

#: Key prefixes added by wrappers: DataParallel / DistributedDataParallel, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")

_LIST_LIMIT = 10

Shape = tuple[int, ...]


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did; every list holds state-dict keys.

    Attributes:
        loaded: model keys whose values were copied from the checkpoint (model order).
        missing: model keys under the prefixes that the checkpoint lacks.
        unexpected: checkpoint keys under the prefixes that the model lacks.
        mismatched: ``(key, checkpoint_shape, model_shape)`` for keys present in both
            with different shapes (not loaded).
        adapted: keys loaded after :func:`adapt_first_conv` (first conv, other input
            channel count); they are also in ``loaded``.
        ignored: checkpoint keys outside the prefixes (e.g. ``fc1`` when loading the
            encoder only), left alone.
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, Shape, Shape]] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing under the prefixes was missing, unexpected or mismatched."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        """One line for logs, e.g. ``loaded 56, missing 0, ..., ignored 60``."""
        return (
            f"loaded {len(self.loaded)}, missing {len(self.missing)}, "
            f"unexpected {len(self.unexpected)}, mismatched {len(self.mismatched)}, "
            f"adapted {len(self.adapted)}, ignored {len(self.ignored)}"
        )

    def describe(self) -> str:
        """One line for logs naming what was loaded and what was not: the parts (top-level
        modules) loaded and left out, and every missing, unexpected, mismatched or adapted
        key by name, so that an intended partial load (the decoder dropped) reads as one."""

        def parts(keys: list[str]) -> list[str]:
            return list(dict.fromkeys(k.split(".")[0] for k in keys))

        text = f"loaded {parts(self.loaded)} ({len(self.loaded)} tensors)"
        if self.ignored:
            text += f"; left out {parts(self.ignored)} ({len(self.ignored)} tensors)"
        for name in ("adapted", "missing", "unexpected"):
            if getattr(self, name):
                text += f"; {name} {getattr(self, name)}"
        if self.mismatched:
            text += "; mismatched " + ", ".join(f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in self.mismatched)
        return text


def _strip_wrapper_prefixes(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                stripped = True
    return key


def _is_tensor_mapping(obj: Mapping[Any, Any]) -> bool:
    return len(obj) > 0 and all(isinstance(value, Tensor) for value in obj.values())


def unwrap_state_dict(obj: Mapping[str, Any]) -> dict[str, Tensor]:
    """Extract a flat state dict from a loaded checkpoint.

    Accepts a raw state dict, or one stored (possibly nested) under ``'state_dict'`` or
    ``'model'`` next to other entries (epoch, optimiser...). Leading ``'module.'``
    (DataParallel / DDP) and ``'_orig_mod.'`` (torch.compile) are removed from every key,
    repeatedly if wrappers were nested.

    Args:
        obj: what ``torch.load`` returned.

    Returns:
        A new ``{key: tensor}`` dict (the tensors are not copied).

    Raises:
        DataError: if no mapping of tensors is found, or two keys collide once the
            prefixes are removed.
    """
    current: Any = obj
    trail: list[str] = []
    while True:
        if not isinstance(current, Mapping):
            where = "/".join(trail) or "the top level"
            raise DataError(
                f"checkpoint holds a {type(current).__name__} at {where}, expected a state dict "
                f"(a mapping of tensors, possibly under {WRAPPER_KEYS})"
            )
        if _is_tensor_mapping(current):
            break
        wrapper = next((k for k in WRAPPER_KEYS if isinstance(current.get(k), Mapping)), None)
        if wrapper is None:
            keys = sorted(str(k) for k in current)[:_LIST_LIMIT]
            raise DataError(
                "no state dict found in the checkpoint: expected a mapping of tensors or one "
                f"under {WRAPPER_KEYS}; keys at {'/'.join(trail) or 'the top level'}: {keys}"
            )
        trail.append(wrapper)
        current = current[wrapper]

    out: dict[str, Tensor] = {}
    for key, value in current.items():
        name = _strip_wrapper_prefixes(str(key))
        if name in out:
            raise DataError(
                f"checkpoint key {key!r} collides with another key once the wrapper prefixes "
                f"{WRAPPER_PREFIXES} are removed ({name!r})"
            )
        out[name] = value
    return out


def adapt_first_conv(weight: Tensor, in_channels: int) -> Tensor:
    """Adapt a first-conv kernel to another number of input channels.

    The new kernel is ``W'[:, j] = (sum_i W[:, i]) / in_channels`` for every output
    channel and every new input channel ``j``; for a 1-channel checkpoint this repeats
    the kernel over the channels and divides it by ``in_channels``. By linearity, the
    adapted conv applied to ``in_channels`` identical copies of an image gives exactly
    the original conv's response to that image (to as many copies as it had inputs):
    ``conv(x.repeat(C), W') = sum_j W'[:, j] * x = sum_i W[:, i] * x``. The bias is
    unchanged. This is how a CT-pretrained (1-channel) encoder is used for BraTS' four
    MRI channels: the initial activations keep their scale instead of growing C-fold.

    Args:
        weight: conv weight (out_channels, C_src, *kernel) of a Conv1d/2d/3d.
        in_channels: the new number of input channels C (>= 1).

    Returns:
        A new tensor (out_channels, in_channels, *kernel) with ``weight``'s dtype and
        device.

    Raises:
        ValueError: if ``weight`` is not a conv weight (fewer than 3 dims).
        ConfigError: if ``in_channels`` is not a positive integer.
    """
    if weight.ndim < 3:
        raise ValueError(
            f"expected a conv weight (out, in, *kernel), got shape {tuple(weight.shape)}"
        )
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ConfigError(f"in_channels must be a positive integer, got {in_channels!r}")
    work_dtype = torch.promote_types(weight.dtype, torch.float32)
    summed = weight.detach().to(work_dtype).sum(dim=1, keepdim=True)
    repeats = (1, in_channels) + (1,) * (weight.ndim - 2)
    return (summed / in_channels).repeat(repeats).to(weight.dtype)


def _normalise_prefixes(prefixes: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(prefixes, str):
        prefixes = (prefixes,)
    result = tuple(prefixes)
    if not result or not all(isinstance(p, str) for p in result):
        raise ConfigError(f"prefixes must be a non-empty sequence of strings, got {prefixes!r}")
    return result


def _only_input_channels_differ(ckpt_shape: Shape, model_shape: Shape) -> bool:
    return (
        len(ckpt_shape) == len(model_shape) >= 3
        and ckpt_shape[0] == model_shape[0]
        and ckpt_shape[2:] == model_shape[2:]
        and ckpt_shape[1] != model_shape[1]
    )


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    more = len(items) - _LIST_LIMIT
    return shown + (f", ... (+{more} more)" if more > 0 else "")


def _describe_misfit(report: LoadReport, prefixes: tuple[str, ...]) -> str:
    parts = []
    if report.mismatched:
        shapes = [f"{key} {ckpt} vs {model}" for key, ckpt, model in report.mismatched]
        parts.append(
            f"{len(report.mismatched)} shape mismatch(es) (checkpoint vs model): {_listing(shapes)}"
        )
    if report.missing:
        parts.append(
            f"{len(report.missing)} missing from the checkpoint: {_listing(report.missing)}"
        )
    if report.unexpected:
        parts.append(
            f"{len(report.unexpected)} in the checkpoint but not in the model: "
            f"{_listing(report.unexpected)}"
        )
    return (
        f"checkpoint does not fit the model for keys starting with {prefixes}: "
        + "; ".join(parts)
        + ". Check in_channels, base width and norm against the checkpoint, "
        "or load with strict=False"
    )


def load_pretrained(
    model: nn.Module,
    state_dict: Mapping[str, Any],
    *,
    prefixes: str | Iterable[str] = ("down_tr",),
    strict: bool = True,
) -> LoadReport:
    """Copy the checkpoint's values of the keys starting with ``prefixes`` into ``model``.

    The default loads the encoder only (``down_tr*``), the usual fine-tuning
    initialisation; ``("down_tr", "up_tr", "out_tr")`` loads a Models Genesis model
    (encoder and decoder), ``("",)`` everything. Checkpoint keys outside the prefixes
    are ignored (e.g. ``fc1``, ``aug_fc1`` when loading a PCRL checkpoint into a plain
    :class:`~pcrl.networks.unet3d.UNet3D`). When the only difference of
    ``down_tr64.ops.0.conv1.weight`` is its number of input channels, the kernel is
    adapted with :func:`adapt_first_conv` and the key recorded in ``report.adapted``.
    Values are copied into the model's own tensors (its device and dtype are kept).

    Args:
        model: the network (a UNet3D, PCRLNet3D or any module with release names).
        state_dict: a state dict or a checkpoint wrapping one, see
            :func:`unwrap_state_dict`.
        prefixes: key prefixes to load (a string is taken as one prefix).
        strict: raise when, under the prefixes, a key is missing from the checkpoint,
            absent from the model, or of another shape; otherwise load what fits and
            report the rest.

    Returns:
        A :class:`LoadReport`.

    Raises:
        ConfigError: if ``strict`` and the checkpoint does not fit (the message lists the
            first keys of each kind and their counts), if the model has no key under
            ``prefixes``, or if nothing at all would be loaded.
        DataError: if ``state_dict`` holds no state dict (see :func:`unwrap_state_dict`).
    """
    prefix_tuple = _normalise_prefixes(prefixes)
    checkpoint = unwrap_state_dict(state_dict)
    target = model.state_dict()
    wanted = [key for key in target if key.startswith(prefix_tuple)]
    if not wanted:
        raise ConfigError(
            f"the model has no parameter or buffer whose name starts with {prefix_tuple}"
        )

    report = LoadReport()
    to_load: dict[str, Tensor] = {}
    for key in wanted:
        if key not in checkpoint:
            report.missing.append(key)
            continue
        value = checkpoint[key]
        ckpt_shape, model_shape = tuple(value.shape), tuple(target[key].shape)
        if ckpt_shape != model_shape:
            if key == FIRST_CONV_KEY and _only_input_channels_differ(ckpt_shape, model_shape):
                value = adapt_first_conv(value, model_shape[1])
                report.adapted.append(key)
            else:
                report.mismatched.append((key, ckpt_shape, model_shape))
                continue
        to_load[key] = value
        report.loaded.append(key)
    for key in checkpoint:
        if not key.startswith(prefix_tuple):
            report.ignored.append(key)
        elif key not in target:
            report.unexpected.append(key)

    if strict and not report.ok:
        raise ConfigError(_describe_misfit(report, prefix_tuple))
    if not to_load:
        raise ConfigError(
            f"no checkpoint value fits the model for keys starting with {prefix_tuple} "
            f"({report.summary()})"
        )
    result = model.load_state_dict(to_load, strict=False)
    if result.unexpected_keys:  # cannot happen: every key was taken from model.state_dict()
        raise RuntimeError(f"load_state_dict rejected keys {result.unexpected_keys}")
    return report
