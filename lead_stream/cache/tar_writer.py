"""Sample members → one reproducible tar file, and the journal that records finished shards and routes.

Input: a sample key and its {member name: bytes}. Output: `shard-NNNNNN.tar` bytes in plain USTAR (mtime 0,
mode 0o444, members sorted by name as "<key>.<member>", padded to a 10240-byte record) plus each sample's
(offset, size_bytes) and the file's sha256; `journal/shard-NNNNNN.json` and `journal/route-<hash>.json`
entries under a cache directory. The one non-obvious rule: equal members give byte-identical tars, so a
shard's sha256 names its content and a rebuild of an unchanged route reproduces it exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

TAR_BLOCK = 512
TAR_RECORD = 20 * TAR_BLOCK  # tar files are padded to a multiple of this (as GNU tar / tarfile)
JOURNAL_DIRNAME = "journal"
SHARD_NAME = re.compile(r"^shard-(\d{6})\.tar$")


def sample_key(route_id: str, frame_idx: int) -> str:
    """ "<route_id>/<frame_idx:04d>" with '.' made safe ('_'), so webdataset splits key and member right."""
    return f"{route_id.replace('.', '_')}/{frame_idx:04d}"


def shard_name(number: int) -> str:
    return f"shard-{number:06d}.tar"


def route_hash(route_id: str) -> str:
    return hashlib.sha256(route_id.encode()).hexdigest()[:16]


def journal_dir(cache_dir: Path) -> Path:
    return cache_dir / JOURNAL_DIRNAME


def route_record_path(cache_dir: Path, route_id: str) -> Path:
    return journal_dir(cache_dir) / f"route-{route_hash(route_id)}.json"


def shard_journal_path(cache_dir: Path, shard: str) -> Path:
    return journal_dir(cache_dir) / f"{shard.removesuffix('.tar')}.json"


# ---------------------------------------------------------------------------------------------------
# tar writing
# ---------------------------------------------------------------------------------------------------
def tar_header(name: str, size: int) -> bytes:
    """A reproducible USTAR header: mtime 0, mode 0o444, uid/gid 0, empty user/group names."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")


def member_name_problem(key: str, member: str) -> str | None:
    """Why "<key>.<member>" cannot be a USTAR member name, or None (UTF-8 names fit when the directory part
    is <= 155 bytes and the file part <= 100 bytes once encoded)."""
    name = f"{key}.{member}"
    try:
        tar_header(name, 0)
    except ValueError as error:
        return f"tar member name {name!r} is {len(name.encode())} bytes in UTF-8: {error} for USTAR"
    return None


class TarShardWriter:
    """Append samples to one tar file, tracking each sample's byte range and the file's sha256."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed by close() / abort()
        self._digest = hashlib.sha256()
        self.size_bytes = 0
        self.num_samples = 0

    def _write(self, payload: bytes) -> None:
        self._handle.write(payload)
        self._digest.update(payload)
        self.size_bytes += len(payload)

    def add_sample(self, key: str, members: dict[str, bytes]) -> tuple[int, int]:
        """Write members sorted by name as "<key>.<member>"; returns (offset, size_bytes) of the sample."""
        offset = self.size_bytes
        for member in sorted(members):
            payload = members[member]
            self._write(tar_header(f"{key}.{member}", len(payload)))
            self._write(payload)
            pad = -len(payload) % TAR_BLOCK
            if pad:
                self._write(b"\0" * pad)
        self.num_samples += 1
        return offset, self.size_bytes - offset

    def close(self) -> str:
        """Write the end-of-archive blocks and record padding; returns the file's sha256."""
        end = 2 * TAR_BLOCK
        end += -(self.size_bytes + end) % TAR_RECORD
        self._write(b"\0" * end)
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        return self._digest.hexdigest()

    def abort(self) -> None:
        self._handle.close()
        self.path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------
# journal
# ---------------------------------------------------------------------------------------------------
def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


JOURNAL_COLUMNS = ("frame_idx", "offset", "size_bytes", "sha256", "planning_valid")


def journal_entry(shard_row: dict[str, Any], samples: list[dict[str, Any]]) -> dict[str, Any]:
    """A shard's journal entry: its shards row + its samples' rows as columns (a shard holds one route, so
    route_id, fingerprint, shard name and key are stored once / derived, not repeated per sample)."""
    assert all(row["route_id"] == shard_row["route_id"] for row in samples), "a shard holds one route"
    return {"shard": shard_row, "columns": {name: [row[name] for row in samples] for name in JOURNAL_COLUMNS}}


def read_shard_entry(path: Path) -> dict[str, Any] | None:
    """A shard journal entry with its sample rows expanded (as `samples.parquet` stores them); None if unreadable."""
    entry = read_json(path)
    if not isinstance(entry, dict) or not isinstance(entry.get("columns"), dict):
        return None  # unreadable or another layout: treated like a missing entry (the shard is rebuilt)
    shard_row, columns = entry["shard"], entry["columns"]
    route_id = shard_row["route_id"]
    common = {
        "route_id": route_id,
        "shard": shard_row["shard"],
        "route_fingerprint": shard_row["route_fingerprint"],
    }
    samples = [
        {"key": sample_key(route_id, values[0]), **dict(zip(JOURNAL_COLUMNS, values)), **common}
        for values in zip(*(columns[name] for name in JOURNAL_COLUMNS))
    ]
    return {"shard": shard_row, "samples": samples, "columns": columns}


def load_journal(cache_dir: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """(route_id → route record, shard name → shard journal entry) of finished work in `cache_dir`."""
    records, shard_entries = {}, {}
    journal = journal_dir(cache_dir)
    if not journal.is_dir():
        return records, shard_entries
    for path in sorted(journal.glob("route-*.json")):
        record = read_json(path)
        if record is not None:
            records[record["route_id"]] = record
    for path in sorted(journal.glob("shard-*.json")):
        entry = read_shard_entry(path)
        if entry is not None:
            shard_entries[entry["shard"]["shard"]] = entry
    return records, shard_entries


def delete_shard(cache_dir: Path, shard: str) -> None:
    (cache_dir / shard).unlink(missing_ok=True)
    shard_journal_path(cache_dir, shard).unlink(missing_ok=True)


def _existing_numbers(cache_dir: Path) -> list[int]:
    numbers = [int(m.group(1)) for p in cache_dir.glob("shard-*.tar") if (m := SHARD_NAME.match(p.name))]
    numbers += [
        int(p.stem.split("-")[1])
        for p in journal_dir(cache_dir).glob("shard-*.json")
        if p.stem.split("-")[1].isdigit()
    ]
    return numbers


def number_sequence(cache_dir: Path, rank: int, world_size: int) -> Iterator[int]:
    """Shard numbers above every existing one, n ≡ rank (mod world_size), so ranks never collide."""
    start = max(_existing_numbers(cache_dir), default=-1) + 1
    number = start + (rank - start) % world_size
    while True:
        yield number
        number += world_size


def read_shard_keys(shard_path: Path) -> list[str]:
    """Sample keys of a shard in storage order (via tarfile; for tests and debugging)."""
    keys: list[str] = []
    with tarfile.open(shard_path) as archive:
        for info in archive:
            key = info.name.rsplit("/", 1)
            stem = key[-1].split(".", 1)[0]
            full = f"{key[0]}/{stem}" if len(key) == 2 else stem
            if not keys or keys[-1] != full:
                keys.append(full)
    return keys
