"""Shared real services: one Ray head for the session, a fresh PostgreSQL database, SQLite files; every
registration and setting a test makes in this process undone after it. The helpers live in tests/support/
(re-exported here for the modules that import them from tests.conftest)."""

from __future__ import annotations

import shutil
import signal
import sys
import uuid
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

from tests.support.browser import chromium_or_skip, chromium_path  # noqa: F401
from tests.support.cli import adamscape, study_file  # noqa: F401
from tests.support.db import PG_SERVER, new_database, pg_admin, pg_database, read_only_role, unreachable  # noqa: F401
from tests.support.paths import BIN, IN_CI, ROOT  # noqa: F401
from tests.support.ray import NO_AUTH, RayNode, free_port

_free_port = free_port  # the name the other modules import


@pytest.fixture(scope="session", autouse=True)
def no_warm_workers_by_default():
    """Every command the suite runs ends its own workers, as before warm workers were the default (the
    tests of warm workers, tests/study/driver/test_warm.py, ask for them with a state folder of their own):
    ADAMSCAPE_KEEP_WARM=0 in this process's environment for the session, restored after it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADAMSCAPE_KEEP_WARM", "0")
        yield


# A suite started as a background job of a script inherits SIGINT ignored (and stop_on leaves an ignored signal
# ignored); the tests that press Ctrl-C in this process need Python's own handler. Their children restore theirs.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# the process-wide registries a test can add to: module → its dicts (optimizers.register, workers.tasks.register;
# study.plugins.install fills both)
REGISTRIES = {"optimizers.hparams": ("_PLUGINS",), "workers.tasks": ("_PLUGINS",)}
STAGED_PREFIX = "adamscape_plugin_"  # study.plugins.STAGED_PREFIX: a study file's own module, imported by its path


@pytest.fixture(autouse=True)
def registrations_undone():
    """Whatever a test registers in this process — an optimizer (``optimizers.register``), a task
    (``workers.tasks.register``), a study file's own code
    (``study.plugins.install``: both, and its module under ``sys.modules``, its folder on ``sys.path``) —
    is removed after it: the next test sees the registries as the suite found them. (A registry's module
    that the test itself imported first started empty; nothing is imported here, so a test that never
    touches torch does not pay for it.)"""
    saved = {(module, name): dict(getattr(sys.modules[module], name))
             for module, names in REGISTRIES.items() if module in sys.modules for name in names}
    path, modules = list(sys.path), set(sys.modules)
    yield
    for module, names in REGISTRIES.items():
        if module in sys.modules:
            for name in names:
                registry = getattr(sys.modules[module], name)
                registry.clear()
                registry.update(saved.get((module, name), {}))
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        if name.startswith(STAGED_PREFIX):
            del sys.modules[name]


@pytest.fixture(scope="session")
def ray_test_env():
    """The tests' drivers talk to loopback-only test clusters without a token: RAY_AUTH_MODE=disabled in
    this process's environment (and so in every command it starts) while any fixture's Ray runs, restored
    when the session ends. The one place that sets it (a module fixture restoring its own could unset it
    under the session's head)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in NO_AUTH.items():
            patch.setenv(name, value)
        yield


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
            if ("workers.pool.warm_server" in " ".join(proc.info["cmdline"] or [])
                    and proc.environ().get("ADAMSCAPE_STATE_DIR", "").startswith(base)):
                left.append(proc)
                proc.kill()
        except psutil.Error:
            pass
    assert not left, f"the suite left {len(left)} warm-worker processes running"


@pytest.fixture(scope="session")
def ray_address(ray_test_env):
    """A real Ray head (2 CPUs) shared by every test that runs cells; only it is stopped at the end."""
    head = RayNode(head_port=free_port(), num_cpus=2)
    yield head.address
    head.stop()


@pytest.fixture(scope="session")
def _tiny_study_run(ray_address, tmp_path_factory) -> Path:
    """The tiny study (``study_file``'s: adam × 3 lr, sgdm × 2 lr, 2 seeds) submitted and run to the end on
    the session's Ray head, once for the whole session, in a SQLite file."""
    tmp = tmp_path_factory.mktemp("finished-tiny")
    adamscape("submit", study_file(tmp), "--db", f"sqlite:///{tmp / 'results.db'}", "--run", "--address", ray_address)
    return tmp / "results.db"


@pytest.fixture(scope="module")
def finished_tiny(_tiny_study_run, tmp_path_factory) -> str:
    """A module's own copy of the finished tiny study (the URL of a SQLite file): what a test does to it
    stays in its module; the training ran once for the session."""
    copy = tmp_path_factory.mktemp("tiny-copy") / "results.db"
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{_tiny_study_run}{suffix}").exists():
            shutil.copy(f"{_tiny_study_run}{suffix}", f"{copy}{suffix}")
    return f"sqlite:///{copy}"


@pytest.fixture(scope="session")
def pg_url():
    """A fresh PostgreSQL database on the local server; fails (not skips) under CI=true if unreachable."""
    admin = pg_admin(pool_pre_ping=True)  # survives a restart
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
    """Each test using it runs once on SQLite and once on PostgreSQL (a fresh database per test, dropped
    after it with whatever still uses it)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'results.db'}"
        return
    url = new_database(request.getfixturevalue("pg_url"))
    yield url
    admin = pg_admin()
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE {sa.engine.make_url(url).database} WITH (FORCE)"))
    finally:
        admin.dispose()
