"""Safe extraction of tar and zip archives: unsafe members refused before anything is
written, nothing half-extracted, and errors that name the archive."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from pcrl.datasets.archives import safe_extract
from pcrl.errors import DataError
from test_download import TINY_FILES, entries, tar_bytes, write, zip_bytes


# --------------------------------------------------------------------------- safe_extract


def test_safe_extract_tar_gz(tmp_path: Path) -> None:
    archive = write(tmp_path / "tiny.tar.gz", tar_bytes(TINY_FILES))
    target = tmp_path / "out"
    files = safe_extract(archive, target)
    assert files == sorted(target / name for name in TINY_FILES)
    for name, data in TINY_FILES.items():
        assert (target / name).read_bytes() == data
    assert entries(tmp_path) == {"tiny.tar.gz", "out"}


def test_safe_extract_zip_merges_into_existing_target(tmp_path: Path) -> None:
    target = tmp_path / "out"
    (target / "subset0").mkdir(parents=True)
    write(target / "subset0" / "old.mhd", b"old")
    write(target / "keep.csv", b"keep")
    members = {"subset0/a.mhd": b"a", "subset0/a.raw": b"r"}
    archive = write(tmp_path / "subset0.zip", zip_bytes(members))
    files = safe_extract(archive, target)
    assert files == [target / "subset0" / "a.mhd", target / "subset0" / "a.raw"]
    assert entries(target / "subset0") == {"a.mhd", "a.raw"}  # replaced, not merged
    assert (target / "keep.csv").read_bytes() == b"keep"


def test_merge_joins_archives_that_share_a_folder_and_refuses_a_clash(tmp_path: Path) -> None:
    """ChestX-ray14's archives all extract into images/: the second must not wipe the first."""
    target = tmp_path / "out"
    first = write(tmp_path / "images_001.tar.gz", tar_bytes({"images/a.png": b"a", "images/sub/c.png": b"c"}))
    second = write(tmp_path / "images_002.tar.gz", tar_bytes({"images/b.png": b"b", "images/sub/d.png": b"d"}))
    safe_extract(first, target, merge=True)
    files = safe_extract(second, target, merge=True)
    assert files == [target / "images" / "b.png", target / "images" / "sub" / "d.png"]
    assert entries(target / "images") == {"a.png", "b.png", "sub"}
    assert entries(target / "images" / "sub") == {"c.png", "d.png"}
    clash = write(tmp_path / "images_003.tar.gz", tar_bytes({"images/0.png": b"new", "images/a.png": b"other"}))
    with pytest.raises(DataError, match=r"images_003\.tar\.gz.*a\.png"):
        safe_extract(clash, target, merge=True)
    assert (target / "images" / "a.png").read_bytes() == b"a"
    assert not (target / "images" / "0.png").exists()  # nothing moved before the clash was found
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.extract-")]  # staging removed


@pytest.mark.parametrize(
    ("member", "links"),
    [
        ("../evil", None),
        ("/abs.txt", None),
        ("link", {"link": (tarfile.SYMTYPE, "/etc/passwd")}),
        ("Task/up", {"Task/up": (tarfile.SYMTYPE, "../../outside")}),
        ("hard", {"hard": (tarfile.LNKTYPE, "../outside")}),
    ],
)
def test_unsafe_tar_member_is_refused(
    tmp_path: Path, member: str, links: dict[str, tuple[bytes, str]] | None
) -> None:
    files = {"Task/ok.txt": b"ok"} if links else {"Task/ok.txt": b"ok", member: b"evil"}
    archive = write(tmp_path / "bad.tar.gz", tar_bytes(files, links))
    with pytest.raises(DataError) as info:
        safe_extract(archive, tmp_path / "sub" / "out")
    assert repr(member) in str(info.value) and "bad.tar.gz" in str(info.value)
    assert entries(tmp_path) == {"bad.tar.gz", "sub"}
    assert entries(tmp_path / "sub") == set()  # no target, no temporary folder left


def test_unsafe_zip_member_is_refused(tmp_path: Path) -> None:
    archive = write(tmp_path / "bad.zip", zip_bytes({"ok.txt": b"ok", "../evil": b"evil"}))
    with pytest.raises(DataError, match="'../evil'"):
        safe_extract(archive, tmp_path / "sub" / "out")
    assert entries(tmp_path) == {"bad.zip", "sub"}
    assert entries(tmp_path / "sub") == set()


def test_truncated_archive_leaves_nothing(tmp_path: Path) -> None:
    data = tar_bytes({"Task/a.bin": bytes(range(256)) * 200})
    archive = write(tmp_path / "cut.tar.gz", data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.tar.gz"):
        safe_extract(archive, tmp_path / "sub" / "out")
    assert entries(tmp_path / "sub") == set()


def test_unknown_archive_format(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown archive format"):
        safe_extract(write(tmp_path / "a.rar", b"x"), tmp_path / "out")



def test_extraction_error_says_which_file_to_delete(tmp_path: Path) -> None:
    archive = write(tmp_path / "bad.tar.gz", b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match=f"delete {archive} and rerun"):
        safe_extract(archive, tmp_path / "out")


#: Link chains that each stay inside the target but, followed in order, reach outside it.
CHAINS = {
    "chain": ({"a/b": (tarfile.SYMTYPE, ".."), "a/c": (tarfile.SYMTYPE, "b/..")}, "a/c/escaped.txt"),
    "deep chain": ({"l1": (tarfile.SYMTYPE, "."), "l1/l2": (tarfile.SYMTYPE, "."), "l1/l2/l3": (tarfile.SYMTYPE, "..")},
                   "l1/l2/l3/escaped.txt"),
    "hardlink inside": ({"copy": (tarfile.LNKTYPE, "Task/ok.txt")}, None),
}


@pytest.mark.parametrize("with_filter", [True, False], ids=["data filter", "no data filter"])
@pytest.mark.parametrize("case", sorted(CHAINS))
def test_every_link_member_is_refused_with_or_without_the_data_filter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, with_filter: bool
) -> None:
    """Python 3.11.0-3.11.3 lack tarfile.data_filter: the member checks alone must stop a
    chain of links whose every step stays inside."""
    if not with_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    links, through = CHAINS[case]
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tar:  # the links first, then a file written through them
        for name, data in {"Task/ok.txt": b"ok"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, (kind, target) in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
        if through:
            info = tarfile.TarInfo(through)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(DataError, match=r"is a (symlink|hardlink)"):
        safe_extract(archive, tmp_path / "sub" / "deeper" / "out")
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert written == [Path("links.tar"), Path("sub"), Path("sub/deeper")]  # nothing extracted anywhere
