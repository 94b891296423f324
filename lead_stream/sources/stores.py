"""Where one route's files live → a `RouteStore` that `Route` reads through: a folder or a zip read in place.

A store answers reads by route-relative path (`"metas/0000.pkl"`, `"results.json"`): `FolderStore` is an
extracted route directory, `ZipStore` the members of one route inside a zip (`ZipArchive`, local or remote)
below a member prefix (`"data/carla_leaderboard2/data/<Scenario>/<route>/"`, `"<Scenario>/<route>/"` or
`"<route>/"`). A store's `locator` is the string the index records as the route's `source`: a folder path,
or `<zip path or URL>!<member prefix>`; paths below the data root are recorded relative to it, so the index
stays portable. `open_store(data_root, locator)` turns it back into a store.
"""

from __future__ import annotations

import functools
import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path

from lead_stream.core import layout
from lead_stream.core.errors import LeadFormatError
from lead_stream.sources.byte_sources import is_url, local_stamp, open_byte_source
from lead_stream.sources.zips import ZipArchive, member_path

ZIP_PREFIX_SEP = "!"  # locator of a zipped route: "<zip>!<member prefix>"
TMP_SUFFIX = ".tmp"  # unfinished files of an atomic writer
_ROUTE_DIRS = frozenset(layout.all_modality_dirnames())
_MODALITY_DIRS = layout.all_modality_dirnames()
MAX_OPEN_ARCHIVES = 8  # zip central directories kept per process (route workers reopen nothing)


_MISSING = b"-;"


