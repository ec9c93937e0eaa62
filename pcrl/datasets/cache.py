"""What a cached download came from: a record beside the cache, checked before reuse.

A file in ``data.cache_dir`` is reused only when the record written with it
(``.sources/<file>.json``: its URL, size and modification time) names the same URL it
would be fetched from now, and the file still has that size and time. A file without a
published checksum or size is also compared with the length the server announces now
(``HEAD``), so a file that changed on its server, or came from another mirror, is fetched
again instead of being reused by its name alone. A partial download (``.part``) is
resumed only from the URL it was started from.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from pathlib import Path

from pcrl.atomic import write_json
from pcrl.datasets.registry import RemoteFile

__all__ = ["claim_part", "forget", "record_source", "release_part", "stale_reason"]

log = logging.getLogger(__name__)

#: The folder of the records, inside the cache folder.
SOURCES = ".sources"


def _record_path(cached: Path) -> Path:
    return cached.parent / SOURCES / f"{cached.name}.json"


def record_source(remote: RemoteFile, cached: Path) -> None:
    """Record that ``cached`` (complete and verified) was fetched from ``remote.url``."""
    stat = cached.stat()
    write_json(_record_path(cached), {"url": remote.url, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})


def forget(cached: Path) -> None:
    """Remove a cached file and its record."""
    cached.unlink(missing_ok=True)
    _record_path(cached).unlink(missing_ok=True)


def server_length(url: str, timeout: float = 30) -> int | None:
    """The Content-Length a HEAD request of ``url`` announces; None when the server is
    unreachable, refuses HEAD or announces none (the cached file is then not compared)."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "pcrl-downloader"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            value = response.headers.get("Content-Length")
    except (OSError, ValueError) as exc:
        log.warning("cannot ask %s for its length (%s): the cached copy is checked by its record only", url, exc)
        return None
    return int(value) if value is not None and value.strip().isdigit() else None


def stale_reason(remote: RemoteFile, cached: Path) -> str | None:
    """Why ``cached`` must not be reused for ``remote`` (None: it may be, after the
    registered checksum or size is verified as before)."""
    try:
        record = json.loads(_record_path(cached).read_text())
        url, size, mtime = record["url"], int(record["size"]), int(record["mtime_ns"])
    except (OSError, ValueError, KeyError, TypeError):
        return "no record of the source it came from"
    if url != remote.url:
        return f"it came from {url}, not {remote.url}"
    stat = cached.stat()
    if (stat.st_size, stat.st_mtime_ns) != (size, mtime):
        return f"it changed since it was downloaded ({stat.st_size} bytes, recorded {size})"
    if remote.md5 is None and remote.sha256 is None and remote.size is None:
        length = server_length(remote.url)
        if length is not None and length != size:
            return f"{remote.url} now serves {length} bytes, the cached copy has {size}"
    return None


def claim_part(remote: RemoteFile, part: Path) -> None:
    """Let the partial download ``part`` be resumed only from the URL it was started from:
    one from another URL (or of unknown origin) is removed; then record ``remote.url``."""
    record = _record_path(part)
    if part.exists():
        try:
            url = json.loads(record.read_text())["url"]
        except (OSError, ValueError, KeyError, TypeError):
            url = None
        if url != remote.url:
            log.warning("partial download %s came from %s, not %s: starting over", part,
                        url or "an unknown source", remote.url)
            part.unlink()
    write_json(record, {"url": remote.url})


def release_part(part: Path) -> None:
    """Forget the origin of a partial download once it is complete (renamed) or removed."""
    _record_path(part).unlink(missing_ok=True)
