"""The ``adamscape`` command line."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from . import plugins, store
from .catalog import TASKS
from .errors import RunAborted, UserError
from .interrupts import stop_on

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Hyperparameter-sensitivity studies for the Adam family of optimizers.")


def _version(shown: bool) -> None:
    if shown:
        import importlib.metadata

        _plain(f"adamscape {importlib.metadata.version('adamscape')}")
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
PopulationOption = Annotated[str, typer.Option(help="Configs trained together as one stacked model per worker pass: auto (as many as fit, up to 64), or K; 1 trains one cell at a time.")]


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


FormatOption = Annotated[Format, typer.Option("--format", help="table (folded to the terminal), csv or json.")]
FOLD_WIDTH = 16  # the narrowest a prose column of a table is folded to
CELL_STATUSES = ("pending", "running", "complete", "diverged", "failed", "cancelled")


@app.command()
def submit(ctx: typer.Context, file: Annotated[Path, typer.Argument(help="Study file (TOML).")],
           db: DbOption = store.DEFAULT_DB,
           replace: Annotated[bool, typer.Option(help="Replace a changed study of the same name, discarding its results.")] = False,
           priority: Annotated[Optional[int], typer.Option(help="Queue priority on a service: higher runs first (default 0); given for an unchanged study, it re-prioritises it.")] = None,
           run_now: Annotated[bool, typer.Option("--run", help="Run the study here right after submitting it.")] = False,
           cluster: Annotated[Optional[str], typer.Option(help="Hand the run to the Ray cluster whose dashboard is at this address (http://HEAD:8265) through Ray's Jobs API; this machine may then disconnect.")] = None,
           workers: WorkersOption = None, address: AddressOption = None, gpus_per_trial: GpusOption = 0.0,
           lease_seconds: LeaseOption = 60.0, stall_seconds: StallOption = 3600.0,
           db_retry_seconds: DbRetryOption = 300.0, population: PopulationOption = "auto",
           keep_warm: KeepWarmOption = None) -> None:
    """Validate a study file and register its cells (idempotent for an unchanged file); a running service picks it up.
    With --run, the options after --cluster are `run`'s."""
    from . import spec

    if run_now and cluster:
        raise UserError("--run runs the study here and --cluster on a Ray cluster; give one of them")
    from typer._click.core import ParameterSource

    # run's options typed on this command line (not their defaults, nor RAY_ADDRESS from the environment)
    given = [name for name in RUN_OPTIONS if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE]
    flags = [_flag(name) for name in given]
    if given and not (run_now or cluster):
        raise UserError(f"{', '.join(flags)}: options of a run; add --run to run the study here with them, "
                        "or --cluster to run it on a Ray cluster with them")
    if cluster and "address" in given:
        raise UserError("--address: a --cluster run uses the cluster it is submitted to; drop --address")
    _population(population)  # a bad --population is refused before anything is written
    keep = _keep_warm(keep_warm)
    if cluster:
        _check_shared(db)
    study = spec.load(file)
    missing = None if study.download else study.task_info.missing_dataset(study.data_dir)
    if missing:
        raise UserError(f"{file}: {missing}")
    if run_now and address is None and keep > 0:  # warm workers start while the study is checked and written
        from . import warm

        warm.prestart(warm.wanted(workers, gpus_per_trial, keep), stall_seconds)
    if study.plugins:  # the user's own code: try it before anything is written
        from workers.check import check_study

        check_study(study, str(file))
    engine = store.connect(db)
    outcome, count = store.register(engine, study, replace=replace, priority=priority)
    verb = {"created": "registered", "replaced": "replaced", "unchanged": "already registered (unchanged)"}[outcome]
    _plain(f"study {study.name} {verb}: {count} cells ({len(study.optimizers)} optimizers × grid × "
           f"{len(study.seeds)} seeds)")
    if run_now:
        run(study.name, db=db, **{name: ctx.params[name] for name in RUN_OPTIONS})
        return
    if cluster:
        job = _submit_job(cluster, study.name, db,
                          [arg for name in given for arg in (_flag(name), str(ctx.params[name]))])
        _plain(f"Ray job {job} runs it on the cluster at {cluster} (`adamscape watch {study.name}` or "
               f"`ray job logs {job} --address {cluster}` follows it)")
        return
    row = next(r for r in store.overview(engine) if r["name"] == study.name)
    services = store.services_alive(engine)
    if row["position"] is None:
        _plain(f"nothing left to run (`adamscape status {study.name}`)")
    elif services:
        _plain(f"queued at position {row['position']}; {_services_line(services)} will run it "
               f"(`adamscape watch {study.name}` shows its progress)")
    else:
        _plain(f"no service is running: `adamscape run {study.name}` runs it here, or start `adamscape serve`")


