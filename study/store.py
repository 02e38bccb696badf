"""The results database: engine factory, migrations, locks, and every query adamscape makes.

Only the driver (CLI) and the dashboard open it; workers never do.

Exactly-once rules kept here: a cell is leased by a conditional UPDATE; leases
expire on the *database's* clock, never a client's; ``attempts`` only grows
(each lease is a new attempt, and curves are keyed by it); every write a driver
makes about a cell is conditional on still holding its lease, so a driver whose
lease was taken over, or whose study was replaced, changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (Connection, Engine, Float, and_, bindparam, case, cast, create_engine, delete, event, exists,
                        func, insert, inspect, or_, select, text, update)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, InterfaceError, OperationalError
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from optimizers import HPARAM_NAMES
from .errors import UserError
from .interrupts import protected
from .schema import FINISHED, RESULT_COLUMNS, VERSION_TABLE, cells, curves, services, studies

if TYPE_CHECKING:  # pandas, alembic and the study-file models are imported where used: `status` needs none
    import pandas as pd
    from alembic.config import Config

    from .spec import Cell, StudySpec

DEFAULT_DB = "sqlite:///adamscape.db"
SCHEMA_HEAD = "0008"  # the newest migration (a test checks it is alembic's head)
QUEUE_CHANNEL = "adamscape_queue"  # PostgreSQL NOTIFY channel: a study was submitted, paused, resumed or cancelled
SERVICE_ALIVE_SECONDS = 15.0  # a service whose heartbeat is older than this is gone
MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger("adamscape")
T = TypeVar("T")


def _describe(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return _masked(url)


def _masked(url: str) -> str:
    """``url`` as the user wrote it, but with any password replaced by ***."""
    return re.sub(r"^([^:/]+://[^:/@]*):[^@/]*@", r"\1:***@", url)


def _bad_url(url: str, exc: ValueError) -> UserError:
    """SQLAlchemy's ``make_url`` int()s the port: a non-numeric one is a ValueError, not an ArgumentError."""
    port = re.match(r"^[^:/]+://(?:[^@/]*@)?(?:\[[^\]/]*\]|[^:/?]*):([^/?]*)", url)
    if port:
        return UserError(f"database URL {_masked(url)} has a port that is not a number ({port.group(1) or 'empty'}); "
                         "write host:PORT with digits (e.g. postgresql+psycopg://user@localhost:5432/adamscape) or "
                         "leave :PORT out for the default, in --db or ADAMSCAPE_DB")
    return UserError(f"database URL {_masked(url)} is not a valid URL ({exc}); use e.g. sqlite:///adamscape.db or "
                     "postgresql+psycopg://user@host:5432/db (--db or ADAMSCAPE_DB)")


def connect(url: str, must_exist: bool = False, *, read_only: bool = False) -> Engine:
    """An engine for ``url`` that is known to answer, with its schema at :data:`SCHEMA_HEAD`.

    ``must_exist``: refuse to create a new SQLite file.

    ``read_only`` (the dashboard, ``status``, ``results``, ``watch``): never write. It implies
    ``must_exist``, and nothing is migrated: a database without adamscape's schema, or at another
    schema version, is a :class:`UserError` that names the fix (a writing command migrates). Every
    session of the engine is read-only (PostgreSQL: ``SET SESSION CHARACTERISTICS AS TRANSACTION
    READ ONLY``; SQLite: ``PRAGMA query_only``, and its journal mode is left as it is), and a write
    tried through it anyway is a :class:`UserError` too, with nothing changed. A role that may only
    SELECT is enough.

    Otherwise (writing commands) an older schema is migrated to :data:`SCHEMA_HEAD` under a lock,
    which the first writer's role must be allowed to do. Either way a schema newer than this
    adamscape knows, an unreachable server, a file that is not SQLite or a malformed URL is one
    :class:`UserError` line.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(f"database URL {_masked(url)} is not a URL; use e.g. sqlite:///adamscape.db or "
                        "postgresql+psycopg://user@host/db (--db or ADAMSCAPE_DB)") from None
    except ValueError as exc:
        raise _bad_url(url, exc) from None
    is_sqlite = parsed.get_backend_name() == "sqlite"
    must_exist = must_exist or read_only
    if is_sqlite and must_exist and parsed.database and not Path(parsed.database).exists():
        raise UserError(f"no results database at {parsed.database}; submit a study first, or point --db / "
                        "ADAMSCAPE_DB at an existing one")
    try:
        engine = create_engine(url, **({"connect_args": {"timeout": 60}} if is_sqlite else {"pool_pre_ping": True}))
    except Exception as exc:  # unknown driver, bad options
        raise UserError(f"cannot use database URL {_describe(url)}: {exc}") from None
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_read_only if read_only else _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    elif read_only and engine.dialect.name == "postgresql":
        event.listen(engine, "connect", _postgresql_read_only)
    event.listen(engine, "handle_error", _refuse_writes)
    try:
        version = _schema_version(engine)
    except OperationalError as exc:
        engine.dispose()
        raise UserError(f"cannot reach the results database {_describe(url)} ({_reason(exc)}); start it or fix "
                        "--db / ADAMSCAPE_DB") from None
    except DBAPIError as exc:
        engine.dispose()
        if is_sqlite and isinstance(exc.orig, sqlite3.DatabaseError):  # "file is not a database", malformed
            raise UserError(f"{parsed.database} is not an SQLite database ({_reason(exc)}); point --db / "
                            "ADAMSCAPE_DB at an adamscape results file or a new path") from None
        raise
    if version == SCHEMA_HEAD:
        return engine
    if version is not None and _newer(version):  # alembic cannot migrate from a revision it does not know
        engine.dispose()
        raise UserError(f"the results database {_describe(url)} is at schema {version}, newer than this adamscape "
                        f"knows (it needs {SCHEMA_HEAD}): upgrade adamscape to the version that wrote it")
    if read_only:
        engine.dispose()
        if version is None:
            raise UserError(f"no adamscape results in {_describe(url)}; submit a study first (`adamscape submit "
                            "FILE`), or point --db / ADAMSCAPE_DB at the database that holds them")
        raise UserError(f"the results database {_describe(url)} is at schema {version}, this adamscape needs "
                        f"{SCHEMA_HEAD}: run any writing command (e.g. `adamscape submit`) with a role that may "
                        "migrate")
    with exclusive(engine, "migrate"):  # two processes on one new database: one migrates, one waits
        migrate(engine)
    return engine


def _reason(exc: BaseException) -> str:
    """The first line of the driver's own message (of SQLAlchemy's wrapper where there is none)."""
    orig = getattr(exc, "orig", None) or exc
    message = str(orig).strip()
    return message.splitlines()[0] if message else type(orig).__name__


def _newer(version: str) -> bool:
    """Whether schema ``version`` is not one this adamscape's migrations reach (revisions are "0001" …)."""
    return not version.isdigit() or int(version) > int(SCHEMA_HEAD)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets the dashboard read while the driver writes; foreign keys make CASCADE work.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    # Python's sqlite3 begins a transaction only before its first INSERT/UPDATE/DELETE, so a read
    # and the write that depends on it would see two states of the file; _sqlite_begin begins instead.
    dbapi_connection.isolation_level = None