def folder_stat_stamp(route_dir: str) -> str:
    """Cheap stamp of an extracted route, one stat per folder (not per file): results.json's size + mtime_ns
    and the mtime_ns of the route folder and of each modality folder. A folder's mtime changes whenever an
    entry is added, removed or renamed (how LEAD's writers, rsync and unzip replace files); a file rewritten
    in place keeps it, which `FolderStore.fingerprint` (what `index --check-files` compares) sees.

    The route folder is opened once and its entries are stat'ed relative to it (`dir_fd`: one path
    component each, no pathlib): ~15 syscalls per route, the no-op re-index's main cost at 30 k routes.
    """
    parts = []
    try:
        fd = os.open(route_dir, os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        fd = None
    if fd is None:
        parts = [_MISSING] * (2 + len(_MODALITY_DIRS))
    else:
        try:
            try:
                st = os.stat(layout.RESULTS_FILENAME, dir_fd=fd)
                parts.append(b"%d:%d;" % (st.st_size, st.st_mtime_ns))
            except FileNotFoundError:
                parts.append(_MISSING)
            parts.append(b"%d;" % os.fstat(fd).st_mtime_ns)
            for name in _MODALITY_DIRS:
                try:
                    parts.append(b"%d;" % os.stat(name, dir_fd=fd).st_mtime_ns)
                except (FileNotFoundError, NotADirectoryError):
                    parts.append(_MISSING)
        finally:
            os.close(fd)
    return hashlib.blake2b(b"".join(parts), digest_size=16).hexdigest()


class RouteStore(ABC):
    """Read access to one route's files by route-relative path (forward slashes)."""

    kind: str  # "folder" | "zip"
    locator: str  # what routes.parquet records as `source` (see module doc)

    @abstractmethod
    def path_of(self, rel: str) -> Path | str:
        """How messages name the file `rel` (a Path, or a string for URLs)."""

    @abstractmethod
    def read(self, rel: str) -> bytes:
        """Bytes of `rel`.

        Raises:
            LeadFormatError: missing ("file is missing"), a directory, or (zips) corrupt.
        """

    @abstractmethod
    def is_file(self, rel: str) -> bool: ...

    @abstractmethod
    def is_dir(self, rel: str) -> bool: ...

    @abstractmethod
    def names(self, folder: str) -> list[str]:
        """File names directly in `folder` (empty if it does not exist)."""

    @abstractmethod
    def sizes(self) -> dict[str, int]:
        """Every file of the route LEAD writes (results.json, modality folders) → size in bytes."""

    @abstractmethod
    def stat_stamp(self) -> str:
        """Cheap stamp: equal stamps → the route is unchanged (decides whether the index re-reads it)."""

    @abstractmethod
    def fingerprint(self, route_id: str) -> str:
        """Content stamp for incremental rebuilds (folder: names, sizes, mtimes; zip: central directory)."""

    @property
    def root(self) -> Path | str:
        """The route's directory (or `<zip>/<prefix>`) as messages name it."""
        return self.path_of("")


class FolderStore(RouteStore):
    """An extracted route directory `<...>/<Scenario>/<route_dir>/`."""

    kind = "folder"

    def __init__(self, route_dir: Path | str, locator: str | None = None) -> None:
        self.route_dir = Path(route_dir)
        self.locator = locator if locator is not None else str(route_dir)
        self._folders: dict[str, str] = {}

    def path_of(self, rel: str) -> Path:
        return self.route_dir / rel if rel else self.route_dir

    def read(self, rel: str) -> bytes:
        folder, _, name = rel.rpartition("/")
        prefix = self._folders.get(folder)
        if prefix is None:  # string joins: the per-frame hot path builds no Path objects
            prefix = self._folders[folder] = f"{self.route_dir}{os.sep}{folder}{os.sep}" if folder else ""
        full = f"{prefix}{name}" if folder else f"{self.route_dir}{os.sep}{name}"
        try:
            with open(full, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            raise LeadFormatError(self.path_of(rel), "file is missing") from None
        except IsADirectoryError:
            raise LeadFormatError(self.path_of(rel), "expected a file, found a directory") from None

    def is_file(self, rel: str) -> bool:
        return os.path.isfile(self.path_of(rel))

    def is_dir(self, rel: str) -> bool:
        return os.path.isdir(self.path_of(rel))

    def names(self, folder: str) -> list[str]:
        try:
            with os.scandir(self.path_of(folder)) as entries:
                return [e.name for e in entries if not e.is_dir()]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def sizes(self) -> dict[str, int]:
        out = {}
        try:
            out[layout.RESULTS_FILENAME] = os.stat(self.path_of(layout.RESULTS_FILENAME)).st_size
        except FileNotFoundError:
            pass
        for folder in sorted(_ROUTE_DIRS):
            try:
                with os.scandir(self.path_of(folder)) as entries:
                    for entry in entries:
                        if entry.is_file() and not entry.name.endswith(TMP_SUFFIX):
                            out[f"{folder}/{entry.name}"] = entry.stat().st_size
            except (FileNotFoundError, NotADirectoryError):
                continue
        return out

    def stat_stamp(self) -> str:
        """Cheap stamp, one stat per folder (not per file): `folder_stat_stamp`."""
        return folder_stat_stamp(str(self.route_dir))

    def fingerprint(self, route_id: str) -> str:
        """Hashes name, size and mtime_ns of results.json and of every file in every modality folder (every file
        the index or the shard builder reads). No file is opened."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update(route_id.encode())
        try:
            st = os.stat(self.path_of(layout.RESULTS_FILENAME))
            digest.update(f"results.json:{st.st_size}:{st.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            digest.update(b"results.json:-\n")
        for name in _MODALITY_DIRS:
            digest.update(f"[{name}]".encode())
            try:
                with os.scandir(self.path_of(name)) as entries:
                    rows = sorted(f"{e.name}:{(st := e.stat()).st_size}:{st.st_mtime_ns}\n" for e in entries)
            except (FileNotFoundError, NotADirectoryError):
                digest.update(b"-\n")
                continue
            digest.update("".join(rows).encode())
        return digest.hexdigest()


class ZipStore(RouteStore):
    """The members of one route below `prefix` inside a zip, read in place (see module doc)."""

    kind = "zip"

    def __init__(self, archive: ZipArchive, prefix: str, locator: str | None = None) -> None:
        self.archive = archive
        self.prefix = prefix
        self.locator = locator if locator is not None else f"{archive.location}{ZIP_PREFIX_SEP}{prefix}"
        self.files: dict[str, str] = {}  # route-relative path -> member name
        self._folders: dict[str, list[str]] = {}
        dirs = set()
        for name in archive.members:
            if not name.startswith(prefix) or name == prefix:
                continue
            rel = name[len(prefix) :]
            if rel.endswith("/"):
                dirs.add(rel.rstrip("/"))
                continue
            self.files[rel] = name
            folder, _, leaf = rel.rpartition("/")
            self._folders.setdefault(folder, []).append(leaf)
            while folder:
                dirs.add(folder)
                folder = folder.rpartition("/")[0]
        self._dirs = frozenset(dirs)

    def path_of(self, rel: str) -> Path | str:
        return member_path(self.archive.location, self.prefix + rel)

    def read(self, rel: str) -> bytes:
        name = self.files.get(rel)
        if name is None:
            if rel in self._dirs:
                raise LeadFormatError(self.path_of(rel), "expected a file, found a directory")
            raise LeadFormatError(self.path_of(rel), "file is missing")
        return self.archive.read(name)

    def is_file(self, rel: str) -> bool:
        return rel in self.files

    def is_dir(self, rel: str) -> bool:
        return rel in self._dirs

    def names(self, folder: str) -> list[str]:
        return list(self._folders.get(folder, ()))

    def sizes(self) -> dict[str, int]:
        members = self.archive.members
        return {
            rel: members[name].size
            for rel, name in self.files.items()
            if rel == layout.RESULTS_FILENAME or rel.split("/", 1)[0] in _ROUTE_DIRS
        }

    def stat_stamp(self) -> str:
        return f"zip:{self.archive.source.stamp()}:{self.prefix}"

    def fingerprint(self, route_id: str) -> str:
        """Hash of the central-directory entries (name, size, CRC-32) of the route's members."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update(route_id.encode())
        members = self.archive.members
        for rel in sorted(self.files):
            member = members[self.files[rel]]
            digest.update(f"{rel}:{member.size}:{member.crc:08x}\n".encode())
        return digest.hexdigest()


def route_prefixes(names: Iterable[str]) -> list[str]:
    """Member prefixes of the routes inside a zip: each folder that holds results.json or a LEAD modality
    folder (`metas/`, `rgb/`, ...), in sorted order."""
    prefixes = set()
    for name in names:
        parts = name.split("/")
        for i, part in enumerate(parts[:-1]):
            if part in _ROUTE_DIRS:
                prefixes.add("".join(p + "/" for p in parts[:i]))
                break
        else:
            if parts[-1] == layout.RESULTS_FILENAME:
                prefixes.add("".join(p + "/" for p in parts[:-1]))
    return sorted(prefixes)


def zip_route_id(prefix: str, zip_location: str) -> str:
    """`"<Scenario>/<route_dir>"` of a route inside a zip: the last two folders of its member prefix, or,
    for members starting at `<route_dir>/`, the zip's parent folder as the scenario."""
    parts = [p for p in prefix.split("/") if p]
    if len(parts) >= 2:
        return f"{parts[-2]}/{parts[-1]}"
    folders = zip_location.replace("\\", "/").split("/")
    scenario = folders[-2] if len(folders) >= 2 and folders[-2] else "noScenarios"
    stem = folders[-1][: -len(".zip")] if folders[-1].lower().endswith(".zip") else folders[-1]
    route = parts[0] if parts else stem
    return f"{scenario}/{route}"


@functools.lru_cache(maxsize=MAX_OPEN_ARCHIVES)
def _archive(location: str, stamp: str) -> ZipArchive:
    return ZipArchive(open_byte_source(location))


def open_archive(location: str) -> ZipArchive:
    """The (per-process cached) `ZipArchive` of a zip path or URL; reopened when a local file changed."""
    stamp = "" if is_url(location) else local_stamp(location)
    return _archive(location, stamp)


def resolve_location(data_root: Path | str, location: str) -> str:
    """Absolute path (or URL) of a recorded location: relative paths are below the data root."""
    if is_url(location) or os.path.isabs(location):
        return location
    return str(Path(data_root) / location)


def record_location(data_root: Path | str, location: str | Path) -> str:
    """The recorded form of a location: relative to the data root when below it, else as given."""
    location = str(location)
    if is_url(location):
        return location
    prefix = f"{data_root}{os.sep}"
    if location.startswith(prefix) and ".." not in location:  # the common case, without resolving links
        rest = location[len(prefix) :]
        if os.sep == "/" and all(part not in ("", ".") for part in rest.split("/")):
            return rest  # already what Path(rest).as_posix() gives (no pathlib per route: ~30 k routes)
        return Path(rest).as_posix()
    return layout.relative_path(location, data_root)


def open_store(data_root: Path | str, locator: str) -> RouteStore:
    """The store a recorded `source` locator names (see module doc).

    Raises:
        LeadFormatError: the folder or zip does not exist, or the zip is unreadable.
    """
    if is_zip_locator(locator):
        location, _, prefix = locator.rpartition(ZIP_PREFIX_SEP)
        archive = open_archive(resolve_location(data_root, location))
        store = ZipStore(archive, prefix, locator)
        if not store.files:
            raise LeadFormatError(archive.location, f"no members below {prefix!r}")
        return store
    folder = Path(resolve_location(data_root, locator))
    if not folder.is_dir():
        raise LeadFormatError(folder, "missing folder: route directory does not exist")
    return FolderStore(folder, locator)


def locator_stamp(data_root: Path | str, locator: str) -> str:
    """`open_store(data_root, locator).stat_stamp()` without opening anything: one stat (a HEAD request for
    a remote zip). A missing file or folder stamps as "-"."""
    if is_zip_locator(locator):
        location, _, prefix = locator.rpartition(ZIP_PREFIX_SEP)
        try:
            stamp = open_byte_source(resolve_location(data_root, location)).stamp()
        except (FileNotFoundError, LeadFormatError):
            stamp = "-"
        return f"zip:{stamp}:{prefix}"
    if is_url(locator) or os.path.isabs(locator):
        return folder_stat_stamp(locator)
    return folder_stat_stamp(os.path.join(os.fspath(data_root), locator))  # no pathlib: ~30 k routes


def is_zip_locator(locator: str) -> bool:
    """Whether a recorded `source` names a route inside a zip (`<zip>!<prefix>`)."""
    location = locator.rpartition(ZIP_PREFIX_SEP)[0]
    return location.lower().endswith(".zip")
