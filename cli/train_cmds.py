"""`lead-stream train pretrain|posttrain [key=value ...]`: resolve the config, train, print one line."""

from __future__ import annotations

from typing import Annotated

import typer

OverridesArg = Annotated[
    list[str] | None, typer.Argument(help="key=value config overrides (dotted for nested)")
]


def register(app: typer.Typer) -> None:
    """Add the `train` sub-app to `app`."""
    train_app = typer.Typer(no_args_is_help=True, help="Train the TFv6-style policy from shards.")
    app.add_typer(train_app, name="train")

    @train_app.command()
    def pretrain(overrides: OverridesArg = None) -> None:
        """Pre-train perception (LEAD phase 1), e.g. `logdir=outputs/local_training/pretrain`."""
        from lead_stream.train import pretrain_config, resolve_config, train

        typer.echo(train(resolve_config(pretrain_config(), overrides)).one_line())

    @train_app.command()
    def posttrain(overrides: OverridesArg = None) -> None:
        """Post-train the planner (LEAD phase 2), e.g. `load_file=<pretrain>/model_0030.pth`."""
        from lead_stream.train import posttrain_config, resolve_config, train

        typer.echo(train(resolve_config(posttrain_config(), overrides)).one_line())
