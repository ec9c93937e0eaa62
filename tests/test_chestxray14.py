"""Tests of the ChestX-ray14 phantom (pcrl.phantom.chestxray14) and of the reading
and verification of a local copy (pcrl.datasets.chestxray14), Wang et al., CVPR 2017."""

from __future__ import annotations

import csv
import re
import shutil
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from pcrl import phantom
from pcrl.datasets.archives import safe_extract
from pcrl.datasets.chestxray14 import (
    FINDINGS,
    label_matrix,
    read_entries,
    read_split_lists,
    verify_chestxray14,
)
from pcrl.io.png import check_png, load_radiograph
from pcrl.phantom.chestxray14 import chestxray14_radiograph, generate_chestxray14
from pcrl.errors import ConfigError, DataError
from pcrl.outputs import MARKER

SEED = 7
SIZE = (128, 128)
PATIENTS = 6
PER_PATIENT = (2, 3)
REAL_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
               "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
NAME_RE = re.compile(r"\d{8}_\d{3}\.png")
DARKER = {"Pneumothorax", "Emphysema"}  # air replaces tissue; every other finding adds density
IN_LUNG = ("Atelectasis", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
           "Consolidation", "Pleural_Thickening")


# ------------------------------------------------------------------------ helpers


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path (the pipeline's marker left aside)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MARKER}


def csv_rows(root: Path) -> list[dict[str, str]]:
    """Rows of the phantom's CSV keyed by field (the split bracket headers as the parser sees them)."""
    with (root / "Data_Entry_2017_v2020.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def render(row_or_patient: int, follow_up: int, findings: tuple[str, ...] | None = None, seed: int = SEED):
    return chestxray14_radiograph(seed, row_or_patient, follow_up, SIZE, images_per_patient=PER_PATIENT,
                                  findings=findings)


def edit_csv_line(root: Path, line: int, old: str, new: str) -> str:
    """Replace ``old`` by ``new`` in line ``line`` (1-based) of the CSV; returns that row's image."""
    path = root / "Data_Entry_2017_v2020.csv"
    lines = path.read_text().splitlines(keepends=True)
    assert old in lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    path.write_text("".join(lines))
    return lines[line - 1].split(",")[0]


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, body) of each chunk of a PNG."""
    chunks, position = [], 8
    while position < len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        chunks.append((kind, data[position + 8: position + 8 + length]))
        position += 12 + length
    return chunks


def png_from_chunks(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        for kind, body in chunks)


def column_extent(mask: np.ndarray) -> int:
    """Width in pixels of the columns that hold the mask."""
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[-1] - cols[0] + 1)


# ----------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cxr") / "chestxray14"
    generate_chestxray14(out, patients=PATIENTS, images_per_patient=PER_PATIENT, size=SIZE, seed=SEED,
                         archives=2)
    return out


@pytest.fixture()
def copy(root: Path, tmp_path: Path) -> Path:
    """A writable copy of the phantom without the archives (for the bad-input tests)."""
    dest = tmp_path / "copy"
    shutil.copytree(root, dest, ignore=shutil.ignore_patterns("*.tar.gz"))
    return dest


# ------------------------------------------------------------------------- layout


def test_layout_file_names_and_real_csv_header(root: Path) -> None:
    names = sorted(p.name for p in (root / "images").iterdir())
    assert names and all(NAME_RE.fullmatch(n) for n in names)
    assert sorted(p.name for p in root.iterdir() if p.name != MARKER) == [
        "Data_Entry_2017_v2020.csv", "images", "images_001.tar.gz", "images_002.tar.gz",
        "test_list.txt", "train_val_list.txt"]
    text = (root / "Data_Entry_2017_v2020.csv").read_text()
    assert text.splitlines()[0] == REAL_HEADER
    with (root / "Data_Entry_2017_v2020.csv").open(newline="") as fh:
        assert len(next(csv.reader(fh))) == 11  # the bracketed headers span two fields each
    rows = csv_rows(root)
    assert sorted(r["Image Index"] for r in rows) == names
    for r in rows:
        assert r["Image Index"] == f"{int(r['Patient ID']):08d}_{int(r['Follow-up #']):03d}.png"
        assert r["View Position"] in ("PA", "AP") and r["Patient Gender"] in ("M", "F")
        labels = r["Finding Labels"].split("|")
        assert labels == ["No Finding"] or set(labels) <= set(FINDINGS)
        assert int(r["OriginalImage[Width"]) > 1000 and 0.1 < float(r["OriginalImagePixelSpacing[x"]) < 0.2
    per_patient = {}
    for r in rows:
        per_patient.setdefault(r["Patient ID"], []).append(int(r["Follow-up #"]))
    assert len(per_patient) == PATIENTS
    assert all(sorted(f) == list(range(len(f))) and 2 <= len(f) <= 3 for f in per_patient.values())


def test_split_lists_disjoint_by_patient_and_cover_every_image(root: Path) -> None:
    train = (root / "train_val_list.txt").read_text().splitlines()
    test = (root / "test_list.txt").read_text().splitlines()
    assert train and test
    assert {n[:8] for n in train}.isdisjoint({n[:8] for n in test})
    assert sorted(train + test) == sorted(p.name for p in (root / "images").iterdir())
    assert train == sorted(train) and test == sorted(test)


def test_images_are_8bit_grayscale_and_one_is_rgba(root: Path) -> None:
    modes = {p.name: Image.open(p).mode for p in (root / "images").iterdir()}
    assert set(Image.open(p).size for p in (root / "images").iterdir()) == {SIZE}
    assert set(modes.values()) == {"L", "RGBA"}
    assert sum(m == "RGBA" for m in modes.values()) >= 1


def test_verify_accepts_the_phantom(root: Path) -> None:
    summary = verify_chestxray14(root, expected_size=SIZE)
    entries = read_entries(root)
    assert summary.images == len(entries) == len(list((root / "images").iterdir()))
    assert summary.patients == PATIENTS and summary.converted >= 1
    assert summary.train_val + summary.test == summary.images
    splits = read_split_lists(root)
    assert len(splits.train_val) == summary.train_val
    labels = label_matrix(entries)
    assert labels.shape == (len(entries), 14) and set(np.unique(labels)) <= {0, 1}
    assert summary.label_counts["No Finding"] == int((labels.sum(axis=1) == 0).sum())
    first = entries[0]
    assert first.image == "00000001_000.png" and first.patient == 1 and first.follow_up == 0


def test_archives_hold_the_images_under_their_real_names(root: Path, tmp_path: Path) -> None:
    members: list[str] = []
    for number in (1, 2):
        archive = root / f"images_{number:03d}.tar.gz"
        with tarfile.open(archive) as tar:
            names = tar.getnames()
        assert names[0] == "images" and all(n.startswith("images/") for n in names[1:])
        members += names[1:]
        for path in safe_extract(archive, tmp_path / f"x{number}"):
            assert path.read_bytes() == (root / "images" / path.name).read_bytes()
    assert members == sorted(f"images/{p.name}" for p in (root / "images").iterdir())


# --------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes(root: Path, tmp_path: Path) -> None:
    generate_chestxray14(tmp_path / "again", patients=PATIENTS, images_per_patient=PER_PATIENT, size=SIZE,
                         seed=SEED, archives=2)
    assert tree_bytes(tmp_path / "again") == tree_bytes(root)


def test_different_seed_differs(root: Path, tmp_path: Path) -> None:
    generate_chestxray14(tmp_path / "other", patients=PATIENTS, images_per_patient=PER_PATIENT, size=SIZE,
                         seed=SEED + 1)
    mine, other = tree_bytes(root), tree_bytes(tmp_path / "other")
    shared = set(mine) & set(other) & {f"images/{p.name}" for p in (root / "images").iterdir()}
    assert shared and all(mine[k] != other[k] for k in shared)


def test_image_does_not_depend_on_the_number_of_patients(root: Path, tmp_path: Path) -> None:
    generate_chestxray14(tmp_path / "few", patients=2, images_per_patient=PER_PATIENT, size=SIZE, seed=SEED)
    few = tree_bytes(tmp_path / "few")
    mine = tree_bytes(root)
    images = [k for k in few if k.startswith("images/")]
    assert images and all(few[k] == mine[k] for k in images)
    assert csv_rows(tmp_path / "few") == csv_rows(root)[: len(images)]


# ------------------------------------------------------------------------ findings


def test_files_show_exactly_the_findings_their_labels_say(root: Path) -> None:
    """Each PNG is its radiograph with the CSV's findings: removing one finding changes the
    pixels in that finding's region, in its direction; a No Finding image has nothing drawn."""
    drawn = 0
    for r in csv_rows(root):
        patient, follow_up = int(r["Patient ID"]) - 1, int(r["Follow-up #"])
        pixels = load_radiograph(root / "images" / r["Image Index"]).astype(float)
        labels = () if r["Finding Labels"] == "No Finding" else tuple(r["Finding Labels"].split("|"))
        full = render(patient, follow_up, labels)
        assert np.array_equal(pixels, full.pixels), r["Image Index"]
        if not labels:
            assert np.array_equal(pixels, render(patient, follow_up).pixels)
        for name in labels:
            without = render(patient, follow_up, tuple(n for n in labels if n != name)).pixels
            change = (pixels - without)[full.regions[name]].mean()
            sign = -1.0 if name in DARKER else 1.0
            assert sign * change > 5.0, (r["Image Index"], name, change)
            drawn += 1
    assert drawn >= 3


@pytest.mark.parametrize("name", FINDINGS)
def test_each_finding_is_drawn_in_its_region(name: str) -> None:
    """Against the same image without findings: a clear change of mean intensity inside the
    region, little change away from it."""
    patient, follow_up = 1, 0
    clean = render(patient, follow_up, ())
    sick = render(patient, follow_up, (name,))
    region = sick.regions[name]
    assert region.sum() >= 4
    diff = sick.pixels.astype(float) - clean.pixels
    sign = -1.0 if name in DARKER else 1.0
    assert sign * diff[region].mean() > 8.0, diff[region].mean()
    away = ~ndimage.binary_dilation(region, iterations=6)
    assert np.abs(diff[away]).mean() < 1.0
    if name in IN_LUNG:
        assert clean.lungs[region].mean() > 0.9, "drawn outside the lungs"


def test_lesions_sit_where_the_anatomy_says() -> None:
    """Effusion at a lung base, Pneumothorax along the chest wall, a Nodule smaller than a Mass."""
    for patient in range(4):
        clean = render(patient, 0, ())
        rows, cols = np.indices(clean.lungs.shape)
        middle = cols[clean.lungs].mean()
        effusion = render(patient, 0, ("Effusion",)).regions["Effusion"]
        assert rows[effusion].mean() > rows[clean.lungs].mean() + 0.1 * SIZE[1]
        rim = render(patient, 0, ("Pneumothorax",)).regions["Pneumothorax"]
        side = clean.lungs & ((cols < middle) == (cols[rim].mean() < middle))
        assert np.abs(cols[rim] - middle).mean() > np.abs(cols[side] - middle).mean()
        assert render(patient, 0, ("Nodule",)).regions["Nodule"].sum() < render(
            patient, 0, ("Mass",)).regions["Mass"].sum()


def test_cardiomegaly_raises_the_cardiothoracic_ratio() -> None:
    for patient in range(6):
        for follow_up in (0, 1):
            clean = render(patient, follow_up, ())
            big = render(patient, follow_up, ("Cardiomegaly",))
            thorax = column_extent(clean.lungs)
            assert column_extent(clean.heart) / thorax < 0.5 < column_extent(big.heart) / thorax - 0.03


# ------------------------------------------------------------------------ loading


def test_rgba_file_loads_as_grayscale_of_the_right_shape(root: Path) -> None:
    path = next(p for p in sorted((root / "images").iterdir()) if Image.open(p).mode == "RGBA")
    assert check_png(path).color_type == 6
    pixels = load_radiograph(path, expected_size=SIZE)
    assert pixels.shape == (SIZE[1], SIZE[0]) and pixels.dtype == np.uint8
    patient, follow_up = int(path.name[:8]) - 1, int(path.name[9:12])
    expected = render(patient, follow_up)
    assert expected.rgba and np.array_equal(pixels, expected.pixels)


def test_colour_is_converted_to_luminance_and_alpha_dropped(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, size=(20, 30, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgba[..., :3], "RGB").save(tmp_path / "rgb.png")
    reference = np.asarray(Image.fromarray(rgba[..., :3], "RGB").convert("L"))
    assert np.array_equal(load_radiograph(tmp_path / "rgba.png"), reference)
    assert np.array_equal(load_radiograph(tmp_path / "rgb.png"), reference)


# -------------------------------------------------------------------- bad inputs


def test_truncated_png_is_refused(copy: Path) -> None:
    name = sorted(p.name for p in (copy / "images").iterdir())[1]
    path = copy / "images" / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: truncated PNG"):
        verify_chestxray14(copy)
    with pytest.raises(DataError, match=re.escape(name)):
        load_radiograph(path)


def test_png_whose_pixels_do_not_decode_is_refused(copy: Path) -> None:
    path = copy / "images" / sorted(p.name for p in (copy / "images").iterdir())[0]
    broken = b"\x78\x9c" + bytes(range(200))
    chunks = [(k, broken if k == b"IDAT" else body) for k, body in png_chunks(path.read_bytes())]
    path.write_bytes(png_from_chunks(chunks))  # chunks and CRCs intact, zlib stream broken
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: corrupt PNG: the pixel data does not inflate"):
        verify_chestxray14(copy)


def test_png_whose_pixel_stream_is_cut_short_is_refused(copy: Path) -> None:
    """Every chunk complete with its CRC, but the zlib stream inside IDAT ends early: a
    decoder pads the missing rows; the check inflates the stream whole, as for .nii.gz."""
    path = copy / "images" / sorted(p.name for p in (copy / "images").iterdir())[0]
    chunks = png_chunks(path.read_bytes())
    stream = b"".join(body for k, body in chunks if k == b"IDAT")
    cut = [(k, body) for k, body in chunks if k != b"IDAT"]
    cut.insert(1, (b"IDAT", stream[: len(stream) // 2]))
    path.write_bytes(png_from_chunks(cut))
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: truncated PNG: the pixel data stream ends"):
        load_radiograph(path)


def test_the_pixel_stream_size_follows_the_header() -> None:
    """Hand-computed: 5 x 3 8-bit gray, one filter byte a row; Adam7 passes of 1x1, 1x1, none,
    1x1, 3x1, 2x2 and 5x1 pixels give 2 + 2 + 0 + 2 + 4 + 6 + 6 bytes; RGBA rows are 4x wider."""
    from pcrl.io.png import PngInfo, raw_size

    assert raw_size(PngInfo(5, 3, 8, 0), interlaced=False) == 3 * (1 + 5)
    assert raw_size(PngInfo(5, 3, 8, 0), interlaced=True) == 22
    assert raw_size(PngInfo(5, 3, 8, 6), interlaced=False) == 3 * (1 + 20)
    assert raw_size(PngInfo(5, 3, 1, 0), interlaced=False) == 3 * (1 + 1)  # 5 bits packed in a byte


def test_image_listed_in_the_csv_but_missing_is_refused(copy: Path) -> None:
    path = copy / "images" / "00000002_001.png"
    path.unlink()
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: missing.*Data_Entry_2017_v2020.csv, line \d+"):
        verify_chestxray14(copy)


def test_unknown_finding_name_is_refused(copy: Path) -> None:
    old = csv_rows(copy)[2]["Finding Labels"].split("|")[0]
    image = edit_csv_line(copy, 4, f",{old}", ",Pneumonitis" if old == "No Finding" else f",Pneumonitis|{old}")
    message = rf"Data_Entry_2017_v2020.csv, line 4 \({image}\): unknown finding 'Pneumonitis'"
    with pytest.raises(DataError, match=message):
        verify_chestxray14(copy)


def test_no_finding_combined_with_a_finding_is_refused(copy: Path) -> None:
    line = next(i for i, r in enumerate(csv_rows(copy), start=2) if r["Finding Labels"] == "No Finding")
    image = edit_csv_line(copy, line, ",No Finding,", ",No Finding|Mass,")
    with pytest.raises(DataError, match=rf"line {line} \({image}\): 'No Finding' combined"):
        read_entries(copy)


def test_image_index_not_matching_patient_and_follow_up_is_refused(copy: Path) -> None:
    first = csv_rows(copy)[0]
    edit_csv_line(copy, 2, f",{first['Follow-up #']},{first['Patient ID']},", f",{first['Follow-up #']},42,")
    with pytest.raises(DataError, match=r"line 2: Image Index '00000001_000.png' does not match Patient ID 42"):
        read_entries(copy)


def test_wrong_csv_header_is_refused(copy: Path) -> None:
    path = copy / "Data_Entry_2017_v2020.csv"
    text = path.read_text().replace("OriginalImage[Width,Height]", '"OriginalImage[Width,Height]"', 1)
    path.write_text(text)
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: header .* is not the ChestX-ray14 header"):
        read_entries(copy)


def test_patient_in_both_split_lists_is_refused(copy: Path) -> None:
    train = (copy / "train_val_list.txt").read_text().splitlines()
    moved = train[0]  # every patient has 2-3 images: the others stay in train_val
    (copy / "train_val_list.txt").write_text("".join(f"{n}\n" for n in train[1:]))
    with (copy / "test_list.txt").open("a") as fh:
        fh.write(f"{moved}\n")
    with pytest.raises(DataError, match=rf"test_list.txt: patient {moved[:8]} is in both split lists"):
        verify_chestxray14(copy)


def test_split_list_image_missing_from_the_csv_is_refused(copy: Path) -> None:
    with (copy / "test_list.txt").open("a") as fh:
        fh.write("00009999_000.png\n")
    with pytest.raises(DataError, match=r"test_list.txt: 00009999_000.png is not in .*Data_Entry_2017_v2020.csv"):
        verify_chestxray14(copy)


def test_image_of_the_wrong_size_is_refused(copy: Path) -> None:
    path = copy / "images" / "00000003_000.png"
    Image.fromarray(np.zeros((SIZE[1], SIZE[0] // 2), dtype=np.uint8)).save(path)
    verify_chestxray14(copy)  # any size is fine when none is expected
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: image is 64 x 128 pixels .*expected 128 x 128"):
        verify_chestxray14(copy, expected_size=SIZE)


def test_16bit_png_is_refused(copy: Path) -> None:
    path = copy / "images" / "00000004_001.png"
    Image.fromarray(np.full((SIZE[1], SIZE[0]), 40000, dtype=np.uint16)).save(path)
    assert check_png(path).bit_depth == 16
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: 16-bit grayscale PNG"):
        verify_chestxray14(copy)
    with pytest.raises(DataError, match="16-bit"):
        load_radiograph(path)


def test_generator_arguments_are_checked(tmp_path: Path) -> None:
    for bad in ({"patients": 0}, {"size": (32, 32)}, {"images_per_patient": (3, 2)},
                {"test_fraction": 1.5}, {"archives": 13}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            generate_chestxray14(tmp_path / "bad", **bad)
    with pytest.raises(ConfigError, match="unknown findings"):
        chestxray14_radiograph(0, 0, 0, SIZE, findings=("Pneumonitis",))
    assert phantom.generate_chestxray14 is generate_chestxray14
