"""Bucket collections: frames table → (route_id, frame_idx, bucket, rate) members, as Polars expressions.

A collection is a `where` filter (which frames are eligible at all) plus named buckets, each a boolean
expression over frames.parquet columns. A frame goes into the FIRST bucket whose expression is true
(if/elif order); frames matching none are left out. `rate` keeps LEAD's meaning: a multiplier on the
bucket's size, not a probability; one epoch draws floor(len(bucket) * rate) frames from each bucket.
The rate "fill" is LEAD's Town13 trick: rate = (frames in the whole collection) / len(bucket), i.e. the
bucket is resampled up to the full epoch size.

User collections need no library change:

    town13 = BucketCollection.from_sql(
        "town13_heldout", {"town13": "town = 'Town13'", "other": "TRUE"},
        rates={"town13": 0.0, "other": "fill"}, where="pretrain")
    junctions = BucketCollection.from_sql(
        "junctions_x3", {"junction": "is_junction", "other": "TRUE"}, rates={"junction": 3.0})

`lead_stream.index.write_bucket_collection(data_root, collection)` writes it next to the defaults, and
the definition (SQL or serialized expressions) is stored in the file so `build_index` re-derives it.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from lead_stream.core.errors import ConfigError

RATE_FILL = "fill"  # rate = total frames of the collection / frames of the bucket
RESERVED_NAMES = ("frames", "routes", "samples", "shards", "failures")  # SQL tables of the index and cache
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# LEAD's frame ranges (LEAD_FORMAT §2.2/2.4): range(skip_first, num_frames - skip_last) of usable routes.
PRETRAIN_WHERE = "usable AND frames_from_start >= 1 AND frames_to_end >= 1"
POSTTRAIN_SKIP_FIRST = 8
POSTTRAIN_SKIP_LAST = 8
POSTTRAIN_WHERE = (
    f"usable AND frames_from_start >= {POSTTRAIN_SKIP_FIRST} AND frames_to_end >= {POSTTRAIN_SKIP_LAST}"
)
NAMED_WHERE = {"pretrain": PRETRAIN_WHERE, "posttrain": POSTTRAIN_WHERE, "all": "TRUE"}


def fill_rate() -> pl.Expr:
    """LEAD's Town13 rate of a bucket: frames of the whole collection / frames of the bucket (over members)."""
    return pl.len().cast(pl.Float64) / pl.len().over("bucket").cast(pl.Float64)


def _expr_from(definition: str | pl.Expr) -> pl.Expr:
    return pl.sql_expr(definition) if isinstance(definition, str) else definition


def _expr_to_json(definition: str | pl.Expr) -> dict[str, str]:
    if isinstance(definition, str):
        return {"sql": definition}
    return {"expr": definition.meta.serialize(format="json")}


def _expr_from_json(stored: Mapping[str, str]) -> str | pl.Expr:
    if "sql" in stored:
        return stored["sql"]
    return pl.Expr.deserialize(io.StringIO(stored["expr"]), format="json")


