"""Deterministic phantoms written in the native layouts of LUNA16 and the Decathlon.

docs/design.md, principle 3: the demo dataset must exercise the real code path, so each
generator writes files exactly as the real dataset ships them:

- LUNA16 (Setio et al., "Validation, comparison, and combination of algorithms for
  automatic detection of pulmonary nodules in CT images", MedIA 2017; Zenodo records
  3723295 and 4121926): ``subsetK/<seriesuid>.mhd`` + ``.raw`` (MetaImage, MET_SHORT,
  HU, anisotropic spacing, non-zero origin), ``annotations.csv`` and ``candidates.csv``
  in world millimetres (``origin + index * spacing``).
- Medical Segmentation Decathlon (Antonelli et al., Nat. Commun. 2022) Task03_Liver
  and Task01_BrainTumour: ``imagesTr/``, ``labelsTr/``, ``imagesTs/`` NIfTI files and a
  ``dataset.json`` with MSD's fields. BraTS images are 4D (x, y, z, 4 modalities).
- NIH ChestX-ray14 (Wang et al., CVPR 2017): ``images/<patient>_<follow-up>.png`` 8-bit
  radiographs (a few RGBA), ``Data_Entry_2017_v2020.csv`` and the patient-wise split lists
  ``train_val_list.txt`` / ``test_list.txt`` (module ``chestxray14``).

Anatomy is defined as implicit shapes in world millimetres and sampled on each scan's
voxel grid, so structures look the same whatever the spacing. Every case draws from its
own generator ``numpy.random.default_rng([seed, dataset stream, case index])``: the same
seed gives byte-identical files, and case ``i`` does not depend on how many cases are
generated. Sizes are relative to each scan's field of view (the demo shapes are small),
lesion sizes are in millimetres.

The package is split by dataset: ``drawing`` holds the shared geometry, seeding and
checks, ``writers`` the SimpleITK and Decathlon writers, ``geometry`` each case's shape
and spacing (the fixed demo ``shape``, or ``sizes: published``: drawn from the dataset's
published ranges, real sizes), and ``luna16``, ``msd_liver``
and ``msd_brain`` each hold one dataset's case generator and ``generate_*`` function.
"""

from __future__ import annotations

from collections.abc import Callable

from pcrl.phantom.chestxray14 import Radiograph, chestxray14_radiograph, generate_chestxray14
from pcrl.phantom.drawing import Candidate, Nodule, PhantomCase
from pcrl.phantom.luna16 import LUNA16_UID_PREFIX, generate_luna16, luna16_case
from pcrl.phantom.msd_brain import brain_case, generate_msd_brain
from pcrl.phantom.msd_liver import generate_msd_liver, liver_case

__all__ = [
    "GENERATORS",
    "LUNA16_UID_PREFIX",
    "Candidate",
    "Nodule",
    "PhantomCase",
    "Radiograph",
    "brain_case",
    "chestxray14_radiograph",
    "generate_chestxray14",
    "generate_luna16",
    "generate_msd_brain",
    "generate_msd_liver",
    "liver_case",
    "luna16_case",
]

GENERATORS: dict[str, Callable[..., None]] = {
    "luna16": generate_luna16,
    "msd_liver": generate_msd_liver,
    "msd_brain": generate_msd_brain,
    "chestxray14": generate_chestxray14,
}
"""Phantom writer per dataset name of the registry (the download stage's phantoms)."""