def _sqlite_read_only(dbapi_connection, _record) -> None:
    # the journal mode is the writers' to set (a file adamscape made is in WAL already, which persists)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()
    dbapi_connection.isolation_level = None


def _postgresql_read_only(dbapi_connection, _record) -> None:
    # every transaction of this session is READ ONLY: the server refuses any write (SQLSTATE 25006)
    cursor = dbapi_connection.cursor()
    cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    cursor.close()
    dbapi_connection.commit()


def _refuse_writes(context) -> None:
    """A read-only engine's refused write, and a role's missing privilege, are one UserError line (not a
    retried OperationalError, nor a traceback)."""
    orig = context.original_exception
    if getattr(orig, "sqlstate", None) == "42501":  # insufficient_privilege: e.g. the dashboard's role in `submit`
        url = context.engine.url.render_as_string(hide_password=True) if context.engine else "the results database"
        raise UserError(f"{url}: this database role may not do that ({_reason(orig)}); use the application role "
                        "(a read-only role serves status, results, watch and the dashboard)") from None
    refused = getattr(orig, "sqlstate", None) == "25006" or (
        isinstance(orig, sqlite3.OperationalError) and getattr(orig, "sqlite_errorname", "") == "SQLITE_READONLY")
    if refused:
        url = context.engine.url.render_as_string(hide_password=True) if context.engine else "the results database"
        raise UserError(f"{url} is open read-only here and refused a write ({_reason(orig)}); only a writing command "
                        "(e.g. `adamscape submit`) changes it") from context.sqlalchemy_exception


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('sqlite_begin', 'DEFERRED')}")


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """A write transaction: committed at the end, rolled back on an error.

    On SQLite it takes the writer lock at its start (BEGIN IMMEDIATE): what it reads cannot change
    before it writes (a deferred transaction would fail at its first write if another writer had
    committed since its first read).
    """
    with protected(), engine.connect() as conn:
        conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            yield conn


