"""Tests of pcrl.datasets.download against a real HTTP server on 127.0.0.1.

The handler serves in-memory files, honours ``Range: bytes=N-`` (206 / 416), records
every request, and can cut the connection after N body bytes on a path's next request.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import socket
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pcrl.datasets.download import download_dataset, fetch
from pcrl.datasets.layout import scan_decathlon
from pcrl.datasets.registry import DATASETS, DatasetSpec, RemoteFile
from pcrl.errors import ChecksumError, ConfigError, DataError
from pcrl.outputs import MARKER

BODY = bytes(range(256)) * 40  # 10240 bytes
CUT = 3000


@dataclass
class ServerState:
    """What the test server serves and what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    cut_after: dict[str, int] = field(default_factory=dict)
    chunked_cut: dict[str, int] = field(default_factory=dict)
    honour_range: bool = True
    no_length: set[str] = field(default_factory=set)


class RangeHandler(BaseHTTPRequestHandler):
    """GET of in-memory files with Range support and optional connection cuts."""

    state: ServerState  # set on a subclass per server

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        range_header = self.headers.get("Range")
        self.state.requests.append((self.path, range_header))
        body = self.state.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if range_header and self.state.honour_range:
            start = int(range_header.removeprefix("bytes=").removesuffix("-"))
            if start >= len(body):
                self._headers(416, 0, {"Content-Range": f"bytes */{len(body)}"})
                return
            content_range = f"bytes {start}-{len(body) - 1}/{len(body)}"
            self._headers(206, len(body) - start, {"Content-Range": content_range})
        elif self.path in self.state.no_length:  # HTTP/1.0 style: the body ends at close
            self.send_response(200)
            self.end_headers()
        elif self.path in self.state.chunked_cut:
            self._send_cut_chunk(body, self.state.chunked_cut.pop(self.path))
            return
        else:
            self._headers(200, len(body), {})
        cut = self.state.cut_after.pop(self.path, None)
        self.wfile.write(body[start:] if cut is None else body[start : start + cut])
        self.close_connection = True

    def do_HEAD(self) -> None:  # noqa: N802 (http.server naming)
        """The length a GET would send (none for a no-length path), and no body."""
        self.state.requests.append((f"HEAD {self.path}", None))
        body = self.state.files.get(self.path)
        if body is None:
            self.send_error(404)
        elif self.path in self.state.no_length:
            self.send_response(200)
            self.end_headers()
        else:
            self._headers(200, len(body), {})

    def _send_cut_chunk(self, body: bytes, cut: int) -> None:
        """Announce the whole body as one chunk but send only ``cut`` bytes of it."""
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.write(f"{len(body):x}\r\n".encode() + body[:cut])
        self.close_connection = True

    def _headers(self, status: int, length: int, extra: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Keep the test output quiet."""


@dataclass
class Server:
    """A running test server: its state and base URL."""

    state: ServerState
    base: str

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A ThreadingHTTPServer on 127.0.0.1, port chosen by the OS, stopped after the test."""
    monkeypatch.setenv("no_proxy", "*")
    state = ServerState()
    handler = type("Handler", (RangeHandler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Server(state, f"http://127.0.0.1:{httpd.server_address[1]}")
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# --------------------------------------------------------------------------- archives

TINY_FILES = {
    "Task99_Tiny/dataset.json": json.dumps(
        {
            "training": [{"image": "./imagesTr/c_0.nii.gz", "label": "./labelsTr/c_0.nii.gz"}],
            "test": ["./imagesTs/c_1.nii.gz"],
        }
    ).encode(),
    "Task99_Tiny/imagesTr/c_0.nii.gz": b"image0",
    "Task99_Tiny/labelsTr/c_0.nii.gz": b"label0",
    "Task99_Tiny/imagesTs/c_1.nii.gz": b"image1",
}


def tar_bytes(files: dict[str, bytes], links: dict[str, tuple[bytes, str]] | None = None) -> bytes:
    """A tar.gz of regular ``files`` plus ``links``: name -> (tarfile type, link target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    return buffer.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def entries(folder: Path) -> set[str]:
    """Names directly inside ``folder`` (to prove nothing else was left there)."""
    return {p.name for p in folder.iterdir() if p.name not in (".locks", ".sources")}  # fetch locks, sources


# --------------------------------------------------------------------------- fetch


def test_fetch_downloads_and_verifies(server: Server, tmp_path: Path) -> None:
    server.state.files["/f.bin"] = BODY
    dest = tmp_path / "cache" / "f.bin"
    assert fetch(server.url("/f.bin"), dest, md5=md5_of(BODY), progress=False) == dest
    assert dest.read_bytes() == BODY
    assert entries(dest.parent) == {"f.bin"}
    assert server.state.requests == [("/f.bin", None)]


def test_second_call_makes_no_request(server: Server, tmp_path: Path) -> None:
    server.state.files["/f.bin"] = BODY
    sha = hashlib.sha256(BODY).hexdigest()
    for _ in range(2):
        fetch(server.url("/f.bin"), tmp_path / "f.bin", sha256=sha, size=len(BODY), progress=False)
    assert len(server.state.requests) == 1


def test_wrong_checksum_removes_download(server: Server, tmp_path: Path) -> None:
    server.state.files["/f.bin"] = BODY
    wrong = "0" * 32
    with pytest.raises(ChecksumError) as info:
        fetch(server.url("/f.bin"), tmp_path / "f.bin", md5=wrong, progress=False)
    message = str(info.value)
    assert server.url("/f.bin") in message and wrong in message and md5_of(BODY) in message
    assert entries(tmp_path) == set()


def test_wrong_size_is_a_checksum_error(server: Server, tmp_path: Path) -> None:
    server.state.files["/f.bin"] = BODY
    with pytest.raises(ChecksumError, match=f"expected 10 bytes, got {len(BODY)}"):
        fetch(server.url("/f.bin"), tmp_path / "f.bin", size=10, progress=False)


def test_cut_connection_then_resume(server: Server, tmp_path: Path) -> None:
    server.state.files["/f.bin"] = BODY
    server.state.cut_after["/f.bin"] = CUT
    dest = tmp_path / "f.bin"
    with pytest.raises(DataError, match=f"after {CUT} of {len(BODY)} bytes") as info:
        fetch(server.url("/f.bin"), dest, md5=md5_of(BODY), progress=False, chunk_size=1000)
    assert server.url("/f.bin") in str(info.value)
    part = tmp_path / "f.bin.part"
    assert part.read_bytes() == BODY[:CUT]
    assert not dest.exists()

    fetch(server.url("/f.bin"), dest, md5=md5_of(BODY), progress=False, chunk_size=1000)
    assert server.state.requests == [("/f.bin", None), ("/f.bin", f"bytes={CUT}-")]
    assert dest.read_bytes() == BODY
    assert not part.exists()


def test_incomplete_chunked_read_then_resume(server: Server, tmp_path: Path) -> None:
    server.state.files["/f.bin"] = BODY
    server.state.chunked_cut["/f.bin"] = CUT  # http.client raises IncompleteRead here
    dest = tmp_path / "f.bin"
    with pytest.raises(DataError, match=f"interrupted after {CUT} bytes.*IncompleteRead"):
        fetch(server.url("/f.bin"), dest, md5=md5_of(BODY), progress=False, chunk_size=1 << 16)
    assert (tmp_path / "f.bin.part").read_bytes() == BODY[:CUT]
    fetch(server.url("/f.bin"), dest, md5=md5_of(BODY), progress=False)
    assert server.state.requests[-1] == ("/f.bin", f"bytes={CUT}-")
    assert dest.read_bytes() == BODY


def test_server_ignoring_range_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    server.state.files["/f.bin"] = BODY
    server.state.honour_range = False
    write(tmp_path / "f.bin.part", b"stale" * 100)
    fetch(server.url("/f.bin"), tmp_path / "f.bin", md5=md5_of(BODY), progress=False)
    assert server.state.requests == [("/f.bin", "bytes=500-")]
    assert (tmp_path / "f.bin").read_bytes() == BODY


def test_part_longer_than_file_restarts_after_416(server: Server, tmp_path: Path) -> None:
    server.state.files["/f.bin"] = BODY
    write(tmp_path / "f.bin.part", BODY + b"junk")
    fetch(server.url("/f.bin"), tmp_path / "f.bin", progress=False)
    assert server.state.requests == [("/f.bin", f"bytes={len(BODY) + 4}-"), ("/f.bin", None)]
    assert (tmp_path / "f.bin").read_bytes() == BODY


def test_mismatching_dest_is_downloaded_once_more(server: Server, tmp_path: Path) -> None:
    server.state.files["/f.bin"] = BODY
    write(tmp_path / "f.bin", b"corrupt")
    fetch(server.url("/f.bin"), tmp_path / "f.bin", md5=md5_of(BODY), progress=False)
    assert (tmp_path / "f.bin").read_bytes() == BODY
    assert len(server.state.requests) == 1


def test_http_error_names_url_and_status(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="HTTP 404") as info:
        fetch(server.url("/missing.bin"), tmp_path / "m.bin", progress=False)
    assert server.url("/missing.bin") in str(info.value)
    assert entries(tmp_path) == set()


def test_unreachable_server_names_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("no_proxy", "*")
    with socket.socket() as sock:  # a port that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/f.bin"
    with pytest.raises(DataError, match=f"cannot download {url}"):
        fetch(url, tmp_path / "f.bin", progress=False, timeout=5)


# --------------------------------------------------------------------------- download_dataset


def tiny_spec(server: Server, md5: str) -> DatasetSpec:
    """A Decathlon-like dataset: one tar.gz holding Task99_Tiny/ and one plain CSV."""
    server.state.files["/Task99_Tiny.tar.gz"] = tar_bytes(TINY_FILES)
    server.state.files["/notes.csv"] = b"a,b\n1,2\n"
    files = (
        RemoteFile(server.url("/Task99_Tiny.tar.gz"), "Task99_Tiny.tar.gz", md5=md5, extract=True),
        RemoteFile(server.url("/notes.csv"), "notes.csv", md5=md5_of(b"a,b\n1,2\n")),
    )
    return DatasetSpec(
        name="tiny",
        title="Tiny",
        tasks=("lcs",),
        layout="decathlon",
        files=files,
        folder="Task99_Tiny",
        citation="none",
        homepage="none",
    )


def test_download_dataset_fetches_extracts_and_caches(server: Server, tmp_path: Path) -> None:
    spec = tiny_spec(server, md5_of(tar_bytes(TINY_FILES)))
    cache, target = tmp_path / "cache", tmp_path / "raw" / "tiny"
    for _ in range(2):
        root = download_dataset(spec, cache, target, progress=False)
        assert root == target / "Task99_Tiny"
        assert [c["id"] for c in scan_decathlon(root)["cases"]] == ["c_0", "c_1"]
        assert (target / "notes.csv").read_bytes() == b"a,b\n1,2\n"
        assert entries(target) == {"Task99_Tiny", "notes.csv", MARKER}
    assert len(server.state.requests) == 2  # the second run is served by the cache
    assert entries(cache) == {"Task99_Tiny.tar.gz", "notes.csv"}


def test_download_dataset_wrong_checksum_writes_nothing(server: Server, tmp_path: Path) -> None:
    spec = tiny_spec(server, "f" * 32)
    with pytest.raises(ChecksumError, match="f" * 32):
        download_dataset(spec, tmp_path / "cache", tmp_path / "raw" / "tiny", progress=False)
    assert not (tmp_path / "raw").exists()
    assert entries(tmp_path / "cache") == set()


def test_download_dataset_missing_folder(server: Server, tmp_path: Path) -> None:
    spec = tiny_spec(server, md5_of(tar_bytes(TINY_FILES)))
    spec = dataclasses.replace(spec, folder="Task42_Other")
    with pytest.raises(DataError, match="Task42_Other"):
        download_dataset(spec, tmp_path / "cache", tmp_path / "raw" / "tiny", progress=False)
    assert entries(tmp_path / "raw") == set()


def test_manual_dataset_is_refused_without_request(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="source: local"):
        download_dataset(DATASETS["chestxray14"], tmp_path / "cache", tmp_path / "raw")
    assert not (tmp_path / "cache").exists()


# --------------------------------------------------------------------------- short downloads


def test_no_length_and_no_checksum_is_refused(server: Server, tmp_path: Path) -> None:
    """A server that sends no Content-Length and closes early: nothing can tell the CSV is
    short, so it is refused instead of accepted truncated."""
    server.state.files["/candidates.csv"] = b"seriesuid,coordX\n" + b"1.2.3,4.5\n" * 200
    server.state.no_length.add("/candidates.csv")
    server.state.cut_after["/candidates.csv"] = 500
    dest = tmp_path / "cache" / "candidates.csv"
    with pytest.raises(ChecksumError, match="cannot be verified.*no Content-Length"):
        fetch(server.url("/candidates.csv"), dest, progress=False)
    assert entries(dest.parent) == set()


def test_no_length_with_a_size_is_checked(server: Server, tmp_path: Path) -> None:
    server.state.files["/f.bin"] = BODY
    server.state.no_length.add("/f.bin")
    server.state.cut_after["/f.bin"] = CUT
    with pytest.raises(ChecksumError, match=f"expected {len(BODY)} bytes, got {CUT}"):
        fetch(server.url("/f.bin"), tmp_path / "f.bin", size=len(BODY), progress=False)
    assert entries(tmp_path) == set()
    fetch(server.url("/f.bin"), tmp_path / "f.bin", size=len(BODY), progress=False)
    assert (tmp_path / "f.bin").read_bytes() == BODY


def _unverified_zip_spec(server: Server) -> DatasetSpec:
    files = {"Task99_Tiny/dataset.json": json.dumps({"training": [], "test": []}).encode(),
             "Task99_Tiny/big.bin": bytes(range(256)) * 400}
    server.state.files["/tiny.zip"] = zip_bytes(files)
    remote = RemoteFile(server.url("/tiny.zip"), "tiny.zip", extract=True)  # no checksum
    return DatasetSpec(name="tiny", title="Tiny", tasks=("lcs",), layout="decathlon",
                       files=(remote,), folder="Task99_Tiny", citation="-", homepage="-")


def _corrupt(data: bytes) -> bytes:
    """Flip bytes in the middle of a stored member: the zip's CRC no longer matches."""
    body = bytearray(data)
    middle = len(body) // 2
    body[middle : middle + 50] = bytes(b ^ 0xFF for b in body[middle : middle + 50])
    return bytes(body)


def test_corrupt_archive_without_checksum_is_not_cached(server: Server, tmp_path: Path) -> None:
    spec = _unverified_zip_spec(server)
    server.state.files["/tiny.zip"] = _corrupt(server.state.files["/tiny.zip"])
    with pytest.raises(ChecksumError, match="tiny.zip.*fails its CRC check"):
        download_dataset(spec, tmp_path / "cache", tmp_path / "raw", progress=False)
    assert entries(tmp_path / "cache") == set()


def test_truncated_archive_without_length_is_not_cached(server: Server, tmp_path: Path) -> None:
    spec = _unverified_zip_spec(server)
    server.state.no_length.add("/tiny.zip")
    server.state.cut_after["/tiny.zip"] = len(server.state.files["/tiny.zip"]) // 2
    with pytest.raises(ChecksumError):
        download_dataset(spec, tmp_path / "cache", tmp_path / "raw", progress=False)
    assert entries(tmp_path / "cache") == set()


def test_corrupt_cached_archive_is_replaced(server: Server, tmp_path: Path) -> None:
    spec = _unverified_zip_spec(server)
    good = server.state.files["/tiny.zip"]
    cache = tmp_path / "cache"
    cache.mkdir()
    write(cache / "tiny.zip", good[: len(good) // 2])  # e.g. left by an older version
    download_dataset(spec, cache, tmp_path / "raw", progress=False)
    assert (cache / "tiny.zip").read_bytes() == good
    assert len(server.state.requests) == 1


def test_chestxray14_from_a_mirror_merges_its_twelve_archives(server: Server, tmp_path: Path) -> None:
    """The NIH release has no stable links, so a configured mirror makes it downloadable; its
    12 archives all extract into images/, and one download shard fetches them all (the CSV and
    the lists describe every image); the other shard has nothing to fetch."""
    from pcrl.phantom import generate_chestxray14
    from pcrl.stages.download import run_download

    source = tmp_path / "published"
    generate_chestxray14(source, patients=10, images_per_patient=(2, 2), size=(64, 64), archives=12)
    for spec_file in DATASETS["chestxray14"].files:
        server.state.files["/mirror/" + spec_file.filename] = (source / spec_file.filename).read_bytes()
    data = {"source": "download", "mirror": server.url("/mirror"), "cache_dir": str(tmp_path / "cache")}
    for k in range(2):
        run_download("chestxray14", data, out=tmp_path / "raw" / str(k), shard=(k, 2), progress=False)
    first = json.loads((tmp_path / "raw" / "0" / "manifest.json").read_text())
    second = json.loads((tmp_path / "raw" / "1" / "manifest.json").read_text())
    assert second["cases"] == []
    names = sorted(p.name for p in (source / "images").iterdir())
    assert [Path(c["image"]).name for c in first["cases"]] == names  # all 20 images, from 12 archives
    root = tmp_path / "raw" / "0" / first["root"]
    for name in names:
        assert (root / "images" / name).read_bytes() == (source / "images" / name).read_bytes()
    assert {path for path, _ in server.state.requests} >= {"/mirror/images_012.tar.gz", "/mirror/test_list.txt"}


# --------------------------------------------------------------------------- the cache's sources


CANDIDATES = b"seriesuid,coordX,coordY,coordZ,class\n" + b"".join(f"1.2.{i},1.0,2.0,3.0,0\n".encode()
                                                                   for i in range(20))


def _csv_spec(server: Server, path: str) -> DatasetSpec:
    """One plain CSV without a published checksum or size, like LUNA16's candidates.csv."""
    remote = RemoteFile(server.url(path), "candidates.csv")
    return DatasetSpec(name="tiny", title="Tiny", tasks=("ncc",), layout="luna16", files=(remote,),
                       folder=None, citation="-", homepage="-")


def _gets(server: Server) -> list[str]:
    return [path for path, _ in server.state.requests if not path.startswith("HEAD ")]


def test_a_cached_file_from_another_mirror_is_fetched_again(server: Server, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """The mirror changed: the old mirror's copy (3 rows short) is not reused by its name."""
    short = CANDIDATES[: CANDIDATES.index(b"1.2.17,")]
    server.state.files["/old/candidates.csv"] = short
    server.state.files["/new/candidates.csv"] = CANDIDATES
    cache = tmp_path / "cache"
    download_dataset(_csv_spec(server, "/old/candidates.csv"), cache, tmp_path / "raw0", progress=False)
    assert (cache / "candidates.csv").read_bytes() == short
    root = download_dataset(_csv_spec(server, "/new/candidates.csv"), cache, tmp_path / "raw1", progress=False)
    assert (root / "candidates.csv").read_bytes() == CANDIDATES
    assert (cache / "candidates.csv").read_bytes() == CANDIDATES
    assert _gets(server) == ["/old/candidates.csv", "/new/candidates.csv"]
    said = [r.getMessage() for r in caplog.records if "not reused" in r.getMessage()]
    assert said == [f"cached {cache / 'candidates.csv'} is not reused (it came from "
                    f"{server.url('/old/candidates.csv')}, not {server.url('/new/candidates.csv')}): "
                    f"downloading it from {server.url('/new/candidates.csv')}"]
    assert (tmp_path / "raw0" / "candidates.csv").read_bytes() == short  # the earlier output is untouched


def test_a_cached_file_without_a_record_of_its_source_is_fetched_again(server: Server, tmp_path: Path) -> None:
    server.state.files["/candidates.csv"] = CANDIDATES
    cache = tmp_path / "cache"
    cache.mkdir()
    write(cache / "candidates.csv", CANDIDATES[:-40])  # put there by hand, or by an older version
    root = download_dataset(_csv_spec(server, "/candidates.csv"), cache, tmp_path / "raw", progress=False)
    assert (root / "candidates.csv").read_bytes() == CANDIDATES
    assert _gets(server) == ["/candidates.csv"]


def test_a_cached_file_its_server_now_serves_longer_is_fetched_again(server: Server, tmp_path: Path) -> None:
    """Same URL, but the file grew on the server: its announced length differs from the copy's."""
    server.state.files["/candidates.csv"] = CANDIDATES[:-60]
    cache = tmp_path / "cache"
    download_dataset(_csv_spec(server, "/candidates.csv"), cache, tmp_path / "raw0", progress=False)
    server.state.files["/candidates.csv"] = CANDIDATES
    root = download_dataset(_csv_spec(server, "/candidates.csv"), cache, tmp_path / "raw1", progress=False)
    assert (root / "candidates.csv").read_bytes() == CANDIDATES
    assert _gets(server) == ["/candidates.csv", "/candidates.csv"]


def test_a_cached_file_changed_after_its_download_is_fetched_again(server: Server, tmp_path: Path) -> None:
    """Its size and time differ from its record (here a registered md5 would catch it too,
    but the record is read first: no digest of a large file on every reuse)."""
    server.state.files["/candidates.csv"] = CANDIDATES
    server.state.no_length.add("/candidates.csv")  # HEAD tells nothing: the record must
    spec = dataclasses.replace(_csv_spec(server, "/candidates.csv"),
                               files=(RemoteFile(server.url("/candidates.csv"), "candidates.csv",
                                                 md5=md5_of(CANDIDATES)),))
    cache = tmp_path / "cache"
    download_dataset(spec, cache, tmp_path / "raw0", progress=False)
    write(cache / "candidates.csv", CANDIDATES[:-40])
    root = download_dataset(spec, cache, tmp_path / "raw1", progress=False)
    assert (root / "candidates.csv").read_bytes() == CANDIDATES
    assert _gets(server) == ["/candidates.csv", "/candidates.csv"]


def test_an_unchanged_cached_file_of_the_same_source_is_reused(server: Server, tmp_path: Path) -> None:
    server.state.files["/candidates.csv"] = CANDIDATES
    cache = tmp_path / "cache"
    for k in range(2):
        root = download_dataset(_csv_spec(server, "/candidates.csv"), cache, tmp_path / f"raw{k}", progress=False)
        assert (root / "candidates.csv").read_bytes() == CANDIDATES
    assert server.state.requests == [("/candidates.csv", None), ("HEAD /candidates.csv", None)]


def test_a_partial_download_from_another_mirror_is_not_resumed(server: Server, tmp_path: Path) -> None:
    """The old mirror's download was cut; the new mirror's bytes must not be appended to it."""
    old = CANDIDATES.replace(b"1.0,2.0", b"9.0,9.0")
    server.state.files["/old/candidates.csv"] = old
    server.state.files["/new/candidates.csv"] = CANDIDATES
    server.state.cut_after["/old/candidates.csv"] = 200
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="interrupted|ended after"):
        download_dataset(_csv_spec(server, "/old/candidates.csv"), cache, tmp_path / "raw0", progress=False)
    assert (cache / "candidates.csv.part").read_bytes() == old[:200]
    root = download_dataset(_csv_spec(server, "/new/candidates.csv"), cache, tmp_path / "raw1", progress=False)
    assert (root / "candidates.csv").read_bytes() == CANDIDATES
    assert server.state.requests[-1] == ("/new/candidates.csv", None)  # from byte 0, no Range
    assert entries(cache) == {"candidates.csv"}
