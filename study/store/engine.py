"""The results database's engine: URLs, connections (read-only ones too), transactions, migrations,
cross-process locks, the database's clock and bounded retries of a database that stopped answering.

Only the driver (CLI) and the dashboard open it; workers never do."""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import Connection, Engine, Float, cast, create_engine, event, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, InterfaceError, OperationalError
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from study.errors import UserError
from study.interrupts import protected
from study.store.schema import VERSION_TABLE

if TYPE_CHECKING:  # pandas, alembic and the study-file models are imported where used: `status` needs none
    from alembic.config import Config



DEFAULT_DB = "sqlite:///adamscape.db"


MIGRATIONS = Path(__file__).parent / "migrations"


# the newest migration: each file's name starts with its revision (a test checks this is alembic's head)
SCHEMA_HEAD = max(path.name[:4] for path in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


log = logging.getLogger("adamscape")


T = TypeVar("T")


def describe_url(url: str) -> str:
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
        raise UserError(f"cannot use database URL {describe_url(url)}: {exc}") from None
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
        raise UserError(f"cannot reach the results database {describe_url(url)} ({_reason(exc)}); start it or fix "
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
        raise UserError(f"the results database {describe_url(url)} is at schema {version}, newer than this adamscape "
                        f"knows (it needs {SCHEMA_HEAD}): upgrade adamscape to the version that wrote it")
    if read_only:
        engine.dispose()
        if version is None:
            raise UserError(f"no adamscape results in {describe_url(url)}; submit a study first (`adamscape submit "
                            "FILE`), or point --db / ADAMSCAPE_DB at the database that holds them")
        raise UserError(f"the results database {describe_url(url)} is at schema {version}, this adamscape needs "
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
