"""The commands that run studies: ``submit`` (and ``--run`` / ``--cluster``), ``check``, ``run``, ``serve``,
``shutdown``, with the progress bar, Ray's log file and the worker pool they start."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from study import plugins, store
from study.cli.options import (
    DRIVER,
    RUN_OPTIONS,
    AddressOption,
    DbOption,
    DbRetryOption,
    GpusOption,
    KeepWarmOption,
    LeaseOption,
    PopulationOption,
    StallOption,
    WorkersOption,
    app,
    err,
    final,
    leave,
    out,
    plain,
    print_error,
    services_line,
    shutdown_ray,
    stamped,
)
from study.driver.options import RunOptions
from study.errors import UserError
from study.interrupts import stop_on
from study.protocol import BatchPayload, PluginRecord, WarmUp, plugin_records
from study.statuses import ENDED, CellStatus


@app.command()
def submit(ctx: typer.Context, file: Annotated[Path, typer.Argument(help="Study file (TOML).")],
           db: DbOption = store.DEFAULT_DB,
           replace: Annotated[bool, typer.Option(help="Replace a changed study of the same name, discarding its results.")] = False,
           priority: Annotated[Optional[int], typer.Option(help="Queue priority on a service: higher runs first (default 0); given for an unchanged study, it re-prioritises it.")] = None,
           run_now: Annotated[bool, typer.Option("--run", help="Run the study here right after submitting it.")] = False,
           cluster: Annotated[Optional[str], typer.Option(help="Hand the run to the Ray cluster whose dashboard is at this address (http://HEAD:8265) through Ray's Jobs API; this machine may then disconnect.")] = None,
           workers: WorkersOption = DRIVER.workers, address: AddressOption = DRIVER.address,
           gpus_per_trial: GpusOption = DRIVER.gpus_per_trial, lease_seconds: LeaseOption = DRIVER.lease_seconds,
           stall_seconds: StallOption = DRIVER.stall_seconds,
           db_retry_seconds: DbRetryOption = DRIVER.db_retry_seconds, population: PopulationOption = DRIVER.population,
           keep_warm: KeepWarmOption = DRIVER.keep_warm) -> None:
    """Validate a study file and register its cells (idempotent for an unchanged file); a running service picks it up.
    With --run, the options after --cluster are `run`'s."""
    from study import spec

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
        from study.driver import warm

        warm.prestart(warm.wanted(workers, gpus_per_trial, keep), stall_seconds)
    if study.plugins:  # the user's own code: try it before anything is written
        from workers.check import check_study

        check_study(study, str(file))
    engine = store.connect(db)
    outcome, count = store.register(engine, study, replace=replace, priority=priority)
    verb = {"created": "registered", "replaced": "replaced", "unchanged": "already registered (unchanged)"}[outcome]
    plain(f"study {study.name} {verb}: {count} cells ({len(study.optimizers)} optimizers × grid × "
           f"{len(study.seeds)} seeds)")
    if run_now:
        run(study.name, db=db, **{name: ctx.params[name] for name in RUN_OPTIONS})
        return
    if cluster:
        job = _submit_job(cluster, study.name, db,
                          [arg for name in given for arg in (_flag(name), str(ctx.params[name]))])
        plain(f"Ray job {job} runs it on the cluster at {cluster} (`adamscape watch {study.name}` or "
               f"`ray job logs {job} --address {cluster}` follows it)")
        return
    row = next(r for r in store.overview(engine) if r["name"] == study.name)
    services = store.services_alive(engine)
    if row["position"] is None:
        plain(f"nothing left to run (`adamscape status {study.name}`)")
    elif services:
        plain(f"queued at position {row['position']}; {services_line(services)} will run it "
               f"(`adamscape watch {study.name}` shows its progress)")
    else:
        plain(f"no service is running: `adamscape run {study.name}` runs it here, or start `adamscape serve`")


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


@app.command()
def check(file: Annotated[Path, typer.Argument(help="Study file (TOML).")]) -> None:
    """Try a study file's own optimizers and task: import them, train a few steps, report what was found."""
    from study import spec

    study = spec.load(file)
    from workers.check import check_study

    report = check_study(study, str(file))
    info = study.task_info
    plain(f"{file}: task {study.task}")
    plain("  metrics: " + ", ".join(f"{name} ({direction}{', primary' if name == info.primary else ''})"
                                     for name, direction in info.metrics.items()))
    for key, entry in report["optimizers"].items():
        plain(f"  optimizer {key}")
        plain("    hyperparameters: " + ", ".join(f"{name}={value:g}" for name, value in entry["hparams"].items()))
        plain(f"    first losses: {', '.join(f'{v:.4g}' for v in entry['losses'])} (same seed, same losses)")
        plain(f"    populations: {'yes' if not entry['populations'] else 'no, ' + entry['populations']}")
    plain("ok")


