"""Issue 29's phantom sizes: ``sizes: published`` draws each case's shape and spacing from the
published ranges, the writers write exactly the drawn geometry, ``sizes: fixed`` (the
default) leaves the demo's cases unchanged, and configs/scale.yaml is the paper config on
phantoms.

Real sizes (512 x 512 x hundreds of slices) take tens of seconds a case, so the writer tests
replace the published table with a tiny one; the draw itself is checked on the real table.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from pcrl.config import load_params
from pcrl.errors import ConfigError
from pcrl.phantom import brain_case, generate_luna16, generate_msd_brain, generate_msd_liver, liver_case, luna16_case
from pcrl.phantom import geometry
from pcrl.phantom.geometry import PublishedRange, case_geometry

#: The published figures, written out here independently of pcrl/phantom/geometry.py.
LUNA16 = {"matrix": 512, "slices": (100, 700), "inplane": (0.46, 0.98), "thickness": (0.0, 2.5)}
LITS = {"matrix": 512, "slices": (74, 987), "inplane": (0.5, 1.0), "thickness": (0.7, 5.0)}


@pytest.mark.parametrize(("dataset", "figures"), [("luna16", LUNA16), ("msd_liver", LITS)])
def test_drawn_geometry_is_within_the_published_ranges(dataset: str, figures: dict) -> None:
    drawn = [case_geometry(dataset, 0, i, (1, 1, 1), "published") for i in range(200)]
    for g in drawn:
        assert g.spacing is not None
        assert g.shape[:2] == (figures["matrix"], figures["matrix"])
        assert figures["slices"][0] <= g.shape[2] <= figures["slices"][1]
        assert g.spacing[0] == g.spacing[1]
        assert figures["inplane"][0] <= g.spacing[0] <= figures["inplane"][1]
        assert figures["thickness"][0] <= g.spacing[2] <= figures["thickness"][1]
        assert g.spacing[0] * 512 == round(g.spacing[0] * 512)  # a whole-millimetre field of view
    # drawn per case: the sizes vary, and the same seed and index give the same draw
    assert len({g.shape[2] for g in drawn}) > 50 and len({g.spacing[0] for g in drawn}) > 50
    assert case_geometry(dataset, 0, 7, (1, 1, 1), "published") == drawn[7]
    assert case_geometry(dataset, 1, 7, (1, 1, 1), "published") != drawn[7]
    # the scanned length, not the count, is drawn: thin slices give many, thick ones few
    thin = [g.shape[2] for g in drawn if g.spacing[2] <= 1.0]
    thick = [g.shape[2] for g in drawn if g.spacing[2] >= 2.5]
    assert min(thin) > max(thick) / 2 and np.mean(thin) > 2 * np.mean(thick)


def test_brats_geometry_is_the_published_one() -> None:
    for i in range(5):
        g = case_geometry("msd_brain", 3, i, (1, 1, 1), "published")
        assert g.shape == (240, 240, 155) and g.spacing == (1.0, 1.0, 1.0)


def test_fixed_sizes_keep_the_demo_cases() -> None:
    """Digests and geometry of the demo cases, recorded before ``sizes`` existed."""
    def digest(case) -> str:
        h = hashlib.sha256(case.image.tobytes())
        if case.label is not None:
            h.update(case.label.tobytes())
        return h.hexdigest()[:16]

    luna = luna16_case(0, 0)
    assert (digest(luna), luna.image.shape) == ("b2300579c6c30b1a", (96, 96, 48))
    assert luna.spacing == (0.896484375, 0.896484375, 2.5) and luna.origin == (-165.75, -216.0, -245.5)
    assert digest(luna16_case(0, 1)) == "b2242be796df59d8"
    liver = liver_case(0, 0)
    assert (digest(liver), liver.image.shape, liver.spacing) == ("35ef0602e861ba40", (64, 64, 48),
                                                                 (0.80078125, 0.80078125, 3.0))
    brain = brain_case(0, 0)
    assert (digest(brain), brain.image.shape, brain.spacing) == ("8a3ea4c4d4b27d45", (4, 48, 48, 40),
                                                                 (1.0, 1.0, 1.0))
    assert case_geometry("luna16", 0, 0, [96, 96, 48]).shape == (96, 96, 48)
    assert case_geometry("luna16", 0, 0, [96, 96, 48]).spacing is None


@pytest.fixture()
def tiny_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Published ranges shrunk to phantom-test sizes (the draw's rule unchanged)."""
    monkeypatch.setitem(geometry.PUBLISHED, "luna16", PublishedRange(96, (40, 70), (0.6, 0.9), (1.0, 2.0),
                                                                     (60.0, 90.0)))
    monkeypatch.setitem(geometry.PUBLISHED, "msd_liver", PublishedRange(64, (30, 60), (0.7, 0.9), (1.5, 3.0),
                                                                        (70.0, 110.0)))
    monkeypatch.setitem(geometry.PUBLISHED, "msd_brain", PublishedRange(48, (40, 40), (1.0, 1.0), (1.0,), (40.0, 40.0)))


