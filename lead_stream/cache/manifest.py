"""Cache directory → validated manifest tables, random access to one sample, and shard verification.

A cache is `<data_root>/cache/<pipeline_id>/` with `shard-NNNNNN.tar`, `samples.parquet`,
`shards.parquet`, `failures.parquet` and `manifest.json`. `manifest.json` is written last: a directory
without it is an unfinished (or partial, distributed) build and is never returned by `resolve_cache_dir`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from lead_stream.core import parquet
from lead_stream.core.atomic import atomic_write_text
from lead_stream.core.errors import LeadFormatError
from lead_stream.schemas.manifest import MANIFEST_SCHEMAS, MANIFEST_VERSION, manifest_version_problem

if TYPE_CHECKING:
    import polars as pl  # imported where a table is read: a warm loader start maps arrays, reads no table

CACHE_DIRNAME = "cache"
MANIFEST_FILENAME = "manifest.json"
TABLE_FILENAMES = {
    "samples": "samples.parquet",  # a directory of parts (layout 2, `manifest_store`) or one file (layout 1)
    "shards": "shards.parquet",
    "failures": "failures.parquet",
    "routes": "routes.parquet",  # layout 2 only: per route its fingerprint, frames digest and part
}
TAR_BLOCK = 512
HASH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Manifest:
    """The complete manifest of one cache directory."""

    cache_dir: Path
    pipeline_id: str
    members: tuple[str, ...]  # sample member names, sorted (CONTRACTS §3)
    config: dict[str, Any]  # content-affecting ShardConfig fields + preprocessing constants
    samples: pl.DataFrame  # SAMPLES_SCHEMA, sorted by key
    shards: pl.DataFrame  # SHARDS_SCHEMA, sorted by shard
    failures: pl.DataFrame  # FAILURES_SCHEMA
    info: dict[str, Any] = field(default_factory=dict)  # the whole manifest.json

    def shard_path(self, shard: str) -> Path:
        """Local path of shard file `shard`."""
        return self.cache_dir / shard


def cache_root(data_root: Path) -> Path:
    """`<data_root>/cache`."""
    return Path(data_root) / CACHE_DIRNAME


def resolve_cache_dir(data_root: Path, pipeline_id: str | None = None) -> Path:
    """The complete cache of `data_root`: `cache/<pipeline_id>/`, or the newest complete one.

    Args:
        data_root: LEAD data root (holding `cache/`), or a cache directory itself (holding manifest.json).
        pipeline_id: pick this cache; None = the one whose manifest.json was written last.

    Raises:
        LeadFormatError: no complete cache (no manifest.json) is found.
    """
    data_root = Path(data_root)
    if pipeline_id is None and (data_root / MANIFEST_FILENAME).is_file():
        return data_root
    root = cache_root(data_root)
    if pipeline_id is not None:
        cache_dir = root / pipeline_id
        if not (cache_dir / MANIFEST_FILENAME).is_file():
            raise LeadFormatError(
                cache_dir, f"no {MANIFEST_FILENAME} (not a complete cache; run lead-stream shard)"
            )
        return cache_dir
    complete = list(root.glob(f"*/{MANIFEST_FILENAME}")) if root.is_dir() else []
    if not complete:
        raise LeadFormatError(
            root, f"no complete cache (no */{MANIFEST_FILENAME}; run lead-stream shard {data_root})"
        )
    return max(complete, key=lambda p: (p.stat().st_mtime_ns, p.parent.name)).parent


def _table_schema(path: Path, repair: str) -> pa.Schema:
    """Schema of a manifest table: a single file, or the first part of a directory of parts."""
    if path.is_dir():
        from lead_stream.core.parts import part_files  # pyarrow.compute: only where parts are read

        parts = part_files(path)
        if not parts:
            raise LeadFormatError(path, "no parts (the manifest lists it)")
        return parquet.read_schema(parts[0], repair=repair)
    return parquet.read_schema(path, repair=repair)


def _read_table(cache_dir: Path, name: str, columns: list[str] | None = None) -> pl.DataFrame:
    path = cache_dir / TABLE_FILENAMES[name]
    if not path.exists():
        raise LeadFormatError(path, "missing (the manifest lists it)")
    repair = f"rebuild the cache: lead-stream shard {cache_dir.parent.parent}"
    schema = _table_schema(path, repair)
    problem = manifest_version_problem(schema, name)
    if problem:
        raise LeadFormatError(path, problem)
    if schema.names != MANIFEST_SCHEMAS[name].names:
        raise LeadFormatError(path, f"columns {schema.names}, expected {MANIFEST_SCHEMAS[name].names}")
    import polars as pl

    try:
        return pl.from_arrow(pq.read_table(path, columns=columns, schema=MANIFEST_SCHEMAS[name]))
    except (pa.ArrowException, OSError) as error:
        raise LeadFormatError(path, f"unreadable Parquet ({str(error).splitlines()[0]}); {repair}") from None


def read_manifest_info(cache_dir: Path) -> dict[str, Any]:
    """manifest.json of a complete cache directory, version-checked (no table is read).

    Raises:
        LeadFormatError: manifest.json is missing, not JSON or of another version.
    """
    path = Path(cache_dir) / MANIFEST_FILENAME
    if not path.is_file():
        raise LeadFormatError(path, "missing (unfinished build; rerun lead-stream shard)")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise LeadFormatError(path, f"not JSON ({error})") from None
    if info.get("manifest_version") != MANIFEST_VERSION:
        raise LeadFormatError(
            path, f"manifest version {info.get('manifest_version')!r}, expected {MANIFEST_VERSION}"
        )
    return info


def read_manifest_columns(cache_dir: Path, name: str, columns: list[str]) -> pl.DataFrame:
    """Only `columns` of manifest table `name` ("samples", "shards", "failures"), version-checked; the
    samples of a layout-2 cache are read from all of its parts, in no particular order.

    Raises:
        LeadFormatError: the table is missing or of another version.
    """
    return _read_table(Path(cache_dir), name, columns)


def read_manifest(cache_dir: Path) -> Manifest:
    """Read and validate the manifest of a complete cache directory.

    Raises:
        LeadFormatError: manifest.json or a table is missing, of another version, or inconsistent.
    """
    cache_dir = Path(cache_dir)
    path = cache_dir / MANIFEST_FILENAME
    info = read_manifest_info(cache_dir)
    samples = _read_table(cache_dir, "samples").sort("key")
    shards = _read_table(cache_dir, "shards")
    failures = _read_table(cache_dir, "failures")
    if len(samples) != info.get("num_samples") or len(shards) != info.get("num_shards"):
        raise LeadFormatError(
            path,
            f"counts {info.get('num_samples')} samples / {info.get('num_shards')} shards "
            f"differ from the tables ({len(samples)} / {len(shards)})",
        )
    return Manifest(
        cache_dir=cache_dir,
        pipeline_id=info["pipeline_id"],
        members=tuple(info["members"]),
        config=info["config"],
        samples=samples,
        shards=shards,
        failures=failures,
        info=info,
    )


def parse_tar_members(blob: bytes, *, source: Path | str = "<bytes>") -> list[tuple[str, bytes]]:
    """Split a byte range of consecutive USTAR entries into (full name, payload), stopping at a zero block.

    Raises:
        LeadFormatError: a header checksum or size is corrupt, or a payload is truncated.
    """
    out: list[tuple[str, bytes]] = []
    view = memoryview(blob)
    pos = 0
    while pos + TAR_BLOCK <= len(blob):
        header = blob[pos : pos + TAR_BLOCK]
        if header.count(0) == TAR_BLOCK:
            break
        checksum = sum(header[:148]) + 8 * 32 + sum(header[156:])
        try:
            stored = int(header[148:156].rstrip(b"\0 ").decode("ascii") or "-1", 8)
            size = int(header[124:136].rstrip(b"\0 ").decode("ascii") or "0", 8)
        except ValueError:
            raise LeadFormatError(source, f"corrupt tar header at +{pos}") from None
        if stored != checksum:
            raise LeadFormatError(source, f"tar header checksum mismatch at +{pos}")
        name = header[:100].split(b"\0", 1)[0].decode("utf-8")
        prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8")
        name = f"{prefix}/{name}" if prefix else name
        start = pos + TAR_BLOCK
        if start + size > len(blob):
            raise LeadFormatError(source, f"member {name!r} truncated at +{start}")
        out.append((name, view[start : start + size].tobytes()))
        pos = start + -(-size // TAR_BLOCK) * TAR_BLOCK
    return out


def split_key(name: str) -> tuple[str, str]:
    """Tar member name → (sample key, member): everything before the first dot of the basename is the key."""
    directory, _, base = name.rpartition("/")
    stem, _, member = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), member


def read_sample_members(shard_path: Path, offset: int, size_bytes: int) -> dict[str, bytes]:
    """One seek + one read: the members of the sample stored at `offset` in `shard_path`.

    Returns:
        {member name (e.g. "rgb.jpg"): payload bytes}.

    Raises:
        LeadFormatError: the range does not hold exactly one sample's intact tar entries.
    """
    with open(shard_path, "rb") as handle:
        handle.seek(offset)
        blob = handle.read(size_bytes)
    if len(blob) != size_bytes:
        raise LeadFormatError(shard_path, f"short read at {offset}: {len(blob)} of {size_bytes} bytes")
    members: dict[str, bytes] = {}
    keys = set()
    for name, payload in parse_tar_members(blob, source=shard_path):
        key, member = split_key(name)
        keys.add(key)
        if member in members:
            raise LeadFormatError(shard_path, f"sample {key!r} has duplicate member {member!r}")
        members[member] = payload
    if len(keys) != 1:
        raise LeadFormatError(
            shard_path, f"range {offset}+{size_bytes} holds keys {sorted(keys)}, expected one"
        )
    return members


def sample_sha256(members: dict[str, bytes]) -> str:
    """Content hash of a sample: sha256 over (name, NUL, payload) of its members in name order."""
    digest = hashlib.sha256()
    for name in sorted(members):
        digest.update(name.encode("utf-8") + b"\0")
        digest.update(members[name])
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a whole file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


VERIFY_FAILED_FILENAME = (
    "verify-failed.json"  # shards `verify` found bad; the next `shard` rebuilds their routes
)


def _record_bad_shards(cache_dir: Path, shards: list[str]) -> None:
    """Remember the bad shards for the next `shard` (nothing to remember: the record goes)."""
    path = cache_dir / VERIFY_FAILED_FILENAME
    try:
        if shards:
            atomic_write_text(path, json.dumps({"shards": sorted(shards)}, indent=1))
        else:
            path.unlink(missing_ok=True)
    except OSError:  # a read-only cache: verify still reports
        pass


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of `verify_cache`."""

    cache_dir: Path
    num_shards: int
    missing: tuple[str, ...]  # listed in shards.parquet, no file
    corrupt: tuple[tuple[str, str], ...]  # (shard, what differs)
    unlisted: tuple[str, ...]  # shard-*.tar files the manifest does not list (not an error)

    @property
    def ok(self) -> bool:
        """No missing and no corrupt shard."""
        return not self.missing and not self.corrupt

    def one_line(self) -> str:
        state = "ok" if self.ok else "BAD"
        return (
            f"{state}: {self.num_shards} shards in {self.cache_dir}, {len(self.missing)} missing, "
            f"{len(self.corrupt)} corrupt, {len(self.unlisted)} unlisted"
        )


