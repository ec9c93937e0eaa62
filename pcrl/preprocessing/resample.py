"""The resample stage's library: one grid spacing and intensity scale for every case.

docs/method.md ("Views, corruptions and targets") pretrains on CT resampled to 1 mm
isotropic voxels with HU clipped to [-1000, 1000] and scaled to [0, 1]; the liver task
uses the abdominal window [-160, 240] HU (as Models Genesis did for LCS) and the
BraTS MRI channels are scaled per channel between percentiles of their foreground
(:mod:`pcrl.preprocessing.normalization`). Resampling is SimpleITK's
``ResampleImageFilter`` (linear for images, nearest neighbour for labels); outputs follow
the data layout of docs/CONVENTIONS.md.
"""

from __future__ import annotations

import math
import numbers
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from pcrl.atomic import write_json
from pcrl.preprocessing.arrays import write_arrays
from pcrl.io.images import array_to_image, image_to_array, read_image, write_image
from pcrl.preprocessing.normalization import Normalization, normalize
from pcrl.preprocessing.plausibility import check_ct_values, check_mri_values
from pcrl.errors import ConfigError, DataError, OutputWriteError, PcrlError
from pcrl.records import pending, remember

Spacing = tuple[float, float, float]
Grid = tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...], tuple[float, ...]]
CASES_FILE = "cases.json"
#: An entry's key for the records of its arrays while it travels from a worker (pcrl.records).
RECORDS_KEY = "_records"
_SPATIAL_DIRECTION_4D = (0, 1, 2, 4, 5, 6, 8, 9, 10)  # the 3x3 block of a 4x4 direction


def validate_spacing(spacing: Sequence[float], key: str = "spacing") -> Spacing:
    """Return ``spacing`` as three floats, or raise ConfigError naming ``key``.

    Args:
        spacing: target voxel size (x, y, z) in mm.
        key: the params key to name in the error (e.g. ``resample.luna16.spacing``).
    """
    message = f"{key} must be three positive finite numbers (x, y, z) in mm, got {spacing!r}"
    if isinstance(spacing, (str, bytes)) or not isinstance(spacing, Sequence) or len(spacing) != 3:
        raise ConfigError(message)
    if not all(isinstance(s, numbers.Real) and not isinstance(s, bool) for s in spacing):
        raise ConfigError(message)
    values = tuple(float(s) for s in spacing)
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise ConfigError(message)
    return values  # type: ignore[return-value]


def output_size(
    in_size: Sequence[int], in_spacing: Sequence[float], out_spacing: Sequence[float]
) -> tuple[int, ...]:
    """Voxels per axis that cover the same extent: round(size * spacing / new spacing).

    Halves round up; every axis keeps at least one voxel.
    """
    return tuple(
        max(1, math.floor(n * s / o + 0.5)) for n, s, o in zip(in_size, in_spacing, out_spacing)
    )


def resample_image(img: sitk.Image, spacing: Sequence[float], *, is_label: bool) -> sitk.Image:
    """Resample ``img`` to ``spacing`` (mm) keeping its origin and direction.

    Images are interpolated linearly into float32, voxels outside the original field of
    view taking the image's minimum (air, not 0 HU); labels use nearest neighbour, keep
    their pixel type and take 0 outside. A 4D image (channels as last axis) or a vector
    image is resampled channel by channel into a 4D image of the same layout.

    Args:
        img: 3D image, 4D image with channels last, or 3D vector image.
        spacing: output voxel size (x, y, z) in mm.
        is_label: nearest-neighbour resampling of a label map.
    """
    spacing = validate_spacing(spacing)
    if img.GetDimension() == 4 or img.GetNumberOfComponentsPerPixel() > 1:
        channels = [_resample_volume(c, spacing, is_label) for c in split_channels(img)]
        return _join_channels(channels, img)
    return _resample_volume(img, spacing, is_label)


