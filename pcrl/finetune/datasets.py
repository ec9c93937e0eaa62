"""Fine-tuning training datasets of the 3D tasks: NCC candidate cubes, segmentation patches.

They read what :mod:`pcrl.preprocessing.task_data` reads (splits, candidates, resampled volumes).

Training sets yield ``(image, target)`` pairs for :func:`pcrl.engine.train` and draw their
randomness per epoch from the DataLoader: in a worker process, ``get_worker_info().seed``
minus the worker id is the loader's base seed, which the engine derives from (seed, rank,
epoch). Every item is therefore a function of (seed, rank, epoch, index) only: it does not
depend on which worker loads it, and a resumed run sees the same items as an
uninterrupted one. Without workers (tests, debugging) the base seed is the dataset's own
``seed``, the same every epoch.

- :class:`CandidateCubeSet`, NCC: class imbalance (LUNA16 has about 1 nodule per 300
  candidates) is handled as in Models Genesis' NCC by subsampling negatives: an epoch is
  every positive cube plus ``negatives_per_positive`` negatives per positive drawn afresh
  each epoch (all negatives when there are fewer).
- :class:`PatchSet`, LCS/BMS: one item per training volume, ``patches_per_volume`` random
  patches of ``patch_size`` drawn by MONAI's ``RandCropByPosNegLabeld`` (centres on the
  foreground with probability ``foreground_prob``, else on the background) after
  ``SpatialPadd`` to at least the patch size; from volumes stored as arrays
  (``resample.<dataset>.arrays``) the same rule cuts patches from memory maps
  (:mod:`pcrl.finetune.patches`), reading only the patches' bytes.

Chest14's training set is :class:`pcrl.finetune.radiographs.RadiographSet`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from pcrl.errors import ConfigError, DataError
from pcrl.preprocessing.task_data import CandidateRows, CubeStore, VolumeCase, check_cases, load_case
from pcrl.finetune.patches import cut, draw_centres
from pcrl.tasks import TaskSpec, get_task, segmentation_target
from pcrl.seeding import mix_seed

__all__ = ["CandidateCubeSet", "PatchSet", "loader_seed"]


def loader_seed(fallback: int) -> int:
    """The loader's base seed in a worker process (same for all workers), else ``fallback``."""
    info = get_worker_info()
    return fallback if info is None else int(info.seed - info.id)


def _item_seed(*keys: int) -> int:
    """A 32-bit seed mixing integers (:func:`pcrl.seeding.mix_seed`)."""
    return mix_seed(*keys, bits=32)


# ------------------------------------------------------------------ NCC cubes


class CandidateCubeSet(Dataset[tuple[Tensor, Tensor]]):
    """NCC training cubes: every positive and freshly drawn negatives each epoch.

    Length ``P + min(N, round(negatives_per_positive * P))`` for P positives and N
    negatives; items ``0..P-1`` are the positives, the others the first negatives of a
    permutation drawn from the loader's base seed (see the module docstring).

    Args:
        rows: The training candidates.
        negatives_per_positive: Negatives per positive in an epoch; None keeps them all.
        seed: Base seed when loading without worker processes.

    Raises:
        DataError: No positive or no negative candidate.
    """

    def __init__(self, rows: CandidateRows, negatives_per_positive: float | None,
                 seed: int = 0) -> None:
        self.store = CubeStore(rows)
        self.positives = np.flatnonzero(rows.label == 1)
        self.negatives = np.flatnonzero(rows.label == 0)
        if not len(self.positives) or not len(self.negatives):
            raise DataError(f"NCC training set of {len(rows)} candidates has "
                            f"{len(self.positives)} positive(s) and {len(self.negatives)} "
                            "negative(s): both classes are needed")
        n_neg = len(self.negatives)
        if negatives_per_positive is not None:
            n_neg = min(n_neg, max(1, round(negatives_per_positive * len(self.positives))))
        self.negatives_per_epoch = n_neg
        self.seed = seed
        self._perm_seed: int | None = None
        self._perm = self.negatives

    def __len__(self) -> int:
        return len(self.positives) + self.negatives_per_epoch

    def candidate(self, index: int) -> int:
        """The candidate row behind item ``index`` in the current epoch."""
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} of {len(self)}")
        if index < len(self.positives):
            return int(self.positives[index])
        base = loader_seed(self.seed)
        if base != self._perm_seed:
            rng = np.random.default_rng(_item_seed(base, 1))
            self._perm, self._perm_seed = rng.permutation(self.negatives), base
        return int(self._perm[index - len(self.positives)])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        row = self.candidate(index)
        cube = torch.from_numpy(self.store.cubes(np.array([row])))  # (1, X, Y, Z)
        label = torch.tensor([float(self.store.rows.label[row])])
        return cube, label


# ------------------------------------------------------------------ segmentation patches


