"""The ``adamscape`` entry points: :func:`main` (raises SystemExit, for in-process callers) and
:func:`console` (the installed script, which exits fast). Importing this module registers every command."""

from __future__ import annotations

import logging
import os
import sys

import typer

from study.cli.options import app, err, plain, print_error
from study.errors import RunAborted, UserError

# the command modules register their commands on `app` when imported
from study.cli import queue, reading, running  # noqa: F401  isort: skip


class _Warnings(logging.Handler):
    """adamscape's warnings: a ``warning:`` line on the terminal's stderr (also while Ray's messages
    go to their log), printed as is."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(f"warning: {record.getMessage()}", markup=False, highlight=False, soft_wrap=True)


def main() -> None:
    """Entry point: user errors (the study's, the database's, the command line's) become one line on
    stderr and exit code 2."""
    from typer._click import exceptions as click_errors  # the click typer runs on

    logging.getLogger("adamscape").addHandler(_Warnings())
    logging.getLogger("adamscape").setLevel(logging.WARNING)
    try:
        code = app(standalone_mode=False)
    except (UserError, RunAborted) as exc:
        print_error(str(exc))
        sys.exit(2 if isinstance(exc, UserError) else 1)
    except click_errors.NoArgsIsHelpError as exc:  # plain `adamscape`: the help
        plain(exc.format_message())
        sys.exit(0)
    except click_errors.UsageError as exc:  # an unknown option, a value out of range: no usage box
        where = exc.ctx.command_path if exc.ctx else "adamscape"
        print_error(f"{exc.format_message()} (`{where} --help` lists the options)")
        sys.exit(2)
    except typer.Abort:  # Ctrl-C at a prompt
        sys.exit(130)
    if isinstance(code, int) and code:
        sys.exit(code)


def console() -> None:
    """The ``adamscape`` console script: :func:`main`, then an exit at once. Python's own shutdown
    (collecting every object) takes ~0.6 s, more than a `submit`'s work; a process that started Ray
    leaves through sys.exit, whose handlers stop the local Ray."""
    try:
        main()
        code: int | str | None = 0
    except SystemExit as exc:
        code = exc.code
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        sys.exit(code)
    if isinstance(code, str):  # SystemExit("message"): printed, status 1, as Python does
        sys.stderr.write(code + "\n")
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
