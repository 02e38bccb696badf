"""What the adamscape driver costs per cell: trivial cells through the real driver, SQLite and PostgreSQL.

The task ``noop`` trains nothing (``[task_options] seconds = 0.0``: each epoch returns at once; one
epoch), so every second measured is orchestration: leasing cells (a conditional UPDATE), dispatching
them to Ray actors, streaming their records back, writing epochs and results, and reporting one
Optuna trial per finished cell. The driver is called in-process through its public entry points —
``study.store.connect`` / ``register``, ``workers.pool.connect`` / ``RayPool`` and
``study.driver.runner.run`` — on a local Ray started here with enough logical CPUs for the largest pool
(``ray.init(num_cpus=max(8, workers))``: actors take one CPU each, so 4 and 8 workers fit on a
2-core machine; they then share the cores).

1. Throughput: for each database and each pool size, a fresh study of ``--cells`` noop cells
   (default 2,000). Cells/s is measured after warm-up, from the finish times the database recorded
   (``sweep_cells.finished_at``, on the database's clock): the first ``2 × workers`` finished cells
   (actor start, first imports) are left out, rate = cells after them ÷ time from the last of them to
   the last cell. The whole run's wall (pool already started) is recorded beside it.
2. Overhead on real-length cells: ``--long-cells`` (4) cells of ``seconds = 10`` on ``--long-workers``
   (2) workers, the actors started beforehand, twice: on fresh actors (each one's first cell pays the
   training code's first-use cost, as in a short study) and on warm ones (each ran one noop cell
   first). Ideal = ⌈cells / workers⌉ × 10 s; overhead = (run wall − ideal) / ideal; the per-cell
   ``wall_seconds`` the workers recorded are listed beside it.

PostgreSQL: ``--pg`` names a server database to connect to (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``, trust auth); a fresh database
``bench_<pid>`` is created on that server for the run (autocommit) and dropped at the end.
SQLite: a fresh file per measurement in a temporary directory.

When ``study.driver.runner.RunOptions`` has a ``population`` field (population training), it is set from
``--population`` (default 1: one cell per worker pass, the per-cell cost of the driver; ``auto``
lets the driver batch cells, e.g. ``--population 1,auto`` measures both).

    .venv/bin/python benchmarks/driver_overhead.py [--cells 2000] [--workers 1,2,4,8]
        [--databases sqlite,postgresql] [--population 1] [--no-long]

Prints a table and writes ``benchmarks/results/driver_overhead.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def noop_study(name: str, cells: int, seconds: float) -> tuple[str, int]:
    """A noop study of at least ``cells`` cells: up to 100 learning rates × as many seeds as needed."""
    per_seed = min(cells, 100)
    seeds = math.ceil(cells / per_seed)
    lr = f"{{ log = [1e-4, 1e-1], num = {per_seed} }}" if per_seed > 1 else "1e-3"
    text = (f'name = "{name}"\ntask = "noop"\nmetric = "train_loss"\nseeds = {list(range(seeds))}\n'
            f"[task_options]\nseconds = {seconds!r}\n[optimizers.adam]\nlr = {lr}\n")
    return text, per_seed * seeds


class PostgresDatabase:
    """A fresh database on the server ``admin_url`` points at, dropped on close."""

    def __init__(self, admin_url: str):
        import psycopg
        from sqlalchemy.engine import make_url

        self.admin = make_url(admin_url)
        self.name = f"bench_{os.getpid()}"
        self.conninfo = self.admin.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}"')
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.url = self.admin.set(database=self.name).render_as_string(hide_password=False)

    def close(self) -> None:
        import psycopg

        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def run_options(population: str, **kwargs):
    """``RunOptions`` with ``population`` when this adamscape's driver has that field."""
    from study.driver.runner import RunOptions

    if "population" in {f.name for f in dataclasses.fields(RunOptions)}:
        kwargs["population"] = None if population == "auto" else int(population)
    return RunOptions(**kwargs)


def warm_pool(size: int):
    """A RayPool whose every actor is up (so the measurement excludes actor start)."""
    from workers.pool import RayPool

    pool = RayPool(size)
    deadline = time.monotonic() + 300
    while len(pool.free_slots()) < size:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{size} workers did not start in 300 s")
        time.sleep(0.05)
    return pool


def finished_times(engine, name: str) -> tuple[list[float], list[float]]:
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT c.finished_at, c.wall_seconds FROM sweep_cells c JOIN sweep_studies s ON s.id = c.study_id "
            "WHERE s.name = :name AND c.status IN ('complete', 'diverged') ORDER BY c.finished_at"),
            {"name": name}).all()
    return [r[0] for r in rows], [r[1] for r in rows]


