"""Training throughput: streaming loader on a generated synthetic cache vs in-memory batches (model only).

Both measurements run the same `Trainer.train_step` (forward, CenterNet targets, losses, backward, AdamW) in
one process, one after the other. The loader run reports samples/s and the share of wall time spent waiting
for data; the in-memory run takes loading out (STYLE E20 `--fixed-batch`). Prints a table, then one JSON
line (the last line) with samples_per_s, model_only_samples_per_s, data_wait_share, device, machine,
git_commit and the settings.

    python benchmarks/bench_train.py --quick                      # CPU, compact, < 1 min on 2 cores
    python benchmarks/bench_train.py --preset full --device cuda --precision bf16 --batch-size 16
    python benchmarks/bench_train.py --compare lead,compact --quick   # model only, one subprocess per preset

`--compare` runs the model-only measurement of each preset in its own process (so that peak memory is the
preset's own: peak GPU allocation on CUDA, peak RSS on CPU) and prints samples/s and peak memory beside the
first preset's, the baseline of the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _git_commit() -> str:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                cwd=Path(__file__).resolve().parent,
                timeout=10,
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _machine(device: torch.device) -> str:
    cpu = f"{platform.machine()} {torch.get_num_threads()} threads"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB), {cpu}"
    return f"{platform.processor() or platform.machine()} CPU, {cpu}"


def _make_root(root: Path, *, num_routes: int, num_frames: int) -> Path:
    """Synthetic LEAD tree + index + shard cache under `root` (reused when already complete)."""
    from lead_stream.cache.shard import ShardConfig, write_shards
    from lead_stream.index import IndexConfig, build_index
    from lead_stream.synthetic import write_synthetic_lead

    data_root = root / "carla_leaderboard2"
    if not list((data_root / "cache").glob("*/manifest.json")):
        write_synthetic_lead(data_root, num_routes=num_routes, num_frames=num_frames, seed=0)
        build_index(data_root, config=IndexConfig(progress=False))
        write_shards(data_root, config=ShardConfig(progress=False))
    return data_root


def _measure(trainer, batches, *, warmup: int, steps: int) -> dict[str, float]:
    """Time `steps` train steps after `warmup`; batches is an iterator of Batch.

    Data wait = time blocked in `next(batches)`; the step (host→device copy, forward, losses, backward,
    AdamW) ends with a host sync, so a wait is time the device sits idle for lack of data.
    """
    waits, totals = [], []
    samples = 0
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        trainer.train_step(batch, want_grad_norm=False)  # ends with a host sync (loss all-reduce → float)
        t2 = time.perf_counter()
        if i >= warmup:
            waits.append(t1 - t0)
            totals.append(t2 - t0)
            samples += batch.size
    wait_ms = sorted(1e3 * w for w in waits)
    total = sum(totals)
    return {
        "samples_per_s": samples / total,
        "data_wait_share": sum(waits) / total,
        "step_s": total / steps,
        "wait_ms_median": wait_ms[len(wait_ms) // 2],
        "wait_ms_max": wait_ms[-1],
    }


def _peak_memory_mib(device: torch.device) -> float:
    """Peak GPU allocation (CUDA) or peak resident set size of this process (CPU), MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def compare_presets(args: argparse.Namespace) -> None:
    """Model-only runs of each preset in `args.compare`, each in its own process; the first is the baseline."""
    presets = [name.strip() for name in args.compare.split(",") if name.strip()]
    passthrough = ["--model-only", f"--device={args.device}", f"--precision={args.precision}"]
    passthrough += ["--quick"] if args.quick else []
    passthrough += ["--no-color-aug"] if args.no_color_aug else []
    for flag, value in (
        ("--batch-size", args.batch_size),
        ("--steps", args.steps),
        ("--warmup", args.warmup),
    ):
        if value is not None:
            passthrough.append(f"{flag}={value}")
    results = {}
    for preset in presets:
        run = subprocess.run(
            [sys.executable, __file__, f"--preset={preset}", *passthrough], capture_output=True, text=True
        )
        if run.returncode != 0:
            sys.exit(f"bench_train: preset {preset} failed:\n{run.stderr[-2000:]}")
        results[preset] = json.loads(run.stdout.strip().splitlines()[-1])
    base = results[presets[0]]
    print(f"bench_train --compare (model only, one process per preset; baseline = {presets[0]})")
    print(
        f"{'preset':<8} {'params M':>9} {'batch':>6} {'samples/s':>10} {'vs base':>8} {'peak GiB':>9} {'vs base':>8}"
    )
    for preset, r in results.items():
        print(
            f"{preset:<8} {r['num_parameters'] / 1e6:>9.2f} {r['batch_size']:>6} {r['model_only_samples_per_s']:>10.3f} "
            f"{r['model_only_samples_per_s'] / base['model_only_samples_per_s']:>7.3f}x "
            f"{r['peak_memory_mib'] / 1024:>9.2f} {r['peak_memory_mib'] / base['peak_memory_mib']:>7.2f}x"
        )
    print(
        json.dumps(
            {
                "compare": presets,
                "baseline": presets[0],
                "results": {
                    p: {
                        k: r[k]
                        for k in (
                            "model_only_samples_per_s",
                            "peak_memory_mib",
                            "batch_size",
                            "num_parameters",
                        )
                    }
                    for p, r in results.items()
                },
                "device": base["device"],
                "machine": base["machine"],
                "precision": base["precision"],
                "git_commit": base["git_commit"],
            }
        )
    )