@dataclass(frozen=True, kw_only=True)
class BucketCollection:
    """A named set of weighted buckets over the frames table.

    Attributes:
        name: collection name = file stem `index/buckets/<name>.parquet` = SQL table name in queries.
        buckets: bucket name -> predicate (SQL WHERE text or `pl.Expr`); first match wins.
        rates: bucket name -> LEAD multiplier (float) or "fill"; buckets not listed get 1.0.
        where: eligibility filter applied before the buckets: SQL, `pl.Expr`, or "pretrain"/"posttrain"/"all".
        params: free-form parameters stored in the Parquet metadata (e.g. LEAD's skip_first).
        lead_name: the matching LEAD bucket file stem, if any (e.g. "full_pretrain_buckets").
    """

    name: str
    buckets: Mapping[str, str | pl.Expr]
    rates: Mapping[str, float | str] = field(default_factory=dict)
    where: str | pl.Expr = "pretrain"
    params: Mapping[str, Any] = field(default_factory=dict)
    lead_name: str | None = None

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name) or self.name in RESERVED_NAMES:
            raise ConfigError(
                f"collection name {self.name!r} must match {_NAME_RE.pattern} and not be "
                f"one of {RESERVED_NAMES}"
            )
        if not self.buckets:
            raise ConfigError(f"collection {self.name!r} has no buckets")
        for bucket in self.buckets:
            if not _NAME_RE.match(bucket):
                raise ConfigError(f"bucket name {bucket!r} must match {_NAME_RE.pattern}")
        unknown = sorted(set(self.rates) - set(self.buckets))
        if unknown:
            raise ConfigError(
                f"collection {self.name!r}: rates for unknown buckets {unknown}; "
                f"buckets are {list(self.buckets)}"
            )
        for bucket, rate in self.rates.items():
            if isinstance(rate, str):
                if rate != RATE_FILL:
                    raise ConfigError(
                        f"rate of bucket {bucket!r}: expected a number >= 0 or {RATE_FILL!r}, got {rate!r}"
                    )
            elif not rate >= 0:
                raise ConfigError(f"rate of bucket {bucket!r} must be >= 0, got {rate!r}")

    @classmethod
    def from_sql(
        cls,
        name: str,
        buckets: Mapping[str, str],
        rates: Mapping[str, float | str] | None = None,
        *,
        where: str = "pretrain",
        params: Mapping[str, Any] | None = None,
        lead_name: str | None = None,
    ) -> BucketCollection:
        """A collection whose buckets are SQL WHERE clauses over frames.parquet columns.

        Args:
            name: collection name (identifier).
            buckets: bucket name -> SQL boolean expression, e.g. "town = 'Town13'", "is_junction", "TRUE".
            rates: bucket name -> multiplier or "fill"; default 1.0 each.
            where: eligible frames: "pretrain" (frames 1..N-2 of usable routes), "posttrain" (8..N-9), "all",
                or an SQL expression.
            params: stored as JSON in the Parquet metadata.
            lead_name: LEAD's file stem for the same collection, if any.

        Returns:
            The collection (expressions are parsed now, so a syntax error surfaces here).

        Raises:
            ConfigError: bad names, rates or SQL (a ValueError).
        """
        collection = cls(
            name=name,
            buckets=dict(buckets),
            rates=dict(rates or {}),
            where=where,
            params=dict(params or {}),
            lead_name=lead_name,
        )
        collection.expressions()  # parse now
        return collection

    def expressions(self) -> tuple[pl.Expr, dict[str, pl.Expr]]:
        """The parsed (where, {bucket: predicate}) expressions.

        Raises:
            ConfigError: an SQL text does not parse.
        """
        where = NAMED_WHERE.get(self.where, self.where) if isinstance(self.where, str) else self.where
        try:
            return _expr_from(where), {b: _expr_from(e) for b, e in self.buckets.items()}
        except (pl.exceptions.PolarsError, ValueError) as error:
            raise ConfigError(f"collection {self.name!r}: cannot parse SQL: {error}") from None

    def members(self, frames: pl.LazyFrame, *, fill_rates: bool = True) -> pl.LazyFrame:
        """Frames of this collection with their bucket and rate.

        Args:
            frames: the frames table (frames.parquet columns), or one part of it.
            fill_rates: compute "fill" rates over `frames`; False leaves them null (a part of the table:
                `fill_rate` computes them over the whole collection when it is read).

        Returns:
            LazyFrame (route_id, frame_idx, bucket, rate) sorted by route_id, frame_idx.
        """
        where, predicates = self.expressions()
        names = list(predicates)
        bucket = pl.when(predicates[names[0]]).then(pl.lit(names[0]))
        for name in names[1:]:
            bucket = bucket.when(predicates[name]).then(pl.lit(name))
        bucket = bucket.otherwise(pl.lit(None, dtype=pl.String))
        rate = pl.lit(1.0, dtype=pl.Float64)
        for name, value in self.rates.items():
            if value == RATE_FILL:
                value_expr = fill_rate() if fill_rates else pl.lit(None, dtype=pl.Float64)
            else:
                value_expr = pl.lit(float(value), dtype=pl.Float64)
            rate = pl.when(pl.col("bucket") == name).then(value_expr).otherwise(rate)
        return (
            frames.filter(where.fill_null(False))
            .with_columns(bucket=bucket)
            .filter(pl.col("bucket").is_not_null())
            .with_columns(rate=rate)
            .select("route_id", pl.col("frame_idx").cast(pl.Int32), "bucket", "rate")
            .sort("route_id", "frame_idx")
        )

    def definition(self) -> dict[str, Any]:
        """JSON-able definition (stored in the Parquet metadata; `from_definition` inverts it).

        Buckets are a list of `{"bucket": name, "sql"|"expr": ...}` in match order: a JSON object would
        lose the order (first match wins) as soon as anything sorts its keys.
        """
        return {
            "name": self.name,
            "where": _expr_to_json(self.where),
            "buckets": [{"bucket": b, **_expr_to_json(e)} for b, e in self.buckets.items()],
            "rates": dict(self.rates),
            "params": dict(self.params),
            "lead_name": self.lead_name,
        }

    @classmethod
    def from_definition(cls, definition: Mapping[str, Any]) -> BucketCollection:
        """Rebuild a collection from `definition()` output.

        Definitions written before issue 13 stored the buckets as a JSON object with sorted keys, so
        their match order is lost: such a collection with several buckets raises `ConfigError` (define
        it again) instead of silently matching in alphabetical order.
        """
        stored = definition["buckets"]
        if isinstance(stored, Mapping):
            if len(stored) > 1:
                raise ConfigError(
                    f"collection {definition['name']!r} was stored by an older lead-stream with its "
                    f"buckets {sorted(stored)} in alphabetical order, not in the order they were defined "
                    "(first match wins); define it again (lead-stream buckets --define ...)"
                )
            buckets = {b: _expr_from_json(e) for b, e in stored.items()}
        else:
            buckets = {entry["bucket"]: _expr_from_json(entry) for entry in stored}
        return cls(
            name=definition["name"],
            where=_expr_from_json(definition["where"]),
            buckets=buckets,
            rates=definition.get("rates", {}),
            params=definition.get("params", {}),
            lead_name=definition.get("lead_name"),
        )

    def definition_json(self) -> str:
        """`definition()` as canonical JSON (sorted object keys; the bucket list keeps its order)."""
        return json.dumps(self.definition(), sort_keys=True)


