"""A file given by path or URL → random-access byte ranges (`ByteSource`), and a remote folder → its zips.

`open_byte_source(location)` returns a `LocalFile` (`os.pread` on one descriptor), an `HttpFile` (HTTP range
requests on one kept-alive connection; a server that ignores `Range` is an error, never a whole download)
or an `FsspecFile` (any fsspec filesystem with ranged `cat_file`, e.g. `hf://`, `s3://`, `memory://`).
`find_remote_zips(url)` lists the `*.zip` files below a remote folder: an HTML directory listing crawled
link by link for http(s), `fs.find` for fsspec. Nothing is written and nothing is cached on disk.
"""

from __future__ import annotations

import http.client
import os
import urllib.parse
from abc import ABC, abstractmethod
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from lead_stream.core.errors import LeadFormatError

HTTP_TIMEOUT_S = 60.0  # per request
MAX_LISTING_DEPTH = 6  # folder levels followed below a remote root when looking for zips
MAX_LISTING_PAGES = 100_000  # listing pages fetched at most (a guard against link loops)


def is_url(location: str | os.PathLike) -> bool:
    """Whether `location` names a remote file or folder (`scheme://...`, not a local path)."""
    return isinstance(location, str) and "://" in location and not location.startswith("file://")


class ByteSource(ABC):
    """Random read access to one file: `read_range(start, end)` returns bytes [start, end)."""

    location: str  # path or URL, as named in messages
    remote: bool = False  # each read is a network round trip (the zip reader then reads ahead)

    @abstractmethod
    def size(self) -> int:
        """File size in bytes."""

    @abstractmethod
    def read_range(self, start: int, end: int) -> bytes:
        """Bytes [start, end), shorter only past the end of the file."""

    @abstractmethod
    def stamp(self) -> str:
        """Cheap change stamp (size and mtime, or size and ETag): equal stamps → unchanged file."""

    def close(self) -> None:  # noqa: B027 - most sources hold nothing to release
        """Release the descriptor or connection (reads reopen it)."""


class LocalFile(ByteSource):
    """A local file read with `os.pread` (one descriptor, opened on first use)."""

    def __init__(self, path: Path | str) -> None:
        self.location = str(path)
        self._fd: int | None = None
        self._stat: os.stat_result | None = None

    def _open(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.location, os.O_RDONLY)
            except FileNotFoundError:
                raise LeadFormatError(self.location, "file is missing") from None
            self._stat = os.fstat(self._fd)
        return self._fd

    def size(self) -> int:
        self._open()
        assert self._stat is not None
        return self._stat.st_size

    def read_range(self, start: int, end: int) -> bytes:
        fd = self._open()
        chunks, pos = [], start
        while pos < end:
            chunk = os.pread(fd, end - pos, pos)
            if not chunk:
                break
            chunks.append(chunk)
            pos += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def stamp(self) -> str:
        return local_stamp(self.location)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def local_stamp(path: str | Path) -> str:
    """`size:mtime_ns` of a local file (no open)."""
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