RUN_OPTIONS = ("workers", "address", "gpus_per_trial", "lease_seconds", "stall_seconds", "db_retry_seconds",
               "population", "keep_warm")  # run's, also taken by `submit --run` and `submit --cluster`


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _check_shared(db: str) -> None:
    """The cluster's driver writes the results: the database must be one the cluster's head can reach."""
    from sqlalchemy.engine import make_url

    url = make_url(db)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_absolute():
        raise UserError(f"--cluster: the cluster's driver writes to {db}, a SQLite file on this machine; use a "
                        "PostgreSQL database both reach (or an absolute path on a file system they share)")


def _submit_job(cluster: str, name: str, db: str, options: list[str]) -> str:
    """Start ``adamscape run NAME OPTIONS`` as a Ray job on the cluster (its head runs the driver)."""
    import shlex

    from ray.job_submission import JobSubmissionClient

    from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_fixed

    def starting(exc: BaseException) -> bool:  # a head just started: its job agent is not up yet
        return "try again later" in str(exc)

    def say(state) -> None:
        if state.attempt_number == 1:
            err.print("waiting for the cluster's job agent (a head that just started needs a while)…",
                      markup=False, highlight=False)

    try:
        client = JobSubmissionClient(cluster)
        for attempt in Retrying(retry=retry_if_exception(starting), wait=wait_fixed(1), stop=stop_after_delay(180),
                                before_sleep=say, reraise=True):
            with attempt:
                return client.submit_job(entrypoint=shlex.join(["adamscape", "run", name, "--db", db, *options]),
                                         submission_id=f"adamscape-{name}-{os.urandom(3).hex()}",
                                         metadata={"adamscape_study": name})
    except Exception as exc:  # unreachable, no Jobs API (ray[default] missing on the head), refused
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--cluster {cluster}: cannot submit a Ray job ({reason[:200]}); the study is registered, "
                        f"so `adamscape run {name} --address …` or a service can still run it") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _services_line(services: list[dict]) -> str:
    return "service " + ", ".join(f"{s['host']}:{s['pid']} ({s['workers']} workers)" for s in services)


@app.command()
def check(file: Annotated[Path, typer.Argument(help="Study file (TOML).")]) -> None:
    """Try a study file's own optimizers and task: import them, train a few steps, report what was found."""
    from . import spec

    study = spec.load(file)
    from workers.check import check_study

    report = check_study(study, str(file))
    info = study.task_info
    _plain(f"{file}: task {study.task}")
    _plain("  metrics: " + ", ".join(f"{name} ({direction}{', primary' if name == info.primary else ''})"
                                     for name, direction in info.metrics.items()))
    for key, entry in report["optimizers"].items():
        _plain(f"  optimizer {key}")
        _plain("    hyperparameters: " + ", ".join(f"{name}={value:g}" for name, value in entry["hparams"].items()))
        _plain(f"    first losses: {', '.join(f'{v:.4g}' for v in entry['losses'])} (same seed, same losses)")
        _plain(f"    populations: {'yes' if not entry['populations'] else 'no, ' + entry['populations']}")
    _plain("ok")


def _plain(text: str) -> None:
    """A line of user text on stdout, printed as is (never read as markup)."""
    out.print(text, markup=False, highlight=False, soft_wrap=True)