def _cycle(loader):
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small cache and few steps (< 1 min on 2 cores)")
    parser.add_argument("--preset", choices=["lead", "compact", "full"], default="compact")
    parser.add_argument(
        "--compare", default=None, help="comma-separated presets, model only (e.g. lead,compact)"
    )
    parser.add_argument("--no-color-aug", action="store_true", help="leave LEAD's colour augmentation out")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default="auto")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 4 (compact) / 16 (full)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first")
    parser.add_argument("--num-workers", type=int, default=2, help="loader workers")
    parser.add_argument(
        "--num-threads", type=int, default=0, help="torch threads (0: the trainer's default for the workers)"
    )
    parser.add_argument(
        "--epoch-size",
        type=int,
        default=None,
        help="samples per loader epoch; default: enough that warm-up and timed steps share one epoch "
        "(a small cache's frames repeat, as LEAD's carla_num_samples repeats them)",
    )
    parser.add_argument("--data-root", type=Path, default=None, help="existing root with index/ and cache/")
    parser.add_argument("--workdir", type=Path, default=None, help="where to generate the synthetic cache")
    parser.add_argument("--model-only", action="store_true", help="skip the real-loader measurement")
    args = parser.parse_args()
    if args.compare:
        compare_presets(args)
        return

    from lead_stream.model.random_batch import FixedBatchLoader, random_batch
    from lead_stream.train import Trainer, pretrain_config, resolve_config

    big = args.preset != "compact"
    batch_size = args.batch_size or (4 if not big else (1 if args.quick else 16))
    steps = args.steps or ((1 if big else 5) if args.quick else 20)
    warmup = args.warmup if args.warmup is not None else ((1 if big else 2) if args.quick else 5)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_train_"))
    overrides = [
        f"model.preset={args.preset}",
        f"batch_size={batch_size}",
        f"device={args.device}",
        f"precision={args.precision}",
        f"num_workers={args.num_workers}",
        f"num_threads={args.num_threads}",
        "progress=false",
        "visualize_training=false",
        f"use_color_aug={'false' if args.no_color_aug else 'true'}",
        "model.image_pretrained=none",
    ]
    rows = []
    loader_result = None
    t_start = time.perf_counter()
    if not args.model_only:
        t0 = time.perf_counter()
        data_root = args.data_root or _make_root(
            workdir / "lead", num_routes=2 if args.quick else 4, num_frames=24 if args.quick else 40
        )
        setup_s = time.perf_counter() - t0
        epoch_size = args.epoch_size or (warmup + steps + 1) * batch_size
        cfg = resolve_config(
            pretrain_config(),
            [*overrides, f"logdir={workdir / 'run'}", f"carla_root={data_root}", f"epoch_size={epoch_size}"],
        )
        trainer = Trainer(cfg)
        loader_result = _measure(trainer, _cycle(trainer.loader), warmup=warmup, steps=steps)
        rows.append(
            (
                "streaming loader",
                loader_result,
                (f"cache built in {setup_s:.1f} s" if args.data_root is None else str(data_root))
                + f", epoch of {epoch_size} samples",
            )
        )
        trainer.metrics.close()
        del trainer
    batch = random_batch(batch_size, seed=0)
    cfg = resolve_config(pretrain_config(), [*overrides, f"logdir={workdir / 'run_model_only'}"])
    trainer = Trainer(cfg, loader=FixedBatchLoader([batch], steps_per_epoch=1))
    fixed = batch.to(trainer.device)
    model_result = _measure(trainer, iter(lambda: fixed, None), warmup=warmup, steps=steps)
    rows.append(("in-memory batch", model_result, "model only"))

    trainer.metrics.close()
    device = trainer.device
    print(
        f"bench_train: preset={args.preset} params={trainer.num_parameters / 1e6:.2f}M batch={batch_size} "
        f"precision={trainer.precision} device={device} threads={trainer.num_threads} torch={torch.__version__}"
    )
    print(f"{'input':<18} {'samples/s':>10} {'step s':>8} {'data wait':>10} {'wait ms median/max':>19}  note")
    for name, result, note in rows:
        print(
            f"{name:<18} {result['samples_per_s']:>10.2f} {result['step_s']:>8.3f} "
            f"{result['data_wait_share']:>9.1%} {result['wait_ms_median']:>9.2f}/{result['wait_ms_max']:<9.2f}  {note}"
        )
    peak_mib = _peak_memory_mib(device)
    print(f"peak {'GPU allocation' if device.type == 'cuda' else 'RSS'} {peak_mib / 1024:.2f} GiB")
    print(f"total {time.perf_counter() - t_start:.1f} s")
    print(
        json.dumps(
            {
                "samples_per_s": round(loader_result["samples_per_s"], 3) if loader_result else None,
                "model_only_samples_per_s": round(model_result["samples_per_s"], 3),
                "data_wait_share": round(loader_result["data_wait_share"], 4) if loader_result else None,
                "wait_ms_median": round(loader_result["wait_ms_median"], 3) if loader_result else None,
                "wait_ms_max": round(loader_result["wait_ms_max"], 3) if loader_result else None,
                "device": str(device),
                "machine": _machine(device),
                "git_commit": _git_commit(),
                "preset": args.preset,
                "precision": trainer.precision,
                "batch_size": batch_size,
                "steps": steps,
                "num_workers": args.num_workers,
                "num_threads": trainer.num_threads,
                "num_parameters": trainer.num_parameters,
                "peak_memory_mib": round(peak_mib, 1),
                "color_aug": not args.no_color_aug,
                "torch": torch.__version__,
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
