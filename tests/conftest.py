"""Shared fixtures: one session-scoped synthetic LEAD tree and the artefacts built from it.

Session fixtures are read-only by convention: a test that modifies data copies it into `tmp_path` first
(see `copy_lead_root`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

NUM_ROUTES = 4  # usable routes in the shared tree (plus the generator's default rejected routes)
NUM_FRAMES = 24  # frames per route: >= 17 so posttrain has frames 8..N-9


@pytest.fixture(scope="session")
def lead_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LEAD data root (`carla_root`) with synthetic routes under `data/<Scenario>/<route>/`."""
    from lead_stream.synthetic import write_synthetic_lead

    root = tmp_path_factory.mktemp("lead") / "carla_leaderboard2"
    write_synthetic_lead(root, num_routes=NUM_ROUTES, num_frames=NUM_FRAMES, seed=0)
    return root


@pytest.fixture(scope="session")
def indexed_root(lead_root: Path) -> Path:
    """`lead_root` with `index/` built (routes, frames, pretrain and posttrain bucket tables)."""
    from lead_stream.index import IndexConfig, build_index

    build_index(lead_root, config=IndexConfig(workers=1, progress=False))
    return lead_root


@pytest.fixture(scope="session")
def sharded_root(indexed_root: Path) -> Path:
    """`indexed_root` with a shard cache under `cache/<pipeline-id>/` (small shards, several per route set)."""
    from lead_stream.cache.shard import ShardConfig, write_shards

    write_shards(indexed_root, config=ShardConfig(workers=1, max_samples_per_shard=16, progress=False))
    return indexed_root


@pytest.fixture()
def copy_lead_root(lead_root: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the synthetic tree (for tests that corrupt or touch files)."""
    target = tmp_path / "carla_leaderboard2"
    shutil.copytree(lead_root, target, ignore=shutil.ignore_patterns("index", "cache"))
    return target


@pytest.fixture(scope="session")
def legacy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic routes in LEAD's legacy meta schema (autonomousvision/lead 8bb1118), extracted (issue 12)."""
    from lead_stream.synthetic import write_synthetic_lead

    root = tmp_path_factory.mktemp("lead_legacy") / "carla_leaderboard2"
    write_synthetic_lead(
        root, num_routes=2, num_frames=NUM_FRAMES, seed=3, num_rejected=1, lead_version="legacy"
    )
    return root


@pytest.fixture(scope="session")
def heldout_root(sharded_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of `sharded_root`, whose index holds LEAD's Town13 held-out collections (validation sets, issue 14).

    The shared tree has one Town13 route: `town13_heldout_<phase>` bucket `town13` holds its frames.
    """
    root = tmp_path_factory.mktemp("heldout") / "carla_leaderboard2"
    shutil.copytree(sharded_root, root)
    assert (root / "index" / "buckets" / "town13_heldout_posttrain.parquet").is_dir()  # parts (issue 15)
    return root
