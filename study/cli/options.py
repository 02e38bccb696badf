"""The CLI's shared parts: the Typer app, the options every command shares (one declaration each), the
consoles, and how tables and records are printed (table folded to the terminal, csv, json)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, fields
from enum import Enum
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from study.driver.options import AUTO_POPULATION, RunOptions
from study.statuses import ENDED, FINISHED, CellStatus

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Hyperparameter-sensitivity studies for the Adam family of optimizers.")


def _version(shown: bool) -> None:
    if shown:
        import importlib.metadata

        plain(f"adamscape {importlib.metadata.version('adamscape')}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_version,
                                                   help="Print adamscape's version and exit.")] = False) -> None:
    """Hyperparameter-sensitivity studies for the Adam family of optimizers."""


out = Console(emoji=False)  # user text (file names, ":X:" in a reference) is never an emoji code


err = Console(stderr=True, emoji=False)


DbOption = Annotated[str, typer.Option("--db", envvar="ADAMSCAPE_DB", show_envvar=True,
                                       help="Results database URL (SQLite file or postgresql+psycopg://…).")]


# the options of a driver, shared by `run` and `serve`
WorkersOption = Annotated[Optional[int], typer.Option(min=1, help="Worker actors (default: one per CPU, or per GPU share).")]


AddressOption = Annotated[Optional[str], typer.Option(envvar="RAY_ADDRESS", help="Ray cluster address (default: a local Ray).")]


GpusOption = Annotated[float, typer.Option(min=0.0, help="GPU share per worker, e.g. 0.25 for four small models per GPU.")]


LeaseOption = Annotated[float, typer.Option(min=1.0, help="How long a dead driver's cells stay leased before another driver takes them.")]


StallOption = Annotated[float, typer.Option(min=1.0, help="A cell that reports nothing (no epoch) for this long is treated as a lost worker and retried.")]


DbRetryOption = Annotated[float, typer.Option(min=0.0, help="How long to keep retrying a results database that stopped answering.")]


KeepWarmOption = Annotated[Optional[str], typer.Option(
    "--keep-warm", envvar="ADAMSCAPE_KEEP_WARM", metavar="DURATION",
    help="Without --address: run on this user's warm background workers (started if none), which stay up this "
         "long after the last study (10m, 90s, 1h; default 10m); 0: workers of this command's own, ended with it.")]


PopulationOption = Annotated[str, typer.Option(help=f"Configs trained together as one stacked model per worker pass: auto (as many as fit, up to {AUTO_POPULATION}), or K; 1 trains one cell at a time.")]


@dataclass(frozen=True)
class DriverOptions:
    """The options of a driver with their defaults, the one declaration: `run` takes them all, `serve` all but
    keep_warm, `submit` passes them on to --run or --cluster. The driver's own default where it has one."""

    workers: int | None = None
    address: str | None = None
    gpus_per_trial: float = 0.0
    lease_seconds: float = RunOptions.lease_seconds
    stall_seconds: float = 3600.0
    db_retry_seconds: float = RunOptions.db_retry_seconds
    population: str = "auto"
    keep_warm: str | None = None


DRIVER = DriverOptions()


RUN_OPTIONS = tuple(option.name for option in fields(DriverOptions))


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


FormatOption = Annotated[Format, typer.Option("--format", help="table (folded to the terminal), csv or json.")]


FOLD_WIDTH = 16  # the narrowest a prose column of a table is folded to


def services_line(services: list[dict]) -> str:
    return "service " + ", ".join(f"{s['host']}:{s['pid']} ({s['workers']} workers)" for s in services)


def plain(text: str) -> None:
    """A line of user text on stdout, printed as is (never read as markup)."""
    out.print(text, markup=False, highlight=False, soft_wrap=True)


def final(counts: dict[str, int]) -> str:
    shown = FINISHED if not counts.get(CellStatus.CANCELLED) else ENDED
    return ", ".join(f"{counts.get(s, 0)} {s}" for s in shown)


def leave(code: int) -> None:
    """Exit without waiting on Ray: after a lost cluster its shutdown can hang for minutes."""
    shutdown_ray()
    for stream in (sys.stdout, sys.stderr, out.file, err.file):
        stream.flush()
    os._exit(code)


def shutdown_ray(seconds: float = 5.0) -> None:
    """Stop the local Ray we started, if it answers within ``seconds``."""
    import threading

    ray = sys.modules.get("ray")
    if ray is None:  # a driver of warm workers never imports Ray
        return

    stopper = threading.Thread(target=ray.shutdown, daemon=True)
    stopper.start()
    stopper.join(timeout=seconds)


def stamped(line: str) -> None:
    import time

    plain(f"{time.strftime('%H:%M:%S')} {line}")


def print_table(headers, rows, keep=(), fold=()) -> None:
    """A table that never cuts a cell: the ``fold`` columns (prose) fold to the terminal, down to
    FOLD_WIDTH; every other column (names a user types, numbers) keeps its longest line. A table
    that cannot fit is printed wider than the terminal, which wraps it. Cells are printed as is
    (never read as markup)."""
    from rich import box
    from rich.text import Text

    rows = [[str(cell) for cell in row] for row in rows]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    needed = 0
    for index, header in enumerate(headers):
        widest = max(len(line) for text in [header, *(row[index] for row in rows)] for line in text.splitlines() or [""])
        narrowest = min(widest, FOLD_WIDTH) if header in fold else widest
        table.add_column(Text(header), overflow="fold", no_wrap=header not in fold, min_width=narrowest)
        needed += narrowest + 3  # its padding and the rule between columns
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    wide = Console(file=out.file, width=max(out.width, needed + 2), emoji=False, force_terminal=out.is_terminal,
                   color_system=out.color_system or None)  # Console.print is never wider than its console
    wide.print(table, crop=False)


def print_records(records: list[dict], format: Format, extra: dict | None = None) -> None:
    """``records`` as CSV (nested values as JSON) or JSON (a list; an object with ``extra`` beside it)."""
    if format == Format.json:
        shown = {"studies": records, **extra} if extra else records
        sys.stdout.write(json.dumps(shown, indent=1, default=str) + "\n")
        return
    import csv

    writer = csv.writer(sys.stdout, lineterminator="\n")
    columns = list(records[0]) if records else []
    writer.writerow(columns)
    for record in records:
        writer.writerow(["" if v is None else json.dumps(v) if isinstance(v, (dict, list)) else v
                         for v in record.values()])


def print_error(message: str) -> None:
    """One ``error:`` line on stderr; the message is printed as is (user text is never read as markup)."""
    err.print("[red]error:[/] ", end="", highlight=False)
    err.print(message, markup=False, highlight=False, soft_wrap=True)
