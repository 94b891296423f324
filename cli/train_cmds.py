"""`lead-stream train pretrain|posttrain [key=value ...]`: resolve the config, train, print one line
(`--print-config`: print every key with its resolved value instead)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(help="key=value config overrides (dotted for nested); --print-config lists every key"),
]
PrintConfig = Annotated[
    bool,
    typer.Option(
        "--print-config",
        help="print every config key with its resolved value (JSON) and exit, training nothing",
    ),
]


def _run(preset: Any, overrides: list[str] | None, print_config: bool) -> None:
    from lead_stream.core.config import format_config
    from lead_stream.train import resolve_config, train

    config = resolve_config(preset, overrides)
    if print_config:
        typer.echo(format_config(config))
        return
    summary = train(config)
    if summary.rank == 0:  # torchrun's other ranks stay quiet
        typer.echo(summary.one_line())


def register(app: typer.Typer) -> None:
    """Add the `train` sub-app to `app`."""
    train_app = typer.Typer(no_args_is_help=True, help="Train the TFv6-style policy from shards.")
    app.add_typer(train_app, name="train")

    @train_app.command()
    def pretrain(overrides: OverridesArg = None, print_config: PrintConfig = False) -> None:
        """Pre-train perception (LEAD phase 1), e.g. `logdir=outputs/local_training/pretrain`."""
        from lead_stream.train import pretrain_config

        _run(pretrain_config(), overrides, print_config)

    @train_app.command()
    def posttrain(overrides: OverridesArg = None, print_config: PrintConfig = False) -> None:
        """Post-train the planner (LEAD phase 2), e.g. `load_file=<pretrain>/model_0030.pth`."""
        from lead_stream.train import posttrain_config

        _run(posttrain_config(), overrides, print_config)
