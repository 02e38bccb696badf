"""The commands that look at and steer the queue: ``status``, ``watch``, ``cancel``, ``pause``, ``resume``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from study import store
from study.cli.options import (
    DbOption,
    Format,
    FormatOption,
    app,
    final,
    plain,
    print_records,
    print_table,
)
from study.cli.running import progress_bar
from study.errors import UserError
from study.statuses import ENDED, CellStatus


@app.command()
def status(name: Annotated[Optional[str], typer.Argument()] = None, db: DbOption = store.DEFAULT_DB,
           format: FormatOption = Format.table) -> None:
    """The queue: each study's state, position and cells per status; and the running services."""
    engine = store.connect(db, must_exist=True, read_only=True)
    rows = store.overview(engine)
    if name is not None:
        store.get_study(engine, name)
        rows = [r for r in rows if r["name"] == name]
    services = store.services_alive(engine)
    from study.driver import warm

    warm_set = warm.describe()
    if format != Format.table:
        studies = [{"study": r["name"], "task": r["task"], "metric": r["metric"], "state": r["display"],
                    "position": r["position"], "priority": r["priority"], "total_cells": r["total_cells"],
                    **{s.value: r["counts"].get(s, 0) for s in CellStatus}} for r in rows]
        print_records(studies, format, {"services": [
            {k: service[k] for k in ("host", "pid", "workers", "ray", "started_at")} | {"heartbeat_age": service["age"]}
            for service in services], "warm_workers": [warm_set] if warm_set else []})
        return
    print_table(("study", "task", "state", "queue", "cells"), [
        (r["name"], r["task"], r["display"],
         "" if r["position"] is None else f"#{r['position']}" + (f" p{r['priority']}" if r["priority"] else ""),
         _cells_line(r)) for r in rows], fold=("cells",))
    if not services:
        plain("services: none running (`adamscape serve` starts one)")
    for service in services:
        plain(f"service {service['host']}:{service['pid']}: {service['workers']} workers on Ray {service['ray']}, "
               f"heartbeat {service['age']:.0f} s ago")
    plain(_warm_line(warm_set))


def _warm_line(found: dict | None) -> str:
    """``warm workers: pid 123, 2 workers, started 10:02:03, idle for 40 s (ends after 10 min), code 1a2b…``."""
    import time

    if found is None:
        return "warm workers: none (the next `adamscape run` starts them)"
    idle = (f"idle for {found['idle_seconds']:.0f} s (they end after {found['keep_warm']:g} s idle)"
            if found["idle_seconds"] is not None else f"serving {found['commands']} command(s)")
    share = f" with {found['gpus_per_trial']:g} GPU each" if found["gpus_per_trial"] else ""
    return (f"warm workers: pid {found['pid']}, {found['workers']} workers{share}, started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(found['started']))}, {idle}, "
            f"{found['cells_done']} cells trained, code {found['code']}")


def _cells_line(row: dict) -> str:
    """``12/48 done: 10 complete, 2 diverged; 4 running, 32 pending``."""
    counts = row["counts"]
    done = sum(counts.get(s, 0) for s in ENDED)
    parts = [", ".join(f"{counts[s]} {s}" for s in ENDED if counts.get(s)),
             ", ".join(f"{counts[s]} {s}" for s in (CellStatus.RUNNING, CellStatus.PENDING) if counts.get(s))]
    details = "; ".join(part for part in parts if part)
    return f"{done}/{row['total_cells']} done" + (f": {details}" if details else "")


@app.command()
def watch(name: str, db: DbOption = store.DEFAULT_DB) -> None:
    """Show the live progress of a study a service runs (Ctrl-C stops watching, not the study)."""
    import time

    engine = store.connect(db, must_exist=True)
    study = store.get_study(engine, name)
    with progress_bar(name, study["total_cells"]) as show:
        try:
            while True:
                row = next((r for r in store.overview(engine) if r["id"] == study["id"]), None)
                if row is None:
                    raise UserError(f"study {name!r} was replaced or deleted")
                show(row["counts"])
                if row["position"] is None:
                    break
                time.sleep(0.5)
        except KeyboardInterrupt:
            show.stop()
            plain(f"stopped watching; study {name} goes on (`adamscape status {name}`)")
            return
    plain(f"study {name}: {row['display']}: {final(row['counts'])}")


@app.command()
def cancel(name: str, db: DbOption = store.DEFAULT_DB) -> None:
    """Cancel a study: its pending cells never run, its running cells stop within seconds (status cancelled)."""
    touched = store.set_state(store.connect(db, must_exist=True), name, "cancel")
    plain(f"study {name} cancelled: {touched.get(CellStatus.RUNNING, 0)} running cells stopped, "
           f"{touched.get(CellStatus.PENDING, 0)} pending cells will not run")


@app.command()
def pause(name: str, db: DbOption = store.DEFAULT_DB) -> None:
    """Pause a study: nothing more of it starts; its running cells are handed back (they rerun on resume)."""
    touched = store.set_state(store.connect(db, must_exist=True), name, "pause")
    plain(f"study {name} paused: {touched.get(CellStatus.RUNNING, 0)} running cells handed back; "
           f"`adamscape resume {name}` continues it")


@app.command()
def resume(name: str, db: DbOption = store.DEFAULT_DB) -> None:
    """Resume a paused study."""
    engine = store.connect(db, must_exist=True)
    store.set_state(engine, name, "resume")
    row = next(r for r in store.overview(engine) if r["name"] == name)
    plain(f"study {name} resumed" + (f": queued at position {row['position']}" if row["position"] else ""))