def _alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _schema_version(engine: Engine) -> str | None:
    """The schema's alembic revision, or None where adamscape has none here (one query; alembic is
    imported only to migrate)."""
    with protected(), engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (tests step through older ones)."""
    from alembic import command

    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


# --- cross-process locks and the database's clock -------------------------------------------------

@contextmanager
def exclusive(engine: Engine, name: str) -> Iterator[None]:
    """Hold the lock ``name`` on this database against every other process using it.

    PostgreSQL: a session advisory lock (released by the server if this process dies).
    SQLite: an flock on ``<database>.lock`` beside the file (the SQLite file itself must not
    be flocked: closing any descriptor of it drops SQLite's own locks).
    """
    if engine.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"adamscape:{name}".encode()).digest()[:8], "big", signed=True)
        with protected(), engine.connect() as conn:
            conn.execute(select(func.pg_advisory_lock(key)))
            conn.commit()
            try:
                yield
            finally:
                try:
                    conn.execute(select(func.pg_advisory_unlock(key)))
                    conn.commit()
                except DBAPIError:
                    conn.invalidate()  # the server is gone, and so is the lock
        return
    database = engine.url.database
    if not database or database == ":memory:":  # one process only: nothing to exclude
        yield
        return
    from filelock import FileLock

    with protected(), FileLock(f"{database}.lock"):
        yield


def db_now(conn: Connection):
    """Now, in unix seconds, on the database server's clock (leases never trust a client's clock)."""
    if conn.dialect.name == "postgresql":
        return cast(func.extract("epoch", func.clock_timestamp()), Float)
    return (func.julianday("now") - 2440587.5) * 86400.0  # SQLite runs on the one machine that uses it


# --- bounded retries of a database that stopped answering -----------------------------------------

def transient(exc: BaseException) -> bool:
    """A database error that a retry may cure: connection lost, server restarting, SQLite busy."""
    if isinstance(exc, IntegrityError):
        return False
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    try:
        from optuna.exceptions import StorageInternalError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, StorageInternalError)


def retrying(call: Callable[[], T], seconds: float, what: str = "the results database") -> T:
    """``call()``, retried with exponential backoff (0.5 s … 10 s) for up to ``seconds`` while the
    database is unreachable; each retry is logged. Other errors, and the last one, propagate."""

    def warn(state) -> None:
        exc = state.outcome.exception()
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:160]
        log.warning("%s is unavailable (%s); retry %d in %.1f s", what, reason, state.attempt_number,
                    state.next_action.sleep)

    for attempt in Retrying(retry=retry_if_exception(transient), wait=wait_exponential(multiplier=0.5, max=10),
                            stop=stop_after_delay(seconds), before_sleep=warn, reraise=True):
        with attempt:
            return call()
    raise AssertionError("unreachable")  # pragma: no cover


# --- Optuna's storage beside ours --------------------------------------------------------------------

def optuna_storage(engine: Engine):
    """Optuna's storage on our database (created under a lock: Optuna's first use creates its tables,
    which two processes must not do at once)."""
    import optuna

    with exclusive(engine, "optuna-schema"):
        return optuna.storages.RDBStorage(engine.url.render_as_string(hide_password=False),
                                          engine_kwargs={"connect_args": {"timeout": 60}}
                                          if engine.dialect.name == "sqlite" else {"pool_pre_ping": True})


def optuna_study_name(name: str, optimizer: str) -> str:
    """One Optuna study per (study, optimizer): its distributions are that optimizer's."""
    return f"adamscape/{name}/{optimizer}"


def legacy_optuna_study_name(name: str) -> str:
    """The single Optuna study of every optimizer that databases before migration 0004 hold."""
    return f"adamscape/{name}"


def delete_optuna_studies(engine: Engine, name: str) -> None:
    """Drop every Optuna study that belongs to study ``name`` (the per-optimizer ones and the legacy one)."""
    storage = optuna_storage(engine)
    prefix = f"adamscape/{name}/"
    for summary in storage.get_all_studies():
        if summary.study_name.startswith(prefix) or summary.study_name == legacy_optuna_study_name(name):
            try:
                storage.delete_study(summary._study_id)
            except KeyError:  # another process deleted it first
                pass
    storage.engine.dispose()


# --- studies -------------------------------------------------------------------------------------

def find_study(engine: Engine, name: str) -> dict[str, Any] | None:
    with protected(), engine.connect() as conn:
        row = conn.execute(select(studies).where(studies.c.name == name)).mappings().first()
    return dict(row) if row else None


def _is_current(study: dict[str, Any]):
    """The registered study is still this one (SQLite reuses the id of a replaced study; its fingerprint differs)."""
    return exists().where(studies.c.id == study["id"], studies.c.fingerprint == study["fingerprint"])


def study_is_current(engine: Engine, study: dict[str, Any]) -> bool:
    with protected(), engine.connect() as conn:
        return bool(conn.execute(select(_is_current(study))).scalar())


def get_study(engine: Engine, name: str) -> dict[str, Any]:
    study = find_study(engine, name)
    if study is None:
        known = list_studies(engine)
        hint = f"known: {', '.join(known)}" if known else "none are registered; run `adamscape submit FILE`"
        raise UserError(f"no study named {name!r} in this database ({hint})")
    return study


def list_studies(engine: Engine) -> list[str]:
    with protected(), engine.connect() as conn:
        return list(conn.execute(select(studies.c.name).order_by(studies.c.id)).scalars())


