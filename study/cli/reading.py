"""The read-only commands: ``results``, ``report``, ``tasks``, ``optimizers``, ``dashboard``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from study import plugins, store
from study.catalog import TASKS
from study.cli.options import DbOption, Format, FormatOption, app, plain, print_records, print_table


@app.command()
def results(name: str, db: DbOption = store.DEFAULT_DB, format: FormatOption = Format.table) -> None:
    """Print the study's rows of the sweep_results view."""
    columns, rows = store.result_rows(store.connect(db, must_exist=True, read_only=True), name)
    if format != Format.table:
        print_records([dict(zip(columns, row)) for row in rows], format)
        return
    # the table leaves out the study, errors (long), empty columns, and lists below it what is the same
    # on every row: the swept axes and the metrics are what is left
    values = {c: [_shown_value(row[i]) for row in rows] for i, c in enumerate(columns) if c not in ("study", "error")}
    same = {c: v[0] for c, v in values.items() if len(set(v)) == 1 and c not in ("cell", "optimizer", "seed", "status")
            and len(rows) > 1}
    shown = [c for c in values if c not in same and any(values[c])]
    print_table(shown, list(zip(*(values[c] for c in shown))))
    if same:
        plain("the same on every row: " + ", ".join(f"{c} = {v}" for c, v in same.items() if v))


def _shown_value(value) -> str:
    if value is None or value != value:  # NULL, NaN
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@app.command()
def report(name: str, out: Annotated[Path, typer.Option("--out", help="Folder for the PNG files, leaderboard.csv and report.html.")],
           db: DbOption = store.DEFAULT_DB,
           delta: Annotated[float, typer.Option(min=0.0, help="Good region: within δ (relative) of the study's best score.")] = 0.05) -> None:
    """Write a study's robustness maps, learning-rate sensitivity, expected-best-of-k and leaderboard as
    PNG files and one self-contained HTML page (opens offline)."""
    from study.analysis import report as atlas

    written = atlas.write(store.connect(db, must_exist=True, read_only=True), name, out, delta)
    for path in written:
        plain(str(path))


@app.command()
def tasks(format: FormatOption = Format.table) -> None:
    """The tasks a study can name, with their metrics (the primary one ranks a study whose file names no
    metric), defaults and task options."""
    listed = [info for info in TASKS.values() if info.listed]
    if format != Format.table:
        print_records([{"task": i.name, "description": i.description, "metrics": i.metrics, "primary_metric": i.primary,
                         "epochs": i.default_epochs, "batch_size": i.default_batch_size,
                         "task_options": {k: {"default": o.default, "description": o.description}
                                          for k, o in i.options.items()}} for i in listed], format)
        return
    print_table(("task", "metrics", "epochs", "batch", "description; [task_options]"), [
        (i.name, "\n".join(f"{m} {'↑' if d == 'maximize' else '↓'}{' *' if m == i.primary else ''}"
                           for m, d in i.metrics.items()),
         str(i.default_epochs), str(i.default_batch_size),
         "\n".join([i.description, *(f"{k} = {o.default!r}: {o.description}" for k, o in i.options.items())]))
        for i in listed], fold=("description; [task_options]",))
    plain("metrics: ↑ higher is better, ↓ lower; * the primary metric, which a study ranks by unless its file "
           "names one")
    _print_own(plugins.TASK_GROUP, "./file.py:build", "Your own task")


@app.command("optimizers")
def list_optimizers(format: FormatOption = Format.table) -> None:
    """The optimizers a study can name, with their hyperparameters and paper defaults."""
    import optimizers

    specs = list(optimizers.REGISTRY.values())
    if format != Format.table:
        print_records([{"optimizer": spec.name, "description": spec.summary, "hyperparameters": {
            n: {"default": hp.default, "search": list(hp.search), "log": hp.log} for n, hp in spec.hparams.items()}}
            for spec in specs], format)
        return
    print_table(("optimizer", "hyperparameter = default [search range]", "description"), [
        (spec.name, "\n".join(f"{n} = {hp.default:g} [{hp.search[0]:g} … {hp.search[1]:g}{', log' if hp.log else ''}]"
                              for n, hp in spec.hparams.items()), spec.summary) for spec in specs],
        fold=("description",))
    _print_own(plugins.OPTIMIZER_GROUP, "./file.py:Class", "Your own optimizer")


def _print_own(group: str, form: str, section: str) -> None:
    """The names installed packages register (not imported here), and how to name one's own."""
    import importlib.metadata

    installed = importlib.metadata.entry_points(group=group)
    if installed:
        plain(f"installed ({group}): " + ", ".join(f"{ep.name} = {ep.value}" for ep in installed))
    plain(f"your own: \"{form}\" in the study file (README '{section}')")


@app.command()
def dashboard(db: DbOption = store.DEFAULT_DB, port: Annotated[int, typer.Option(min=1, max=65535)] = 8501,
              host: Annotated[str, typer.Option(help="Address to listen on: 127.0.0.1 serves this machine only; "
                                                     "0.0.0.0 every network (e.g. in a container).")] = "127.0.0.1") -> None:
    """Serve the Streamlit dashboard over the results database (read-only)."""
    store.connect(db, must_exist=True, read_only=True)
    app_path = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
    shown = "localhost" if host in ("127.0.0.1", "localhost", "0.0.0.0") else host
    plain(f"dashboard: http://{shown}:{port}  (database {store.describe_url(db)}; Ctrl-C to stop)")
    sys.stdout.flush()
    sys.stderr.flush()
    # this process becomes the Streamlit server: Ctrl-C and SIGTERM reach it, and no orphan keeps the port
    os.execve(sys.executable, [sys.executable, "-m", "streamlit", "run", str(app_path),
                               "--server.address", host, "--server.port", str(port), "--server.headless", "true",
                               "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal"],
              {**os.environ, "ADAMSCAPE_DB": db})