def pretrain_collection() -> BucketCollection:
    """LEAD's FullPretrain: frames 1..N-2 of every usable route, one bucket, rate 1.0."""
    return BucketCollection.from_sql(
        "pretrain",
        {"all": "TRUE"},
        {"all": 1.0},
        where="pretrain",
        params={"skip_first": 1, "skip_last": 1},
        lead_name="full_pretrain_buckets",
    )


def posttrain_collection(
    *,
    num_waypoints: int = 8,
    skip_first: int = POSTTRAIN_SKIP_FIRST,
    skip_last: int = POSTTRAIN_SKIP_LAST,
    waypoint_spacing: int = 5,
) -> BucketCollection:
    """LEAD's FullPosttrain `full_posttrain_buckets_8_8_8_5`: frames 8..N-9 of usable routes, rate 1.0."""
    where = f"usable AND frames_from_start >= {skip_first} AND frames_to_end >= {skip_last}"
    return BucketCollection.from_sql(
        "posttrain",
        {"all": "TRUE"},
        {"all": 1.0},
        where=where,
        params={
            "num_waypoints": num_waypoints,
            "skip_first": skip_first,
            "skip_last": skip_last,
            "waypoint_spacing": waypoint_spacing,
        },
        lead_name=f"full_posttrain_buckets_{num_waypoints}_{skip_first}_{skip_last}_{waypoint_spacing}",
    )


def town13_heldout_collection(phase: str = "pretrain") -> BucketCollection:
    """LEAD's Town13HeldOut{Pretrain,Posttrain}: the phase's frames in two buckets, TOWN13 (rate 0.0) and
    OTHER_TOWNS (rate total / len(other): the other towns resampled up to the collection's full size).

    LEAD puts a route in TOWN13 when "Town13" occurs in its path; here, in its route id.
    """
    suffix = "pretrain_buckets" if phase == "pretrain" else "posttrain_buckets_8_8_8_5"
    skip = (1, 1) if phase == "pretrain" else (POSTTRAIN_SKIP_FIRST, POSTTRAIN_SKIP_LAST)
    return BucketCollection.from_sql(
        f"town13_heldout_{phase}",
        {"town13": "route_id LIKE '%Town13%'", "other_towns": "TRUE"},
        {"town13": 0.0, "other_towns": RATE_FILL},
        where=phase,
        params={"skip_first": skip[0], "skip_last": skip[1]},
        lead_name=f"town13_heldout_{suffix}",
    )


def failed_collection() -> BucketCollection:
    """LEAD's FailedBucketCollection (`failed_buckets.gz`): frames 1..N-2 of the routes LEAD's
    `route_completed_but_fail` keeps (finished, not crashed, and not kept by the training filter), rate 1.0.
    LEAD takes the frame range from its config (1..N-2 for its default, pre-training config)."""
    return BucketCollection.from_sql(
        "failed",
        {"all": "TRUE"},
        {"all": 1.0},
        where="completed_but_failed AND frames_from_start >= 1 AND frames_to_end >= 1",
        params={"skip_first": 1, "skip_last": 1},
        lead_name="failed_buckets",
    )


def default_collections() -> tuple[BucketCollection, ...]:
    """The collections `build_index` always writes: LEAD's pretrain, posttrain, town13_heldout_pretrain,
    town13_heldout_posttrain and failed."""
    return (
        pretrain_collection(),
        posttrain_collection(),
        town13_heldout_collection("pretrain"),
        town13_heldout_collection("posttrain"),
        failed_collection(),
    )


def builtin_names() -> tuple[str, ...]:
    """Names of the collections `build_index` writes itself (reserved: a user collection cannot take one)."""
    return tuple(c.name for c in default_collections())


def epoch_size(members: pl.DataFrame) -> int:
    """LEAD's epoch length of a members table: sum over buckets of floor(len(bucket) * rate)."""
    if members.is_empty():
        return 0
    sizes = members.group_by("bucket").agg(pl.len().alias("n"), pl.col("rate").first())
    return int(sum(int(n * rate) for n, rate in zip(sizes["n"], sizes["rate"])))
