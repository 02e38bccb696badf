"""Latency and throughput of a warm ``adamscape serve`` against the cold ``adamscape run`` and plain Optuna.

One invocation runs the three systems one after another (never at once: the machine has few cores), on
the 64-cell grid of ``grid_throughput.py`` (``--grid 64``: digits-mlp, 3 epochs, batch 64; adam lr 8
log-spaced in [1e-4, 1e-1] × beta1 [0.5, 0.9]; adabound the same lr × final_lr [0.01, 0.1]; seeds [0, 1]),
each system in its own fresh SQLite file / temporary directory, with N workers (default 2). The grid, the
training function and the Optuna set-up are imported from ``grid_throughput`` (``gt.study_toml``,
``gt.child_optuna_journal``, ``gt.child_optuna_journal_worker``, ``gt.base_env``), not copied.

Clocks: intervals are ``time.perf_counter()`` in this process; "first epoch" and "all done" are seen by
polling the results database every ~5 ms from this process over a read-only ``sqlite3`` connection
(resolution: the poll interval plus one query, well under 10 ms; the loop costs ~5 % of one core).
Pick-up and finish times are also read back from the cells' ``started_at`` / ``finished_at`` (unix
seconds, the database's clock: this machine's) against ``time.time()`` taken at each launch.

  1  warm service   ``adamscape serve --db sqlite:///…/service.db --workers N --population auto``. Start-up:
                    launch until its "N workers ready" line (each stdout line is time-stamped as it
                    arrives). Then R repetitions (default 3), each a new study name, so a new submission:
                      submit wall        ``adamscape submit FILE --db …``, launch to exit (a waiter thread)
                      first epoch        submit launch → the study's first ``sweep_curves`` row exists;
                                         also from submit's exit (meant as the service's own reaction,
                                         without submit's interpreter start and imports; negative when
                                         the first epoch lands before submit's process is gone), and from
                                         the commit of the study's row (``sweep_studies.created_at``, set
                                         by submit's insert: the service's reaction proper)
                      pick-up            study committed → the first cell's ``started_at`` (leased)
                      done               submit launch → every cell complete/diverged/failed;
                                         cells/min = 64 / done (also from submit's exit and from the
                                         study's commit)
                    Finally SIGTERM, and the time until the service process exited.
  2  cold run       ``adamscape submit FILE`` (timed apart), then ``adamscape run NAME --workers N``
                    --population auto (the default): first epoch from run's launch (first ``sweep_curves``
                    row), all done, wall = launch to exit; cells/min = 64 / wall.
  3  plain Optuna   gt's journal set-up: a coordinator process creates the study on a
                    ``JournalStorage(JournalFileBackend)``, enqueues every cell and starts N worker processes
                    that ``study.optimize`` over it. One addition, made here by wrapping gt's objective in
                    the worker processes (gt's coordinator, run from this file, is pointed at this file to
                    start them; grid_throughput.py is unchanged): each epoch's test accuracy is
                    ``trial.report``ed as an intermediate value, and each worker appends ``time.time()`` to a
                    side file right after its first report returns. First epoch = the earliest of those
                    - launch (the first intermediate value reported); each worker also appends the time it
                    started (after the coordinator enqueued every cell). First trial done = the first line
                    of gt's progress file (polled); cells/min = 64 / (launch → the coordinator's exit).

Cells: every system must run all 64 cells exactly once: for adamscape, 64 rows of the study, every one
complete or diverged (failed counts as a failure), each with ``attempts`` = 1, and curves of attempt 1
only; for Optuna, 64 trial records covering cells 0-63 once each. Exit status 1 when a system fails or
misses cells; the two goals below are reported, not enforced:

  (a) warm-service submit → first epoch < 1 s (both measures: from submit's launch and from its exit)
  (b) warm-service cells/min ≥ 8 × plain Optuna's cells/min

Goals and the table use the median of the R repetitions; every repetition's figures are in the JSON.
The service watches adamscape's code on disk (study/, workers/, optimizers/ *.py, pyproject.toml, uv.lock)
and restarts (drains, re-execs, re-warms) when it changes: such a restart during the run (someone editing
the checkout) is detected from its output, and the phase it hit is reported.

    .venv/bin/python benchmarks/service_latency.py [--workers 2] [--repeats 3] [--only service,run,optuna] [--keep]
        [--population auto|K]   # adamscape's --population for serve and run (default auto)

Prints a table and writes ``benchmarks/results/service_latency.json``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
import grid_throughput as gt  # noqa: E402

RESULTS = BENCH / "results"
EXE = str(gt.VENV_BIN / "adamscape")
GRID = "64"
TOTAL = gt.EXPECTED_CELLS[GRID]
POLL = 0.005  # seconds between looks at the database / progress files
EPOCH_LOG_ENV = "SERVICE_LATENCY_EPOCH_LOG"  # Optuna workers: where to append the time of their first report
SYSTEMS = ("service", "run", "optuna")

FINISHED_SQL = ("SELECT count(*) FROM sweep_cells s JOIN sweep_studies t ON t.id = s.study_id "
                "WHERE t.name = :n AND s.status IN ('complete', 'diverged', 'failed')")
FIRST_EPOCH_SQL = ("SELECT EXISTS (SELECT 1 FROM sweep_curves c JOIN sweep_cells s ON s.id = c.cell_id "
                   "JOIN sweep_studies t ON t.id = s.study_id WHERE t.name = :n)")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- plain Optuna's worker processes: gt's objective, reporting each epoch ---------------------------

_trial = None  # the trial gt's objective is running (one at a time per worker process)


def reporting_train_cell(task: str, protocol: dict, cell: dict):
    """gt.train_cell, plus ``trial.report`` of each epoch's test accuracy; the first report of this process
    appends its time to the file named by $SERVICE_LATENCY_EPOCH_LOG."""
    from study.protocol import CellResult
    from workers.training import train

    global _first_reported
    summary = None
    for item in train(task, cell["optimizer"], cell["hparams"], cell["seed"], protocol):
        if isinstance(item, CellResult):
            summary = item
            continue
        value = gt.finite(item.metrics.get("test_accuracy"))
        if _trial is not None and value is not None:
            _trial.report(value, item.epoch)
            if not _first_reported:
                _first_reported = True
                mark_time("epoch")
    return summary


_first_reported = False


def mark_time(what: str) -> None:
    """Append ``<unix time> <pid> <what>`` to the side file (one short write: atomic)."""
    with open(os.environ[EPOCH_LOG_ENV], "a") as f:
        f.write(f"{time.time():.6f} {os.getpid()} {what}\n")


def patch_optuna_worker() -> None:
    original = gt.optuna_objective

    def optuna_objective(task, protocol, cells, progress):
        inner = original(task, protocol, cells, progress)

        def objective(trial):
            global _trial
            _trial = trial
            try:
                return inner(trial)
            finally:
                _trial = None

        return objective

    gt.optuna_objective = optuna_objective
    gt.train_cell = reporting_train_cell


def child_main(args) -> None:
    sys.path.insert(0, str(ROOT))
    if args.child == "optuna-journal":
        # gt's coordinator starts its workers as `python <gt.__file__> --child optuna-journal-worker …`:
        # pointed at this file, they run gt's worker with the reporting objective above.
        gt.__file__ = __file__
    elif args.child == "optuna-journal-worker":
        mark_time("start")
        patch_optuna_worker()
    else:
        raise SystemExit(f"unknown child {args.child}")
    gt.child_main(args)


# --- processes and the database -----------------------------------------------------------------------

class Launched:
    """A process started now; ``end`` is the perf_counter at its exit (a waiter thread records it)."""

    def __init__(self, command: list[str], log: Path, env: dict, pipe_lines: bool = False, new_session: bool = False):
        self.command = command
        self.lines: list[tuple[float, str]] = []  # (perf_counter at arrival, text) when pipe_lines
        self.end: float | None = None
        self.t0 = time.perf_counter()
        self.t0_unix = time.time()
        self.log = open(log, "w")
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE if pipe_lines else self.log,
                                     stderr=subprocess.STDOUT, env=env, cwd=ROOT, text=True,
                                     start_new_session=new_session)
        self.pid = self.proc.pid
        self.exited = threading.Event()
        if pipe_lines:
            threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._wait, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.perf_counter(), line.rstrip("\n")))
            self.log.write(line)
            self.log.flush()

    def _wait(self) -> None:
        self.proc.wait()
        self.end = time.perf_counter()
        self.exited.set()

    @property
    def wall(self) -> float | None:
        return None if self.end is None else self.end - self.t0

    @property
    def code(self) -> int | None:
        return self.proc.returncode

    def line_after(self, needle: str, since: float = -1.0) -> float | None:
        return next((t for t, text in list(self.lines) if t >= since and needle in text), None)

    def close(self) -> None:
        self.log.close()


class Db:
    """A read-only view of a results database; ``one()`` answers None while it cannot be read (not yet
    created or migrated)."""

    def __init__(self, path: Path):
        self.path, self.conn = path, None

    def one(self, sql: str, **params):
        try:
            if self.conn is None:
                if not self.path.exists():
                    return None
                self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=1)
            return self.conn.execute(sql, params).fetchone()
        except sqlite3.Error:
            self.close()
            return None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def watch_study(db: Db, name: str, until_exit: list[Launched], timeout: float) -> tuple[float | None, float | None]:
    """Poll until the study has a first epoch row and all TOTAL cells finished, and ``until_exit`` exited:
    (perf_counter of the first epoch seen, of all done seen)."""
    first = done = None
    started = time.perf_counter()
    while True:
        now = time.perf_counter()
        if first is None:
            row = db.one(FIRST_EPOCH_SQL, n=name)
            if row and row[0]:
                first = now
        if done is None:
            row = db.one(FINISHED_SQL, n=name)
            if row and row[0] >= TOTAL:
                done = now
        if done is not None and all(p.exited.is_set() for p in until_exit):
            return first, done
        if any(p.exited.is_set() and p.code for p in until_exit) or now - started > timeout:
            return first, done
        time.sleep(POLL)


def check_cells(db_path: Path, name: str) -> dict:
    """Did the study run all TOTAL cells exactly once? (attempts = 1, curves of attempt 1 only)"""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10) as conn:
        cells = conn.execute(
            "SELECT count(*), sum(s.status = 'complete'), sum(s.status = 'diverged'), sum(s.status = 'failed'), "
            "sum(s.status NOT IN ('complete', 'diverged', 'failed')), min(s.attempts), max(s.attempts), "
            "count(DISTINCT s.cell_index), min(s.started_at), max(s.started_at), max(s.finished_at), "
            "min(t.created_at) FROM sweep_cells s JOIN sweep_studies t ON t.id = s.study_id WHERE t.name = ?",
            (name,)).fetchone()
        curves = conn.execute(
            "SELECT count(*), count(DISTINCT c.cell_id), max(c.attempt) FROM sweep_curves c "
            "JOIN sweep_cells s ON s.id = c.cell_id JOIN sweep_studies t ON t.id = s.study_id WHERE t.name = ?",
            (name,)).fetchone()
    (rows, complete, diverged, failed, unfinished, min_attempts, max_attempts, distinct, first_started,
     last_started, last_finished, created_at) = cells
    result = {"rows": rows, "distinct_cells": distinct, "complete": complete or 0, "diverged": diverged or 0,
              "failed": failed or 0, "unfinished": unfinished or 0, "attempts_min": min_attempts,
              "attempts_max": max_attempts, "curve_rows": curves[0], "cells_with_curves": curves[1],
              "curve_max_attempt": curves[2], "first_started_at": first_started, "last_started_at": last_started,
              "last_finished_at": last_finished, "created_at": created_at}
    result["ok"] = (rows == TOTAL and distinct == TOTAL and not failed and not unfinished and min_attempts == 1
                    and max_attempts == 1 and (curves[2] or 1) == 1)
    return result


def ray_leftovers(driver_pid: int) -> list[int]:
    """Processes of the local Ray a driver started (its session dir ends in the driver's pid) still alive."""
    mark = f"_{driver_pid}"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "session_" in cmdline and any(part.split("/")[0].endswith(mark) for part in cmdline.split("session_")[1:]):
            found.append(int(entry.name))
    return found


def reap_ray(driver_pid: int, wait: float = 3.0) -> list[int]:
    """After a driver exited: wait a little for its Ray to go, then stop what is left (those pids only)."""
    deadline = time.monotonic() + wait
    left = ray_leftovers(driver_pid)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = ray_leftovers(driver_pid)
    for pid in left:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    return left


def stop(launched: Launched, seconds: float = 30.0) -> float | None:
    """SIGTERM ``launched``; seconds until it exited (None: it did not, and was killed)."""
    if launched.exited.is_set():
        return 0.0
    sent = time.perf_counter()
    launched.proc.send_signal(signal.SIGTERM)
    if launched.exited.wait(seconds):
        return launched.end - sent
    launched.proc.kill()
    launched.exited.wait(10)
    return None


def submit(spec_file: Path, db: str, log: Path, env: dict) -> Launched:
    return Launched([EXE, "submit", str(spec_file), "--db", db], log, env)


def write_spec(tmp: Path, name: str) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(gt.study_toml(GRID, name))
    return path


def r3(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# --- 1 warm service -------------------------------------------------------------------------------------

def run_service(tmp: Path, args, env: dict) -> dict:
    db_path = tmp / "service.db"
    db = f"sqlite:///{db_path}"
    command = [EXE, "serve", "--db", db, "--workers", str(args.workers), "--population", args.population]
    service = Launched(command, tmp / "service.log", env, pipe_lines=True, new_session=True)
    result: dict = {"command": " ".join(command), "repetitions": []}
    reader = Db(db_path)
    try:
        deadline = time.perf_counter() + 180
        while service.line_after("workers ready") is None and not service.exited.is_set() \
                and time.perf_counter() < deadline:
            time.sleep(POLL)
        ready = service.line_after("workers ready")
        if ready is None:
            result.update(ok=False, error=f"no 'workers ready' line (exit {service.code}): "
                                          f"{gt._tail(tmp / 'service.log')}")
            return result
        result["startup_to_ready_s"] = r3(ready - service.t0)
        say(f"[service] {args.workers} workers ready after {ready - service.t0:.1f} s")
        for rep in range(1, args.repeats + 1):
            name = f"svc-{rep}"
            spec_file = write_spec(tmp, name)
            sub = submit(spec_file, db, tmp / f"{name}.submit.log", env)
            first, done = watch_study(reader, name, [sub], timeout=180)
            sub.close()
            out = (tmp / f"{name}.submit.log").read_text(errors="replace").strip()
            rec: dict = {"study": name, "submit_exit_code": sub.code, "submit_output": out[-400:],
                         "submit_wall_s": r3(sub.wall)}
            if sub.code or done is None:
                rec["error"] = f"submit exit {sub.code}; done seen: {done is not None}"
                result["repetitions"].append(rec)
                result.update(ok=False, error=f"{name}: {rec['error']}: {out[-300:]}")
                return result
            cells = check_cells(db_path, name)
            # the service idle again (its "finished" line) before the next submission
            finished_line = None
            idle_deadline = time.perf_counter() + 15
            while finished_line is None and time.perf_counter() < idle_deadline and not service.exited.is_set():
                finished_line = service.line_after(f"study {name}: finished", sub.t0)
                time.sleep(POLL)
            running_line = service.line_after(f"study {name}: running", sub.t0)
            # the study's row is committed at created_at (database clock); in perf_counter terms:
            registered = sub.t0 + (cells["created_at"] - sub.t0_unix)
            rec.update({
                "queued_message": "queued at position" in out,
                "registered_from_submit_launch_s": r3(registered - sub.t0),
                "submit_exit_after_registered_s": r3(sub.end - registered),
                "pickup_from_registered_s": r3(cells["first_started_at"] - cells["created_at"]),
                "running_line_from_registered_s": r3(None if running_line is None else running_line - registered),
                "first_epoch_from_submit_launch_s": r3(None if first is None else first - sub.t0),
                "first_epoch_from_submit_exit_s": r3(None if first is None else first - sub.end),
                "first_epoch_from_registered_s": r3(None if first is None else first - registered),
                "done_from_submit_launch_s": r3(done - sub.t0),
                "done_from_submit_exit_s": r3(done - sub.end),
                "done_from_registered_s": r3(done - registered),
                "last_finished_at_from_submit_launch_s": r3(cells["last_finished_at"] - sub.t0_unix),
                "finished_line_from_submit_launch_s": r3(None if finished_line is None else finished_line - sub.t0),
                "cells_per_min": round(TOTAL / (done - sub.t0) * 60, 1),
                "cells_per_min_from_submit_exit": round(TOTAL / (done - sub.end) * 60, 1),
                "cells_per_min_from_registered": round(TOTAL / (done - registered) * 60, 1),
                "cells": cells})
            rec["window_from_service_launch_s"] = [r3(sub.t0 - service.t0), r3(time.perf_counter() - service.t0)]
            result["repetitions"].append(rec)
            say(f"[service] {name}: submit {sub.wall:.2f} s, first epoch {rec['first_epoch_from_submit_launch_s']}"
                f" s, done {done - sub.t0:.2f} s, cells {'ok' if cells['ok'] else 'NOT ok'}")
            if not cells["ok"]:
                result.update(ok=False, error=f"{name}: cells not run exactly once: {cells}")
                return result
        result["ok"] = True
        return result
    finally:
        reader.close()
        result["sigterm_to_exit_s"] = r3(stop(service))
        service.close()
        result["exit_code"] = service.code
        result["ray_leftovers_killed"] = reap_ray(service.pid)
        result["log"] = [[r3(t - service.t0), text] for t, text in service.lines]
        # adamscape's code changed on disk (other work in this checkout): the service drained, re-exec'd and
        # re-warmed; say when, so that a repetition it hit is not taken for the service's own latency
        restarts = []
        for t, text in service.lines:
            if "restarting with the new code" not in text:
                continue
            at = t - service.t0
            hit = next((r["study"] for r in result["repetitions"]
                        if r["window_from_service_launch_s"][0] <= at <= r["window_from_service_launch_s"][1]), None)
            phase = hit or ("start-up" if "startup_to_ready_s" not in result or at < result["startup_to_ready_s"]
                            else "between submissions")
            restarts.append({"at_s": r3(at), "during": phase})
            for r in result["repetitions"]:
                if r["study"] == hit:
                    r["service_restarted_during"] = True
        result["code_change_restarts"] = restarts
        if restarts:
            say(f"[service] NOTE: adamscape's code changed on disk and the service restarted: {restarts}")
        say(f"[service] SIGTERM → exit {result['sigterm_to_exit_s']} s (exit code {service.code})")


# --- 2 cold run ----------------------------------------------------------------------------------------

def finish_timed_run(result: dict, label: str, wall: float, cells: dict, error: str, **timings) -> dict:
    """Complete a cold runner's ``result`` and return it: its ``timings`` (seconds from launch), then
    ``wall_s``, ``cells_per_min``, the cell check ``cells`` and its ``ok``; ``error`` is recorded when
    the check failed. Prints one ``[label]`` summary line."""
    result.update({**timings, "wall_s": r3(wall), "cells_per_min": round(TOTAL / wall * 60, 1),
                   "cells": cells, "ok": cells["ok"]})
    if not cells["ok"]:
        result["error"] = error
    say(f"[{label}] first epoch {result['first_epoch_from_launch_s']} s, wall {wall:.2f} s, "
        f"cells {'ok' if cells['ok'] else 'NOT ok'}")
    return result


def run_cold(tmp: Path, args, env: dict) -> dict:
    db_path = tmp / "run.db"
    db = f"sqlite:///{db_path}"
    name = "cold"
    spec_file = write_spec(tmp, name)
    sub = submit(spec_file, db, tmp / "cold.submit.log", env)
    sub.exited.wait()
    sub.close()
    result: dict = {"submit_wall_s": r3(sub.wall)}
    if sub.code:
        result.update(ok=False, error=f"submit exit {sub.code}: {gt._tail(tmp / 'cold.submit.log')}")
        return result
    command = [EXE, "run", name, "--db", db, "--workers", str(args.workers), "--population", args.population]
    result["command"] = " ".join(command)
    run = Launched(command, tmp / "cold.run.log", env)
    reader = Db(db_path)
    first, done = watch_study(reader, name, [run], timeout=300)
    reader.close()
    if not run.exited.wait(60):
        stop(run)
    run.close()
    result["ray_leftovers_killed"] = reap_ray(run.pid)
    result["exit_code"] = run.code
    if run.code or done is None:
        result.update(ok=False, error=f"run exit {run.code}: {gt._tail(tmp / 'cold.run.log')}")
        return result
    cells = check_cells(db_path, name)
    return finish_timed_run(
        result, "run", run.wall, cells, f"cells not run exactly once: {cells}",
        first_epoch_from_launch_s=r3(None if first is None else first - run.t0),
        pickup_from_launch_s=r3(cells["first_started_at"] - run.t0_unix),
        done_from_launch_s=r3(done - run.t0))


# --- 3 plain Optuna ------------------------------------------------------------------------------------

def run_optuna(tmp: Path, args, env: dict) -> dict:
    spec_file = write_spec(tmp, "optuna")
    out, progress, epochs = tmp / "optuna.json", tmp / "optuna.progress", tmp / "optuna.first-epochs"
    command = [sys.executable, __file__, "--child", "optuna-journal", "--spec", str(spec_file),
               "--workers", str(args.workers), "--out", str(out), "--progress", str(progress)]
    coordinator = Launched(command, tmp / "optuna.log", {**env, EPOCH_LOG_ENV: str(epochs)})
    first_done = None
    while not coordinator.exited.is_set():
        if first_done is None and progress.exists() and progress.stat().st_size:
            first_done = time.perf_counter()
        time.sleep(POLL)
    coordinator.close()
    result: dict = {"command": " ".join(command), "exit_code": coordinator.code,
                    "reporting": "trial.report(test_accuracy, epoch) each epoch (a wrapper of gt's objective)"}
    if coordinator.code or not out.exists():
        result.update(ok=False, error=f"exit {coordinator.code}: {gt._tail(tmp / 'optuna.log')}")
        return result
    marks = [line.split() for line in epochs.read_text().splitlines()] if epochs.exists() else []
    reports = [float(t) for t, _, what in marks if what == "epoch"]
    starts = [float(t) for t, _, what in marks if what == "start"]
    records = json.loads(out.read_text())["records"]
    indices = [r["cell"] for r in records]
    statuses = [r["status"] for r in records]
    cells = {"trials_with_records": len(records), "distinct_cells": len(set(indices)),
             "complete": statuses.count("complete"), "diverged": statuses.count("diverged"),
             "worker_pids": len({r.get("pid") for r in records}),
             "ok": sorted(indices) == list(range(TOTAL))}
    return finish_timed_run(
        result, "optuna", coordinator.wall, cells, f"trials do not cover cells 0-{TOTAL - 1} once each: {cells}",
        first_epoch_from_launch_s=r3(min(reports) - coordinator.t0_unix) if reports else None,
        workers_reporting=len(reports),
        first_worker_process_from_launch_s=r3(min(starts) - coordinator.t0_unix) if starts else None,
        first_trial_done_from_launch_s=r3(None if first_done is None else first_done - coordinator.t0))


# --- the report ----------------------------------------------------------------------------------------

def stats(values: list[float | None]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": r3(statistics.median(values)), "min": r3(min(values)), "max": r3(max(values)), "n": len(values)}


def summarize_service(service: dict) -> dict:
    reps = [r for r in service.get("repetitions", []) if "error" not in r]
    keys = ("submit_wall_s", "registered_from_submit_launch_s", "submit_exit_after_registered_s",
            "pickup_from_registered_s", "running_line_from_registered_s", "first_epoch_from_submit_launch_s",
            "first_epoch_from_submit_exit_s", "first_epoch_from_registered_s", "done_from_submit_launch_s",
            "done_from_submit_exit_s", "done_from_registered_s", "cells_per_min", "cells_per_min_from_submit_exit",
            "cells_per_min_from_registered")
    return {key: stats([r.get(key) for r in reps]) for key in keys}


def goals(systems: dict) -> dict:
    service = systems.get("service", {})
    summary = service.get("summary") or {}
    out: dict = {}
    if service.get("ok"):
        launch = summary["first_epoch_from_submit_launch_s"]
        exit_ = summary["first_epoch_from_submit_exit_s"]
        out["a_first_epoch_under_1s"] = {
            "from_submit_launch_median_s": launch and launch["median"],
            "from_submit_exit_median_s": exit_ and exit_["median"],
            "met_from_submit_launch": bool(launch and launch["median"] < 1.0),
            "met_from_submit_exit": bool(exit_ and exit_["median"] < 1.0),
            "from_study_committed_median_s": (summary["first_epoch_from_registered_s"] or {}).get("median"),
            "note": ("from submit exit < 0: the first epoch landed before submit's process had exited (after "
                     "its commit, submit still runs its queue/service queries and its interpreter teardown, on "
                     "cores the service's workers are already training on); the service's own reaction is "
                     "better read from the study's commit") if exit_ and exit_["median"] < 0 else None,
            "repetitions_met_from_launch": sum(1 for r in service["repetitions"]
                                               if (r.get("first_epoch_from_submit_launch_s") or 9e9) < 1.0),
            "repetitions_met_from_exit": sum(1 for r in service["repetitions"]
                                             if (r.get("first_epoch_from_submit_exit_s") or 9e9) < 1.0)}
    optuna = systems.get("optuna", {})
    if service.get("ok") and optuna.get("ok"):
        mine = summary["cells_per_min"]["median"]
        ratio = mine / optuna["cells_per_min"]
        out["b_cells_per_min_8x_optuna"] = {
            "service_cells_per_min_median": mine, "optuna_cells_per_min": optuna["cells_per_min"],
            "ratio": round(ratio, 2), "met": ratio >= 8.0,
            "service_from_submit_exit_ratio": round(summary["cells_per_min_from_submit_exit"]["median"]
                                                    / optuna["cells_per_min"], 2),
            "service_from_study_committed_ratio": round(summary["cells_per_min_from_registered"]["median"]
                                                        / optuna["cells_per_min"], 2)}
    return out


def print_table(systems: dict, goal: dict, args) -> None:
    def num(value, fmt=".2f") -> str:
        return "" if value is None else format(value, fmt)

    def line(label: str, value=None, lo=None, hi=None, fmt=".2f") -> None:
        print(f"{label:<44}{num(value, fmt):>10}{num(lo, fmt):>10}{num(hi, fmt):>10}")

    def stat(label: str, s: dict | None, fmt=".2f") -> None:
        line(label, *((s["median"], s["min"], s["max"]) if s else (None, None, None)), fmt=fmt)

    print(f"\nservice_latency: {TOTAL} cells (digits-mlp, 3 epochs), {args.workers} workers, "
          f"{os.cpu_count()} CPUs,\n  adamscape --population {args.population}, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'seconds unless noted':<44}{'median':>10}{'min':>10}{'max':>10}")
    print("-" * 74)
    s = systems.get("service")
    if s:
        print(f"warm service ({args.repeats} submissions)" + ("" if s.get("ok") else "  FAILED"))
        for restart in s.get("code_change_restarts") or []:
            print(f"  (restarted on a code change on disk at {restart['at_s']:.1f} s: {restart['during']})")
        line("  start-up: launch → workers ready (once)", s.get("startup_to_ready_s"))
        m = s.get("summary") or {}
        stat("  submit wall (launch → exit)", m.get("submit_wall_s"))
        stat("  submit launch → study row committed", m.get("registered_from_submit_launch_s"))
        stat("  study committed → first cell leased", m.get("pickup_from_registered_s"))
        stat("  study committed → first epoch", m.get("first_epoch_from_registered_s"))
        stat("  submit launch → first epoch", m.get("first_epoch_from_submit_launch_s"))
        stat("  submit exit → first epoch (< 0: before)", m.get("first_epoch_from_submit_exit_s"))
        stat("  submit launch → all done", m.get("done_from_submit_launch_s"))
        stat("  cells/min (submit launch → all done)", m.get("cells_per_min"), fmt=".0f")
        stat("  cells/min (submit exit → all done)", m.get("cells_per_min_from_submit_exit"), fmt=".0f")
        line("  SIGTERM → exit (once)", s.get("sigterm_to_exit_s"))
    r = systems.get("run")
    if r:
        print("cold adamscape run" + ("" if r.get("ok") else "  FAILED"))
        line("  submit wall (apart)", r.get("submit_wall_s"))
        line("  run launch → first cell leased", r.get("pickup_from_launch_s"))
        line("  run launch → first epoch", r.get("first_epoch_from_launch_s"))
        line("  run launch → exit", r.get("wall_s"))
        line("  cells/min (launch → exit)", r.get("cells_per_min"), fmt=".0f")
    o = systems.get("optuna")
    if o:
        print(f"plain Optuna ({args.workers} processes, journal file)" + ("" if o.get("ok") else "  FAILED"))
        line("  launch → first worker process started", o.get("first_worker_process_from_launch_s"))
        line("  launch → first epoch reported", o.get("first_epoch_from_launch_s"))
        line("  launch → first trial done", o.get("first_trial_done_from_launch_s"))
        line("  launch → exit", o.get("wall_s"))
        line("  cells/min (launch → exit)", o.get("cells_per_min"), fmt=".0f")
    print("-" * 74)
    print("cells run exactly once: " + ", ".join(
        f"{k} {'ok' if v.get('ok') else 'NO'}" for k, v in systems.items()))
    a, b = goal.get("a_first_epoch_under_1s"), goal.get("b_cells_per_min_8x_optuna")
    if a:
        print(f"goal (a) first epoch < 1 s: from submit launch {a['from_submit_launch_median_s']:.2f} s "
              f"({'met' if a['met_from_submit_launch'] else 'NOT met'}),\n    from submit exit "
              f"{a['from_submit_exit_median_s']:.2f} s ({'met' if a['met_from_submit_exit'] else 'NOT met'}), "
              f"from the study's commit {a['from_study_committed_median_s']:.2f} s")
    if b:
        print(f"goal (b) cells/min ≥ 8× Optuna: {b['service_cells_per_min_median']:.0f} / "
              f"{b['optuna_cells_per_min']:.0f} = {b['ratio']:.2f}× ({'met' if b['met'] else 'NOT met'});\n"
              f"    counted from submit exit {b['service_from_submit_exit_ratio']:.2f}×, from the study's "
              f"commit {b['service_from_study_committed_ratio']:.2f}×")


def versions() -> dict:
    found = {}
    for package in ("torch", "ray", "optuna", "sqlalchemy"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


def parent_main(args) -> int:
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else list(SYSTEMS)
    unknown = set(only) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"--only: unknown systems {sorted(unknown)} (choose from {', '.join(SYSTEMS)})")
    tmp = Path(tempfile.mkdtemp(prefix="service_latency-"))
    env = gt.base_env(args.workers)
    machine = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               **versions(), "loadavg_start": os.getloadavg()}
    say(f"{TOTAL} cells, {args.workers} workers, {args.repeats} submissions, load {machine['loadavg_start'][0]:.1f}")
    say(f"work dir {tmp}")
    systems: dict[str, dict] = {}
    runners = {"service": run_service, "run": run_cold, "optuna": run_optuna}
    try:
        for key in SYSTEMS:
            if key not in only:
                continue
            say(f"[{key}] …")
            load = os.getloadavg()[0]
            try:
                systems[key] = runners[key](tmp, args, env)
            except Exception as exc:  # a broken system is reported, the others still run
                systems[key] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            systems[key]["loadavg_1min_before"] = round(load, 2)
            if not systems[key].get("ok"):
                say(f"[{key}] FAILED: {systems[key].get('error')}")
        if "service" in systems:
            systems["service"]["summary"] = summarize_service(systems["service"])
        machine["loadavg_end"] = os.getloadavg()
        goal = goals(systems)
        print_table(systems, goal, args)
        report = {"benchmark": "service_latency", "grid": GRID, "cells": TOTAL, "workers": args.workers,
                  "population": args.population,
                  "repeats": args.repeats, "command": " ".join([Path(sys.executable).name, *sys.argv]),
                  "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine,
                  "study_toml": gt.study_toml(GRID, "NAME"), "systems": systems, "goals": goal,
                  "note": "2-core machine shared with other work (see loadavg): figures are noisy"}
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = Path(args.out_json) if args.out_json else RESULTS / "service_latency.json"
        out.write_text(json.dumps(report, indent=1) + "\n")
        say(f"wrote {out}")
    finally:
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    failed = [k for k, v in systems.items() if not v.get("ok")]
    if failed:
        say(f"failed systems: {', '.join(failed)}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="workers / Optuna processes (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="submissions to the warm service (default 3)")
    parser.add_argument("--population", default="auto", help="adamscape's --population for serve and run "
                        "(default auto, its own default)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all)")
    parser.add_argument("--json", dest="out_json", help="where to write the JSON (default: "
                        "benchmarks/results/service_latency.json)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, databases)")
    # internal: gt's Optuna coordinator and workers, run from this file
    gt.add_child_options(parser)
    args = parser.parse_args()
    if args.workers < 1 or args.repeats < 1:
        parser.error("--workers and --repeats must be at least 1")
    if args.child:
        child_main(args)
        return 0
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