def _geometry(path: Path) -> tuple[tuple[int, ...], tuple[float, ...]]:
    image = sitk.ReadImage(str(path))
    return image.GetSize()[:3], image.GetSpacing()[:3]


@pytest.mark.usefixtures("tiny_table")
def test_written_luna16_scans_have_the_drawn_geometry(tmp_path: Path) -> None:
    generate_luna16(tmp_path / "luna", scans=3, subsets=3, seed=5, sizes="published")
    for i in range(3):
        want = case_geometry("luna16", 5, i, (1, 1, 1), "published")
        (mhd,) = (tmp_path / "luna" / f"subset{i}").glob("*.mhd")
        shape, spacing = _geometry(mhd)
        assert shape == want.shape and spacing == pytest.approx(want.spacing, abs=1e-9)
        assert 40 <= shape[2] <= 70 and spacing[2] in (1.0, 2.0)
    rows = (tmp_path / "luna" / "annotations.csv").read_text().splitlines()
    assert len(rows) > 3  # every scan's nodules listed, though the scans were written one by one


@pytest.mark.usefixtures("tiny_table")
@pytest.mark.parametrize(("generate", "dataset"),
                         [(generate_msd_liver, "msd_liver"), (generate_msd_brain, "msd_brain")])
def test_written_decathlon_cases_have_the_drawn_geometry(tmp_path: Path, generate, dataset: str) -> None:
    generate(tmp_path / dataset, cases=2, test_cases=1, seed=2, sizes="published")
    meta = json.loads((tmp_path / dataset / "dataset.json").read_text())
    files = [e["image"] for e in meta["training"]] + [e["label"] for e in meta["training"]] + meta["test"]
    for name in files:
        index = int("".join(ch for ch in Path(name).name if ch.isdigit()))
        index -= 1 if dataset == "msd_brain" else 0  # BRATS_001 is case 0
        want = case_geometry(dataset, 2, index, (1, 1, 1), "published")
        shape, spacing = _geometry(tmp_path / dataset / name)
        assert shape == want.shape and spacing == pytest.approx(want.spacing, abs=1e-9)


@pytest.mark.parametrize("generate", [generate_luna16, generate_msd_liver, generate_msd_brain])
@pytest.mark.parametrize("bad", ["real", 1, None])
def test_bad_sizes_are_refused_naming_the_key(tmp_path: Path, generate, bad) -> None:
    with pytest.raises(ConfigError, match="'sizes' must be one of"):
        generate(tmp_path / "out", sizes=bad)
    assert not (tmp_path / "out").exists()


def test_params_schema_refuses_unknown_sizes(repo_root: Path, tmp_path: Path) -> None:
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["data"]["phantom"]["msd_liver"]["sizes"] = "huge"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="sizes"):
        load_params(path)


def test_scale_config_is_the_paper_config_on_real_size_phantoms(repo_root: Path) -> None:
    scale = load_params(repo_root / "configs" / "scale.yaml")
    paper = load_params(repo_root / "configs" / "paper.yaml")
    assert {k: v for k, v in scale.items() if k != "data"} == {k: v for k, v in paper.items() if k != "data"}
    data = scale["data"]
    assert data["source"] == "phantom" and not data["sources"] and data["datasets"] == paper["data"]["datasets"]
    phantom = data["phantom"]
    assert phantom["luna16"] == {"scans": 12, "subsets": 10, "sizes": "published"}
    assert phantom["msd_liver"]["cases"] + phantom["msd_liver"]["test_cases"] == 6
    assert phantom["msd_brain"]["cases"] + phantom["msd_brain"]["test_cases"] == 6
    assert phantom["msd_liver"]["sizes"] == phantom["msd_brain"]["sizes"] == "published"
    assert phantom["chestxray14"]["size"] == [1024, 1024] == scale["resample"]["chestxray14"]["expected_size"]
