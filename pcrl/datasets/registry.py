"""Registry of the public datasets of the PCRL protocol: where they live and their layout.

Sources (docs/method.md, "Public downloads"):

- LUNA16: Zenodo records 3723295 (subsets 0-6 and the CSVs) and 4121926 (subsets 7-9),
  Setio et al., Medical Image Analysis 42, 2017.
- Medical Segmentation Decathlon (MSD) Task01_BrainTumour and Task03_Liver: one tar per
  task on the mirror used by MONAI's ``monai.apps.DecathlonDataset``, with its md5 sums;
  Antonelli et al., Nature Communications 13, 2022.
- NIH ChestX-ray14: 12 ``images_NNN.tar.gz`` archives and ``Data_Entry_2017_v2020.csv`` in
  the NIH's box folder; Wang et al., CVPR 2017. The box links are not stable public URLs, so
  this dataset is registered as manual download (use ``source: local``).

Only published checksums are recorded; a file whose checksum is not published has
``md5 = sha256 = None`` and is verified by its length (``Content-Length``) only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from pcrl.errors import ConfigError

Layout = Literal["luna16", "decathlon", "chestxray14"]
"""Native on-disk layouts that :mod:`pcrl.datasets.layout` knows how to verify."""

LAYOUTS: tuple[str, ...] = get_args(Layout)


@dataclass(frozen=True)
class RemoteFile:
    """One published file of a dataset.

    Attributes:
        url: Where to download it (https).
        filename: Name under which it is stored in the download cache.
        md5: Published md5 hex digest, or None when none is published.
        sha256: Published sha256 hex digest, or None when none is published.
        size: Published size in bytes, or None when unknown.
        extract: True for an archive to extract (tar, tar.gz, tgz, zip); False for a
            plain file copied as is into the dataset folder.
    """

    url: str
    filename: str
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    extract: bool = False


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset of the protocol: its files and the native layout they unpack to.

    Attributes:
        name: Registry key (``luna16``, ``msd_liver``, ...).
        title: Human-readable name.
        tasks: Protocol tasks it serves (docs/method.md: pretrain, ncc, lcs, bms, chest14).
        layout: Native layout verified by :mod:`pcrl.datasets.layout`.
        files: The published files, in download order.
        folder: Folder inside the extracted archives that holds the layout (e.g.
            ``Task03_Liver``), or None when the layout is the extraction folder itself.
        citation: Reference of the dataset.
        homepage: Page documenting the dataset and its licence.
        downloadable: False when the files cannot be fetched automatically (a configured
            ``data.mirror`` holding the files makes them downloadable).
        manual: What the user must do instead when ``downloadable`` is False.
        shardable: True when each archive holds whole cases with the files that describe
            them, so download shards may fetch different archives. ChestX-ray14's archives
            share one CSV and two split lists over all images: one shard fetches them all.
    """

    name: str
    title: str
    tasks: tuple[str, ...]
    layout: Layout
    files: tuple[RemoteFile, ...]
    folder: str | None
    citation: str
    homepage: str
    downloadable: bool = True
    manual: str | None = None
    shardable: bool = True


_ZENODO = "https://zenodo.org/records/{record}/files/{name}"
_LUNA16_PART1 = "3723295"  # subsets 0-6, annotations.csv, candidates.csv
_LUNA16_PART2 = "4121926"  # subsets 7-9
_MSD_HOST = "https://msd-for-monai.s3-us-west-2.amazonaws.com"
_NIH_BOX = "https://nihcc.app.box.com/v/ChestXray-NIHCC"


def _zenodo(record: str, name: str, *, extract: bool) -> RemoteFile:
    """A Zenodo file without published checksum in this registry."""
    return RemoteFile(url=_ZENODO.format(record=record, name=name), filename=name, extract=extract)


