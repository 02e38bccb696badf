"""Shared real services: one Ray head for the session, a fresh PostgreSQL database, SQLite files."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG_SERVER = os.environ.get("ADAMSCAPE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory):
    """A real Ray head (2 CPUs) shared by every test that runs cells; torn down at the end."""
    port = _free_port()
    # a loopback-only test cluster: no token needed by the drivers the tests start
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([BIN / "ray", "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
                    "--node-ip-address=127.0.0.1",
                    "--include-dashboard=false", "--disable-usage-stats"], check=True, env=env,
                   capture_output=True)
    yield f"127.0.0.1:{port}"
    subprocess.run([BIN / "ray", "stop", "--force"], env=env, capture_output=True)


@pytest.fixture(scope="session")
def pg_url():
    """A fresh PostgreSQL database on the local server; fails (not skips) under CI=true if unreachable."""
    admin = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL at {PG_SERVER} is unreachable under CI=true: {exc}")
        pytest.skip(f"PostgreSQL at {PG_SERVER} is unreachable")
    name = f"adamscape_test_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    yield sa.engine.make_url(PG_SERVER).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'results.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """Each test using it runs once on SQLite and once on PostgreSQL (a fresh database per test)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    base = request.getfixturevalue("pg_url")
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    name = f"t_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)


def study_file(tmp_path: Path, name: str = "tiny", body: str | None = None, **top) -> Path:
    """Write a small study file: adam over 3 lr × 2 seeds, sgdm over 2 lr (one far too large) × 2 seeds."""
    header = {"name": name, "task": "digits-mlp", "epochs": 2, "batch_size": 128, "seeds": [0, 1],
              "metric": "test_accuracy", **top}
    lines = [f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"' for k, v in header.items()]
    body = body if body is not None else textwrap.dedent("""
        [optimizers.adam]
        lr = { log = [1e-3, 1e-1], num = 3 }

        [optimizers.sgdm]
        lr = [0.1, 1000.0]
        momentum = 0.9
        """)
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n" + body)
    return path


def adamscape(*args: str, check: bool = True, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run the installed ``adamscape`` console script for real."""
    result = subprocess.run([str(BIN / "adamscape"), *map(str, args)], capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, "COLUMNS": "200", **kwargs.pop("env", {})}, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"adamscape {' '.join(map(str, args))} exited {result.returncode}\n"
                             f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")
