"""The two ways a `shard` run refuses to go on, as named errors: a full disk, and `--strict` on a cache whose
reused routes carry failure rows recorded by an earlier run."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from lead_stream.cache.chunks import BUILD_TMP_PREFIX
from lead_stream.cache.tar_writer import journal_dir
from lead_stream.core.atomic import remove_stale_tmp
from lead_stream.core.errors import LeadFormatError

if TYPE_CHECKING:
    from lead_stream.cache.chunks import RoutePlan
    from lead_stream.cache.manifest_store import CacheState
    from lead_stream.cache.shard_config import ShardConfig

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def remove_own_tmp(cache_dir: Path, config: ShardConfig) -> None:
    """Delete the unfinished files of a killed run: all of them, or this rank's in a distributed build."""
    if config.world_size == 1:
        remove_stale_tmp(cache_dir)
    else:
        for stale in cache_dir.glob(f"{BUILD_TMP_PREFIX}-{config.rank}-*.tmp"):
            stale.unlink(missing_ok=True)


def disk_full(data_root: Path, cache_dir: Path, config: ShardConfig, error: OSError) -> LeadFormatError:
    """Remove this run's unfinished files and name the full disk (finished, journaled shards stay)."""
    remove_own_tmp(cache_dir, config)
    free_mb = shutil.disk_usage(cache_dir).free / 1e6
    finished = sum(1 for _ in journal_dir(cache_dir).glob("route-*.json"))
    written = Path(error.filename).name if error.filename else "the cache"
    return LeadFormatError(
        cache_dir,
        f"{os.strerror(error.errno)} while writing {written} ({free_mb:.1f} MB free); nothing half-written "
        f"is left and {finished} finished routes are kept: free space, then rerun lead-stream shard {data_root}",
    )


def refuse_recorded_failures(
    data_root: Path,
    mine: list[RoutePlan],
    to_build: list[RoutePlan],
    records: dict[str, dict],
    state: CacheState | None,
) -> None:
    """`--strict` on a cache whose reused routes carry failure rows: the first one, as a named error.

    Args:
        data_root: the data root (the failure's file is relative to it).
        mine: this rank's planned routes ([] = every route of `state`: a no-op run).
        to_build: the routes this run rebuilds (their old failures do not count).
        records: journal route records (when `state` is None).
        state: the complete cache's tables (its failures table), or None.

    Raises:
        LeadFormatError: the first recorded failure of a reused route.
    """
    building = {r.route_id for r in to_build}
    reused = [r.route_id for r in mine if r.route_id not in building]
    if state is not None:  # layout 2: the failures table of the complete cache (all of it when mine is [])
        kept = set(reused)
        failures = [f for f in state.failures.to_pylist() if not mine or f["route_id"] in kept]
    else:
        failures = [f for route_id in reused if route_id in records for f in records[route_id]["failures"]]
    if failures:
        failure = failures[0]
        raise LeadFormatError(
            data_root / failure["file"],
            f"{failure['reason']} (recorded by an earlier shard run; --strict accepts no failure: repair "
            f"the file, then lead-stream index and lead-stream shard again, or shard --retry-failed)",
        )