@app.command()
def run(name: str, db: DbOption = store.DEFAULT_DB, workers: WorkersOption = None, address: AddressOption = None,
        gpus_per_trial: GpusOption = 0.0, lease_seconds: LeaseOption = 60.0, stall_seconds: StallOption = 3600.0,
        db_retry_seconds: DbRetryOption = 300.0, population: PopulationOption = "auto",
        keep_warm: KeepWarmOption = None,
        retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Run the study's failed cells again (their earlier attempts are kept).")] = False) -> None:
    """Run the pending cells of a study on Ray workers (resumes an interrupted study). Without --address, on
    this user's warm background workers (see --keep-warm)."""
    from .runner import RunOptions

    population_size = _population(population)
    keep = _keep_warm(keep_warm)
    engine = store.connect(db, must_exist=True)
    study = store.get_study(engine, name)
    if study["state"] == "paused":
        raise UserError(f"study {name!r} is paused; `adamscape resume {name}` first")
    records = study["spec"].get("plugins", {})
    _check_plugins(name, records)
    if retry_failed:
        _plain(f"retrying {store.retry_failed(engine, name)} failed cells of study {name}")
    options = RunOptions(lease_seconds=lease_seconds, db_retry_seconds=db_retry_seconds, population=population_size)
    pool = None
    if address is None and keep > 0:
        from . import warm

        say = lambda line: err.print(line, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
        pool = warm.attach(warm.wanted(workers, gpus_per_trial, keep), stall_seconds, say)
    if pool is not None:  # the warm workers: Ray runs in their process, its messages go to their log
        if gpus_per_trial:
            _check_gpus(pool)
        counts = _drive(engine, name, study, pool, options, f"`adamscape run {name}` resumes")
        pool.close()
        _plain(f"study {name}: {_final(counts)}")
        return
    with _ray_messages_logged() as ray_log:
        pool = _start_pool(address, workers, gpus_per_trial, stall_seconds, warm=_warm_up(study),
                           runtime_env=plugins.runtime_env(records))
        _name_log(ray_log)
        counts = _drive(engine, name, study, pool, options,
                        f"`adamscape run {name}` resumes once Ray is back (Ray's messages: {ray_log})")
        pool.close()
        _shutdown_ray()  # here: what Ray prints while it stops goes to its log too
    _plain(f"study {name}: {_final(counts)}")


def _drive(engine, name: str, study: dict, pool, options, when_lost: str) -> dict[str, int]:
    """The driver in the foreground: the progress bar, Ctrl-C hands the running cells back (exit 130), a
    lost cluster (or lost warm workers) is one line (exit 1)."""
    from .errors import ClusterLost
    from .runner import run as run_cells

    with stop_on(signal.SIGINT) as stop, _progress_bar(name, study["total_cells"]) as show:
        say = lambda line: show.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
        try:
            return run_cells(engine, name, pool, options, on_progress=show, announce=say)
        except ClusterLost as exc:
            show.stop()
            _print_error(f"{exc}; the running cells were handed back, {when_lost}")
            _leave(1)
        except BaseException:
            if not stop.is_set():
                raise
            show.stop()
            err.print(f"interrupted: the running cells were handed back; `adamscape run {name}` resumes",
                      markup=False, highlight=False)
            _leave(130)
    raise AssertionError("unreachable")


def _keep_warm(value: str | None) -> float:
    from .warm import DEFAULT_KEEP_WARM, parse_duration

    if value is None:
        return DEFAULT_KEEP_WARM
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UserError(str(exc)) from None


@app.command()
def shutdown() -> None:
    """End this user's warm background workers now (and the Ray they started)."""
    from . import warm

    pid = warm.shutdown()
    _plain("no warm workers were running" if pid is None else f"warm workers (pid {pid}) stopped")


def _final(counts: dict[str, int]) -> str:
    shown = ("complete", "diverged", "failed", *(("cancelled",) if counts.get("cancelled") else ()))
    return ", ".join(f"{counts.get(s, 0)} {s}" for s in shown)


class _Bar:
    """``show(counts)`` updates a study's progress bar; ``stop()`` ends it before a message."""

    def __init__(self, progress: Progress, task) -> None:
        self.progress, self.task = progress, task

    def __call__(self, counts: dict[str, int]) -> None:
        done = sum(counts.get(s, 0) for s in ("complete", "diverged", "failed", "cancelled"))
        self.progress.update(self.task, completed=done, running=counts.get("running", 0),
                             diverged=counts.get("diverged", 0), failed=counts.get("failed", 0))

    def stop(self) -> None:
        self.progress.stop()


RAY_LOG_FILES_KEPT = 20


@contextmanager
def _ray_messages_logged() -> Iterator[Path]:
    """While a driver runs, Ray's own messages go to a log file (the caller names it once Ray is up), not
    among the progress bar: its logger, the notes the raylet sends the driver (a worker died, memory ran low),
    which Ray prints to sys.stdout, and C++ warnings written to file descriptors 1 and 2. adamscape's
    own output keeps the terminal."""
    import time

    folder = Path(os.environ.get("ADAMSCAPE_LOG_DIR") or Path.home() / ".local" / "state" / "adamscape" / "logs")
    folder.mkdir(parents=True, exist_ok=True)
    for old in sorted(folder.glob("ray-*.log"))[:-RAY_LOG_FILES_KEPT]:
        old.unlink(missing_ok=True)
    path = folder / f"ray-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    streams = sys.stdout, sys.stderr
    with open(path, "a", buffering=1, encoding="utf-8", errors="replace") as log:
        for stream in streams:
            stream.flush()
        saved = os.dup(1), os.dup(2)
        out.file, err.file = (open(fd, "w", buffering=1, encoding=stream.encoding or "utf-8", errors="replace",
                                   closefd=False) for fd, stream in zip(saved, streams))
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.stdout = sys.stderr = log
        try:
            yield path
        finally:
            for stream in (log, out.file, err.file):
                stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            sys.stdout, sys.stderr = streams
            out.file = err.file = None  # back to following sys.stdout / sys.stderr
            for fd in saved:
                os.close(fd)


def _name_log(path: Path) -> None:
    err.print(f"Ray's messages: {path}", markup=False, highlight=False, soft_wrap=True)


@contextmanager
def _progress_bar(name: str, total: int) -> Iterator[_Bar]:
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("running {task.fields[running]}  diverged [yellow]{task.fields[diverged]}[/]  "
                          "failed [red]{task.fields[failed]}[/]"), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn()]
    # Progress would send what others print to sys.stdout above the bar; Ray's notes go to its log instead
    with Progress(*columns, console=out, transient=False, redirect_stdout=False, redirect_stderr=False) as progress:
        yield _Bar(progress, progress.add_task(escape(name), total=total, running=0, diverged=0, failed=0))


def _population(value: str) -> int | None:
    """``--population``: None for auto, else a whole number ≥ 1."""
    if value.strip().lower() == "auto":
        return None
    if value.strip().isdigit() and int(value) >= 1:
        return int(value)
    raise UserError(f"--population must be auto or a whole number ≥ 1 (got {value!r})")


def _leave(code: int) -> None:
    """Exit without waiting on Ray: after a lost cluster its shutdown can hang for minutes."""
    _shutdown_ray()
    for stream in (sys.stdout, sys.stderr, out.file, err.file):
        stream.flush()
    os._exit(code)


def _shutdown_ray(seconds: float = 5.0) -> None:
    """Stop the local Ray we started, if it answers within ``seconds``."""
    import threading

    ray = sys.modules.get("ray")
    if ray is None:  # a driver of warm workers never imports Ray
        return

    stopper = threading.Thread(target=ray.shutdown, daemon=True)
    stopper.start()
    stopper.join(timeout=seconds)


def _warm_up(study: dict) -> dict:
    """What each worker builds while it starts: the study's task under its protocol."""
    from dataclasses import asdict

    from .spec import StudySpec

    return {"task": study["task"], "protocol": asdict(StudySpec.model_validate(study["spec"]).protocol()),
            "plugins": study["spec"].get("plugins", {})}


def _check_plugins(name: str, records: dict) -> None:
    """A study runs only with the code it was submitted with."""
    for record in records.values():
        problem = plugins.changed(record)
        if problem:
            raise UserError(f"{problem}; restore it, or resubmit the study file with --replace (which discards "
                            f"study {name}'s results)")


def _start_pool(address: str | None, workers: int | None, gpus_per_trial: float, stall_seconds: float,
                warm: dict | None = None, runtime_env: dict | None = None):
    from workers.executor import ClusterUnreachable, RayPool, connect

    try:
        resources = connect(address, runtime_env)
    except ClusterUnreachable as exc:  # already the whole line: what is wrong and how to fix it
        raise UserError(str(exc)) from None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserError(f"cannot reach the Ray cluster at {address}: {str(exc).splitlines()[0]}; start it "
                        "(`ray start --head`) or drop --address / RAY_ADDRESS to use a local Ray") from None
    if gpus_per_trial > 0 and resources.get("GPU", 0) <= 0:
        raise UserError("--gpus-per-trial was given but the Ray cluster has no GPUs; drop the option to train on CPU")
    if workers is None:
        workers = int(resources.get("GPU", 0) / gpus_per_trial) if gpus_per_trial else int(resources.get("CPU", 1))
    pool = RayPool(max(1, workers), gpus_per_trial=gpus_per_trial, stall_seconds=stall_seconds, warm=warm)
    if gpus_per_trial:
        _check_gpus(pool)
    return pool


def _check_gpus(pool) -> None:
    """GPU workers say what they train on before any cell is leased; a GPU share that cannot be used fails
    the run here, in one line, rather than every cell on one CPU thread (or with "no kernel image")."""
    devices = pool.devices(timeout=600)
    problems = sorted({d["problem"] for d in devices if d["problem"]})
    if problems:
        pool.close()
        raise UserError(f"--gpus-per-trial: {problems[0]}; fix the GPU nodes' driver or torch build, or drop "
                        "--gpus-per-trial to train on CPU")
    share = lambda d: (f", {d['memory_fraction']:.0%} of it per worker"  # noqa: E731
                       if d.get("memory_fraction", 1) < 1 else "")
    for shown in sorted({f"{d['gpu']} ({d['capability']}, {d['memory_gib']} GiB{share(d)}), torch {d['torch']}, "
                         f"CUDA {d['cuda']}" for d in devices}):
        err.print(f"workers on: {shown}", markup=False, highlight=False, soft_wrap=True)


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
    from . import warm

    warm_set = warm.describe()
    if format != Format.table:
        studies = [{"study": r["name"], "task": r["task"], "metric": r["metric"], "state": r["display"],
                    "position": r["position"], "priority": r["priority"], "total_cells": r["total_cells"],
                    **{s: r["counts"].get(s, 0) for s in CELL_STATUSES}} for r in rows]
        _print_records(studies, format, {"services": [
            {k: service[k] for k in ("host", "pid", "workers", "ray", "started_at")} | {"heartbeat_age": service["age"]}
            for service in services], "warm_workers": [warm_set] if warm_set else []})
        return
    _print_table(("study", "task", "state", "queue", "cells"), [
        (r["name"], r["task"], r["display"],
         "" if r["position"] is None else f"#{r['position']}" + (f" p{r['priority']}" if r["priority"] else ""),
         _cells_line(r)) for r in rows], fold=("cells",))
    if not services:
        _plain("services: none running (`adamscape serve` starts one)")
    for service in services:
        _plain(f"service {service['host']}:{service['pid']}: {service['workers']} workers on Ray {service['ray']}, "
               f"heartbeat {service['age']:.0f} s ago")
    _plain(_warm_line(warm_set))


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
    done = sum(counts.get(s, 0) for s in ("complete", "diverged", "failed", "cancelled"))
    parts = [", ".join(f"{counts[s]} {s}" for s in ("complete", "diverged", "failed", "cancelled") if counts.get(s)),
             ", ".join(f"{counts[s]} {s}" for s in ("running", "pending") if counts.get(s))]
    details = "; ".join(part for part in parts if part)
    return f"{done}/{row['total_cells']} done" + (f": {details}" if details else "")


@app.command()
def serve(db: DbOption = store.DEFAULT_DB, workers: WorkersOption = None, address: AddressOption = None,
          gpus_per_trial: GpusOption = 0.0, lease_seconds: LeaseOption = 60.0, stall_seconds: StallOption = 3600.0,
          db_retry_seconds: DbRetryOption = 300.0, population: PopulationOption = "auto") -> None:
    """Run every queued study with warm workers, and wait for more (Ctrl-C or SIGTERM stops it)."""
    from workers.executor import ClusterLost

    from . import service
    from .runner import RunOptions, new_owner, serve as serve_queue

    population_size = _population(population)
    engine = store.connect(db)
    with _ray_messages_logged() as ray_log:
        pool = _start_pool(address, workers, gpus_per_trial, stall_seconds, warm=service.warm_up())
        _name_log(ray_log)
        owner = new_owner()
        options = RunOptions(lease_seconds=lease_seconds, db_retry_seconds=db_retry_seconds,
                             population=population_size, poll_seconds=0.2)
        ticker = service.Ticker(engine, owner, service.details(pool.size, address), db_retry_seconds)
        waker = service.Waker(engine)

        _plain(f"serving {store._describe(db)} with {pool.size} workers on Ray {address or '(local)'}; "
               "Ctrl-C or SIGTERM stops it (running cells are handed back)")
        code = 0
        try:
            with stop_on(signal.SIGINT, signal.SIGTERM) as stop:
                try:
                    serve_queue(engine, pool, options, wait=waker, tick=ticker, owner=owner, announce=_stamped)
                except ClusterLost as exc:
                    _print_error(f"{exc}; the running cells were handed back, restart `adamscape serve` once Ray "
                                 f"is back (Ray's messages: {ray_log})")
                    code = 1
                except BaseException:
                    if not stop.is_set():
                        raise
                    _stamped("stopping: the running cells were handed back")
        finally:  # the handlers are back: a second SIGTERM during this clean-up ends the process
            waker.close()
            try:
                store.retrying(lambda: store.service_stopped(engine, owner), 5)
            except Exception:
                pass  # its heartbeat row ages out
        if not ticker.restart:
            pool.close()
            _leave(code)
    _stamped("restarting with the new code")
    pool.close()
    _shutdown_ray()
    os.execv(sys.argv[0], sys.argv)  # the same command line (the console script), so the same process id


def _stamped(line: str) -> None:
    import time

    _plain(f"{time.strftime('%H:%M:%S')} {line}")


@app.command()
def watch(name: str, db: DbOption = store.DEFAULT_DB) -> None:
    """Show the live progress of a study a service runs (Ctrl-C stops watching, not the study)."""
    import time

    engine = store.connect(db, must_exist=True)
    study = store.get_study(engine, name)
    with _progress_bar(name, study["total_cells"]) as show:
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
            _plain(f"stopped watching; study {name} goes on (`adamscape status {name}`)")
            return
    _plain(f"study {name}: {row['display']}: {_final(row['counts'])}")


@app.command()
def cancel(name: str, db: DbOption = store.DEFAULT_DB) -> None:
    """Cancel a study: its pending cells never run, its running cells stop within seconds (status cancelled)."""
    touched = store.set_state(store.connect(db, must_exist=True), name, "cancel")
    _plain(f"study {name} cancelled: {touched.get('running', 0)} running cells stopped, "
           f"{touched.get('pending', 0)} pending cells will not run")


@app.command()
def pause(name: str, db: DbOption = store.DEFAULT_DB) -> None:
    """Pause a study: nothing more of it starts; its running cells are handed back (they rerun on resume)."""
    touched = store.set_state(store.connect(db, must_exist=True), name, "pause")
    _plain(f"study {name} paused: {touched.get('running', 0)} running cells handed back; "
           f"`adamscape resume {name}` continues it")


@app.command()
def resume(name: str, db: DbOption = store.DEFAULT_DB) -> None:
    """Resume a paused study."""
    engine = store.connect(db, must_exist=True)
    store.set_state(engine, name, "resume")
    row = next(r for r in store.overview(engine) if r["name"] == name)
    _plain(f"study {name} resumed" + (f": queued at position {row['position']}" if row["position"] else ""))


@app.command()
def results(name: str, db: DbOption = store.DEFAULT_DB, format: FormatOption = Format.table) -> None:
    """Print the study's rows of the sweep_results view."""
    columns, rows = store.result_rows(store.connect(db, must_exist=True, read_only=True), name)
    if format != Format.table:
        _print_records([dict(zip(columns, row)) for row in rows], format)
        return
    # the table leaves out the study, errors (long), empty columns, and lists below it what is the same
    # on every row: the swept axes and the metrics are what is left
    values = {c: [_shown_value(row[i]) for row in rows] for i, c in enumerate(columns) if c not in ("study", "error")}
    same = {c: v[0] for c, v in values.items() if len(set(v)) == 1 and c not in ("cell", "optimizer", "seed", "status")
            and len(rows) > 1}
    shown = [c for c in values if c not in same and any(values[c])]
    _print_table(shown, list(zip(*(values[c] for c in shown))))
    if same:
        _plain("the same on every row: " + ", ".join(f"{c} = {v}" for c, v in same.items() if v))


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
    from . import report as atlas

    written = atlas.write(store.connect(db, must_exist=True, read_only=True), name, out, delta)
    for path in written:
        _plain(str(path))


@app.command()
def tasks(format: FormatOption = Format.table) -> None:
    """The tasks a study can name, with their metrics (the primary one ranks a study whose file names no
    metric), defaults and task options."""
    listed = [info for info in TASKS.values() if info.listed]
    if format != Format.table:
        _print_records([{"task": i.name, "description": i.description, "metrics": i.metrics, "primary_metric": i.primary,
                         "epochs": i.default_epochs, "batch_size": i.default_batch_size,
                         "task_options": {k: {"default": o.default, "description": o.description}
                                          for k, o in i.options.items()}} for i in listed], format)
        return
    _print_table(("task", "metrics", "epochs", "batch", "description; [task_options]"), [
        (i.name, "\n".join(f"{m} {'↑' if d == 'maximize' else '↓'}{' *' if m == i.primary else ''}"
                           for m, d in i.metrics.items()),
         str(i.default_epochs), str(i.default_batch_size),
         "\n".join([i.description, *(f"{k} = {o.default!r}: {o.description}" for k, o in i.options.items())]))
        for i in listed], fold=("description; [task_options]",))
    _plain("metrics: ↑ higher is better, ↓ lower; * the primary metric, which a study ranks by unless its file "
           "names one")
    _print_own(plugins.TASK_GROUP, "./file.py:build", "Your own task")


@app.command("optimizers")
def list_optimizers(format: FormatOption = Format.table) -> None:
    """The optimizers a study can name, with their hyperparameters and paper defaults."""
    import optimizers

    specs = list(optimizers.REGISTRY.values())
    if format != Format.table:
        _print_records([{"optimizer": spec.name, "description": spec.summary, "hyperparameters": {
            n: {"default": hp.default, "search": list(hp.search), "log": hp.log} for n, hp in spec.hparams.items()}}
            for spec in specs], format)
        return
    _print_table(("optimizer", "hyperparameter = default [search range]", "description"), [
        (spec.name, "\n".join(f"{n} = {hp.default:g} [{hp.search[0]:g} … {hp.search[1]:g}{', log' if hp.log else ''}]"
                              for n, hp in spec.hparams.items()), spec.summary) for spec in specs],
        fold=("description",))
    _print_own(plugins.OPTIMIZER_GROUP, "./file.py:Class", "Your own optimizer")


def _print_table(headers, rows, keep=(), fold=()) -> None:
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


def _print_records(records: list[dict], format: Format, extra: dict | None = None) -> None:
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


def _print_own(group: str, form: str, section: str) -> None:
    """The names installed packages register (not imported here), and how to name one's own."""
    import importlib.metadata

    installed = importlib.metadata.entry_points(group=group)
    if installed:
        _plain(f"installed ({group}): " + ", ".join(f"{ep.name} = {ep.value}" for ep in installed))
    _plain(f"your own: \"{form}\" in the study file (README '{section}')")


@app.command()
def dashboard(db: DbOption = store.DEFAULT_DB, port: Annotated[int, typer.Option(min=1, max=65535)] = 8501,
              host: Annotated[str, typer.Option(help="Address to listen on: 127.0.0.1 serves this machine only; "
                                                     "0.0.0.0 every network (e.g. in a container).")] = "127.0.0.1") -> None:
    """Serve the Streamlit dashboard over the results database (read-only)."""
    store.connect(db, must_exist=True, read_only=True)
    app_path = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
    shown = "localhost" if host in ("127.0.0.1", "localhost", "0.0.0.0") else host
    _plain(f"dashboard: http://{shown}:{port}  (database {store._describe(db)}; Ctrl-C to stop)")
    sys.stdout.flush()
    sys.stderr.flush()
    # this process becomes the Streamlit server: Ctrl-C and SIGTERM reach it, and no orphan keeps the port
    os.execve(sys.executable, [sys.executable, "-m", "streamlit", "run", str(app_path),
                               "--server.address", host, "--server.port", str(port), "--server.headless", "true",
                               "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal"],
              {**os.environ, "ADAMSCAPE_DB": db})


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
        _print_error(str(exc))
        sys.exit(2 if isinstance(exc, UserError) else 1)
    except click_errors.NoArgsIsHelpError as exc:  # plain `adamscape`: the help
        _plain(exc.format_message())
        sys.exit(0)
    except click_errors.UsageError as exc:  # an unknown option, a value out of range: no usage box
        where = exc.ctx.command_path if exc.ctx else "adamscape"
        _print_error(f"{exc.format_message()} (`{where} --help` lists the options)")
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


def _print_error(message: str) -> None:
    """One ``error:`` line on stderr; the message is printed as is (user text is never read as markup)."""
    err.print("[red]error:[/] ", end="", highlight=False)
    err.print(message, markup=False, highlight=False, soft_wrap=True)
