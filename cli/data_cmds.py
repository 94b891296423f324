"""Data commands: `synth` (synthetic LEAD tree), `index` (Parquet tables), `query` (SQL), `buckets` (sizes).

Each command parses, calls one library function and prints; library user errors (LeadStreamError) reach
`lead_stream.cli.main.main`, which prints `error: <path>: <problem>` and exits with code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lead_stream.core.errors import ConfigError

DEFAULT_DATA_ROOT = Path("data/carla_leaderboard2")
DataRoot = Annotated[Path, typer.Argument(help="LEAD data root (holds data/<Scenario>/<route>/)")]


def synth(
    data_root: DataRoot = DEFAULT_DATA_ROOT,
    routes: Annotated[int, typer.Option(help="usable routes to write")] = 10,
    frames: Annotated[int, typer.Option(help="frames per route")] = 100,
    rejected: Annotated[int, typer.Option(help="extra routes LEAD's filter rejects")] = 3,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    workers: Annotated[int | None, typer.Option(help="processes (default: all cores)")] = None,
    lead_version: Annotated[
        str,
        typer.Option(
            help="meta schema: current (kesai-labs/lead 4489176) or legacy (autonomousvision/lead 8bb1118)"
        ),
    ] = "current",
    zipped: Annotated[
        bool,
        typer.Option("--zip", help="LEAD's released layout: zip/<Scenario>/<route>.zip, nothing extracted"),
    ] = False,
) -> None:
    """Write a seeded synthetic dataset in exactly LEAD's layout (extracted, or zipped as LEAD releases it)."""
    from lead_stream.synthetic import LEAD_VERSIONS, write_synthetic_lead

    if lead_version not in LEAD_VERSIONS:
        raise ConfigError(f"--lead-version: expected one of {', '.join(LEAD_VERSIONS)}, got {lead_version!r}")
    summary = write_synthetic_lead(
        data_root,
        num_routes=routes,
        num_frames=frames,
        seed=seed,
        num_rejected=rejected,
        workers=workers,
        lead_version=lead_version,
        zipped=zipped,
    )
    typer.echo(summary.one_line())


def index(
    data_root: Annotated[
        str,
        typer.Argument(
            help="LEAD data root: a folder (data/<Scenario>/<route>/, zips anywhere) or a URL of zips"
        ),
    ] = str(DEFAULT_DATA_ROOT),
    out: Annotated[
        Path | None,
        typer.Option(help="local data root for index/ and cache/ (needed when DATA_ROOT is a URL)"),
    ] = None,
    source: Annotated[
        list[str] | None,
        typer.Option(help="more roots searched for zipped routes: folders or URLs, repeatable"),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="processes reading routes (default: all cores)")] = None,
    force: Annotated[bool, typer.Option("--force", help="re-read every route, ignore the old index")] = False,
    check_files: Annotated[
        bool, typer.Option("--check-files", help="also stat every file (sees files rewritten in place)")
    ] = False,
    verify_content: Annotated[
        bool,
        typer.Option(
            "--verify-content", help="hash every file of every route (reads it all; sees any change)"
        ),
    ] = False,
    strict: Annotated[bool, typer.Option("--strict", help="exit 2 on the first unreadable route")] = False,
    progress: Annotated[bool, typer.Option(help="progress bar on stderr")] = True,
) -> None:
    """Scan every route (extracted or zipped, local or remote) and write index/routes.parquet, frames.parquet
    and buckets/*.parquet."""
    from lead_stream.index import IndexConfig, build_index
    from lead_stream.sources.byte_sources import is_url

    # a local source outside the data root is recorded by its absolute path (relative to the cwd it would not
    # be found from the data root again)
    sources = [s if is_url(s) else str(Path(s).resolve()) for s in source or ()]
    if is_url(data_root):
        if out is None:
            raise ConfigError(f"{data_root} is a URL: give --out LOCAL_DIR for the index and cache")
        sources.insert(0, data_root)
        root = out
    else:
        root = Path(data_root) if out is None else out
        if out is not None:
            sources.insert(0, str(Path(data_root).resolve()))
    summary = build_index(
        root,
        config=IndexConfig(
            workers=workers,
            force=force,
            check_files=check_files,
            verify_content=verify_content,
            strict=strict,
            progress=progress,
            sources=tuple(sources),
        ),
    )
    for route_id, problem in summary.failures:
        typer.echo(f"warning: unreadable route {route_id}: {problem}", err=True)
    for route_id in summary.content_changed:
        typer.echo(f"content changed: {route_id} (re-read; the next `lead-stream shard` rebuilds it)")
    typer.echo(summary.one_line())


def query(
    sql: Annotated[
        str,
        typer.Argument(
            help="Polars SQL over frames, routes, pretrain, posttrain, ..., samples, shards, failures"
        ),
    ],
    root: Annotated[Path, typer.Option(help="LEAD data root with a built index")] = DEFAULT_DATA_ROOT,
    fmt: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
    max_rows: Annotated[int, typer.Option(help="rows shown by --format table (-1: all)")] = 40,
    cache_dir: Annotated[
        Path | None, typer.Option(help="cache whose samples/shards/failures tables to add (default: newest)")
    ] = None,
    pipeline_id: Annotated[str | None, typer.Option(help="that cache by its pipeline id")] = None,
) -> None:
    """Run an SQL query over the index tables (and the newest complete cache's samples, shards and failures
    tables, when there is one) and print the result."""
    import polars as pl

    from lead_stream.cache.inventory import cache_tables, find_cache
    from lead_stream.core.errors import LeadFormatError
    from lead_stream.index.query import run_query

    if fmt not in ("table", "csv", "json"):
        raise ConfigError(f"--format: expected table, csv or json, got {fmt!r}")
    try:
        extra = cache_tables(find_cache(cache_dir or root, pipeline_id))
    except LeadFormatError:
        if cache_dir is not None or pipeline_id is not None:
            raise
        extra = {}  # no cache yet: the index tables alone
    result = run_query(root, sql, extra_tables=extra)
    if fmt == "csv":
        typer.echo(result.write_csv(), nl=False)
    elif fmt == "json":
        typer.echo(result.write_json())
    else:
        with pl.Config(tbl_rows=max_rows, tbl_cols=-1, tbl_width_chars=200, fmt_str_lengths=80):
            typer.echo(str(result))


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    pairs = {}
    for value in values or ():
        name, sep, rest = value.partition("=")
        if not sep or not name.strip() or not rest.strip():
            raise ConfigError(f"{option}: expected NAME=VALUE, got {value!r}")
        pairs[name.strip()] = rest.strip()
    return pairs