def split_channels(img: sitk.Image) -> list[sitk.Image]:
    """The 3D volumes of a 4D image (channels last) or of a vector image's components."""
    if img.GetNumberOfComponentsPerPixel() > 1:
        components = range(img.GetNumberOfComponentsPerPixel())
        return [sitk.VectorIndexSelectionCast(img, i) for i in components]
    extract = sitk.ExtractImageFilter()
    extract.SetSize([*img.GetSize()[:3], 0])
    extract.SetDirectionCollapseToStrategy(sitk.ExtractImageFilter.DIRECTIONCOLLAPSETOSUBMATRIX)
    volumes = []
    for c in range(img.GetSize()[3]):
        extract.SetIndex([0, 0, 0, c])
        volumes.append(extract.Execute(img))
    return volumes


def _join_channels(channels: list[sitk.Image], reference: sitk.Image) -> sitk.Image:
    """Stack 3D volumes into a 4D image, keeping the channel axis geometry of a 4D reference."""
    if reference.GetDimension() == 4:
        return sitk.JoinSeries(channels, reference.GetOrigin()[3], reference.GetSpacing()[3])
    return sitk.JoinSeries(channels)


def _resample_volume(img: sitk.Image, spacing: Spacing, is_label: bool) -> sitk.Image:
    """Resample one 3D scalar volume (see :func:`resample_image`)."""
    if not is_label:
        img = sitk.Cast(img, sitk.sitkFloat32)
    resampler = sitk.ResampleImageFilter()
    resampler.SetOutputSpacing(spacing)
    resampler.SetSize([int(n) for n in output_size(img.GetSize(), img.GetSpacing(), spacing)])
    resampler.SetOutputOrigin(img.GetOrigin())
    resampler.SetOutputDirection(img.GetDirection())
    resampler.SetOutputPixelType(img.GetPixelID())
    resampler.SetInterpolator(sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear)
    resampler.SetDefaultPixelValue(0.0 if is_label else _minimum(img))
    return resampler.Execute(img)


def _minimum(img: sitk.Image) -> float:
    """Smallest voxel value of a scalar image."""
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(img)
    return float(stats.GetMinimum())



def spatial_grid(img: sitk.Image) -> Grid:
    """Size, spacing, origin and 3x3 direction of the spatial axes (x, y, z) of ``img``."""
    if img.GetDimension() == 4:
        direction = tuple(img.GetDirection()[i] for i in _SPATIAL_DIRECTION_4D)
        return img.GetSize()[:3], img.GetSpacing()[:3], img.GetOrigin()[:3], direction
    return img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection()


def check_same_grid(
    image: sitk.Image, label: sitk.Image, image_path: Path, label_path: Path
) -> None:
    """Raise DataError naming both files unless image and label share one voxel grid.

    Size must match exactly; spacing, origin (mm) and direction within 1e-3 (absolute)
    plus 1e-4 (relative), to tolerate rounding in headers.
    """
    names = ("size", "spacing", "origin", "direction")
    for name, a, b in zip(names, spatial_grid(image), spatial_grid(label)):
        same = tuple(a) == tuple(b) if name == "size" else np.allclose(a, b, rtol=1e-4, atol=1e-3)
        if not same:
            raise DataError(
                f"label {label_path} does not match image {image_path}: "
                f"{name} {tuple(b)} vs {tuple(a)}"
            )


def _label_as_uint8(path: Path, label: sitk.Image) -> sitk.Image:
    """Cast a label map to uint8 after checking it holds integers in [0, 255]."""
    values = sitk.GetArrayViewFromImage(label)
    if values.size and (values.min() < 0 or values.max() > 255):
        raise DataError(
            f"{path}: label values must lie in [0, 255], found [{values.min()}, {values.max()}]"
        )
    if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
        raise DataError(f"{path}: label values must be integers")
    return sitk.Cast(label, sitk.sitkUInt8)


