"""`lead-stream eval CHECKPOINT... [--collection NAME] [--out DIR]`: open-loop metrics, table and HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the `eval` command to `app`."""

    @app.command(name="eval")
    def evaluate(
        checkpoints: Annotated[
            list[Path], typer.Argument(help="model_EEEE.pth files, compared side by side")
        ],
        collection: Annotated[
            str | None, typer.Option(help="held-out bucket collection; default: the run's val_collection")
        ] = None,
        bucket: Annotated[
            list[str] | None, typer.Option(help="only this bucket of the collection (repeatable)")
        ] = None,
        data_root: Annotated[
            Path | None, typer.Option(help="data root with index/ and cache/; default: the run's carla_root")
        ] = None,
        out: Annotated[Path, typer.Option(help="directory for metrics.json and report.html")] = Path(
            "outputs/eval"
        ),
        max_samples: Annotated[int | None, typer.Option(help="evenly spaced subset of the frames")] = None,
        batch_size: Annotated[int, typer.Option(help="frames per forward pass")] = 8,
        worst_k: Annotated[int, typer.Option(help="worst frames pictured per checkpoint")] = 6,
        device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
        model_preset: Annotated[
            str, typer.Option(help="lead | full | compact, for a checkpoint without config.json")
        ] = "lead",
    ) -> None:
        """Evaluate checkpoints on the same held-out frames: print a table, write metrics.json and report.html."""
        from lead_stream.evaluate.checkpoints import EvalConfig, evaluate_checkpoints

        config = EvalConfig(
            data_root=data_root,
            collection=collection,
            buckets=tuple(bucket) if bucket else None,
            max_samples=max_samples,
            batch_size=batch_size,
            worst_k=worst_k,
            device=device,
            model_preset=model_preset,
        )
        summary = evaluate_checkpoints(list(checkpoints), out_dir=out, config=config, echo=typer.echo)
        typer.echo(summary.table())
        typer.echo(summary.one_line())
