"""Evaluation throughput beside training throughput, on the same generated cache, model and batch size.

Baseline: post-training steps (`Trainer.train_step`: forward, losses, backward, AdamW) fed by the streaming
loader. Candidate: `evaluate_model` over the same collection with the evaluation loader (fixed order, normal
sensors, each frame once), which runs the forward pass, the adapter and every open-loop metric (the box and
radar AP matching included). A third row times the evaluation loader + forward pass without metrics, to show
what the metrics cost. Eval must not be slower than training per sample. Prints a table, then one JSON
line (the last line) with both rates, the ratio and the settings.

    python benchmarks/bench_eval.py --quick     # CPU, compact model, < 1 min on 2 cores
    python benchmarks/bench_eval.py --preset full --device cuda --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from bench_train import _cycle, _git_commit, _machine, _make_root, _measure


def _forward_only(model, loader, device: torch.device) -> float:
    """Samples/s of the evaluation loader + forward pass alone (no adapter, no metrics)."""
    from lead_stream.model import model_inputs

    model.eval()
    loader.set_epoch(0)
    samples, t0 = 0, time.perf_counter()
    with torch.no_grad():
        for batch in loader:
            batch = batch.to(device)
            outputs = model(**model_inputs(batch))
            float(outputs["bev_semantic"].sum())  # host sync
            samples += batch.size
    return samples / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small cache and few steps (< 1 min on 2 cores)")
    parser.add_argument("--preset", choices=["compact", "full"], default="compact")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 4 (compact) / 16 (full)")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps")
    parser.add_argument("--num-workers", type=int, default=2, help="loader workers (both loaders)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to generate the synthetic cache")
    args = parser.parse_args()

    from lead_stream.evaluate.evaluator import evaluate_model, evaluation_loader
    from lead_stream.train import Trainer, posttrain_config, resolve_config
    from lead_stream.train.device import AMP_DTYPES

    batch_size = args.batch_size or (4 if args.preset == "compact" else 16)
    steps = args.steps or (5 if args.quick else 20)
    warmup = 2 if args.quick else 5
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_eval_"))
    t_start = time.perf_counter()
    data_root = _make_root(
        workdir / "lead", num_routes=2 if args.quick else 4, num_frames=24 if args.quick else 40
    )
    cfg = resolve_config(
        posttrain_config(),
        [
            f"logdir={workdir / 'run'}",
            f"carla_root={data_root}",
            f"model.preset={args.preset}",
            f"batch_size={batch_size}",
            f"device={args.device}",
            f"num_workers={args.num_workers}",
            f"epoch_size={(warmup + steps + 1) * batch_size}",
            "progress=false",
            "visualize_training=false",
        ],
    )
    trainer = Trainer(cfg)
    train = _measure(trainer, _cycle(trainer.loader), warmup=warmup, steps=steps)
    trainer.metrics.close()
    loader = evaluation_loader(
        data_root, collection="posttrain", batch_size=batch_size, num_workers=args.num_workers
    )
    device = trainer.device
    autocast = AMP_DTYPES.get(trainer.precision)
    evaluate_model(
        trainer.model, loader, device=device, autocast_dtype=autocast
    )  # warm-up pass (workers, caches)
    result = evaluate_model(trainer.model, loader, device=device, autocast_dtype=autocast)
    forward = _forward_only(trainer.model, loader, device)
    ratio = result.samples_per_s / train["samples_per_s"]
    print(
        f"bench_eval: preset={args.preset} batch={batch_size} device={device} precision={trainer.precision} "
        f"frames={result.num_samples} torch={torch.__version__}"
    )
    print(f"{'run':<34} {'samples/s':>10}")
    print(f"{'train step (baseline)':<34} {train['samples_per_s']:>10.2f}")
    print(f"{'eval: forward + all metrics':<34} {result.samples_per_s:>10.2f}   x{ratio:.2f} of training")
    print(f"{'eval loader + forward, no metrics':<34} {forward:>10.2f}")
    print(f"total {time.perf_counter() - t_start:.1f} s")
    print(
        json.dumps(
            {
                "baseline": "train_step samples/s",
                "train_samples_per_s": round(train["samples_per_s"], 3),
                "eval_samples_per_s": round(result.samples_per_s, 3),
                "eval_forward_only_samples_per_s": round(forward, 3),
                "ratio_eval_over_train": round(ratio, 3),
                "eval_frames": result.num_samples,
                "device": str(device),
                "machine": _machine(device),
                "git_commit": _git_commit(),
                "preset": args.preset,
                "precision": trainer.precision,
                "batch_size": batch_size,
                "num_workers": args.num_workers,
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
