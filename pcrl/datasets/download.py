"""Resumable, verified downloads of a registered dataset.

- :func:`fetch` downloads one URL to a ``.part`` file, resumes it with an HTTP ``Range``
  request (RFC 9110, section 14) after an interruption, verifies the published checksum,
  size or Content-Length (and any further check, e.g. an archive's CRCs), and only then
  renames it to its final name.
- :func:`download_dataset` fetches every file of a registered dataset into a cache folder
  (a second run downloads nothing) and unpacks them with
  :func:`pcrl.datasets.archives.safe_extract`.
"""

from __future__ import annotations

import fcntl
import http.client
import logging
import os
import re
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from pcrl.atomic import atomic_dir
from pcrl.datasets.archives import archive_problem, safe_extract
from pcrl.datasets.cache import claim_part, forget, record_source, release_part, stale_reason
from pcrl.hashing import file_digest
from pcrl.datasets.registry import DatasetSpec, RemoteFile
from pcrl.errors import ChecksumError, ConfigError, DataError

logger = logging.getLogger(__name__)

_USER_AGENT = "pcrl-downloader"
_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_NETWORK_ERRORS = (OSError, http.client.HTTPException)  # URLError, timeouts, IncompleteRead


# --------------------------------------------------------------------------- checksums


def _mismatch(path: Path, md5: str | None, sha256: str | None, size: int | None) -> str | None:
    """Describe how ``path`` differs from the expected size/checksums, or None if it matches."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return f"size mismatch: expected {size} bytes, got {actual_size}"
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected is not None:
            actual = file_digest(path, algorithm)
            if actual != expected.lower():
                return f"{algorithm} mismatch: expected {expected.lower()}, got {actual}"
    return None


# --------------------------------------------------------------------------- fetch


def _part_path(dest: Path) -> Path:
    """The partial-download file of ``dest`` (``name.ext.part``)."""
    return dest.with_suffix(dest.suffix + ".part")


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse | None:
    """Open ``url`` from byte ``offset``; None when the server rejects the range (HTTP 416).

    Raises:
        DataError: HTTP error status, unreachable server or malformed URL.
    """
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and offset:
            return None
        raise DataError(f"cannot download {url}: HTTP {err.code} {err.reason}") from err
    except (*_NETWORK_ERRORS, ValueError) as err:
        raise DataError(f"cannot download {url}: {err}") from err


def _resume_offset(response: http.client.HTTPResponse, offset: int, url: str, part: Path) -> int:
    """Byte offset the response body starts at: ``offset`` for a matching 206, else 0.

    Raises:
        DataError: the server answered 206 for another range than asked (the .part is removed).
    """
    if getattr(response, "status", None) != 206:
        return 0
    match = _CONTENT_RANGE_RE.fullmatch(response.headers.get("Content-Range", "").strip())
    if match is None or int(match.group(1)) != offset:
        part.unlink(missing_ok=True)
        raise DataError(
            f"{url}: server answered range {response.headers.get('Content-Range')!r} to "
            f"'bytes={offset}-'; the partial download was removed, rerun to start over"
        )
    return offset


def _content_length(response: http.client.HTTPResponse) -> int | None:
    """The response's Content-Length, or None when absent or malformed."""
    value = response.headers.get("Content-Length")
    return int(value) if value is not None and value.strip().isdigit() else None


def _progress_bar(total: int | None, initial: int, desc: str, *, enabled: bool) -> tqdm:
    """A byte-counting tqdm bar on stderr (disabled when ``enabled`` is False)."""
    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        file=sys.stderr,
        disable=not enabled,
        leave=False,
    )


def _stream(
    response: http.client.HTTPResponse, fh: BinaryIO, bar: tqdm, chunk_size: int
) -> None:
    """Copy the response body to ``fh`` chunk by chunk, advancing the progress bar.

    ``read1`` hands over every byte received before a failure: ``read`` of a chunked body
    drops the bytes of the current chunk when it raises ``IncompleteRead``.
    """
    while chunk := response.read1(chunk_size):
        fh.write(chunk)
        bar.update(len(chunk))


def _download_part(
    url: str, part: Path, *, progress: bool, chunk_size: int, timeout: float
) -> int | None:
    """Download ``url`` into ``part``, resuming from its current length when the server can.

    Returns:
        The total length the server announced (Content-Length), or None when it sent none.

    Raises:
        DataError: network failure or short read; the .part is kept so a rerun resumes.
    """
    offset = part.stat().st_size if part.exists() else 0
    response = _open(url, offset, timeout)
    if response is None:  # the .part is not a prefix the server can extend: start over
        part.unlink()
        offset = 0
        response = _open(url, 0, timeout)
    if response is None:  # a 416 to a request without a range: the server is broken
        raise DataError(f"cannot download {url}: the server refused the whole file (HTTP 416)")
    with response:
        offset = _resume_offset(response, offset, url, part)
        length = _content_length(response)
        total = None if length is None else offset + length
        bar = _progress_bar(total, offset, part.name, enabled=progress)
        try:
            with part.open("ab" if offset else "wb") as fh, bar:
                _stream(response, fh, bar, chunk_size)
        except _NETWORK_ERRORS as err:
            raise DataError(
                f"download of {url} interrupted after {part.stat().st_size} bytes ({err!r}); "
                f"rerun to resume from {part}"
            ) from err
    received = part.stat().st_size
    if total is not None and received != total:
        raise DataError(
            f"download of {url} ended after {received} of {total} bytes (connection closed); "
            f"rerun to resume from {part}"
        )
    return total


