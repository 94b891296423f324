"""The whole pipeline on one machine: synthetic routes → index → shards → pretrain → posttrain → eval.

This is the README's demo: every stage is the same library call the CLI makes, in the order of the data
flow, on a small synthetic LEAD tree it generates (unless routes are already there). Both phases validate
on held-out frames (LEAD's Town13 held-out collections when the routes have Town13 frames, else one
held-out route) that training never sees. Outputs: the index and cache under `data_root`, two training
runs (`<logdir>/pretrain`, `<logdir>/posttrain`) with LEAD-named checkpoints, TensorBoard event files and
metrics.jsonl, and `<logdir>/eval/` (metrics.json, report.html) comparing the two checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lead_stream.core import layout


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    # --- data ---
    num_routes: int = 6  # usable synthetic routes (the generator adds 3 rejected ones)
    num_frames: int = 40  # frames per route (>= 17 so posttrain has frames 8..N-9)
    seed: int = 0  # generator, loader and model seed
    samples_per_shard: int = 64  # small shards: the demo's cache has several (README: plain WebDataset)
    # --- training (compact preset, CPU friendly) ---
    epochs: int = 2  # epochs per phase
    batch_size: int = 4  # global batch
    num_workers: int = 1  # loader workers per rank
    extra_overrides: tuple[str, ...] = ()  # more key=value overrides for both phases

    def __post_init__(self) -> None:
        if self.num_frames < 17:
            raise ValueError(f"num_frames must be >= 17 so posttrain has frames, got {self.num_frames}")


@dataclass(frozen=True)
class DemoSummary:
    lines: tuple[str, ...]  # one line per stage
    pretrain_dir: Path
    posttrain_dir: Path
    report: Path | None = None  # the evaluation report of both checkpoints


def heldout_collections(data_root: Path) -> dict[str, tuple[str, str]]:
    """The demo's validation collections (written here when needed); phase → (collection, held-out bucket).

    LEAD's town13_heldout_<phase> when its `town13` bucket has frames; else demo_heldout_<phase>, holding
    out the last route (by route_id) of the phase.
    """
    import polars as pl

    from lead_stream.index import write_bucket_collection
    from lead_stream.index.buckets import RATE_FILL, BucketCollection
    from lead_stream.loader.selection import read_members

    chosen = {}
    for phase in ("pretrain", "posttrain"):
        name = f"town13_heldout_{phase}"  # written by `index` (a built-in collection)
        if read_members(data_root, name).filter(pl.col("bucket") == "town13").height:
            chosen[phase] = (name, "town13")
            continue
        last = read_members(data_root, phase)["route_id"].max()
        demo = BucketCollection.from_sql(
            f"demo_heldout_{phase}",
            {"heldout": f"route_id = '{last}'", "other": "TRUE"},
            {"heldout": 0.0, "other": RATE_FILL},
            where=phase,
        )
        write_bucket_collection(data_root, demo)
        chosen[phase] = (demo.name, "heldout")
    return chosen


def run_demo(
    data_root: Path, *, logdir: Path, config: DemoConfig = DemoConfig(), progress: bool = True, echo=print
) -> DemoSummary:
    """Run synth (if `data_root` has no routes) → index → shard → pretrain → posttrain → eval.

    Args:
        data_root: LEAD data root (`carla_root`); routes are generated under `data_root/data/` when absent.
        logdir: parent of the two training run directories.
        config: sizes of the demo.
        progress: show progress bars.
        echo: where each stage's one-line summary goes.

    Returns:
        The stage lines and the two run directories.
    """
    from lead_stream.cache.shard import ShardConfig, write_shards
    from lead_stream.evaluate.checkpoints import EvalConfig, evaluate_checkpoints
    from lead_stream.index.build import IndexConfig, build_index
    from lead_stream.synthetic import write_synthetic_lead
    from lead_stream.train.config import posttrain_config, pretrain_config, resolve_config
    from lead_stream.train.trainer import train

    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        echo(line)

    data_root = Path(data_root)
    if not layout.routes_root(data_root).exists():
        synth = write_synthetic_lead(
            data_root,
            num_routes=config.num_routes,
            num_frames=config.num_frames,
            seed=config.seed,
            lead_version="current",  # the meta schema of LEAD today (kesai-labs/lead 4489176)
        )
        say(f"[1/6] synth: {synth.one_line()}")
    else:
        say(f"[1/6] synth: routes already under {layout.routes_root(data_root)}, kept")
    say(f"[2/6] index: {build_index(data_root, config=IndexConfig(progress=progress)).one_line()}")
    shard_config = ShardConfig(progress=progress, max_samples_per_shard=config.samples_per_shard)
    say(f"[3/6] shard: {write_shards(data_root, config=shard_config).one_line()}")

    common = [
        f"carla_root={data_root}",
        "model.preset=compact",
        f"epochs={config.epochs}",
        f"batch_size={config.batch_size}",
        f"num_workers={config.num_workers}",
        f"seed={config.seed}",
        f"progress={str(progress).lower()}",
        *config.extra_overrides,
    ]
    heldout = heldout_collections(data_root)
    val = {
        phase: [f"val_collection={name}", f"val_buckets={bucket}"]
        for phase, (name, bucket) in heldout.items()
    }
    pretrain_dir, posttrain_dir = Path(logdir) / "pretrain", Path(logdir) / "posttrain"
    previous = [d for d in (pretrain_dir, posttrain_dir) if d.is_dir() and any(d.iterdir())]
    if previous:  # the demo's own runs: replaced (overwrite=true), and said so
        say(f"replacing the previous demo runs in {', '.join(str(d) for d in previous)}")
        common.append("overwrite=true")
    pre = train(resolve_config(pretrain_config(), [*common, *val["pretrain"], f"logdir={pretrain_dir}"]))
    say(f"[4/6] {pre.one_line()}")
    post = train(
        resolve_config(
            posttrain_config(),
            [
                *common,
                *val["posttrain"],
                f"logdir={posttrain_dir}",
                f"load_file={pre.checkpoint}",
                "use_planning_decoder=true",
            ],
        )
    )
    say(f"[5/6] {post.one_line()}")
    evaluation = evaluate_checkpoints(
        [pre.checkpoint, post.checkpoint],
        out_dir=Path(logdir) / "eval",
        config=EvalConfig(
            data_root=data_root,
            collection=heldout["posttrain"][0],
            buckets=(heldout["posttrain"][1],),
            batch_size=config.batch_size,
            worst_k=4,
        ),
        echo=lambda line: None,
    )
    say(f"[6/6] eval: {evaluation.one_line()}")
    for line in evaluation.table().splitlines():
        say(f"      {line}")
    say(f"TensorBoard: tensorboard --logdir {logdir}; report: {evaluation.report_path}")
    return DemoSummary(
        lines=tuple(lines),
        pretrain_dir=pretrain_dir,
        posttrain_dir=posttrain_dir,
        report=evaluation.report_path,
    )