def _case_id(case: Mapping[str, Any]) -> str:
    """The case's id, checked to be usable as a file name."""
    case_id = case.get("id")
    if not isinstance(case_id, str) or not case_id or case_id.startswith(".") or any(
        sep in case_id for sep in ("/", "\\")
    ):
        raise DataError(f"case id {case_id!r} (image {case.get('image')}) is not a valid file name")
    return case_id


def resample_case(
    case: Mapping[str, Any],
    out_dir: Path,
    *,
    spacing: Sequence[float],
    normalization: Normalization,
    arrays: bool = False,
    channels: int | None = None,
) -> dict[str, Any]:
    """Resample and normalise one case; write ``<id>.nii.gz`` and ``<id>_label.nii.gz``
    (and with ``arrays`` their uncompressed, memory-mappable copies, :mod:`pcrl.preprocessing.arrays`).

    Args:
        case: manifest entry with absolute ``image`` and optional ``label`` paths,
            ``id`` and ``group``.
        out_dir: output folder (created if needed).
        spacing: target voxel size (x, y, z) in mm.
        normalization: intensity scaling of the image.

    Returns:
        The case's ``cases.json`` entry (docs/CONVENTIONS.md).

    Raises:
        DataError: unreadable or unsound input, or a label not on the image's grid.
    """
    spacing = validate_spacing(spacing)
    case_id = _case_id(case)
    image_path = Path(case["image"])
    label_path = Path(case["label"]) if case.get("label") else None
    original = read_image(image_path, allow_channels=True)
    # NaN or infinite voxels: read_image has refused them (counted in the file itself)
    if normalization.kind == "window":  # a window in HU: the image must be a CT scan
        check_ct_values(image_to_array(original), image_path)
    elif channels is not None:  # MRI, scaled per channel: the task's channels, none empty
        check_mri_values(image_to_array(original), image_path, channels)
    label = read_image(label_path) if label_path else None
    if label is not None and label_path is not None:
        check_same_grid(original, label, image_path, label_path)
    image = _normalized(resample_image(original, spacing, is_label=False), normalization)
    write_image(Path(out_dir) / f"{case_id}.nii.gz", image)
    if label is not None and label_path is not None:
        label = _label_as_uint8(label_path, resample_image(label, spacing, is_label=True))
        write_image(Path(out_dir) / f"{case_id}_label.nii.gz", label)
    entry = _case_entry(case_id, case.get("group"), image, original, has_label=label is not None)
    if arrays:
        entry["arrays"] = write_arrays(Path(out_dir), case_id, image_to_array(image),
                                       None if label is None else image_to_array(label))
        # the digests taken while writing, for the folder's record (this may be a worker process)
        entry[RECORDS_KEY] = {name: record for name in entry["arrays"].values()
                              if (record := pending(Path(out_dir) / name)) is not None}
    return entry


def _normalized(img: sitk.Image, normalization: Normalization) -> sitk.Image:
    """A float32 copy of ``img`` with values scaled by ``normalization``, same geometry."""
    values = normalize(image_to_array(img), normalization)
    return array_to_image(
        values, spacing=img.GetSpacing(), origin=img.GetOrigin(), direction=img.GetDirection()
    )


def _case_entry(
    case_id: str, group: Any, image: sitk.Image, original: sitk.Image, *, has_label: bool
) -> dict[str, Any]:
    """The ``cases.json`` entry of a resampled case."""
    size, spacing, origin, _ = spatial_grid(image)
    original_size, original_spacing, _, _ = spatial_grid(original)
    return {
        "id": case_id,
        "group": group,
        "image": f"{case_id}.nii.gz",
        "label": f"{case_id}_label.nii.gz" if has_label else None,
        "channels": image.GetSize()[3] if image.GetDimension() == 4 else 1,
        "shape": list(size),
        "spacing": list(spacing),
        "origin": list(origin),
        "direction": list(image.GetDirection()),
        "original_spacing": list(original_spacing),
        "original_shape": list(original_size),
    }


