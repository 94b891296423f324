"""`lead-stream` Typer app: thin commands that parse, call one library function and print one line.

User errors (`LeadStreamError`) print `error: <path>: <problem>` and exit with code 2; bugs keep their
traceback. Commands live in one module per pipeline room and register themselves here.
"""

from __future__ import annotations

import sys

import typer

from lead_stream.cli import cache_cmds, data_cmds, demo_cmds, eval_cmds, train_cmds
from lead_stream.core.errors import LeadStreamError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Columnar LEAD dataset and streaming trainer.",
)
data_cmds.register(app)
cache_cmds.register(app)
train_cmds.register(app)
eval_cmds.register(app)
demo_cmds.register(app)

USER_ERROR_EXIT_CODE = 2


def main() -> None:
    """Console-script entry: click handles usage errors (exit 2) and exit codes; library user errors → exit 2."""
    try:
        app()  # standalone mode: raises SystemExit with the command's exit code
    except LeadStreamError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(USER_ERROR_EXIT_CODE)


if __name__ == "__main__":
    main()
