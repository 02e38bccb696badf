"""Shared real services: one Ray head for the session, a fresh PostgreSQL database, SQLite files."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG_SERVER = os.environ.get("ADAMSCAPE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"
# every command the suite runs ends its own workers, as before warm workers were the default; the tests of
# warm workers (tests/study/test_warm.py) ask for them with a state folder of their own
os.environ["ADAMSCAPE_KEEP_WARM"] = "0"


@pytest.fixture(scope="session", autouse=True)
def no_warm_workers_left_behind(tmp_path_factory):
    """The suite leaves no background warm workers running: any that a test started (their state folder lies
    under this session's temporary folder) are an error, and are ended. Other users' and sessions' are not
    touched."""
    base = str(tmp_path_factory.getbasetemp())
    yield
    left = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if ("workers.warm_server" in " ".join(proc.info["cmdline"] or [])
                    and proc.environ().get("ADAMSCAPE_STATE_DIR", "").startswith(base)):
                left.append(proc)
                proc.kill()
        except psutil.Error:
            pass
    assert not left, f"the suite left {len(left)} warm-worker processes running"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayNode:
    """One Ray node started with ``ray start --block`` (head or worker) and stopped by the test alone:
    SIGTERM to its own ``ray start`` process, never ``ray stop``, which ends every Ray on the machine."""

    def __init__(self, head_port: int | None = None, address: str | None = None, num_cpus: int = 1,
                 cwd: Path | None = None, auth_home: Path | None = None, dashboard_port: int | None = None,
                 num_gpus: int = 0):
        """``auth_home``: a head with token authentication, started the ordinary way: ``ray start --head`` with
        RAY_AUTH_MODE unset and HOME=``auth_home``, whose ``.ray/auth_token`` (written here if missing) it finds.
        Without it, token authentication is off (RAY_AUTH_MODE=disabled). Each node runs in its own RAY_TMPDIR
        (a worker node keeps its files in its head's), removed when it stops: no test touches /tmp/ray, where
        a user's Ray keeps its sessions and the ray_current_cluster file. ``dashboard_port``: a head whose
        dashboard (and Jobs API) listens there, on loopback. ``num_gpus``: GPUs the node declares (Ray takes
        the number as given: on a machine without one, a GPU share no CUDA device backs)."""
        if auth_home is not None and not head_port:
            raise ValueError("auth_home: a head only")
        self.port = head_port
        self.temp_dir = tempfile.mkdtemp(prefix="rayt-")  # short: Ray's socket paths under it must stay < 108 bytes
        dashboard = ([f"--dashboard-port={dashboard_port}", "--dashboard-host=127.0.0.1"] if dashboard_port
                     else ["--include-dashboard=false"])  # the dashboard serves Ray's Jobs API
        # every node's agent binds a port (52365 by default): a free one, so that no two Rays on this
        # machine (another test's, a user's) collide; a head's Jobs API needs its agent's HTTP server
        agent = f"--dashboard-agent-listen-port={_free_port()}"
        role = ["--head", f"--port={head_port}", *dashboard, agent] if head_port else [f"--address={address}", agent]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": self.temp_dir, "RAY_AUTH_MODE": "disabled"}
        if auth_home is not None:
            for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
                env.pop(name, None)
            env["HOME"] = str(auth_home)
            token = Path(auth_home) / ".ray" / "auth_token"
            if not token.exists():
                token.parent.mkdir(parents=True, exist_ok=True)
                token.write_text(secrets.token_hex(32))
        self.process = subprocess.Popen(
            [BIN / "ray", "start", "--block", *role, f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}",
             "--node-ip-address=127.0.0.1", "--disable-usage-stats"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, cwd=cwd)
        seen = []
        for line in self.process.stdout:  # --block prints this once every process of the node is up
            seen.append(line)
            if "Ray runtime started" in line:
                break
        else:
            self.stop()
            raise RuntimeError("ray start failed:\n" + "".join(seen[-20:]))
        threading.Thread(target=self.process.stdout.read, daemon=True).start()  # keep its pipe drained
        if auth_home is not None and not any("Token authentication is enabled" in line for line in seen):
            self.stop()
            raise RuntimeError("ray start --head did not turn token authentication on:\n" + "".join(seen[-20:]))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def processes(self, name: str) -> list[psutil.Process]:
        """This node's processes whose command line mentions ``name`` (raylet, gcs_server, DashboardAgent …)."""
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        found = []
        for child in children:
            try:
                if name in " ".join(child.cmdline()):
                    found.append(child)
            except psutil.Error:
                pass
        return found

    def kill(self, name: str = "raylet") -> None:
        """SIGKILL one of this node's processes: the raylet takes the whole node with it."""
        targets = self.processes(name)
        assert targets, f"no {name} process under this node"
        for proc in targets:
            proc.kill()

    def stop(self, timeout: float = 20) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # whatever of the node outlived its ray start
        except ProcessLookupError:
            pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_address():
    """A real Ray head (2 CPUs) shared by every test that runs cells; only it is stopped at the end."""
    # a loopback-only test cluster: no token needed by the drivers the tests start
    os.environ["RAY_AUTH_MODE"] = "disabled"
    head = RayNode(head_port=_free_port(), num_cpus=2)
    yield head.address
    head.stop()


@pytest.fixture(scope="session")
def pg_url():
    """A fresh PostgreSQL database on the local server; fails (not skips) under CI=true if unreachable."""
    admin = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT", pool_pre_ping=True)  # survives a restart
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


def pg_admin() -> sa.Engine:
    """An AUTOCOMMIT engine on the local PostgreSQL server; the test fails (CI=true) or skips if it is unreachable."""
    admin = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError as exc:
        admin.dispose()
        if IN_CI:
            pytest.fail(f"PostgreSQL at {PG_SERVER} is unreachable under CI=true: {exc}")
        pytest.skip(f"PostgreSQL at {PG_SERVER} is unreachable")
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


def chromium_or_skip() -> str:
    """Debian's chromium for a real-browser test: skipped where it is missing, failed under CI=true."""
    chromium = chromium_path()
    if chromium is None:
        if IN_CI:
            pytest.fail("chromium is not installed (make test installs Debian's chromium)")
        pytest.skip("chromium is not installed")
    return chromium