def register(engine: Engine, spec: StudySpec, replace: bool = False, priority: int | None = None) -> tuple[str, int]:
    """Create the study and its cells; returns ("created" | "unchanged" | "replaced", number of cells).

    Same file again: nothing happens. A changed file under an existing name is
    refused unless ``replace``, which discards the old study's results. Atomic: one
    transaction, under a lock so that concurrent submits of one file agree; Optuna's
    studies are created by the first run, so a failed submit leaves nothing behind.
    ``priority`` (default 0): higher runs first on a service; given for an unchanged study, it
    re-prioritises it.
    """
    from .spec import expand, run_order

    all_cells = expand(spec)
    positions = run_order(all_cells)
    with exclusive(engine, f"study:{spec.name}"):
        existing = find_study(engine, spec.name)
        if existing and existing["fingerprint"] == spec.fingerprint():
            if priority is not None and priority != existing["priority"]:
                with transaction(engine) as conn:
                    conn.execute(update(studies).where(studies.c.id == existing["id"]).values(priority=priority))
                    notify(conn)
            return "unchanged", existing["total_cells"]
        if existing and not replace:
            raise UserError(f"a different study named {spec.name!r} is already in this database; give the file a "
                            "new `name`, or resubmit with --replace to discard the old study and its results")
        with transaction(engine) as conn:
            if existing:
                conn.execute(delete(studies).where(studies.c.id == existing["id"]))
            study_id = conn.execute(insert(studies).values(
                name=spec.name, task=spec.task, metric=spec.metric, direction=spec.direction,
                fingerprint=spec.fingerprint(), spec=spec.model_dump(mode="json"), total_cells=len(all_cells),
                created_at=db_now(conn), priority=priority or 0, state="active")).inserted_primary_key[0]
            conn.execute(insert(cells), [_cell_row(study_id, cell, position)
                                         for cell, position in zip(all_cells, positions)])
            notify(conn)
    if existing:  # after the commit: a failure here leaves stale Optuna studies, which the next run discards
        delete_optuna_studies(engine, spec.name)
    return ("replaced" if existing else "created"), len(all_cells)


def cell_hparams(cell: dict[str, Any]) -> dict[str, float]:
    """A stored cell's hyperparameters: its ``hparams`` JSON, or (rows older than it) its columns."""
    return cell["hparams"] or {name: cell[name] for name in HPARAM_NAMES if cell[name] is not None}


def _cell_row(study_id: int, cell: Cell, position: int) -> dict[str, Any]:
    return {"study_id": study_id, "cell_index": cell.index, "run_order": position, "optimizer": cell.optimizer,
            "seed": cell.seed, "status": "pending", "attempts": 0, "losses": 0, "hparams": cell.hparams,
            **{name: cell.hparams.get(name) for name in HPARAM_NAMES}}


# --- the driver's cell lifecycle ------------------------------------------------------------------

def claim(engine: Engine, study: dict[str, Any], owner: str, limit: int, lease_seconds: float) -> list[dict[str, Any]]:
    """Lease up to ``limit`` cells (pending, or running under an expired lease) of ``study`` in its run
    order (``run_order``, :func:`study.spec.run_order`: every optimizer coarse to fine, in chunks of one
    optimizer and seed, so the cells of one claim form few populations); returned in that order.

    Each lease is a conditional UPDATE, so two drivers never get the same cell; each starts a
    new attempt. Nothing is leased once the study was replaced, paused or cancelled.
    """
    claimed = []
    with transaction(engine) as conn:
        now = db_now(conn)
        claimable = or_(cells.c.status == "pending", and_(cells.c.status == "running", cells.c.lease_expires < now))
        active = _is_current(study).where(studies.c.state == "active")
        candidates = conn.execute(select(cells.c.id).where(cells.c.study_id == study["id"], claimable, active)
                                  .order_by(cells.c.run_order, cells.c.cell_index).limit(limit)).scalars().all()
        for cell_id in candidates:
            row = conn.execute(update(cells).where(cells.c.id == cell_id, claimable).values(
                status="running", lease_owner=owner, lease_expires=now + lease_seconds, started_at=now,
                attempts=cells.c.attempts + 1).returning(*cells.c)).mappings().first()
            if row:
                claimed.append(dict(row))
    return claimed


def heartbeat(engine: Engine, owner: str, cell_ids: Iterable[int], lease_seconds: float) -> set[int]:
    """Extend this driver's leases; returns the ids it still holds (the others were taken over)."""
    ids = list(cell_ids)
    if not ids:
        return set()
    with transaction(engine) as conn:
        held = conn.execute(update(cells).where(cells.c.id.in_(ids), _held(owner))
                            .values(lease_expires=db_now(conn) + lease_seconds).returning(cells.c.id)).scalars()
        return set(held)


def _held(owner: str):
    return and_(cells.c.lease_owner == owner, cells.c.status == "running")