class PatchSet(Dataset[tuple[Tensor, Tensor]]):
    """LCS/BMS training items: ``patches_per_volume`` random patches of one volume.

    Item ``i`` reads volume ``i`` and returns ``(images, targets)``: images (K, C, *patch)
    float32, targets (K, out_channels, *patch) uint8 0/1 regions, K = ``patches_per_volume``;
    the task module folds K into the batch and its loss takes the targets as float. uint8 targets
    are a quarter of the bytes that float ones would put through a DataLoader's shared
    memory (for BraTS' three regions float targets are 43 % of an item's bytes). Crops are MONAI's
    ``RandCropByPosNegLabeld`` seeded per (loader base seed, item), after ``SpatialPadd`` to
    at least ``patch_size``.

    Args:
        cases: Training volumes.
        task: The segmentation task.
        patch_size: (x, y, z), each divisible by 8 (three poolings of the U-Net).
        patches_per_volume: K.
        foreground_prob: Probability that a patch is centred on the foreground (any
            region), as MONAI's ``pos / (pos + neg)``.
        seed: Base seed when loading without worker processes.
        check: Check every case at construction (:func:`check_cases`).

    Raises:
        ConfigError: Bad patch settings.
        DataError: No case, or a bad case (when ``check``).
    """

    def __init__(self, cases: Sequence[VolumeCase], task: TaskSpec | str,
                 patch_size: Sequence[int], patches_per_volume: int,
                 foreground_prob: float = 0.5, seed: int = 0, check: bool = True) -> None:
        if not cases:
            raise DataError("no training volume")
        patch = tuple(int(s) for s in patch_size)
        if len(patch) != 3 or any(s < 8 or s % 8 for s in patch):
            raise ConfigError(f"patch_size must be 3 sizes divisible by 8, got {list(patch_size)}")
        if not 0.0 <= foreground_prob <= 1.0:
            raise ConfigError(f"foreground_prob must be in [0, 1], got {foreground_prob}")
        if patches_per_volume < 1:
            raise ConfigError(f"patches_per_volume must be >= 1, got {patches_per_volume}")
        self.cases = list(cases)
        self.task = get_task(task)
        if check:
            check_cases(self.cases, self.task)
        self.patch = patch
        self.samples = int(patches_per_volume)
        self.foreground_prob = float(foreground_prob)
        self.seed = seed
        self._open: OrderedDict[int, Any] = OrderedDict()

    #: Cases whose memory maps a process keeps open (each holds three file descriptors):
    #: a kept map has its pages mapped already, so later patches of the case fault no page.
    OPEN_CASES = 64

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_open": OrderedDict()}  # maps are per process, not pickled

    def __len__(self) -> int:
        return len(self.cases)

    def _arrays(self, index: int) -> Any:
        """Case ``index``'s memory maps (None without arrays), kept open for the
        :attr:`OPEN_CASES` cases used last: reopening a map per item costs its page faults
        again, about half of an item's time at LiTS size (benchmarks/bench_loader.py)."""
        if index in self._open:
            self._open.move_to_end(index)
            return self._open[index]
        arrays = self.cases[index].open_arrays()
        if arrays is not None:
            self._open[index] = arrays
            while len(self._open) > self.OPEN_CASES:
                self._open.popitem(last=False)
        return arrays

    def _crops(self, image: np.ndarray, target: np.ndarray, seed: int) -> list[dict[str, Any]]:
        """Pad to the patch size, then K seeded foreground/background crops (MONAI)."""
        from monai.transforms import RandCropByPosNegLabeld, SpatialPadd

        keys = ("image", "target")
        crop = RandCropByPosNegLabeld(keys=keys, label_key="target", spatial_size=self.patch,
                                      pos=self.foreground_prob, neg=1.0 - self.foreground_prob,
                                      num_samples=self.samples)
        # set after construction: MONAI's Compose would reseed from its global counter
        crop.set_random_state(state=np.random.RandomState(seed))
        sample: Any = {"image": image, "target": target}
        padded = SpatialPadd(keys=keys, spatial_size=self.patch)(sample)
        return cast(list[dict[str, Any]], crop(padded))

    def _mapped(self, case: VolumeCase, arrays: Any, seed: int) -> tuple[Tensor, Tensor]:
        """K patches cut from the memory-mapped arrays (:mod:`pcrl.finetune.patches`)."""
        rng = np.random.RandomState(seed)
        centres = draw_centres(rng, arrays, self.samples, self.foreground_prob)
        images = np.stack([cut(arrays.image, c, self.patch) for c in centres])
        labels = np.stack([cut(arrays.label, c, self.patch) for c in centres])  # (K, x, y, z)
        # one lookup for the K patches, stacked along x: (C, K * x, y, z) -> (K, C, x, y, z)
        k, (px, py, pz) = len(labels), labels.shape[1:]
        regions = segmentation_target(self.task, labels.reshape(k * px, py, pz), source=str(case.label))
        targets = torch.from_numpy(regions.reshape(-1, k, px, py, pz)).transpose(0, 1)
        return torch.from_numpy(images).float(), targets.contiguous()

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        case = self.cases[index]
        seed = _item_seed(loader_seed(self.seed), index)
        arrays = self._arrays(index)
        if arrays is not None:
            return self._mapped(case, arrays, seed)
        image, target = load_case(case, self.task)
        crops = self._crops(image, target.astype(np.float32), seed)
        images = torch.stack([torch.as_tensor(c["image"]).as_subclass(Tensor) for c in crops])
        targets = torch.stack([torch.as_tensor(c["target"]).as_subclass(Tensor) for c in crops])
        return images.float(), targets.to(torch.uint8)