def buckets(
    data_root: DataRoot = DEFAULT_DATA_ROOT,
    collection: Annotated[list[str] | None, typer.Option(help="collections to report (default: all)")] = None,
    by: Annotated[list[str] | None, typer.Option(help="frames columns to break down by")] = None,
    define: Annotated[str | None, typer.Option(help="write a new collection with this name first")] = None,
    bucket: Annotated[
        list[str] | None,
        typer.Option(help="with --define: NAME=SQL WHERE clause, repeatable; first match wins"),
    ] = None,
    rate: Annotated[
        list[str] | None, typer.Option(help="with --define: NAME=MULTIPLIER or NAME=fill (default 1.0)")
    ] = None,
    where: Annotated[
        str, typer.Option(help="with --define: eligible frames: pretrain | posttrain | all | SQL")
    ] = "pretrain",
) -> None:
    """Print frames per bucket (and per town/scenario); --define writes a user collection from SQL."""
    import polars as pl

    from lead_stream.index import collection_names, write_bucket_collection
    from lead_stream.index.buckets import RATE_FILL, BucketCollection
    from lead_stream.index.query import bucket_report

    if define is not None:
        rates: dict[str, float | str] = {}
        for name, value in _pairs(rate, "--rate").items():
            try:
                rates[name] = value if value == RATE_FILL else float(value)
            except ValueError:
                raise ConfigError(f"--rate {name}={value}: expected a number or {RATE_FILL!r}") from None
        definition = _pairs(bucket, "--bucket")
        if not definition:
            raise ConfigError("--define needs at least one --bucket NAME=SQL")
        new = BucketCollection.from_sql(define, definition, rates, where=where)
        existed = define in collection_names(data_root)
        path = write_bucket_collection(data_root, new)
        typer.echo(f"{'replaced' if existed else 'wrote'} collection {define!r} -> {path}")
        collection = [define]
    elif bucket or rate:
        raise ConfigError("--bucket/--rate need --define NAME")
    report = bucket_report(data_root, collection or None, tuple(by or ("town", "scenario")))
    with pl.Config(tbl_rows=200, tbl_cols=-1, tbl_width_chars=200, fmt_str_lengths=60):
        for name, table in report.items():
            typer.echo(f"frames per {'bucket' if name == 'buckets' else 'bucket and ' + name}:")
            typer.echo(str(table))


def failures(
    data_root: DataRoot = DEFAULT_DATA_ROOT,
    cache_dir: Annotated[
        Path | None, typer.Option(help="cache to report (default: the newest complete)")
    ] = None,
    pipeline_id: Annotated[str | None, typer.Option(help="that cache by its pipeline id")] = None,
    max_rows: Annotated[int, typer.Option(help="rows shown (-1: all)")] = 100,
) -> None:
    """Print the routes the index could not read and the frames the cache could not build (file, reason)."""
    import polars as pl

    from lead_stream.cache.inventory import cache_tables, find_cache
    from lead_stream.core.errors import LeadFormatError
    from lead_stream.index.tables import read_checked, table_path

    routes = pl.from_arrow(read_checked(table_path(data_root, "routes"), "routes"))
    unreadable = routes.filter(pl.col("read_error").is_not_null()).select("route_id", "read_error")
    try:
        target = find_cache(cache_dir or data_root, pipeline_id)
    except LeadFormatError:
        if cache_dir is not None or pipeline_id is not None:
            raise
        target = None
    frames = cache_tables(target)["failures"].collect() if target is not None else None
    limit = None if max_rows < 0 else max_rows
    typer.echo(f"{unreadable.height} unreadable routes in {table_path(data_root, 'routes')}")
    for route_id, problem in unreadable.head(limit).iter_rows():
        typer.echo(f"  {route_id}: {problem}")
    if frames is None:
        typer.echo(f"no complete cache under {data_root} (lead-stream shard {data_root})")
        return
    typer.echo(f"{frames.height} failed frames in cache {target}")
    for route_id, frame_idx, file, reason in (
        frames.select("route_id", "frame_idx", "file", "reason").head(limit).iter_rows()
    ):
        typer.echo(f"  {route_id} frame {frame_idx}: {file}: {reason}")
    shown = max(unreadable.height, frames.height)
    if limit is not None and shown > limit:
        typer.echo(
            f'  ... (--max-rows -1 shows all; lead-stream query "SELECT * FROM failures" --root {data_root})'
        )


def register(app: typer.Typer) -> None:
    """Add synth, index, query, buckets and failures to `app`."""
    app.command()(synth)
    app.command()(index)
    app.command()(query)
    app.command()(buckets)
    app.command()(failures)
