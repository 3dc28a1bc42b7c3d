"""What every command group shares: one-line errors and stable exit codes."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import click

from models.errors import EXIT_FAILED, EXIT_SIGINT, EXIT_USAGE, GenderscoreError, RunStopped


def run_cli(command: click.Command, prog_name: str, args: list[str] | None = None) -> int:
    """Run a click command; print a failure as one line on stderr and return its exit code."""
    try:
        # click returns (not raises) the code of a `ctx.exit(code)` when not standalone
        code = command.main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help, --version
        return exc.exit_code
    except click.Abort:
        click.echo(f"{prog_name}: aborted", err=True)
        return EXIT_FAILED
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"{prog_name}: error: {exc.format_message()}{hint}", err=True)
        return EXIT_USAGE
    except click.ClickException as exc:
        click.echo(f"{prog_name}: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except RunStopped as exc:  # asked for, not an error
        click.echo(f"{prog_name}: {_one_line(exc)}", err=True)
        return exc.exit_code
    except GenderscoreError as exc:
        click.echo(f"{prog_name}: error: {_one_line(exc)}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo(f"{prog_name}: interrupted", err=True)
        return EXIT_SIGINT
    # commands return None; an int here is an exit code
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


def main_for(command: click.Command, prog_name: str) -> Callable[[], None]:
    """Build a ``main()`` for a console script or ``python -m``."""

    def main() -> None:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        sys.exit(run_cli(command, prog_name))

    return main


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