def resample_dataset(
    cases: Sequence[Mapping[str, Any]],
    out_dir: Path,
    *,
    spacing: Sequence[float],
    normalization: Normalization,
    workers: int = 1,
    progress: bool = True,
    arrays: bool = False,
    channels: int | None = None,
) -> list[dict[str, Any]]:
    """Resample every case into ``out_dir``, then write ``cases.json`` last.

    A stale ``cases.json`` is removed first, so the folder looks complete only once
    every case has succeeded. On the first failure, cases not yet started are
    cancelled, running ones finish, and the error is raised.

    Args:
        cases: manifest entries (absolute paths), see :func:`resample_case`.
        out_dir: output folder.
        spacing: target voxel size (x, y, z) in mm.
        normalization: intensity scaling.
        workers: processes; 1 runs in this process.
        progress: show a tqdm progress bar.
        arrays: also write each case's memory-mappable arrays (:mod:`pcrl.preprocessing.arrays`).
        channels: the image channels of a multi-channel MRI dataset (BraTS: 4), checked
            (:mod:`pcrl.preprocessing.plausibility`); None: no MRI check.

    Returns:
        The ``cases.json`` entries, in the order of ``cases``.

    Raises:
        DataError: a case failed; the message names its id and image file.
        ConfigError: invalid ``spacing`` or ``workers``.
    """
    spacing = validate_spacing(spacing)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    _check_unique_ids(cases)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CASES_FILE).unlink(missing_ok=True)
    work = partial(resample_case, out_dir=out_dir, spacing=spacing, normalization=normalization,
                   arrays=arrays, channels=channels)
    with tqdm(total=len(cases), desc="resample", unit="case", disable=not progress) as bar:
        run = _run_parallel if workers > 1 and len(cases) > 1 else _run_serial
        entries = run(cases, work, workers, bar)
    for entry in entries:  # kept for the folder's contents.json, not listed in cases.json
        for name, record in entry.pop(RECORDS_KEY, {}).items():
            remember(out_dir / name, record)
    write_json(out_dir / CASES_FILE, entries)
    return entries


def _check_unique_ids(cases: Sequence[Mapping[str, Any]]) -> None:
    """Raise DataError when two cases share an id (their outputs would collide)."""
    duplicates = sorted(str(i) for i, n in Counter(c.get("id") for c in cases).items() if n > 1)
    if duplicates:
        raise DataError(f"duplicate case ids: {', '.join(duplicates)}")


Work = Callable[[Mapping[str, Any]], dict[str, Any]]


def _run_serial(cases: Sequence[Mapping[str, Any]], work: Work, workers: int, bar: tqdm) -> list[dict[str, Any]]:
    """Resample the cases one after the other in this process."""
    entries = []
    for case in cases:
        entries.append(_collect(case, partial(work, case)))
        bar.update()
    return entries


def _run_parallel(cases: Sequence[Mapping[str, Any]], work: Work, workers: int, bar: tqdm) -> list[dict[str, Any]]:
    """Resample the cases in ``workers`` processes; cancel pending ones on a failure."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    entries: list[dict[str, Any]] = [{} for _ in cases]
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=_init_worker,
        initargs=(threads,),
    ) as pool:
        futures: dict[Future, int] = {pool.submit(work, dict(case)): i for i, case in enumerate(cases)}
        try:
            for future in as_completed(futures):
                index = futures[future]
                entries[index] = _collect(cases[index], future.result)
                bar.update()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return entries


def _init_worker(threads: int) -> None:
    """Limit SimpleITK's threads in a worker so that workers do not oversubscribe the CPUs."""
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _collect(case: Mapping[str, Any], run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one case's work; re-raise a user error as DataError naming the case and its file."""
    try:
        return run()
    except OutputWriteError:  # names the output file already: the case adds nothing
        raise
    except PcrlError as exc:
        raise DataError(f"case {case.get('id')!r} ({case.get('image')}): {exc}") from exc
    except Exception as exc:
        exc.add_note(f"while resampling case {case.get('id')!r} ({case.get('image')})")
        raise
