"""pcrl.tasks: the task table and label -> region targets (BraTS regions, liver)."""

from __future__ import annotations

import numpy as np
import pytest

from pcrl.errors import ConfigError, DataError
from pcrl.tasks import TASKS, check_label_values, get_task, segmentation_target


def test_task_table_matches_the_protocol() -> None:
    assert set(TASKS) == {"ncc", "lcs", "bms", "chest14"}
    ncc, lcs, bms = TASKS["ncc"], TASKS["lcs"], TASKS["bms"]
    assert (ncc.kind, ncc.dataset, ncc.in_channels, ncc.out_channels, ncc.primary) == (
        "classification", "luna16", 1, 1, "auc")
    assert (lcs.kind, lcs.dataset, lcs.in_channels, lcs.out_channels) == (
        "segmentation", "msd_liver", 1, 1)
    assert lcs.regions == ((1, 2),)  # liver = liver + tumour labels of LiTS / MSD Task03
    assert (bms.dataset, bms.in_channels, bms.class_names) == ("msd_brain", 4, ("wt", "tc", "et"))
    assert bms.regions == ((1, 2, 3), (2, 3), (3,))  # BraTS whole tumour, core, enhancing


def test_chest14_is_the_multilabel_task_of_the_14_findings() -> None:
    from pcrl.datasets.chestxray14 import FINDINGS

    chest = get_task("chest14")
    assert (chest.kind, chest.dataset, chest.in_channels, chest.out_channels, chest.primary) == (
        "multilabel", "chestxray14", 1, 14, "auc_mean")
    # Wang et al.'s order, written out here rather than derived from the code under test
    assert chest.class_names == (
        "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
        "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural_thickening",
        "hernia")
    assert chest.class_names == tuple(f.lower() for f in FINDINGS)  # the data module's names
    assert chest.label_values == (0, 1) and chest.regions == ()
    check_label_values(np.array([[0, 1], [1, 1]]), "chest14", "images.csv")
    with pytest.raises(DataError, match="images.csv: label value.s. 2 are not classes of task chest14"):
        check_label_values(np.array([0, 2]), "chest14", "images.csv")
    with pytest.raises(ConfigError, match="chest14 is not a segmentation task"):
        segmentation_target("chest14", np.zeros((1, 1, 1)))


def test_get_task_names_the_unknown_task() -> None:
    assert get_task("lcs") is TASKS["lcs"]
    assert get_task(TASKS["bms"]) is TASKS["bms"]
    with pytest.raises(ConfigError, match="unknown task 'liver'.*ncc, lcs, bms, chest14"):
        get_task("liver")


def test_bms_regions_by_hand() -> None:
    label = np.array([0, 1, 2, 3, 2, 0], dtype=np.uint8).reshape(1, 2, 3)
    target = segmentation_target("bms", label)
    assert target.shape == (3, 1, 2, 3) and target.dtype == np.uint8
    flat = target.reshape(3, -1)
    np.testing.assert_array_equal(flat[0], [0, 1, 1, 1, 1, 0])  # WT: 1, 2, 3
    np.testing.assert_array_equal(flat[1], [0, 0, 1, 1, 1, 0])  # TC: 2, 3
    np.testing.assert_array_equal(flat[2], [0, 0, 0, 1, 0, 0])  # ET: 3


def test_liver_is_labels_one_and_two_from_float_labels() -> None:
    label = np.array([[[0.0, 1.0], [2.0, 0.0]]], dtype=np.float32)  # NIfTI labels may be float
    np.testing.assert_array_equal(segmentation_target("lcs", label)[0], [[[0, 1], [1, 0]]])


@pytest.mark.parametrize(
    ("task", "values", "message"),
    [
        ("lcs", [0, 1, 3], "label value.s. 3 are not classes of task lcs"),
        ("bms", [0, 4, 7], "label value.s. 4, 7 are not classes of task bms"),
        ("lcs", [0, -1], "label value.s. -1 are not classes"),
    ],
)
def test_foreign_label_values_name_the_file(task: str, values: list, message: str) -> None:
    label = np.array(values, dtype=np.int16).reshape(1, 1, -1)
    with pytest.raises(DataError, match=f"case_7_label.nii.gz: {message}"):
        segmentation_target(task, label, source="case_7_label.nii.gz")


def test_non_integer_and_non_3d_labels_are_refused() -> None:
    with pytest.raises(DataError, match="lab.nii: label values must be integers"):
        segmentation_target("lcs", np.full((1, 1, 2), 0.5), source="lab.nii")
    with pytest.raises(DataError, match="expected an \\(x, y, z\\) label volume"):
        segmentation_target("lcs", np.zeros((2, 2)))
    with pytest.raises(ConfigError, match="ncc is not a segmentation task"):
        segmentation_target("ncc", np.zeros((1, 1, 1)))


def test_ncc_classes() -> None:
    check_label_values(np.array([0, 1, 1]), "ncc", "candidates.csv")
    with pytest.raises(DataError, match="candidates.csv: label value.s. 2 are not classes of task ncc"):
        check_label_values(np.array([0, 2]), "ncc", "candidates.csv")
