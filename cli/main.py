"""`lead-stream` Typer app: thin commands that parse, call one library function and print one line.

User errors (`LeadStreamError`) print `error: <path>: <problem>` and exit with code 2; bugs keep their
traceback. Commands live in one module per pipeline room and register themselves here.
"""

from __future__ import annotations

import sys

import typer

from lead_stream.cli import cache_cmds, data_cmds, train_cmds
from lead_stream.errors import LeadStreamError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Columnar LEAD dataset and streaming trainer.")
data_cmds.register(app)
cache_cmds.register(app)
train_cmds.register(app)

USER_ERROR_EXIT_CODE = 2


def main() -> None:
    """Console-script entry: run the app, turning library user errors into exit code 2."""
    try:
        app(standalone_mode=False)
    except LeadStreamError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(USER_ERROR_EXIT_CODE)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except Exception as error:  # click usage errors carry their own exit code
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(error.exit_code)
        raise


if __name__ == "__main__":
    main()