def _luna16_files() -> tuple[RemoteFile, ...]:
    """subset0.zip..subset9.zip (each unzips to ``subsetK/``) then the two CSVs."""
    subsets = tuple(
        _zenodo(_LUNA16_PART1 if k <= 6 else _LUNA16_PART2, f"subset{k}.zip", extract=True)
        for k in range(10)
    )
    names = ("annotations.csv", "candidates.csv")
    csvs = tuple(_zenodo(_LUNA16_PART1, name, extract=False) for name in names)
    return subsets + csvs


def _msd(task: str, md5: str) -> RemoteFile:
    """One MSD task tar on MONAI's mirror with its published md5."""
    return RemoteFile(url=f"{_MSD_HOST}/{task}.tar", filename=f"{task}.tar", md5=md5, extract=True)


def _chestxray14_files() -> tuple[RemoteFile, ...]:
    """The NIH archives; their box links are not recorded, so the URL is the landing page."""
    archives = tuple(
        RemoteFile(url=_NIH_BOX, filename=f"images_{k:03d}.tar.gz", extract=True)
        for k in range(1, 13)
    )
    plain = ("Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt")
    return archives + tuple(RemoteFile(url=_NIH_BOX, filename=name) for name in plain)


DATASETS: dict[str, DatasetSpec] = {
    "luna16": DatasetSpec(
        name="luna16",
        title="LUNA16 (888 chest CTs, subsets 0-9)",
        tasks=("pretrain", "ncc"),
        layout="luna16",
        files=_luna16_files(),
        folder=None,
        citation=(
            "Setio et al., Validation, comparison, and combination of algorithms for automatic "
            "detection of pulmonary nodules in computed tomography images: the LUNA16 "
            "challenge. Medical Image Analysis 42, 2017."
        ),
        homepage="https://luna16.grand-challenge.org/Data/",
    ),
    "msd_liver": DatasetSpec(
        name="msd_liver",
        title="Medical Segmentation Decathlon Task03_Liver (LiTS 2017)",
        tasks=("lcs",),
        layout="decathlon",
        files=(_msd("Task03_Liver", "a90ec6c4aa7f6a3d087205e23d4e6397"),),
        folder="Task03_Liver",
        citation=(
            "Antonelli et al., The Medical Segmentation Decathlon. Nature Communications 13, "
            "4128, 2022."
        ),
        homepage="http://medicaldecathlon.com/",
    ),
    "msd_brain": DatasetSpec(
        name="msd_brain",
        title="Medical Segmentation Decathlon Task01_BrainTumour (BraTS 2016-2017)",
        tasks=("bms",),
        layout="decathlon",
        files=(_msd("Task01_BrainTumour", "240a19d752f0d9e9101544901065d872"),),
        folder="Task01_BrainTumour",
        citation=(
            "Antonelli et al., The Medical Segmentation Decathlon. Nature Communications 13, "
            "4128, 2022."
        ),
        homepage="http://medicaldecathlon.com/",
    ),
    "chestxray14": DatasetSpec(
        name="chestxray14",
        title="NIH ChestX-ray14 (112,120 frontal chest radiographs)",
        tasks=("chest14",),
        layout="chestxray14",
        files=_chestxray14_files(),
        folder=None,
        citation=(
            "Wang et al., ChestX-ray8: Hospital-scale chest X-ray database and benchmarks on "
            "weakly-supervised classification and localization of common thorax diseases. "
            "CVPR 2017."
        ),
        homepage=_NIH_BOX,
        downloadable=False,
        manual=(
            f"download images_001.tar.gz..images_012.tar.gz, Data_Entry_2017_v2020.csv, "
            f"train_val_list.txt and test_list.txt by hand from {_NIH_BOX}, extract the "
            f"archives into one folder and set 'source: local' with that folder as the "
            f"dataset root (or put the files on a mirror: data.mirror)"
        ),
        shardable=False,
    ),
}


def get_dataset(name: str) -> DatasetSpec:
    """Return the registered dataset ``name``.

    Raises:
        ConfigError: ``name`` is not registered; the message lists the known names.
    """
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise ConfigError(f"unknown dataset {name!r}; known datasets: {known}") from None
