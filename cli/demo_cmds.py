"""`lead-stream demo`: the whole pipeline end to end on a small synthetic dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the `demo` command to `app`."""

    @app.command()
    def demo(
        data_root: Annotated[
            Path, typer.Argument(help="LEAD data root (routes generated here when absent)")
        ] = Path("data/carla_leaderboard2"),
        logdir: Annotated[Path, typer.Option(help="Parent directory of the pretrain/posttrain runs")] = Path(
            "outputs/demo"
        ),
        routes: Annotated[int, typer.Option(help="Usable synthetic routes to generate")] = 6,
        frames: Annotated[int, typer.Option(help="Frames per synthetic route")] = 40,
        epochs: Annotated[int, typer.Option(help="Epochs per training phase")] = 2,
        seed: Annotated[int, typer.Option(help="Seed of generator, loader and model")] = 0,
        progress: Annotated[bool, typer.Option(help="Show progress bars")] = True,
    ) -> None:
        """Synth → index → shard → train pretrain → train posttrain (compact model, CPU friendly)."""
        from lead_stream.pipeline import DemoConfig, run_demo

        run_demo(
            data_root,
            logdir=logdir,
            progress=progress,
            echo=typer.echo,
            config=DemoConfig(num_routes=routes, num_frames=frames, epochs=epochs, seed=seed),
        )