def fetch(
    url: str,
    dest: Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    progress: bool = True,
    chunk_size: int = 1 << 20,
    timeout: float = 60,
    check: Callable[[Path], str | None] | None = None,
) -> Path:
    """Download ``url`` to ``dest``, resumably, and verify it before it gets its final name.

    The body goes to ``dest.part``; when that file exists (an earlier call was
    interrupted) the request asks for the rest with ``Range: bytes=<len>-`` and appends if
    the server answers 206 (it restarts from zero on a 200). Once complete, the size and
    checksums are verified and the .part is renamed to ``dest``. When ``dest`` already
    exists and matches, nothing is requested; when it exists but does not match, it is
    deleted and downloaded once more.

    Args:
        url: http(s) URL.
        dest: Final file.
        md5: Expected md5 hex digest, or None.
        sha256: Expected sha256 hex digest, or None.
        size: Expected size in bytes, or None.
        progress: Show a tqdm progress bar on stderr.
        chunk_size: Bytes read per chunk.
        timeout: Socket timeout in seconds.
        check: Further verification of the complete file (e.g. an archive's CRCs): returns
            what is wrong, or None; run before the file gets its final name, and on a
            cached file before it is reused.

    Returns:
        ``dest``.

    Raises:
        DataError: network failure or connection cut (the .part is kept: rerun to resume).
        ChecksumError: the complete download does not match, or nothing could verify its
            length (no checksum, no published size, no Content-Length); the .part is removed.
    """
    dest = Path(dest)
    if dest.exists():
        problem = _mismatch(dest, md5, sha256, size) or (check(dest) if check else None)
        if problem is None:
            return dest
        logger.warning("cached %s is corrupt (%s); replacing it with a new download from %s",
                       dest, problem, url)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    total = _download_part(url, part, progress=progress, chunk_size=chunk_size, timeout=timeout)
    if total is None and md5 is None and sha256 is None and size is None:
        part.unlink()
        raise ChecksumError(
            f"download of {url} cannot be verified: no checksum or size is registered for it "
            f"and the server sent no Content-Length, so a download cut short would pass; "
            f"removed {part}. Register its size or checksum, or use data.source: local"
        )
    problem = _mismatch(part, md5, sha256, size) or (check(part) if check else None)
    if problem is not None:
        part.unlink()
        raise ChecksumError(f"download of {url} is corrupt, {problem}; removed {part}")
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------- datasets


def _fetch_remote(remote: RemoteFile, cache_dir: Path, *, progress: bool) -> Path:
    """Fetch one registered file into ``cache_dir`` under its registered file name.

    A cached copy is reused only when it came from the same URL and is unchanged since,
    and, without a published checksum or size, has the length the server announces now
    (:mod:`pcrl.datasets.cache`); otherwise it is fetched again.

    An archive without a published checksum is read whole (CRCs tested) before it is
    cached, and again before a cached copy is reused. Download shards running at once
    share the cache (every LUNA16 shard needs its CSVs): an exclusive lock on
    ``.locks/<file>.lock`` lets one fetch a file while the others wait, then reuse it.
    """
    verified = remote.md5 is not None or remote.sha256 is not None
    check = None
    if remote.extract and not verified:
        def check(path: Path) -> str | None:
            return archive_problem(path, remote.filename)
    locks = cache_dir / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{remote.filename}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = cache_dir / remote.filename
        if cached.exists() and (reason := stale_reason(remote, cached)) is not None:
            logger.warning("cached %s is not reused (%s): downloading it from %s", cached, reason, remote.url)
            forget(cached)
        claim_part(remote, _part_path(cached))
        fetch(remote.url, cached, md5=remote.md5, sha256=remote.sha256, size=remote.size,
              progress=progress, check=check)
        release_part(_part_path(cached))
        record_source(remote, cached)
        return cached


def _install(remote: RemoteFile, cached: Path, folder: Path) -> None:
    """Extract an archive into ``folder`` (merging the folders archives share) or copy a
    plain file there. ``folder`` is a fresh staging folder, so nothing stale is merged."""
    if remote.extract:
        safe_extract(cached, folder, merge=True)
    else:
        shutil.copyfile(cached, folder / remote.filename)


def download_dataset(
    spec: DatasetSpec, cache_dir: Path, target: Path, *, progress: bool = True
) -> Path:
    """Download, verify and unpack every file of ``spec`` into ``target``.

    Downloads are kept in ``cache_dir`` (a second run requests nothing). ``target`` is
    built in a temporary folder and replaces any previous ``target`` only when complete.

    Returns:
        The folder holding the native layout: ``target / spec.folder`` or ``target``.

    Raises:
        ConfigError: the dataset cannot be downloaded automatically (message says what to do).
        DataError, ChecksumError: see :func:`fetch` and :func:`safe_extract`; also when the
            archives do not contain ``spec.folder``.
    """
    if not spec.downloadable:
        raise ConfigError(f"dataset {spec.name} cannot be downloaded automatically: {spec.manual}")
    cached = [_fetch_remote(f, Path(cache_dir), progress=progress) for f in spec.files]
    target = Path(target)
    with atomic_dir(target) as staging:
        for remote, path in zip(spec.files, cached, strict=True):
            _install(remote, path, staging)
        if spec.folder is not None and not (staging / spec.folder).is_dir():
            names = ", ".join(f.filename for f in spec.files)
            raise DataError(f"dataset {spec.name}: {names} hold no folder {spec.folder!r}")
    return target / spec.folder if spec.folder is not None else target