def run_study(url: str, name: str, toml: str, pool, args, progress_label: str) -> dict:
    from study import spec as study_spec, store
    from study.driver import runner

    engine = store.connect(url)
    _, total = store.register(engine, study_spec.parse(toml, name))
    last_said = [time.monotonic()]

    def on_progress(counts: dict[str, int]) -> None:
        if time.monotonic() - last_said[0] >= 15:
            done = sum(counts.get(s, 0) for s in ("complete", "diverged", "failed"))
            say(f"    … {progress_label}: {done}/{total} cells")
            last_said[0] = time.monotonic()

    options = run_options(args.population_now, lease_seconds=args.lease_seconds, poll_seconds=args.poll_seconds)
    started = time.perf_counter()
    counts = runner.run(engine, name, pool, options, on_progress=on_progress)
    wall = time.perf_counter() - started
    times, walls = finished_times(engine, name)
    engine.dispose()
    return {"total": total, "counts": counts, "wall": wall, "finished_at": times, "cell_walls": walls}


def throughput_point(db_kind: str, url: str, workers: int, args) -> dict:
    name = f"noop-{db_kind}-w{workers}-p{args.population_now}".replace("auto", "a")
    toml, _ = noop_study(name, args.cells, 0.0)
    pool = warm_pool(workers)
    try:
        out = run_study(url, name, toml, pool, args, f"{db_kind} × {workers} workers")
    finally:
        pool.close()
    times = out["finished_at"]
    n = len(times)
    skip = min(2 * workers, max(0, n // 10))
    steady = (n - 1 - skip) / (times[-1] - times[skip]) if n - 1 > skip and times[-1] > times[skip] else None
    return {"database": db_kind, "workers": workers, "population": args.population_now, "cells": out["total"],
            "finished": n, "failed": out["counts"].get("failed", 0), "warmup_cells_excluded": skip,
            "steady_seconds": round(times[-1] - times[skip], 3) if n > skip else None,
            "cells_per_second": round(steady, 1) if steady else None,
            "run_wall_seconds": round(out["wall"], 2),
            "cells_per_second_whole_run": round(out["total"] / out["wall"], 1),
            "mean_cell_wall_seconds": round(sum(out["cell_walls"]) / n, 5) if n else None}


def long_point(db_kind: str, url: str, args, warm: bool) -> dict:
    """``long_cells`` cells of ``long_seconds`` each; ``warm``: each actor first ran one noop cell (its
    first-cell imports paid), else the actors are fresh (what a short study sees)."""
    tag = f"{db_kind}-w{args.long_workers}-p{args.population_now}-{'warm' if warm else 'cold'}".replace("auto", "a")
    toml, total = noop_study(f"noop10-{tag}", args.long_cells, args.long_seconds)
    pool = warm_pool(args.long_workers)
    try:
        if warm:
            warmup, _ = noop_study(f"warmup-{tag}", args.long_workers, 0.0)
            run_study(url, f"warmup-{tag}", warmup, pool, args, "warm-up")
        out = run_study(url, f"noop10-{tag}", toml, pool, args, f"{db_kind} {args.long_seconds:g}-s cells")
    finally:
        pool.close()
    ideal = math.ceil(total / args.long_workers) * args.long_seconds
    walls = out["cell_walls"]
    return {"database": db_kind, "workers": args.long_workers, "population": args.population_now,
            "actors": "warm" if warm else "fresh", "cells": total, "cell_seconds": args.long_seconds,
            "ideal_seconds": ideal, "run_wall_seconds": round(out["wall"], 3),
            "overhead": round((out["wall"] - ideal) / ideal, 4),
            "cell_wall_seconds": [round(w, 4) for w in walls],
            "cell_overhead_mean": round((sum(walls) / len(walls) - args.long_seconds) / args.long_seconds, 5)
            if walls else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=2000, help="noop cells per (database, workers) point")
    parser.add_argument("--workers", default="1,2,4,8", help="pool sizes, comma-separated")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--pg", default=DEFAULT_PG, help="a PostgreSQL database on the server to use (a fresh "
                                                         "bench_<pid> database is created there and dropped)")
    parser.add_argument("--population", default="1", help="population setting(s): 1, K or auto, comma-separated")
    parser.add_argument("--lease-seconds", type=float, default=60.0)
    parser.add_argument("--poll-seconds", type=float, default=0.5)
    parser.add_argument("--long-cells", type=int, default=4)
    parser.add_argument("--long-workers", type=int, default=2)
    parser.add_argument("--long-seconds", type=float, default=10.0)
    parser.add_argument("--no-long", action="store_true", help="skip the 10-second-cell overhead measurement")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    databases = args.databases.split(",")
    populations = args.population.split(",")
    if set(databases) - {"sqlite", "postgresql"}:
        parser.error("--databases: choose from sqlite, postgresql")

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.pop("RAY_ADDRESS", None)
    import optuna
    import ray
    import sqlalchemy
    import torch

    from study.driver.runner import RunOptions
    from workers.pool import connect

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cpus = max([8, *workers, args.long_workers])
    say(f"starting a local Ray with {cpus} logical CPUs ({os.cpu_count()} cores)")
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    connect(None)
    has_population = "population" in {f.name for f in dataclasses.fields(RunOptions)}
    if not has_population:
        populations = ["1"]
        say("note: RunOptions has no population field: one cell per worker pass")

    machine = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "torch": torch.__version__, "ray": ray.__version__, "optuna": optuna.__version__,
               "sqlalchemy": sqlalchemy.__version__, "ray_logical_cpus": cpus, "loadavg_start": os.getloadavg()}
    tmp = Path(tempfile.mkdtemp(prefix="driver_overhead-"))
    pg = None
    points, long_points = [], []
    try:
        if "postgresql" in databases:
            pg = PostgresDatabase(args.pg)
            machine["postgresql"] = pg_version(pg.url)
            say(f"PostgreSQL database {pg.name} created")
        for population in populations:
            args.population_now = population
            for db_kind in databases:
                for size in workers:
                    url = f"sqlite:///{tmp}/w{size}-p{population}.db" if db_kind == "sqlite" else pg.url
                    say(f"[{db_kind}, {size} workers, population {population}] {args.cells} noop cells …")
                    point = throughput_point(db_kind, url, size, args)
                    points.append(point)
                    say(f"[{db_kind}, {size} workers, population {population}] {point['cells_per_second']} cells/s "
                        f"steady, {point['cells_per_second_whole_run']} cells/s whole run "
                        f"({point['run_wall_seconds']} s)")
            if not args.no_long:
                for db_kind in databases:
                    for warm in (False, True):
                        url = f"sqlite:///{tmp}/long-p{population}.db" if db_kind == "sqlite" else pg.url
                        say(f"[{db_kind}, {args.long_workers} {'warm' if warm else 'fresh'} workers, population "
                            f"{population}] {args.long_cells} cells of {args.long_seconds:g} s …")
                        point = long_point(db_kind, url, args, warm)
                        long_points.append(point)
                        say(f"[{db_kind}, {point['actors']}] {point['run_wall_seconds']} s vs ideal "
                            f"{point['ideal_seconds']:g} s: overhead {point['overhead'] * 100:.2f} %")
    finally:
        if pg is not None:
            pg.close()
            say(f"PostgreSQL database {pg.name} dropped")
        shutil.rmtree(tmp, ignore_errors=True)
        ray.shutdown()
    machine["loadavg_end"] = os.getloadavg()

    print_tables(points, long_points, args)
    report = {"benchmark": "driver_overhead", "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine,
              "population_field_available": has_population,
              "settings": {"cells": args.cells, "workers": workers, "databases": databases,
                           "populations": populations, "lease_seconds": args.lease_seconds,
                           "poll_seconds": args.poll_seconds, "pg_server": pg_server(args.pg)},
              "method": "steady cells/s = cells after the first 2×workers finished ÷ time from the last of those to "
                        "the last finish (sweep_cells.finished_at, database clock); pool started before timing",
              "throughput": points, "long_cells": long_points,
              "note": "2-core machine shared with other work (Ray workers beyond 2 share the cores): noisy, one run"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "driver_overhead.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    say(f"wrote {out.relative_to(ROOT)}")
    return 1 if any(p["failed"] or p["finished"] < p["cells"] for p in points) else 0


def pg_version(url: str) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        version = conn.execute(text("SHOW server_version")).scalar()
    engine.dispose()
    return version


def pg_server(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def print_tables(points: list[dict], long_points: list[dict], args) -> None:
    print(f"\nnoop cells through the driver ({os.cpu_count()} CPUs; steady = after warm-up)\n")
    head = (f"{'database':<11} {'workers':>7} {'pop':>4} {'cells':>6} {'cells/s steady':>15} "
            f"{'cells/s whole':>14} {'run wall s':>11}")
    print(head)
    print("-" * len(head))
    for p in points:
        steady = "" if p["cells_per_second"] is None else f"{p['cells_per_second']:.1f}"
        print(f"{p['database']:<11} {p['workers']:>7} {p['population']:>4} {p['finished']:>6} {steady:>15} "
              f"{p['cells_per_second_whole_run']:>14.1f} {p['run_wall_seconds']:>11.1f}")
    if long_points:
        print(f"\n{args.long_cells} cells of {args.long_seconds:g} s on {args.long_workers} workers\n")
        head = (f"{'database':<11} {'pop':>4} {'actors':>6} {'ideal s':>8} {'wall s':>8} {'overhead':>9}  "
                "per-cell wall_seconds")
        print(head)
        print("-" * len(head))
        for p in long_points:
            print(f"{p['database']:<11} {p['population']:>4} {p['actors']:>6} {p['ideal_seconds']:>8.1f} "
                  f"{p['run_wall_seconds']:>8.2f} "
                  f"{p['overhead'] * 100:>8.2f}%  {', '.join(f'{w:.3f}' for w in p['cell_wall_seconds'])}")


if __name__ == "__main__":
    sys.exit(main())