def verify_cache(data_root: Path, *, pipeline_id: str | None = None) -> VerifyReport:
    """Re-hash every shard of a complete cache against shards.parquet (size, then sha256).

    Args:
        data_root: LEAD data root or cache directory (see `resolve_cache_dir`).
        pipeline_id: which cache; None = newest complete one.

    Raises:
        LeadFormatError: no complete cache / unreadable manifest (cannot verify at all).
    """
    manifest = read_manifest(resolve_cache_dir(data_root, pipeline_id))
    missing, corrupt = [], []
    for row in manifest.shards.iter_rows(named=True):
        path = manifest.shard_path(row["shard"])
        if not path.is_file():
            missing.append(row["shard"])
            continue
        size = path.stat().st_size
        if size != row["size_bytes"]:
            corrupt.append((row["shard"], f"size {size} bytes, manifest says {row['size_bytes']}"))
            continue
        digest = file_sha256(path)
        if digest != row["sha256"]:
            corrupt.append((row["shard"], f"sha256 {digest[:12]}…, manifest says {row['sha256'][:12]}…"))
    listed = set(manifest.shards["shard"].to_list())
    unlisted = tuple(sorted(p.name for p in manifest.cache_dir.glob("shard-*.tar") if p.name not in listed))
    _record_bad_shards(manifest.cache_dir, [*missing, *(name for name, _ in corrupt)])
    return VerifyReport(
        cache_dir=manifest.cache_dir,
        num_shards=len(manifest.shards),
        missing=tuple(missing),
        corrupt=tuple(corrupt),
        unlisted=unlisted,
    )
