"""PostgreSQL databases and roles that live for one test, and one-off queries on any results database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from tests.support.paths import IN_CI

PG_SERVER = os.environ.get("ADAMSCAPE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TABLES = ("sweep_studies", "sweep_cells", "sweep_curves", "sweep_services")


def unreachable(exc: Exception) -> None:
    """A test that needs PostgreSQL fails under CI=true when the server cannot be reached, else skips."""
    if IN_CI:
        pytest.fail(f"PostgreSQL at {PG_SERVER} is unreachable under CI=true: {exc}")
    pytest.skip(f"PostgreSQL at {PG_SERVER} is unreachable")


def new_database(server: str = PG_SERVER) -> str:
    """The URL of a new, empty database on ``server``'s PostgreSQL (its caller drops it, or the session
    database it lives beside is dropped)."""
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"t_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    finally:
        admin.dispose()
    return sa.engine.make_url(server).set(database=name).render_as_string(hide_password=False)


def pg_admin(**engine_options) -> sa.Engine:
    """An AUTOCOMMIT engine on the local PostgreSQL server (``engine_options`` passed on to ``create_engine``);
    the test fails (CI=true) or skips if it is unreachable."""
    admin = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT", **engine_options)
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError as exc:
        admin.dispose()
        unreachable(exc)
    return admin


@contextmanager
def pg_database() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards (with whatever still uses it)."""
    admin = pg_admin()
    name = f"t_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield sa.engine.make_url(PG_SERVER).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()


@contextmanager
def read_only_role(url: str) -> Iterator[str]:
    """The URL of ``url``'s database as a new LOGIN role that may only read it (CONNECT, USAGE on schema
    public, SELECT on its tables and views, also those created later by ``url``'s role); the role, and
    every privilege it was given, is dropped afterwards."""
    role = f"adamscape_ro_{uuid.uuid4().hex[:8]}"
    owner = sa.engine.make_url(url)
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(sa.text(f"GRANT CONNECT ON DATABASE {owner.database} TO {role}"))
        conn.execute(sa.text(f"GRANT USAGE ON SCHEMA public TO {role}"))
        conn.execute(sa.text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
        conn.execute(sa.text(f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner.username} IN SCHEMA public "
                             f"GRANT SELECT ON TABLES TO {role}"))
    try:
        yield owner.set(username=role, password=None).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"),
                         {"r": role})
            conn.execute(sa.text(f"DROP OWNED BY {role}"))  # its privileges here, and CONNECT on the database
            conn.execute(sa.text(f"DROP ROLE {role}"))
        admin.dispose()


def query(url: str, sql: str, **params) -> list:
    """The rows of one SQL query on ``url`` (an engine of its own, disposed after)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).all()
    finally:
        engine.dispose()


def table_counts(url: str, tables: tuple[str, ...] = TABLES) -> dict[str, int]:
    """How many rows each of ``tables`` holds."""
    return {table: query(url, f"SELECT count(*) FROM {table}")[0][0] for table in tables}
