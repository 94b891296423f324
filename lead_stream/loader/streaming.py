"""Shard cache + bucket table → `Batch`es for one rank: a seeded, resumable, DDP-exact streaming loader.

Stages (each a plain function or generator, composed in `_PlanStream.__iter__`):
  catalog (manifest ⋈ bucket table) → epoch plan (`sampling.epoch_plan`) → padded global batches →
  this rank's slice → this worker's reads (k consecutive batches, read c ≡ worker mod num_workers) →
  sample reads grouped by shard (views of memory-mapped shards, an LRU of open ones) → decode the chosen
  variant (the read's JPEGs, then its array groups) → collate into one `Batch` of the read's k batches
  (rasters run-length coded until `Batch.to(device)`) → in a worker, packed into one shared-memory block
  (`packed`) → the trainer's process unpacks each of the k batches as views of it.
  With `num_workers=0` the stream is iterated directly, without a DataLoader around it.

The plan is a pure function of (seed, epoch, mixture, manifest), computed once per epoch by the rank's
process and handed to its workers in shared memory (`stream.SharedPlan`) with a small control block read
each time iteration starts, so persistent workers see every new epoch and mixture (LEAD's frozen-order
defect is fixed) without recomputing anything. The catalog's arrays are memory-mapped files shared by
every rank and worker of the node (`catalog_store`). The plan already shuffles globally, so local shards need
no shuffle buffer; `locality_window` trades batch diversity for few live shards when streaming cold or
remote shards. Bad samples: `on_bad_sample="raise"` (default) raises `LeadFormatError` naming shard,
key and member; `"skip"` replaces the bad sample by a copy of the next good sample of the same per-rank
batch (cyclically), so every rank still yields the same number of full batches; skips are counted.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from lead_stream.core.batch import Batch
from lead_stream.core.errors import ConfigError, LeadFormatError, LeadStreamError
from lead_stream.loader import sampling
from lead_stream.loader.catalog import SAMPLE_COLUMNS, Catalog
from lead_stream.loader.catalog_store import catalog_stamp, load_catalog
from lead_stream.loader.collate import split_batch
from lead_stream.loader.config import LoaderConfig
from lead_stream.loader.packed import ArenaBoard, PackedBatch
from lead_stream.loader.sample_layout import expected_members
from lead_stream.loader.selection import bucket_table_path, selected_members, selection_name
from lead_stream.loader.stream import PlanStream, SharedPlan, WorkerError, build_epoch

_LOG = logging.getLogger(__name__)
STATE_VERSION = 1
_CONTROL_BYTES = 1 << 16


def _as_is(item: Any) -> Any:
    """A worker's (batch, info) as the stream yields it (torch's default would walk and convert it)."""
    return item


class StreamingLoader:
    """Iterable of `Batch` for one rank; see `make_loader`."""

    def __init__(
        self, catalog: Catalog, config: LoaderConfig, locations: list[str], *, rank: int, world_size: int
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in 0..world_size-1 (world_size {world_size})")
        if config.batch_size % world_size:
            raise ConfigError(
                f"global batch_size {config.batch_size} is not divisible by world_size {world_size}"
            )
        self.catalog, self.config, self.rank, self.world_size = catalog, config, rank, world_size
        self.bucket_names = catalog.bucket_names
        self._control = torch.zeros(_CONTROL_BYTES, dtype=torch.uint8).share_memory_()
        # a worker's reads in flight (prefetch_factor) + the one the trainer holds + one spare
        self._board = (
            ArenaBoard(config.num_workers, config.prefetch_factor + 2)
            if config.num_workers > 0 and config.reuse_shared_memory
            else None
        )
        self._dataloader: DataLoader | None = None
        self._epoch_idx, self._mixture = 0, dict(config.mixture) if config.mixture else None
        self._epoch = build_epoch(catalog, config, epoch=0, mixture=self._mixture)
        shared = SharedPlan(self._epoch.slot_rows.shape[0]) if config.num_workers > 0 else None
        self._stream = PlanStream(
            catalog, config, locations, rank, world_size, self._control, shared, board=self._board
        )
        self._done, self._start, self._resume_pending = 0, 0, False
        self._telemetry = {
            "samples": 0,
            "batches": 0,
            "pads": 0,
            "skipped": 0,
            "data_wait_s": 0.0,
            "iter_s": 0.0,
            "peak_rss_mb_per_worker": 0.0,
            "rss_growth_mb_per_worker": 0.0,
            "shard_opens": 0,
            "shm_allocs_per_worker": 0,
            "shm_fallbacks_per_worker": 0,
        }

    # --- epoch / mixture ---
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next `__iter__` serves, from its start.

        Right after `load_state_dict`, setting the saved epoch keeps the resume position instead.
        """
        if self._resume_pending and int(epoch) == self._epoch_idx:
            return
        self._resume_pending = False
        self._epoch_idx, self._start, self._done = int(epoch), 0, 0
        self._epoch = build_epoch(self.catalog, self.config, epoch=self._epoch_idx, mixture=self._mixture)

    def set_mixture(self, mixture: Mapping[str, float] | None) -> None:
        """Bucket → rate (LEAD meaning) from now on; call between epochs, before `set_epoch`.

        Raises:
            ConfigError: `mixture` names a bucket the collection lacks (the message lists its buckets),
                or a resume is pending and `mixture` differs from the checkpointed one.
        """
        new = dict(mixture) if mixture else None
        if self._rates(new).tolist() == self._rates(self._mixture).tolist():
            self._mixture = new
            return
        if self._resume_pending:
            raise ConfigError(
                f"mixture {new} differs from the checkpointed {self._mixture} of the resumed epoch"
            )
        self._mixture, self._start, self._done = new, 0, 0
        self._epoch = build_epoch(self.catalog, self.config, epoch=self._epoch_idx, mixture=self._mixture)

    def _rates(self, mixture: Mapping[str, float] | None) -> np.ndarray:
        try:
            return sampling.resolve_rates(self.catalog.bucket_names, self.catalog.bucket_rates, mixture)
        except ValueError as error:
            raise ConfigError(f"collection {self.config.collection!r}: {error}") from None

    def __len__(self) -> int:
        """Batches per epoch for this rank (the same on every rank)."""
        return self._epoch.num_batches

    @property
    def plan(self) -> sampling.EpochPlan:
        """The current epoch's plan (before padding)."""
        return self._epoch.plan

    def real_samples(self, batch_idx: int) -> np.ndarray:
        """(per-rank B,) bool: which rows of this rank's `batch_idx`-th batch of the epoch are plan samples.

        False marks padding (the plan's first samples served again to fill the last global batch); metrics
        that count every sample once leave those rows out.
        """
        slots = sampling.rank_slots(
            batch_idx, global_batch=self.config.batch_size, rank=self.rank, world_size=self.world_size
        )
        return slots < len(self._epoch.plan)

    # --- iteration ---
    def __iter__(self) -> Iterator[Batch]:
        if self._start >= self._epoch.num_batches and not self._resume_pending:
            self._start = 0  # iterating again without set_epoch re-serves the same epoch
        self._resume_pending = False
        start = self._start
        self._stream.seed_epoch_cache(self._epoch_idx, self._mixture, self._epoch)
        self._share_plan()
        spec = json.dumps(
            {
                "epoch": self._epoch_idx,
                "start": start,
                "mixture": self._mixture,
                "num_slots": int(self._epoch.slot_rows.shape[0]),
                "num_batches": self._epoch.num_batches,
                "plan_len": self._epoch.plan_len,
            }
        ).encode()
        if len(spec) >= _CONTROL_BYTES:
            raise ConfigError(f"mixture too large to pass to workers ({len(spec)} bytes)")
        self._control.zero_()
        self._control[: len(spec)] = torch.frombuffer(bytearray(spec), dtype=torch.uint8)
        # no workers: iterate the stream itself (a DataLoader would only add its per-batch conversion walk)
        iterator = iter(self._loader()) if self.config.num_workers > 0 else iter(self._stream)
        tele, t_prev = self._telemetry, time.perf_counter()
        self._done = start
        while True:
            t0 = time.perf_counter()
            try:
                payload, info = next(iterator)
            except StopIteration:
                break
            except ConnectionError as err:  # a batch's arena descriptor was being fetched from a dead worker
                self._dataloader = None
                raise RuntimeError(f"DataLoader worker exited unexpectedly ({err!r})") from err
            except Exception:
                self._dataloader = None  # e.g. a worker died: the next __iter__ starts fresh workers
                raise
            finally:
                tele["data_wait_s"] += time.perf_counter() - t0
            if isinstance(payload, WorkerError):
                raise LeadFormatError(payload.path, payload.problem)
            if isinstance(payload, PackedBatch):
                payload = payload.unpack()
            if self.config.pin_memory and self.config.num_workers == 0 and torch.cuda.is_available():
                payload = payload.pin_memory()
            batches = split_batch(payload, info["batch_size"], info["run_bounds"])
            del payload  # the read's arena goes back to its worker once its last batch is dropped
            tele["skipped"] += info["skipped"]
            tele["shard_opens"] = max(tele["shard_opens"], info["shard_opens"])
            for name in ("shm_allocs", "shm_fallbacks"):
                key = f"{name}_per_worker"
                tele[key] = max(tele[key], info.get(name, 0))
            tele["peak_rss_mb_per_worker"] = max(tele["peak_rss_mb_per_worker"], info["peak_rss_mb"])
            tele["rss_growth_mb_per_worker"] = max(tele["rss_growth_mb_per_worker"], info["rss_growth_mb"])
            for pads in info["pads"]:
                batch = batches.pop(0)
                self._done += 1
                self._start = self._done
                tele["batches"] += 1
                tele["samples"] += batch.size
                tele["pads"] += pads
                t_now = time.perf_counter()
                tele["iter_s"], t_prev = tele["iter_s"] + t_now - t_prev, t_now
                yield batch
                del batch  # not held while waiting for the next one: its arena can go back to its worker

    def _share_plan(self) -> None:
        """Copy this epoch's slots into the workers' shared block (a larger block means new workers)."""
        if self.config.num_workers == 0:
            return
        shared = self._stream.shared
        if shared is None or not shared.fits(self._epoch):
            self._stream.shared = SharedPlan(self._epoch.slot_rows.shape[0])
            self._dataloader = None  # workers forked with the old block cannot see the new one
        self._stream.shared.write(self._epoch)

    def _loader(self) -> DataLoader:
        cfg = self.config
        if self._dataloader is None or not (cfg.persistent_workers and cfg.num_workers > 0):
            extra = (
                {"prefetch_factor": cfg.prefetch_factor, "persistent_workers": cfg.persistent_workers}
                if cfg.num_workers > 0
                else {}
            )
            self._dataloader = DataLoader(
                self._stream,
                batch_size=None,
                num_workers=cfg.num_workers,
                pin_memory=cfg.pin_memory,
                collate_fn=_as_is,  # batches leave the stream whole: skip torch's per-item conversion walk
                **extra,
            )
        return self._dataloader

    # --- state ---
    def state_dict(self) -> dict[str, Any]:
        """JSON-able position: resume with `load_state_dict` on any world size with the same global batch."""
        return {
            "version": STATE_VERSION,
            "plan_fingerprint": self._epoch.plan.fingerprint,
            "pipeline_id": self.catalog.pipeline_id,
            "epoch": self._epoch_idx,
            "seed": self.config.seed,
            "global_batch_size": self.config.batch_size,
            "global_batches_done": self._done,
            "mixture": self._mixture,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the saved epoch after its `global_batches_done` global batches.

        Raises:
            ConfigError: the state comes from another version, seed or global batch size.
            LeadStreamError: the recomputed plan differs (the cache or bucket table changed).
        """
        if state.get("version") != STATE_VERSION:
            raise ConfigError(f"loader state version {state.get('version')!r}, expected {STATE_VERSION}")
        if state["global_batch_size"] != self.config.batch_size:
            raise ConfigError(
                f"cannot resume: saved global batch {state['global_batch_size']} != "
                f"batch_size {self.config.batch_size}; keep the global batch when changing world size"
            )
        if state["seed"] != self.config.seed:
            raise ConfigError(f"cannot resume: saved seed {state['seed']} != config seed {self.config.seed}")
        self._mixture = dict(state["mixture"]) if state["mixture"] else None
        self._resume_pending = False
        self.set_epoch(int(state["epoch"]))
        if self._epoch.plan.fingerprint != state["plan_fingerprint"]:
            raise LeadStreamError(
                f"cannot resume: the plan of epoch {state['epoch']} changed (fingerprint "
                f"{self._epoch.plan.fingerprint} != saved {state['plan_fingerprint']}); "
                "the cache or bucket table differs from the checkpointed run"
            )
        self._start = self._done = int(state["global_batches_done"])
        self._resume_pending = True

    def telemetry(self) -> dict[str, float]:
        """Counters since construction: samples, batches, samples_per_s, data_wait_s, pads, skipped, ..."""
        tele = dict(self._telemetry)
        tele["samples_per_s"] = tele["samples"] / tele["iter_s"] if tele["iter_s"] else 0.0
        tele["data_wait_fraction"] = tele["data_wait_s"] / tele["iter_s"] if tele["iter_s"] else 0.0
        tele["missing_from_manifest"] = self.catalog.num_missing
        tele["epoch"] = self._epoch_idx
        tele["global_batches_done"] = self._done
        return tele


def make_loader(
    data_root: Path,
    *,
    config: LoaderConfig = LoaderConfig(),
    rank: int = 0,
    world_size: int = 1,
    cache_dir: Path | None = None,
) -> StreamingLoader:
    """A streaming loader over the shard cache of `data_root` for one rank.

    Args:
        data_root: LEAD data root with index/buckets/<collection>.parquet and cache/.
        config: loader settings (global batch, seed, collection, mixture, workers, ...).
        rank: this process's rank.
        world_size: number of ranks; must divide config.batch_size.
        cache_dir: a specific cache directory; None → the newest complete cache under <data_root>/cache.

    Returns:
        The loader; call `set_epoch(e)` before each epoch.

    Raises:
        LeadFormatError: missing or inconsistent bucket table / manifest.
        ConfigError: bad rank, world size or config.
    """
    from lead_stream.cache.manifest import (
        MANIFEST_FILENAME,
        read_manifest_columns,
        read_manifest_info,
        resolve_cache_dir,
    )

    data_root = Path(data_root)
    cache_dir = Path(cache_dir) if cache_dir is not None else resolve_cache_dir(data_root)
    info = read_manifest_info(cache_dir)
    lacking = expected_members() - set(info["members"])
    if lacking:
        raise LeadFormatError(
            cache_dir / "manifest.json",
            f"samples lack members {sorted(lacking)} the loader "
            f"decodes (has {list(info['members'])}); rebuild the cache",
        )
    buckets_path = bucket_table_path(data_root, config.collection)
    if not buckets_path.exists():
        raise LeadFormatError(
            buckets_path, f"no bucket table for collection {config.collection!r} (run `index`)"
        )
    inputs = [buckets_path]
    if config.exclude_collection is not None:
        inputs.append(bucket_table_path(data_root, config.exclude_collection))

    def build() -> Catalog:
        members, _ = selected_members(data_root, config)  # buckets kept, held-out frames left out
        return Catalog.from_tables(
            pipeline_id=info["pipeline_id"],
            samples=read_manifest_columns(cache_dir, "samples", list(SAMPLE_COLUMNS)),
            shards=read_manifest_columns(cache_dir, "shards", ["shard"]),
            buckets=members.select("route_id", "frame_idx", "bucket", "rate"),
            buckets_path=buckets_path,
        )

    name = selection_name(config)
    stamp = catalog_stamp(cache_dir / MANIFEST_FILENAME, [p for p in inputs if p.exists()], name)
    catalog = load_catalog(cache_dir, stamp, name, build)
    names = np.char.decode(np.asarray(catalog.shard_names), "utf-8").tolist()
    prefix = f"{os.fspath(cache_dir)}{os.sep}"
    locations = (
        [config.shard_url.format(shard=name) for name in names]
        if config.shard_url
        else [prefix + name for name in names]
    )
    if not config.shard_url:
        _check_shards_present(locations, data_root)
    return StreamingLoader(catalog, config, locations, rank=rank, world_size=world_size)


def _check_shards_present(paths: list[str], data_root: Path) -> None:
    """Every shard the plan reads is on disk (one stat each), so a deleted shard is named before training."""
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise LeadFormatError(
            Path(missing[0]),
            f"shard listed in shards.parquet is missing{more}; rebuild it: lead-stream shard {data_root}",
        )
