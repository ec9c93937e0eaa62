"""Is an image what its dataset holds? Checks per modality before resampling.

A CT scan holds Hounsfield units (air at about -1000 HU); an MRI of BraTS holds one
varying intensity volume per channel (FLAIR, T1w, T1gd, T2w). A label map, a mask or an
empty channel given as the image decodes and resamples without complaint and would
train a model on nonsense: these are refused naming the file. (Radiographs are checked
where they are decoded: :func:`pcrl.io.png.check_grey_levels`.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pcrl.errors import DataError

__all__ = ["MAX_LABEL_VALUE", "check_ct_values", "check_mri_values"]

#: The largest value of a label map: a CT scan in Hounsfield units holds air (-1000 HU), so
#: non-negative whole numbers up to this are a label volume (or a mask) given as the image.
MAX_LABEL_VALUE = 16


def _label_like(values: np.ndarray) -> tuple[float, float] | None:
    """``(min, max)`` when ``values`` are non-negative whole numbers up to MAX_LABEL_VALUE."""
    low, high = float(np.min(values)), float(np.max(values))
    if low >= 0 and high <= MAX_LABEL_VALUE and np.array_equal(values, np.round(values)):
        return low, high
    return None


def check_ct_values(values: np.ndarray, path: Path) -> None:
    """Refuse an image that cannot be a CT scan in HU: non-negative whole numbers up to
    :data:`MAX_LABEL_VALUE` only (a label volume or a mask given as the image).

    Raises:
        DataError: naming the file and its values.
    """
    found = _label_like(values)
    if found is not None:
        raise DataError(f"{path}: does not look like a CT scan in Hounsfield units: whole numbers {found[0]:g} to "
                        f"{found[1]:g} only, as in a label volume (a CT holds air at about -1000 HU); is it the "
                        "label file given as the image?")


def check_mri_values(values: np.ndarray, path: Path, channels: int) -> None:
    """Refuse a multi-channel MRI that is not one: another channel count than the task's,
    a constant (e.g. all-zero) channel, or whole numbers 0..MAX_LABEL_VALUE only (a label
    map given as the image).

    Args:
        values: (C, x, y, z) voxels, or (x, y, z) for a single channel.
        path: the image file, for the message.
        channels: the channels the task reads (4 for BraTS).

    Raises:
        DataError: naming the file and what is wrong.
    """
    found = values.shape[0] if values.ndim == 4 else 1
    if found != channels:
        raise DataError(f"{path}: {found} channel(s), expected {channels} (BraTS: FLAIR, T1w, T1gd, T2w)")
    stack = values if values.ndim == 4 else values[None]
    for index, channel in enumerate(stack):
        low, high = float(np.min(channel)), float(np.max(channel))
        if low == high:
            raise DataError(f"{path}: channel {index} is constant ({low:g} everywhere): an empty or missing "
                            "MR sequence")
    label = _label_like(stack)
    if label is not None:
        raise DataError(f"{path}: does not look like an MRI: whole numbers {label[0]:g} to {label[1]:g} only in "
                        "every channel, as in a label map; is it the label file given as the image?")