@app.command()
def run(name: str, db: DbOption = store.DEFAULT_DB, workers: WorkersOption = DRIVER.workers,
        address: AddressOption = DRIVER.address, gpus_per_trial: GpusOption = DRIVER.gpus_per_trial,
        lease_seconds: LeaseOption = DRIVER.lease_seconds, stall_seconds: StallOption = DRIVER.stall_seconds,
        db_retry_seconds: DbRetryOption = DRIVER.db_retry_seconds, population: PopulationOption = DRIVER.population,
        keep_warm: KeepWarmOption = DRIVER.keep_warm,
        retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Run the study's failed cells again (their earlier attempts are kept).")] = False) -> None:
    """Run the pending cells of a study on Ray workers (resumes an interrupted study). Without --address, on
    this user's warm background workers (see --keep-warm)."""
    population_size = _population(population)
    keep = _keep_warm(keep_warm)
    engine = store.connect(db, must_exist=True)
    study = store.get_study(engine, name)
    if study["state"] == "paused":
        raise UserError(f"study {name!r} is paused; `adamscape resume {name}` first")
    records = plugin_records(study["spec"].get("plugins"))
    _check_plugins(name, records)
    if retry_failed:
        plain(f"retrying {store.retry_failed(engine, name)} failed cells of study {name}")
    options = RunOptions(lease_seconds=lease_seconds, db_retry_seconds=db_retry_seconds, population=population_size)
    pool = None
    if address is None and keep > 0:
        from study.driver import warm

        say = lambda line: err.print(line, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
        pool = warm.attach(warm.wanted(workers, gpus_per_trial, keep), stall_seconds, say)
    if pool is not None:  # the warm workers: Ray runs in their process, its messages go to their log
        if gpus_per_trial:
            _check_gpus(pool)
        counts = _drive(engine, name, study, pool, options, f"`adamscape run {name}` resumes")
        pool.close()
        plain(f"study {name}: {final(counts)}")
        return
    with _ray_messages_logged() as ray_log:
        pool = _start_pool(address, workers, gpus_per_trial, stall_seconds, warm=_warm_up(study),
                           runtime_env=plugins.runtime_env(records))
        _name_log(ray_log)
        counts = _drive(engine, name, study, pool, options,
                        f"`adamscape run {name}` resumes once Ray is back (Ray's messages: {ray_log})")
        pool.close()
        shutdown_ray()  # here: what Ray prints while it stops goes to its log too
    plain(f"study {name}: {final(counts)}")


def _drive(engine, name: str, study: dict, pool, options, when_lost: str) -> dict[str, int]:
    """The driver in the foreground: the progress bar, Ctrl-C hands the running cells back (exit 130), a
    lost cluster (or lost warm workers) is one line (exit 1)."""
    from study.driver.runner import run as run_cells
    from study.errors import ClusterLost

    with stop_on(signal.SIGINT) as stop, progress_bar(name, study["total_cells"]) as show:
        say = lambda line: show.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
        try:
            return run_cells(engine, name, pool, options, on_progress=show, announce=say)
        except ClusterLost as exc:
            show.stop()
            print_error(f"{exc}; the running cells were handed back, {when_lost}")
            leave(1)
        except BaseException as exc:
            if not (stop.is_set() or isinstance(exc, KeyboardInterrupt)):  # a KeyboardInterrupt is a stop, whoever
                raise                                                       # raised it (a library's own handler)
            show.stop()
            err.print(f"interrupted: the running cells were handed back; `adamscape run {name}` resumes",
                      markup=False, highlight=False)
            leave(130)
    raise AssertionError("unreachable")


def _keep_warm(value: str | None) -> float:
    from study.driver.warm import DEFAULT_KEEP_WARM, parse_duration

    if value is None:
        return DEFAULT_KEEP_WARM
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UserError(str(exc)) from None


@app.command()
def shutdown() -> None:
    """End this user's warm background workers now (and the Ray they started)."""
    from study.driver import warm

    pid = warm.shutdown()
    plain("no warm workers were running" if pid is None else f"warm workers (pid {pid}) stopped")


class _Bar:
    """``show(counts)`` updates a study's progress bar; ``stop()`` ends it before a message."""

    def __init__(self, progress: Progress, task) -> None:
        self.progress, self.task = progress, task

    def __call__(self, counts: dict[str, int]) -> None:
        done = sum(counts.get(s, 0) for s in ENDED)
        self.progress.update(self.task, completed=done, running=counts.get(CellStatus.RUNNING, 0),
                             diverged=counts.get(CellStatus.DIVERGED, 0), failed=counts.get(CellStatus.FAILED, 0))

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
def progress_bar(name: str, total: int) -> Iterator[_Bar]:
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


def _warm_up(study: dict) -> WarmUp:
    """What each worker builds while it starts: the study's task under its protocol."""
    from study.spec import StudySpec

    spec = StudySpec.model_validate(study["spec"])
    return WarmUp(study["task"], spec.protocol(), spec.plugins)


def _check_plugins(name: str, records: dict[str, PluginRecord]) -> None:
    """A study runs only with the code it was submitted with."""
    for record in records.values():
        problem = plugins.changed(record)
        if problem:
            raise UserError(f"{problem}; restore it, or resubmit the study file with --replace (which discards "
                            f"study {name}'s results)")


def _start_pool(address: str | None, workers: int | None, gpus_per_trial: float, stall_seconds: float,
                warm: WarmUp | BatchPayload | None = None, runtime_env: dict | None = None):
    from workers.pool import ClusterUnreachable, RayPool, connect

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
    problems = sorted({d.problem for d in devices if d.problem})
    if problems:
        pool.close()
        raise UserError(f"--gpus-per-trial: {problems[0]}; fix the GPU nodes' driver or torch build, or drop "
                        "--gpus-per-trial to train on CPU")
    share = lambda d: (f", {d.memory_fraction:.0%} of it per worker"  # noqa: E731
                       if d.memory_fraction is not None and d.memory_fraction < 1 else "")
    for shown in sorted({f"{d.gpu} ({d.capability}, {d.memory_gib} GiB{share(d)}), torch {d.torch}, "
                         f"CUDA {d.cuda}" for d in devices}):
        err.print(f"workers on: {shown}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def serve(db: DbOption = store.DEFAULT_DB, workers: WorkersOption = DRIVER.workers,
          address: AddressOption = DRIVER.address, gpus_per_trial: GpusOption = DRIVER.gpus_per_trial,
          lease_seconds: LeaseOption = DRIVER.lease_seconds, stall_seconds: StallOption = DRIVER.stall_seconds,
          db_retry_seconds: DbRetryOption = DRIVER.db_retry_seconds,
          population: PopulationOption = DRIVER.population) -> None:
    """Run every queued study with warm workers, and wait for more (Ctrl-C or SIGTERM stops it)."""
    from study.driver import service
    from study.driver.runner import new_owner
    from study.driver.runner import serve as serve_queue
    from workers.pool import ClusterLost

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

        plain(f"serving {store.describe_url(db)} with {pool.size} workers on Ray {address or '(local)'}; "
               "Ctrl-C or SIGTERM stops it (running cells are handed back)")
        code = 0
        try:
            with stop_on(signal.SIGINT, signal.SIGTERM) as stop:
                try:
                    serve_queue(engine, pool, options, wait=waker, tick=ticker, owner=owner, announce=stamped)
                except ClusterLost as exc:
                    print_error(f"{exc}; the running cells were handed back, restart `adamscape serve` once Ray "
                                 f"is back (Ray's messages: {ray_log})")
                    code = 1
                except BaseException:
                    if not stop.is_set():
                        raise
                    stamped("stopping: the running cells were handed back")
        finally:  # the handlers are back: a second SIGTERM during this clean-up ends the process
            waker.close()
            try:
                store.retrying(lambda: store.service_stopped(engine, owner), 5)
            except Exception:
                pass  # its heartbeat row ages out
        if not ticker.restart:
            pool.close()
            leave(code)
    stamped("restarting with the new code")
    pool.close()
    shutdown_ray()
    os.execv(sys.argv[0], sys.argv)  # the same command line (the console script), so the same process id
