"""Cache commands: `shard` (build / merge the shard cache), `verify` (re-hash shards), `show` (sample → PNG),
`caches` (list the caches of a root, remove stale ones).

Exit codes: 0 success; 2 user error (`error: <path>: <problem>`: no index, no cache, unreadable frame under
--strict, unknown key); `verify` exits 1 when it finds missing or corrupt shards (the cache is readable but
bad), so scripts can tell "cannot check" (2) from "checked and broken" (1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lead_stream.core.errors import LeadStreamError

DEFAULT_DATA_ROOT = Path("data/carla_leaderboard2")
USER_ERROR_EXIT_CODE = 2
VERIFY_BAD_EXIT_CODE = 1
DataRoot = Annotated[Path, typer.Argument(help="LEAD data root (holds index/ and cache/)")]
CacheDir = Annotated[
    Path | None,
    typer.Option(help="cache root holding <pipeline_id>/ folders, or one cache (default: DATA_ROOT/cache)"),
]


def _exit(code: int) -> None:
    # SystemExit, not typer.Exit: `main()` runs the app with standalone_mode=False, where click turns
    # typer.Exit into a return value that main() does not pass on; SystemExit keeps the code on both paths.
    raise SystemExit(code)


def _fail(error: LeadStreamError) -> None:
    typer.echo(f"error: {error}", err=True)
    _exit(USER_ERROR_EXIT_CODE)


def shard(
    data_root: DataRoot = DEFAULT_DATA_ROOT,
    workers: Annotated[int | None, typer.Option(help="build processes (default: all cores)")] = None,
    max_samples_per_shard: Annotated[int, typer.Option(help="close a shard after this many samples")] = 1000,
    max_shard_mb: Annotated[float, typer.Option(help="...or once it reaches this many MiB")] = 384.0,
    collection: Annotated[
        list[str] | None,
        typer.Option(
            "--collection", help="bucket collection to include (repeat; default pretrain + posttrain)"
        ),
    ] = None,
    rank: Annotated[int, typer.Option(help="this machine's rank in a distributed build")] = 0,
    world_size: Annotated[
        int, typer.Option(help="machines building one cache (routes split round-robin)")
    ] = 1,
    merge: Annotated[
        bool, typer.Option("--merge", help="join the ranks' partial manifests (run once, last)")
    ] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="fail (exit 2) on the first unreadable frame")
    ] = False,
    retry_failed: Annotated[
        bool,
        typer.Option("--retry-failed", help="rebuild the routes with failed frames (after fixing files)"),
    ] = False,
    progress: Annotated[bool, typer.Option(help="progress bar on stderr")] = True,
    wait: Annotated[
        bool,
        typer.Option(help="another shard run holds the cache: wait for it (--no-wait: exit 2 naming it)"),
    ] = True,
    cache_dir: Annotated[
        Path | None, typer.Option(help="write <pipeline_id>/ here instead of DATA_ROOT/cache")
    ] = None,
) -> None:
    """Build (incrementally) the WebDataset shard cache under DATA_ROOT/cache/<pipeline_id>/."""
    from lead_stream.cache.shard import ShardConfig, merge_manifests, write_shards

    try:
        config = ShardConfig(
            workers=workers,
            max_samples_per_shard=max_samples_per_shard,
            max_shard_bytes=int(max_shard_mb * (1 << 20)),
            progress=progress,
            strict=strict,
            retry_failed=retry_failed,
            rank=rank,
            world_size=world_size,
            wait_for_lock=wait,
            collections=tuple(collection) if collection else ("pretrain", "posttrain"),
            cache_root=cache_dir,
        )
        build = merge_manifests if merge else write_shards
        summary = build(data_root, config=config)
    except LeadStreamError as error:
        _fail(error)
    typer.echo(summary.one_line())


def verify(
    data_root: DataRoot = DEFAULT_DATA_ROOT,
    pipeline_id: Annotated[str | None, typer.Option(help="cache to check (default: newest complete)")] = None,
    cache_dir: CacheDir = None,
    repair: Annotated[
        bool,
        typer.Option("--repair", help="rebuild the routes of missing or corrupt shards, then verify again"),
    ] = False,
) -> None:
    """Re-hash every shard against the manifest; exit 1 if any is missing or corrupt (the next `shard`, or
    `--repair` now, rebuilds their routes)."""
    from lead_stream.cache.inventory import find_cache
    from lead_stream.cache.manifest import verify_cache
    from lead_stream.cache.shard import repair_cache

    try:
        report = verify_cache(find_cache(cache_dir or data_root, pipeline_id))
    except LeadStreamError as error:
        _fail(error)
    for shard_name in report.missing:
        typer.echo(f"missing: {report.cache_dir / shard_name}", err=True)
    for shard_name, problem in report.corrupt:
        typer.echo(f"corrupt: {report.cache_dir / shard_name}: {problem}", err=True)
    typer.echo(report.one_line())
    if repair and not report.ok:
        try:
            typer.echo(repair_cache(report.cache_dir, data_root=data_root).one_line())
            report = verify_cache(report.cache_dir)
        except LeadStreamError as error:
            _fail(error)
        typer.echo(report.one_line())
    if not report.ok:
        _exit(VERIFY_BAD_EXIT_CODE)


def show(
    key: Annotated[str, typer.Argument(help='sample key, "<Scenario>/<route_dir>/<NNNN>"')],
    out: Annotated[Path, typer.Option(help="PNG to write (1152 x 704)")] = Path("sample.png"),
    root: Annotated[Path, typer.Option(help="LEAD data root (holds cache/)")] = DEFAULT_DATA_ROOT,
    pipeline_id: Annotated[str | None, typer.Option(help="cache to read (default: newest complete)")] = None,
    perturbated: Annotated[bool, typer.Option("--perturbated", help="show the perturbated variant")] = False,
    cache_dir: CacheDir = None,
) -> None:
    """Render one cached sample: cameras with boxes and waypoints, LiDAR BEV, BEV semantics, scalars."""
    from lead_stream.cache.inventory import find_cache
    from lead_stream.cache.show import show_sample

    try:
        path = show_sample(find_cache(cache_dir or root, pipeline_id), key, out, perturbated=perturbated)
    except LeadStreamError as error:
        _fail(error)
    typer.echo(f"wrote {path}")


def caches(
    data_root: DataRoot = DEFAULT_DATA_ROOT,
    cache_dir: CacheDir = None,
    remove: Annotated[
        list[str] | None, typer.Option(help="delete the cache with this pipeline id (repeatable)")
    ] = None,
) -> None:
    """List the caches (complete or not, size, date, collections, code) and which one `train` reads."""
    from lead_stream.cache.inventory import cache_root_of, list_caches, newest_complete, remove_cache

    root = cache_dir or data_root
    try:
        for pipeline_id in remove or ():
            info = remove_cache(root, pipeline_id)
            typer.echo(f"removed {info.cache_dir} ({info.size_bytes / 1e6:.1f} MB)")
        found = list_caches(root)
    except LeadStreamError as error:
        _fail(error)
    if not found:
        typer.echo(f"no cache under {cache_root_of(root)} (build one: lead-stream shard {data_root})")
        return
    newest = newest_complete(found)
    for info in found:
        typer.echo(f"{info.one_line()}{'  <- train reads this one' if info is newest else ''}")
    others = [info for info in found if info is not newest]
    total = sum(info.size_bytes for info in found)
    typer.echo(f"{len(found)} caches, {total / 1e6:.1f} MB in {cache_root_of(root)}")
    if others:
        ids = " ".join(f"--remove {info.pipeline_id}" for info in others)
        typer.echo(f"remove the others: lead-stream caches {root} {ids}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command()(shard)
    app.command()(verify)
    app.command()(show)
    app.command()(caches)