def _finite(value: Any) -> float | None:
    """Non-finite numbers become NULL: SQLite and PostgreSQL store NaN differently."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def held(conn: Connection, owner: str, cell_ids: Iterable[int]) -> set[int]:
    """Which of ``cell_ids`` ``owner`` still holds; on PostgreSQL their rows stay locked until the
    transaction ends, so no other driver can take them over in between (SQLite's writer lock does that)."""
    ids = list(cell_ids)
    if not ids:
        return set()
    query = select(cells.c.id).where(cells.c.id.in_(ids), _held(owner))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return set(conn.execute(query).scalars())


def record_epochs(conn: Connection, owner: str, epochs: list[tuple[dict[str, Any], int, dict[str, float]]]) -> None:
    """Store epochs ``(cell, epoch, metrics)`` of the cells' current attempts, for the cells ``owner``
    still holds (the others' are dropped). Written at most once: a transaction retried after a dropped
    connection cannot duplicate an epoch."""
    mine = held(conn, owner, {cell["id"] for cell, _, _ in epochs})
    rows = []
    for cell, epoch, metrics in epochs:
        if cell["id"] in mine:
            clean = {name: _finite(value) for name, value in metrics.items()}
            rows.append({"cell_id": cell["id"], "attempt": cell["attempts"], "epoch": epoch, "metrics": clean,
                         **{name: clean.get(name) for name in ("train_loss", "test_loss", "test_accuracy")}})
    if rows:
        from sqlalchemy.dialects import postgresql, sqlite  # each loaded only by its own engine otherwise

        dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        conn.execute(dialect_insert(curves).on_conflict_do_nothing(), rows)


def finish(conn: Connection, owner: str, results: list[dict[str, Any]], metric: str | None = None) -> set[int]:
    """Record finished cells; returns the ids recorded (those ``owner`` still held; the others' results
    are dropped). Each result: ``cell`` (its row), ``status`` and optionally ``final`` (metrics; the
    study's ``metric`` among them is the cell's ``score``), ``best_test_accuracy``, ``wall_seconds``,
    ``device``, ``peak_memory_mib``, ``error``."""
    mine = held(conn, owner, {result["cell"]["id"] for result in results})
    rows = []
    for result in results:
        if result["cell"]["id"] not in mine:
            continue
        assert result["status"] in FINISHED
        final = {name: _finite(value) for name, value in (result.get("final") or {}).items()}
        rows.append({"b_id": result["cell"]["id"], "b_status": result["status"], "b_final": final,
                     "b_train": final.get("train_loss"), "b_test": final.get("test_loss"),
                     "b_accuracy": final.get("test_accuracy"),
                     "b_best": _finite(result.get("best_test_accuracy")),
                     "b_score": final.get(metric) if metric else None, "b_diverged": result["status"] == "diverged",
                     "b_wall": result.get("wall_seconds"), "b_error": result.get("error"),
                     "b_device": result.get("device"), "b_memory": _finite(result.get("peak_memory_mib"))})
    if rows:
        conn.execute(update(cells).where(cells.c.id == bindparam("b_id")).values(
            status=bindparam("b_status"), lease_owner=None, lease_expires=None,
            final_metrics=bindparam("b_final", type_=cells.c.final_metrics.type),
            final_train_loss=bindparam("b_train"), final_test_loss=bindparam("b_test"),
            final_test_accuracy=bindparam("b_accuracy"), best_test_accuracy=bindparam("b_best"),
            score=bindparam("b_score"), diverged=bindparam("b_diverged"), wall_seconds=bindparam("b_wall"),
            device=bindparam("b_device"), peak_memory_mib=bindparam("b_memory"), error=bindparam("b_error"),
            finished_at=db_now(conn)), rows)
    return {row["b_id"] for row in rows}


def release(conn: Connection, cell: dict[str, Any], owner: str, *, lost: str | None = None,
            max_attempts: int = 3) -> str | None:
    """Give a leased cell back; returns its new status, or None if ``owner`` no longer held it.

    ``lost`` (the worker died, with this cause): counted; the cell fails once ``max_attempts``
    workers died on it. Otherwise (the driver stopped) the cell just becomes pending again.
    Either way ``attempts`` stays: the next lease is a new attempt with its own curve.
    """
    values: dict[str, Any] = {"lease_owner": None, "lease_expires": None}
    if lost is None:
        values["status"] = "pending"
    else:
        gives_up = cells.c.losses + 1 >= max_attempts
        values.update(losses=cells.c.losses + 1, error=lost,
                      status=case((gives_up, "failed"), else_="pending"),
                      diverged=case((gives_up, False), else_=None),
                      finished_at=case((gives_up, db_now(conn)), else_=None))
    return conn.execute(update(cells).where(cells.c.id == cell["id"], _held(owner)).values(**values)
                        .returning(cells.c.status)).scalar()


def release_held(conn: Connection, owner: str) -> int:
    """Give back every cell ``owner`` holds (a driver stopping): pending again, attempts kept. Also the
    cells of a lease whose answer a stop cut short, which the driver never saw."""
    return conn.execute(update(cells).where(_held(owner))
                        .values(status="pending", lease_owner=None, lease_expires=None)).rowcount


def get_cells(conn: Connection, cell_ids: list[int]) -> list[dict[str, Any]]:
    """The rows of the cells ``cell_ids`` that exist, in cell order."""
    rows = conn.execute(select(cells).where(cells.c.id.in_(cell_ids)).order_by(cells.c.cell_index)).mappings()
    return [dict(row) for row in rows]


def set_optuna_trials(conn: Connection, numbers: dict[int, int]) -> None:
    """Record each cell's Optuna trial number ({cell id: number})."""
    if numbers:
        conn.execute(update(cells).where(cells.c.id == bindparam("cell")).values(optuna_trial=bindparam("number")),
                     [{"cell": cell_id, "number": number} for cell_id, number in numbers.items()])


def forget_optuna_trials(engine: Engine, study_id: int, optimizer: str | None = None) -> None:
    """Mark the study's cells unreported (their Optuna study was rebuilt)."""
    condition = [cells.c.study_id == study_id] + ([cells.c.optimizer == optimizer] if optimizer else [])
    with transaction(engine) as conn:
        conn.execute(update(cells).where(*condition).values(optuna_trial=None))


def unreported_cells(engine: Engine, study_id: int) -> list[dict[str, Any]]:
    """Finished cells whose Optuna trial has not been recorded (e.g. the driver died in between;
    cancelled cells have no result and no trial)."""
    with protected(), engine.connect() as conn:
        rows = conn.execute(select(cells).where(cells.c.study_id == study_id, cells.c.status.in_(FINISHED),
                                                cells.c.optuna_trial.is_(None))
                            .order_by(cells.c.cell_index)).mappings().all()
    return [dict(r) for r in rows]


def unreported_studies(engine: Engine) -> list[str]:
    """Studies with finished cells whose Optuna trial is missing (a driver stopped between the two)."""
    with protected(), engine.connect() as conn:
        return list(conn.execute(select(studies.c.name).where(exists().where(
            cells.c.study_id == studies.c.id, cells.c.status.in_(FINISHED), cells.c.optuna_trial.is_(None))))
            .scalars())


def last_curves(conn: Connection, of: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Per cell id, the per-epoch metrics of the cell's last attempt (one query for all the cells)."""
    attempt = {cell["id"]: cell["attempts"] for cell in of}
    found: dict[int, list[dict[str, Any]]] = {}
    rows = conn.execute(select(curves.c.cell_id, curves.c.attempt, curves.c.epoch, curves.c.metrics)
                        .where(curves.c.cell_id.in_(list(attempt))).order_by(curves.c.cell_id, curves.c.epoch))
    for cell_id, attempt_of_row, epoch, metrics in rows:
        if attempt_of_row == attempt[cell_id]:
            found.setdefault(cell_id, []).append({"epoch": epoch, **metrics})
    return found


# --- queries -------------------------------------------------------------------------------------

def cell_curves(engine: Engine, name: str, cell_indexes: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
    """Per cell index of study ``name``, the per-epoch metrics of the cell's last attempt."""
    study = get_study(engine, name)
    with protected(), engine.connect() as conn:
        of = [dict(row) for row in conn.execute(
            select(cells.c.id, cells.c.cell_index, cells.c.attempts)
            .where(cells.c.study_id == study["id"], cells.c.cell_index.in_(list(cell_indexes)))).mappings()]
        found = last_curves(conn, of)
    return {cell["cell_index"]: found.get(cell["id"], []) for cell in of}


def status_counts(engine: Engine, study_id: int) -> dict[str, int]:
    with protected(), engine.connect() as conn:
        rows = conn.execute(select(cells.c.status, func.count()).where(cells.c.study_id == study_id)
                            .group_by(cells.c.status)).all()
    return {status: count for status, count in rows}


def result_rows(engine: Engine, name: str) -> tuple[list[str], list[tuple]]:
    """The ``sweep_results`` rows of study ``name`` as plain tuples (in cell order) and their column
    names: the view's columns, then a column for each hyperparameter of the study's own optimizers
    (the view keeps them in ``hparams``, as JSON) and ``final_<name>`` for each metric that only the
    ``final_metrics`` JSON holds (x, distance …). No pandas: `adamscape results` answers at once."""
    get_study(engine, name)
    with protected(), engine.connect() as conn:
        result = conn.execute(text("SELECT * FROM sweep_results WHERE study = :name ORDER BY cell"), {"name": name})
        columns, rows = list(result.keys()), [dict(row._mapping) for row in result]
    hparams = [_parsed_json(row.pop("hparams")) for row in rows]
    metrics = [_parsed_json(row.pop("final_metrics")) for row in rows]
    columns = [c for c in columns if c not in ("hparams", "final_metrics")]
    columns += sorted({n for values in hparams for n in values} - set(columns))
    metric_columns = sorted({f"final_{n}" for values in metrics for n in values} - set(columns))
    for row, own, final in zip(rows, hparams, metrics):
        row.update((n, v) for n, v in own.items() if n not in row)
        row.update((c, final.get(c.removeprefix("final_"))) for c in metric_columns)
    columns += metric_columns
    return columns, [tuple(row.get(c) for c in columns) for row in rows]


def _parsed_json(value: Any) -> dict:
    return json.loads(value) if isinstance(value, str) else value if isinstance(value, dict) else {}


def results(name: str, db: str | Engine = DEFAULT_DB) -> pd.DataFrame:
    """The ``sweep_results`` rows of study ``name`` as a DataFrame (one row per cell, in cell order;
    the columns of :func:`result_rows`)."""
    import pandas as pd

    engine = db if isinstance(db, Engine) else connect(db, read_only=True)
    columns, rows = result_rows(engine, name)
    frame = pd.DataFrame.from_records(rows, columns=columns, coerce_float=True)  # as pandas.read_sql builds it
    frame["diverged"] = frame["diverged"].astype("boolean")
    for column in columns:
        if column.startswith("final_") and frame[column].dtype == object:  # NULL for some cells: NaN
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


# --- the queue: what services run, in which order, and the users' controls ---------------------------

def notify(conn: Connection) -> None:
    """Wake every waiting service (PostgreSQL LISTEN/NOTIFY, sent when the transaction commits; services
    on SQLite poll)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"NOTIFY {QUEUE_CHANNEL}"))


def _left(*statuses: str):
    return exists().where(cells.c.study_id == studies.c.id, cells.c.status.in_(statuses))


def queue(engine: Engine, name: str | None = None) -> list[dict[str, Any]]:
    """The active studies with cells left, in the order a service serves them: higher ``priority`` first,
    then submission order. Each: id, name, fingerprint, priority, created_at, and ``claimable`` (a cell is
    pending, or running under an expired lease)."""
    with protected(), engine.connect() as conn:
        now = db_now(conn)
        claimable = exists().where(cells.c.study_id == studies.c.id, or_(
            cells.c.status == "pending", and_(cells.c.status == "running", cells.c.lease_expires < now)))
        query = (select(studies.c.id, studies.c.name, studies.c.fingerprint, studies.c.priority,
                        studies.c.created_at, claimable.label("claimable"))
                 .where(studies.c.state == "active", _left("pending", "running"))
                 .order_by(studies.c.priority.desc(), studies.c.created_at, studies.c.id))
        if name is not None:
            query = query.where(studies.c.name == name)
        return [dict(row) for row in conn.execute(query).mappings()]


def study_states(engine: Engine, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """{id: {fingerprint, state}} of those studies that still exist."""
    with protected(), engine.connect() as conn:
        rows = conn.execute(select(studies.c.id, studies.c.fingerprint, studies.c.state)
                            .where(studies.c.id.in_(list(ids)))).mappings()
        return {row["id"]: dict(row) for row in rows}


def set_state(engine: Engine, name: str, action: str) -> dict[str, int]:
    """``action`` on study ``name``: "cancel" (every pending and running cell becomes ``cancelled``; a
    driver's later writes about them are dropped, as for a lost lease), "pause" (running cells go back
    to pending, no attempt lost, and nothing is leased until "resume"). Returns how many cells it
    touched per former status; a study that cannot take ``action`` is one UserError line."""
    target = {"cancel": "cancelled", "pause": "paused", "resume": "active"}[action]
    with transaction(engine) as conn:
        study = conn.execute(select(studies).where(studies.c.name == name)).mappings().first()
        if study is None:
            raise UserError(f"no study named {name!r} in this database (`adamscape status` lists them)")
        left = conn.execute(select(func.count()).where(cells.c.study_id == study["id"],
                                                       cells.c.status.in_(("pending", "running")))).scalar()
        problem = _cannot(study, action, left)
        if problem:
            raise UserError(problem)
        touched: dict[str, int] = {}
        if action in ("cancel", "pause"):
            for status in ("pending", "running") if action == "cancel" else ("running",):
                values: dict[str, Any] = {"lease_owner": None, "lease_expires": None}
                values.update({"status": "cancelled", "finished_at": db_now(conn)} if action == "cancel"
                              else {"status": "pending"})
                touched[status] = conn.execute(update(cells).where(cells.c.study_id == study["id"],
                                                                   cells.c.status == status)
                                               .values(**values)).rowcount
        conn.execute(update(studies).where(studies.c.id == study["id"]).values(state=target))
        notify(conn)
    return touched


def retry_failed(engine: Engine, name: str) -> int:
    """Put study ``name``'s ``failed`` cells back to pending, to run again (`adamscape run NAME
    --retry-failed`); returns how many. A finished study becomes queued again (its state stays
    ``active``: "finished" only means nothing is left); a paused one stays paused until resumed; a
    cancelled one, or an unknown name, is a UserError.

    What a retried cell keeps: ``attempts`` (the next lease is a new attempt, with its own curve; the
    failed attempts' curves stay); ``error`` until its next attempt ends (a result clears it, a new
    failure replaces it). What it loses: its lease bookkeeping, ``losses`` (workers that died on it:
    a retry is a fresh budget of ``max_attempts`` deaths, in full-size populations again) and its
    failed result (device, memory, times).

    Optuna, the record of finished cells: the FAIL trial of a retried cell stays in its optimizer's
    study as history (state, error and intermediate values as they were), but its ``cell`` user
    attribute becomes ``retried_cell``: the cell's next result is reported as a new trial, and a
    driver reconciling an unreported result (it looks trials up by ``cell``) never mistakes the old
    FAIL for it. So each cell still has exactly one trial with ``cell`` = its index once it finishes.
    Done under the lock trials are reported under, in one transaction with the cells.
    """
    with exclusive(engine, f"optuna:{name}"), transaction(engine) as conn:
        study = conn.execute(select(studies).where(studies.c.name == name)).mappings().first()
        if study is None:
            raise UserError(f"no study named {name!r} in this database (`adamscape status` lists them)")
        if study["state"] == "cancelled":
            raise UserError(f"study {name!r} was cancelled; resubmit its file with --replace to run it again")
        failed = conn.execute(select(cells.c.id, cells.c.optimizer, cells.c.optuna_trial).where(
            cells.c.study_id == study["id"], cells.c.status == "failed")).all()
        if not failed:
            return 0
        _retire_trials(conn, name, {(optimizer, number) for _, optimizer, number in failed if number is not None})
        conn.execute(update(cells).where(cells.c.id.in_([cell_id for cell_id, _, _ in failed]),
                                         cells.c.status == "failed").values(
            status="pending", lease_owner=None, lease_expires=None, losses=0, diverged=None, finished_at=None,
            optuna_trial=None, wall_seconds=None, device=None, peak_memory_mib=None, final_metrics=None, score=None,
            **dict.fromkeys(RESULT_COLUMNS)))
        notify(conn)
    return len(failed)


def _retire_trials(conn: Connection, name: str, trials: set[tuple[str, int]]) -> None:
    """Rename the ``cell`` user attribute of these (optimizer, trial number) trials of study ``name`` to
    ``retried_cell`` (Optuna's own tables, in this transaction)."""
    if not trials:
        return
    from optuna.storages._rdb import models as rdb

    attrs, trial_rows, optuna_studies = (rdb.TrialUserAttributeModel.__table__, rdb.TrialModel.__table__,
                                         rdb.StudyModel.__table__)
    for optimizer in {optimizer for optimizer, _ in trials}:
        numbers = [number for o, number in trials if o == optimizer]
        ids = select(trial_rows.c.trial_id).join(optuna_studies, optuna_studies.c.study_id == trial_rows.c.study_id) \
            .where(optuna_studies.c.study_name == optuna_study_name(name, optimizer), trial_rows.c.number.in_(numbers))
        conn.execute(update(attrs).where(attrs.c.trial_id.in_(ids), attrs.c.key == "cell").values(key="retried_cell"))


def _cannot(study: dict[str, Any], action: str, left: int) -> str | None:
    name, state = study["name"], study["state"]
    if state == "cancelled":
        return f"study {name!r} was cancelled; resubmit its file with --replace to run it again"
    if action == "resume" and state != "paused":
        return f"study {name!r} is not paused"
    if action == "pause" and state == "paused":
        return f"study {name!r} is already paused (`adamscape resume {name}`)"
    if action != "resume" and not left:
        return f"study {name!r} has finished: nothing left to {action}"
    return None


def services_alive(engine: Engine) -> list[dict[str, Any]]:
    """The running ``adamscape serve`` processes (heartbeat within SERVICE_ALIVE_SECONDS), oldest first."""
    with protected(), engine.connect() as conn:
        rows = conn.execute(select(services, (db_now(conn) - services.c.heartbeat_at).label("age"))
                            .where(services.c.heartbeat_at > db_now(conn) - SERVICE_ALIVE_SECONDS)
                            .order_by(services.c.started_at)).mappings()
        return [dict(row) for row in rows]


def service_beat(engine: Engine, owner: str, **details: Any) -> None:
    """Create or refresh a service's heartbeat row (``details``: host, pid, workers, ray, code); rows of
    services dead for a minute are removed."""
    with transaction(engine) as conn:
        now = db_now(conn)
        if not conn.execute(update(services).where(services.c.owner == owner).values(heartbeat_at=now)).rowcount:
            conn.execute(delete(services).where(services.c.heartbeat_at < now - 60))
            conn.execute(insert(services).values(owner=owner, started_at=now, heartbeat_at=now, **details))


def service_stopped(engine: Engine, owner: str) -> None:
    with transaction(engine) as conn:
        conn.execute(delete(services).where(services.c.owner == owner))


def overview(engine: Engine) -> list[dict[str, Any]]:
    """Every study as ``status`` and the dashboard show it: counts per cell status, its state (queued,
    running, paused, cancelled, finished), priority, position in the queue (1 = served first) and the
    services running its cells."""
    with protected(), engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(
            studies.c.id, studies.c.name, studies.c.task, studies.c.metric, studies.c.total_cells,
            studies.c.priority, studies.c.state, studies.c.created_at).order_by(studies.c.id)).mappings()]
        counts: dict[int, dict[str, int]] = {}
        for study_id, status, count in conn.execute(select(cells.c.study_id, cells.c.status, func.count())
                                                    .group_by(cells.c.study_id, cells.c.status)):
            counts.setdefault(study_id, {})[status] = count
        owners: dict[int, set[str]] = {}
        for study_id, owner in conn.execute(select(cells.c.study_id, cells.c.lease_owner).distinct()
                                            .where(cells.c.status == "running")):
            owners.setdefault(study_id, set()).add(owner)
    waiting = [r for r in rows if r["state"] == "active" and any(counts.get(r["id"], {}).get(s) for s in
                                                                 ("pending", "running"))]
    order = {r["id"]: position for position, r in enumerate(
        sorted(waiting, key=lambda r: (-r["priority"], r["created_at"], r["id"])), start=1)}
    for row in rows:
        row["counts"] = counts.get(row["id"], {})
        row["position"] = order.get(row["id"])
        row["runners"] = sorted(owners.get(row["id"], ()))
        if row["state"] != "active":
            row["display"] = row["state"]
        elif row["position"] is None:
            row["display"] = "finished"
        else:
            started = sum(v for k, v in row["counts"].items() if k != "pending")
            row["display"] = "running" if started or row["runners"] else "queued"
    return rows