class HttpFile(ByteSource):
    """A file on an http(s) server, read with `Range: bytes=a-b` requests over one kept-alive connection."""

    remote = True

    def __init__(self, url: str) -> None:
        self.location = url
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise LeadFormatError(url, "expected an http(s) URL")
        self._parts = parts
        self._target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        self._conn: http.client.HTTPConnection | None = None
        self._pid = os.getpid()
        self._size: int | None = None
        self._validator = ""

    def _connection(self) -> http.client.HTTPConnection:
        if self._pid != os.getpid():  # a forked worker never shares its parent's socket
            self._conn, self._pid = None, os.getpid()
        if self._conn is None:
            kind = (
                http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
            )
            self._conn = kind(self._parts.netloc, timeout=HTTP_TIMEOUT_S)
        return self._conn

    def _request(self, method: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        for attempt in (0, 1):  # a kept-alive connection the server closed is reopened once
            conn = self._connection()
            try:
                conn.request(method, self._target, headers=headers)
                return conn.getresponse()
            except (http.client.HTTPException, ConnectionError, TimeoutError) as error:
                self.close()
                if attempt:
                    raise LeadFormatError(self.location, f"HTTP {method} failed ({error})") from None
        raise AssertionError("unreachable")

    def _remember(self, response: http.client.HTTPResponse) -> None:
        self._validator = response.getheader("ETag") or response.getheader("Last-Modified") or ""

    def size(self) -> int:
        if self._size is None:
            response = self._request("HEAD", {})
            response.read()
            if response.status != 200:
                raise LeadFormatError(
                    self.location, f"HTTP HEAD answered {response.status} {response.reason}"
                )
            length = response.getheader("Content-Length")
            if length is None:
                raise LeadFormatError(self.location, "HTTP HEAD gave no Content-Length")
            self._size = int(length)
            self._remember(response)
        return self._size

    def read_range(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        response = self._request("GET", {"Range": f"bytes={start}-{end - 1}"})
        if response.status == 416:
            response.read()
            return b""
        if response.status != 206:
            self.close()  # never read a body the server sends whole
            raise LeadFormatError(
                self.location,
                f"server answered {response.status} {response.reason} to a range request "
                "(range requests are needed to read zips in place)",
            )
        data = response.read()
        self._remember(response)
        return data

    def stamp(self) -> str:
        return f"{self.size()}:{self._validator}"

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class FsspecFile(ByteSource):
    """A file on any fsspec filesystem, read with ranged `cat_file(path, start, end)`."""

    remote = True

    def __init__(self, url: str) -> None:
        self.location = url
        self._fs, self._path = fsspec_filesystem(url)
        self._info: dict[str, Any] | None = None

    def _details(self) -> dict[str, Any]:
        if self._info is None:
            try:
                self._info = self._fs.info(self._path)
            except FileNotFoundError:
                raise LeadFormatError(self.location, "file is missing") from None
        return self._info

    def size(self) -> int:
        return int(self._details()["size"])

    def read_range(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        return bytes(self._fs.cat_file(self._path, start=start, end=end))

    def stamp(self) -> str:
        info = self._details()
        validator = next(
            (str(info[k]) for k in ("ETag", "etag", "mtime", "LastModified", "created") if k in info), ""
        )
        return f"{info['size']}:{validator}"


def fsspec_filesystem(url: str) -> tuple[Any, str]:
    """(filesystem, path) of an fsspec URL.

    Raises:
        LeadFormatError: fsspec is not installed or does not know the protocol.
    """
    try:
        import fsspec
    except ImportError:
        raise LeadFormatError(url, "reading this URL needs fsspec (pip install fsspec)") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as error:
        raise LeadFormatError(url, f"no fsspec filesystem for this URL ({error})") from None


def open_byte_source(location: str | Path) -> ByteSource:
    """`LocalFile` for a path or `file://` URL, `HttpFile` for http(s), else `FsspecFile`."""
    location = str(location)
    if location.startswith("file://"):
        return LocalFile(urllib.parse.urlsplit(location).path)
    if not is_url(location):
        return LocalFile(location)
    if location.split("://", 1)[0] in ("http", "https"):
        return HttpFile(location)
    return FsspecFile(location)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(value for name, value in attrs if name == "href" and value)


def _http_get(url: str) -> bytes:
    parts = urllib.parse.urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.netloc, timeout=HTTP_TIMEOUT_S)
    try:
        conn.request("GET", urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, "")))
        response = conn.getresponse()
        body = response.read()
    except (http.client.HTTPException, OSError) as error:
        raise LeadFormatError(url, f"HTTP GET failed ({error})") from None
    finally:
        conn.close()
    if response.status != 200:
        raise LeadFormatError(url, f"HTTP GET answered {response.status} {response.reason}")
    return body


def find_remote_zips(url: str) -> list[str]:
    """Sorted URLs of every `*.zip` file at or below the remote folder `url`.

    http(s): the folder's HTML listing (Apache, nginx, `python -m http.server`) is crawled: links ending in
    "/" below `url` are followed, links ending in ".zip" collected. Other schemes: fsspec `find`.

    Raises:
        LeadFormatError: the listing cannot be fetched.
    """
    if url.lower().endswith(".zip"):
        return [url]
    if url.split("://", 1)[0] not in ("http", "https"):
        fs, path = fsspec_filesystem(url)
        protocol = url.split("://", 1)[0]
        found = [p for p in fs.find(path) if p.lower().endswith(".zip")]
        return sorted(f"{protocol}://{p.lstrip('/')}" if "://" not in p else p for p in found)
    root = url if url.endswith("/") else url + "/"
    zips: set[str] = set()
    pending, seen = [(root, 0)], {root}
    while pending:
        folder, depth = pending.pop()
        if len(seen) > MAX_LISTING_PAGES:
            raise LeadFormatError(root, f"more than {MAX_LISTING_PAGES} listing pages below this URL")
        parser = _Links()
        parser.feed(_http_get(folder).decode("utf-8", errors="replace"))
        for href in parser.hrefs:
            target = urllib.parse.urljoin(folder, href.split("#", 1)[0])
            if "?" in target or not target.startswith(root):
                continue  # sort links, parent folders, other hosts
            if target.lower().endswith(".zip"):
                zips.add(target)
            elif target.endswith("/") and target not in seen and depth < MAX_LISTING_DEPTH:
                seen.add(target)
                pending.append((target, depth + 1))
    return sorted(zips)
