"""Zipped routes read over HTTP with range requests (issue 12), against a real server on 127.0.0.1 started
here (directory listings, `Range: bytes=a-b`, kept-alive connections), and through an fsspec filesystem."""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from lead_stream.cache.shard import ShardConfig, write_shards
from lead_stream.core.errors import LeadFormatError
from lead_stream.index import IndexConfig, build_index
from lead_stream.sources import discover_routes
from lead_stream.synthetic import zip_routes

SHARDS = ShardConfig(workers=1, max_samples_per_shard=16, progress=False)  # = conftest.sharded_root's
_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class _Traffic:
    """What the server sent: body bytes per path, and requests by (method, ranged?)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bytes: Counter[str] = Counter()
        self.requests: Counter[tuple[str, bool]] = Counter()

    def add(self, path: str, method: str, ranged: bool, size: int) -> None:
        with self.lock:
            self.bytes[path] += size
            self.requests[method, ranged] += 1


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP/1.1 keep-alive, directory listings and single byte ranges."""

    protocol_version = "HTTP/1.1"
    traffic: _Traffic
    ranges = True

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        header = self.headers.get("Range")
        if not path.is_file() or header is None or not self.ranges:
            if path.is_file():
                self.traffic.add(self.path, "GET", False, path.stat().st_size)
            return super().do_GET()
        match = _RANGE.match(header)
        size = path.stat().st_size
        start, end = int(match.group(1)), min(int(match.group(2) or size - 1), size - 1)
        with open(path, "rb") as handle:
            handle.seek(start)
            body = handle.read(end - start + 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", f'"{path.stat().st_mtime_ns}"')
        self.end_headers()
        self.wfile.write(body)
        self.traffic.add(self.path, "GET", True, len(body))

    def do_HEAD(self) -> None:
        self.traffic.add(self.path, "HEAD", False, 0)
        super().do_HEAD()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client closing a connection it no longer needs (the no-range test) is expected


@functools.cache
def _handler(directory: str, traffic: _Traffic, ranges: bool) -> type:
    return type("Handler", (_Handler,), {"traffic": traffic, "ranges": ranges, "__init__": _init(directory)})


def _init(directory: str):
    def __init__(self, *args, **kwargs):
        http.server.SimpleHTTPRequestHandler.__init__(self, *args, directory=directory, **kwargs)

    return __init__


@pytest.fixture(scope="module")
def served(lead_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, _Traffic, Path]]:
    """LEAD's released layout (`<Scenario>/<route>.zip`, as the model hub serves it) on http://127.0.0.1."""
    root = tmp_path_factory.mktemp("served") / "carla_leaderboard2"
    shutil.copytree(lead_root, root, ignore=shutil.ignore_patterns("index", "cache"))
    zip_routes(root, discover_routes(root))
    traffic = _Traffic()
    server = _Server(("127.0.0.1", 0), _handler(str(root / "zip"), traffic, True))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", traffic, root / "zip"
    server.shutdown()
    server.server_close()


def test_index_over_http_reads_ranges_and_never_a_whole_route_12(
    served: tuple[str, _Traffic, Path], indexed_root: Path, tmp_path: Path
) -> None:
    url, traffic, zips = served
    out = tmp_path / "carla_leaderboard2"
    before = Counter(traffic.bytes)
    summary = build_index(out, config=IndexConfig(workers=1, progress=False, sources=(url,)))
    assert summary.num_routes == len(discover_routes(indexed_root)) and not summary.failures
    assert_frame_equal(
        pl.read_parquet(out / "index" / "frames.parquet"),
        pl.read_parquet(indexed_root / "index" / "frames.parquet"),
    )
    routes = pl.read_parquet(out / "index" / "routes.parquet")
    assert all(source.startswith(url) and ".zip!" in source for source in routes["source"].to_list())
    assert traffic.requests["GET", False] == 0  # every zip byte came through a range request
    for zip_file in zips.rglob("*.zip"):
        path = "/" + zip_file.relative_to(zips).as_posix()
        read = traffic.bytes[path] - before[path]
        assert 0 < read < zip_file.stat().st_size / 4, (path, read)  # metas and results.json, not the sensors
    assert build_index(out, config=IndexConfig(workers=1, progress=False, sources=(url,))).num_reread == 0


def test_shards_from_http_zips_equal_the_extracted_trees_12(
    served: tuple[str, _Traffic, Path], sharded_root: Path, tmp_path: Path
) -> None:
    url, traffic, _ = served
    out = tmp_path / "carla_leaderboard2"
    build_index(out, config=IndexConfig(workers=1, progress=False, sources=(url,)))
    summary = write_shards(out, config=SHARDS)
    (expected,) = (sharded_root / "cache").glob("*/manifest.json")
    tars = sorted(p.name for p in expected.parent.glob("shard-*.tar"))
    assert summary.cache_dir.name == expected.parent.name and tars
    for name in tars:
        assert (summary.cache_dir / name).read_bytes() == (expected.parent / name).read_bytes(), name
    assert traffic.requests["GET", False] == 0


def test_a_server_without_range_requests_is_a_named_error_12(lead_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "carla_leaderboard2"
    shutil.copytree(lead_root, root, ignore=shutil.ignore_patterns("index", "cache"))
    (first, *_) = zip_routes(root, discover_routes(root)[:1])
    traffic = _Traffic()
    server = _Server(("127.0.0.1", 0), _handler(str(root / "zip"), traffic, False))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        message = rf"{first.name}: server answered 200 OK to a range request"
        with pytest.raises(LeadFormatError, match=message):
            build_index(
                tmp_path / "out", config=IndexConfig(workers=1, progress=False, strict=True, sources=(url,))
            )
        assert traffic.requests["GET", False] >= 1  # whole files were offered; the reader closed instead
    finally:
        server.shutdown()
        server.server_close()


def test_an_fsspec_filesystem_serves_zips_by_range_12(
    lead_root: Path, indexed_root: Path, tmp_path: Path
) -> None:
    fsspec = pytest.importorskip("fsspec")
    root = tmp_path / "carla_leaderboard2"
    shutil.copytree(lead_root, root, ignore=shutil.ignore_patterns("index", "cache"))
    zips = zip_routes(root, discover_routes(root))
    memory = fsspec.filesystem("memory")
    for zip_file in zips:
        memory.pipe(f"/lead12/{zip_file.parent.name}/{zip_file.name}", zip_file.read_bytes())
    try:
        out = tmp_path / "out"
        build_index(out, config=IndexConfig(workers=1, progress=False, sources=("memory://lead12",)))
        assert_frame_equal(
            pl.read_parquet(out / "index" / "frames.parquet"),
            pl.read_parquet(indexed_root / "index" / "frames.parquet"),
        )
        assert pl.read_parquet(out / "index" / "routes.parquet")["source"][0].startswith("memory://lead12/")
    finally:
        memory.rm("/lead12", recursive=True)
