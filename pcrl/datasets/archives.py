"""Safe archive extraction and integrity tests of downloaded archives.

- :func:`safe_extract` refuses archive members that could land outside the target folder
  (absolute names, ``..``, any symlink or hardlink, device files) before extracting anything,
  then extracts into a temporary folder that is moved into place once complete; tars also
  go through the standard library's ``filter="data"`` (PEP 706) where Python has it.
- :func:`archive_problem` reads a whole archive (zip CRCs, the tar's compression stream)
  so that a download cut short is never cached as if complete.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PureWindowsPath

from pcrl.errors import DataError

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def _escapes(name: str) -> bool:
    """Whether the relative archive path ``name`` leaves its root once normalised."""
    normalised = posixpath.normpath(posixpath.join("/root", name))
    return posixpath.commonpath(["/root", normalised]) != "/root"


def _is_absolute(name: str) -> bool:
    """Whether an archive member name is absolute (POSIX root, Windows drive or UNC)."""
    return name.startswith(("/", "\\")) or bool(PureWindowsPath(name).drive)


def _check_name(archive: Path, name: str) -> None:
    """Refuse a member whose own path is absolute or leaves the target folder."""
    if _is_absolute(name):
        raise DataError(f"archive {archive}: member {name!r} has an absolute path; not extracted")
    if _escapes(name.replace("\\", "/")):
        raise DataError(f"archive {archive}: member {name!r} escapes the target folder")


def _check_tar_member(archive: Path, member: tarfile.TarInfo) -> None:
    """Refuse unsafe tar members: bad names, links of any kind, device files.

    The datasets hold plain files and folders only, so every symlink and hardlink is
    refused, not only those that point out: a chain of links that each stay inside (one
    pointing at another, a later member written through them) can still reach outside, and
    Pythons without ``tarfile.data_filter`` have nothing else to stop it.
    """
    _check_name(archive, member.name)
    if member.issym() or member.islnk():
        kind = "symlink" if member.issym() else "hardlink"
        raise DataError(f"archive {archive}: member {member.name!r} is a {kind} (to {member.linkname!r}); "
                        "dataset archives hold plain files only, so nothing was extracted")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"archive {archive}: member {member.name!r} is a special file")


def _check_zip_member(archive: Path, info: zipfile.ZipInfo) -> None:
    """Refuse unsafe zip members: bad names and symlink entries."""
    _check_name(archive, info.filename)
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DataError(f"archive {archive}: member {info.filename!r} is a symlink")


def _extract_tar(archive: Path, into: Path) -> None:
    """Check every member of a tar, then extract it with the ``data`` filter.

    The filter (PEP 706) exists from Python 3.11.4 (and in security updates of older
    releases); Debian 12's Python 3.11.2 lacks it. The pipeline's own member checks
    (:func:`_check_tar_member`: names, links, special files) run first in every case, so
    they are what protects an older Python, and the filter adds its own checks (permissions,
    ownership) where it exists.
    """
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            _check_tar_member(archive, member)
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, members=members, filter="data")
        else:  # pragma: no cover - Python < 3.11.4 without the PEP 706 backport
            tar.extractall(into, members=members)  # noqa: S202 - every member checked above


def _extract_zip(archive: Path, into: Path) -> None:
    """Check every member of a zip, then extract it."""
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            _check_zip_member(archive, info)
        zf.extractall(into, members=infos)


def _archive_kind(archive: Path) -> str:
    """``tar`` or ``zip`` from the file name; DataError for another format."""
    name = archive.name.lower()
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    if name.endswith(".zip"):
        return "zip"
    raise DataError(f"{archive}: unknown archive format (expected {_TAR_SUFFIXES} or .zip)")


def _remove(path: Path) -> None:
    """Delete a file, link or folder tree."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _replace(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``, replacing whatever ``dst`` is (file or folder)."""
    old = None
    if dst.exists() or dst.is_symlink():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        _remove(old)


def _clashes(src: Path, dst: Path) -> list[Path]:
    """The entries of ``dst`` that moving ``src`` into it entry by entry would overwrite."""
    found = []
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if entry.is_dir() and not entry.is_symlink() and target.is_dir() and not target.is_symlink():
            found += _clashes(entry, target)
        elif target.exists() or target.is_symlink():
            found.append(target)
    return found


def _merge(src: Path, dst: Path, archive: Path) -> None:
    """Move the folder ``src`` into the folder ``dst`` entry by entry, merging sub-folders;
    DataError, before anything is moved, when a file of ``src`` already exists in ``dst``
    (two archives both hold it)."""
    clashes = _clashes(src, dst)
    if clashes:
        raise DataError(f"{archive}: {clashes[0]} is already there from another archive "
                        f"({len(clashes)} file(s) in all); two archives of one dataset should not hold the same file")
    _move_into(src, dst)


def _move_into(src: Path, dst: Path) -> None:
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if entry.is_dir() and not entry.is_symlink() and target.is_dir() and not target.is_symlink():
            _move_into(entry, target)
        else:
            os.replace(entry, target)


def _files_under(folder: Path) -> list[Path]:
    """Every non-folder entry under ``folder``, relative to it, sorted; links not followed."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        names = filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]
        found += [(Path(dirpath) / n).relative_to(folder) for n in names]
    return sorted(found)


def safe_extract(archive: Path, target: Path, *, merge: bool = False) -> list[Path]:
    """Extract a tar (.tar, .tar.gz, .tgz, ...) or .zip archive into ``target`` safely.

    Every member is checked before anything is written (no absolute name, no ``..``
    escape, no link pointing outside, no device file). The archive is extracted into a
    temporary folder next to ``target``; once complete, each of its top-level entries is
    moved into ``target`` (replacing an entry of the same name), so a failure leaves
    nothing half-extracted. Other entries of ``target`` are kept.

    With ``merge``, a folder that ``target`` already holds is merged instead of replaced,
    and a file already there is an error: for datasets whose archives share one folder
    (ChestX-ray14's twelve ``images_NNN.tar.gz`` all extract into ``images/``).

    Returns:
        The extracted files (not folders) under ``target``, sorted.

    Raises:
        DataError: unsafe member (named), unknown format, or corrupt/truncated archive.
    """
    archive, target = Path(archive), Path(target)
    extract = _extract_zip if _archive_kind(archive) == "zip" else _extract_tar
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.extract-", dir=target.parent))
    try:
        try:
            extract(archive, staging)
        except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
            raise DataError(f"cannot extract {archive}: {err}; delete {archive} and rerun to "
                            "download it again") from err
        files = _files_under(staging)
        target.mkdir(exist_ok=True)
        if merge:
            _merge(staging, target, archive)
        else:
            for entry in sorted(staging.iterdir()):
                _replace(entry, target / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [target / rel for rel in files]


def archive_problem(archive: Path, name: str | None = None) -> str | None:
    """Read a whole archive, testing zip CRCs and the tar's compression stream; None if sound.

    ``name`` (the final file name) decides the format when ``archive`` is a ``.part`` file.
    """
    kind = _archive_kind(Path(name or archive.name))
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                bad = zf.testzip()
            return None if bad is None else f"member {bad!r} fails its CRC check"
        with tarfile.open(archive) as tar:
            for member in tar:
                if member.isfile():
                    stream = tar.extractfile(member)
                    while stream is not None and stream.read(1 << 22):
                        pass
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
        return f"not a complete {kind} archive ({err})"
    return None
