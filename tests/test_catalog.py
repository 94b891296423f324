"""The loader's catalog and epoch plan at scale (issue 15): built vectorised once per cache and collection,
memory-mapped by every loader, and the plan handed to workers through shared memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from lead_stream.cache.manifest import read_manifest, resolve_cache_dir
from lead_stream.loader import LoaderConfig, make_loader
from lead_stream.loader import stream as stream_module
from lead_stream.loader.catalog import Catalog, strings_to_bytes
from lead_stream.loader.catalog_store import CATALOG_DIRNAME


def _reference_catalog(root: Path) -> Catalog:
    manifest = read_manifest(resolve_cache_dir(root))
    buckets = pl.read_parquet(root / "index" / "buckets" / "posttrain.parquet")
    return Catalog.from_tables(
        pipeline_id=manifest.pipeline_id,
        samples=manifest.samples.sample(fraction=1.0, shuffle=True, seed=1),  # any row order
        shards=manifest.shards,
        buckets=buckets,
        buckets_path="posttrain.parquet",
    )


def test_catalog_is_built_once_and_memory_mapped_by_every_loader_15(
    sharded_root: Path, tmp_path: Path
) -> None:
    import shutil

    root = tmp_path / "root"
    shutil.copytree(sharded_root, root, ignore=shutil.ignore_patterns(CATALOG_DIRNAME))
    config = LoaderConfig(batch_size=4, num_workers=0, collection="posttrain")
    first = make_loader(root, config=config)
    folders = sorted((resolve_cache_dir(root) / CATALOG_DIRNAME).glob("posttrain-*"))
    assert len(folders) == 1
    stamp = (folders[0] / "catalog.json").stat().st_mtime_ns
    second = make_loader(root, config=config, rank=1, world_size=2)
    assert (folders[0] / "catalog.json").stat().st_mtime_ns == stamp  # mapped, not rebuilt
    for cat in (first.catalog, second.catalog):
        assert isinstance(cat.sample_offset, np.memmap) and isinstance(cat.bucket_row_ids, np.memmap)
        assert Path(cat.sample_key.filename).parent == folders[0]
    reference = _reference_catalog(root)
    for name in (
        "sample_shard",
        "sample_offset",
        "sample_size",
        "sample_key",
        "sample_frame",
        "bucket_row_ids",
    ):
        np.testing.assert_array_equal(getattr(first.catalog, name), getattr(reference, name))
    assert (
        first.catalog.collection_size == reference.collection_size == len(np.unique(reference.bucket_row_ids))
    )
    keys = read_manifest(resolve_cache_dir(root)).samples["key"].to_list()
    assert [first.catalog.key(i) for i in range(first.catalog.num_samples)] == keys  # key order


def test_strings_to_bytes_is_exact_also_for_non_ascii_15() -> None:
    for values in (["a", "bcd", ""], ["Accident/Town01_x/0001", "é/0002"]):
        out = strings_to_bytes(pl.Series(values))
        assert [v.decode() for v in out] == values


def test_workers_take_the_plan_from_shared_memory_and_never_rebuild_it_15(
    sharded_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = LoaderConfig(batch_size=4, num_workers=2, collection="posttrain", epoch_size=24)
    loader = make_loader(sharded_root, config=config)

    def no_rebuild(*args, **kwargs):
        raise AssertionError("a worker rebuilt the epoch plan")

    monkeypatch.setattr(stream_module, "build_epoch", no_rebuild)  # what PlanStream would call in a worker
    served = {}
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        served[epoch] = [b.frame_idx.clone() for b in loader]
    monkeypatch.undo()
    inline = make_loader(
        sharded_root, config=LoaderConfig(batch_size=4, num_workers=0, collection="posttrain", epoch_size=24)
    )
    for epoch in (0, 1):
        inline.set_epoch(epoch)
        assert all(torch.equal(a, b.frame_idx) for a, b in zip(served[epoch], inline, strict=True))
    assert not torch.equal(torch.cat(served[0]), torch.cat(served[1]))


def test_a_warm_loader_start_maps_the_catalog_and_reads_no_table_then_a_stale_one_is_rebuilt_15(
    sharded_root: Path, tmp_path: Path
) -> None:
    """The second start maps the stored arrays: no Polars import (no table read), the same plan; after the
    cache changes, the next start builds a new catalog that matches the new manifest."""
    import json
    import shutil
    import subprocess
    import sys

    from lead_stream.cache.shard import ShardConfig, write_shards
    from lead_stream.index import IndexConfig, build_index

    root = tmp_path / "root"
    shutil.copytree(sharded_root, root, ignore=shutil.ignore_patterns(CATALOG_DIRNAME))
    config = LoaderConfig(batch_size=4, num_workers=0, collection="posttrain")
    first = make_loader(root, config=config)
    first.set_epoch(1)
    code = (
        "import json, sys\n"
        "from lead_stream.loader import LoaderConfig, make_loader\n"
        f"loader = make_loader({str(root)!r}, config=LoaderConfig(batch_size=4, num_workers=0, "
        "collection='posttrain'))\n"
        "loader.set_epoch(1)\n"
        "batch = next(iter(loader))\n"
        "print(json.dumps({'polars': 'polars' in sys.modules, 'rows': loader.plan.rows.tolist(),"
        " 'size': batch.size}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    warm = json.loads(done.stdout.strip().splitlines()[-1])
    assert warm["polars"] is False and warm["size"] == 4
    assert warm["rows"] == first.plan.rows.tolist()

    cache_dir = resolve_cache_dir(root)
    route = sorted(p for p in (root / "data").glob("*/*") if p.is_dir())[0]
    shutil.move(route, tmp_path / "parked")  # a route removed: the cache changes, the catalog is stale
    build_index(root, config=IndexConfig(workers=1, progress=False))
    write_shards(root, config=ShardConfig(workers=1, max_samples_per_shard=16, progress=False))
    rebuilt = make_loader(root, config=config)
    assert len(list((cache_dir / CATALOG_DIRNAME).glob("posttrain-*"))) == 2
    manifest = read_manifest(cache_dir)
    assert rebuilt.catalog.num_samples == manifest.samples.height < first.catalog.num_samples
    keys = manifest.samples["key"].to_list()
    assert [rebuilt.catalog.key(i) for i in range(rebuilt.catalog.num_samples)] == keys
