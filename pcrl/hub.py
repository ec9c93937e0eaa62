"""Load an exported encoder (``pcrl export``) as a plain torch module, checked or not at all.

:func:`load_encoder` verifies the sha256 of every file listed in ``checksums.json``, builds
the encoder ``config.json`` describes (:class:`pcrl.networks.resnet18.ResNet18Encoder` or
:class:`pcrl.networks.encoder3d.UNet3DEncoder`) and loads ``model.safetensors`` only when
its keys and shapes are exactly the encoder's: a missing, unexpected or misshapen key is a
:class:`~pcrl.errors.DataError` naming it, never a partial load.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import Tensor, nn

from pcrl.atomic import read_json
from pcrl.errors import DataError
from pcrl.hashing import file_digest
from pcrl.networks.encoder3d import UNet3DEncoder
from pcrl.networks.resnet18 import ResNet18Encoder
from pcrl.release.layout import CHECKSUMS, CONFIG, MODEL

#: What a missing file of an export means.
EXPORT_HINT = "not a complete export folder (pcrl export writes it)"

__all__ = ["build_encoder", "check_keys", "load_encoder", "verify_checksums"]


def verify_checksums(folder: str | Path) -> dict[str, str]:
    """Check every file of ``checksums.json`` against its sha256; return the listing.

    Raises:
        DataError: no listing, a listed file missing, or a file whose sha256 differs (named).
    """
    folder = Path(folder)
    listing = read_json(folder / CHECKSUMS, hint=EXPORT_HINT)
    if not isinstance(listing, dict) or MODEL not in listing or CONFIG not in listing:
        raise DataError(f"{folder / CHECKSUMS}: must map every file, {MODEL} and {CONFIG} included, to its sha256")
    for name, expected in sorted(listing.items()):
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path}: listed in {CHECKSUMS} but missing")
        actual = file_digest(path)
        if actual != expected:
            raise DataError(f"{path}: sha256 {actual} differs from {expected} in {CHECKSUMS} "
                            "(the file was changed or damaged)")
    return listing


def build_encoder(config: Mapping[str, Any]) -> nn.Module:
    """The encoder ``config.json`` describes (random weights)."""
    kwargs = dict(config.get("pcrl_kwargs") or {})
    family = config.get("family")
    if family == "resnet18":
        return ResNet18Encoder(**kwargs)
    if family == "unet3d_encoder":
        return UNet3DEncoder(**kwargs)
    raise DataError(f"config.json: unknown encoder family {family!r} (known: resnet18, unet3d_encoder)")


def check_keys(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """DataError naming every missing, unexpected and misshapen key of ``state`` for ``model``."""
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
                  for k in sorted(expected.keys() & state.keys()) if state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        raise DataError(f"{source}: does not fit {type(model).__name__}: missing keys {missing}, "
                        f"unexpected keys {unexpected}, mismatched shapes {mismatched}")


def load_encoder(folder: str | Path) -> nn.Module:
    """The exported encoder of ``folder`` with its weights, in eval mode.

    Raises:
        DataError: a file's sha256 differs, or the weights do not fit the encoder exactly.
    """
    folder = Path(folder)
    verify_checksums(folder)
    model = build_encoder(read_json(folder / CONFIG, hint=EXPORT_HINT))
    state = load_file(str(folder / MODEL))
    check_keys(model, state, str(folder / MODEL))
    model.load_state_dict(state, strict=True)
    return model.eval()
