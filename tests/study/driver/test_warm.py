"""Warm workers by default, for real: ``adamscape run`` / ``submit --run`` without ``--address`` start this
user's background workers (a real local Ray), later commands reuse them, on SQLite and PostgreSQL; killed,
idle, shut down, Ctrl-C, two users. Each test ends with the exactly-once invariant and, where the workers
should be gone, with no process of that user's left (found by the state folder in their environment)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from study import spec, store
from study.driver.service import code_version
from tests.support.cli import adamscape, study_file
from tests.support.db import pg_database
from tests.support.invariants import cells as _cells, each_cell_once as _each_cell_once
from tests.support.paths import BIN
from tests.support.wait import wait_for as _wait


class User:
    """One user of this machine: a HOME and an adamscape state folder of their own."""

    def __init__(self, root: Path, keep_warm: str = "10m"):
        self.home = root / "home"
        self.state = root / "state"
        self.home.mkdir(parents=True, exist_ok=True)
        self.env = {"HOME": str(self.home), "ADAMSCAPE_STATE_DIR": str(self.state), "ADAMSCAPE_KEEP_WARM": keep_warm,
                    "ADAMSCAPE_LOG_DIR": str(root / "logs")}
        self.status_db = f"sqlite:///{self.home / 'status.db'}"  # a database for `status` to read
        engine = store.connect(self.status_db)  # registered from this process (no console script needed)
        store.register(engine, spec.load(_study(self.home, "status")))
        engine.dispose()

    def run(self, *args, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        done = adamscape(*args, check=check, timeout=timeout, env=self.env)
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def start(self, *args) -> subprocess.Popen:
        """``adamscape ARGS`` in the background, SIGINT at its default (a real Ctrl-C works)."""
        return subprocess.Popen([str(BIN / "adamscape"), *map(str, args)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200", **self.env},
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def warm_pid(self) -> int | None:
        status = self.run("status", "--db", self.status_db, check=False).stdout
        found = re.search(r"warm workers: pid (\d+)", status)
        return int(found.group(1)) if found else None

    def processes(self) -> list[psutil.Process]:
        """Every live process running with this user's state folder: warm workers, their Ray, a driver."""
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get("ADAMSCAPE_STATE_DIR") == str(self.state):
                    found.append(proc)
            except psutil.Error:
                pass
        return found

    def assert_nothing_left(self, timeout: float = 30) -> None:
        _wait(lambda: not self.processes(), timeout, "no process of this user's left",
              lambda: "\n".join(" ".join(p.cmdline())[:160] for p in self.processes()))

    def end(self) -> None:
        adamscape("shutdown", env=self.env, check=False)
        for proc in self.processes():
            proc.kill()


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    one = User(tmp_path_factory.mktemp("user-a"))
    yield one
    one.end()


# what runs on the warm workers is not under test here, only where it runs: 2 lr × 2 seeds of one Rosenbrock
# epoch (100 steps) train in a blink, where the tiny study's digits MLP pays scikit-learn's data and training
QUICK = {"task": "rosenbrock", "metric": "distance", "epochs": 1, "body": "[optimizers.adam]\nlr = [1e-3, 1e-2]\n"}


def _study(folder: Path, name: str, **top) -> Path:
    return study_file(folder, name=name, **{**QUICK, **top})


def test_two_studies_on_two_databases_share_the_warm_workers_each_cell_once(user, tmp_path):
    sqlite = f"sqlite:///{tmp_path / 'first.db'}"
    first = user.run("submit", _study(tmp_path, "first"), "--db", sqlite, "--run")
    assert "starting 2 warm workers in the background" in first.stderr, first.stderr
    assert "study first: " in first.stdout and "0 failed" in first.stdout
    pid = user.warm_pid()
    assert pid is not None and psutil.pid_exists(pid)
    with pg_database() as postgres:
        second = user.run("submit", _study(tmp_path, "second", seeds=[2, 3]), "--db", postgres, "--run")
        assert f"warm workers: 2 (pid {pid}" in second.stderr, second.stderr
        trained = 0
        for url, name in ((sqlite, "first"), (postgres, "second")):
            engine = store.connect(url)
            rows = _each_cell_once(engine, url, name)
            assert all(r["attempts"] == 1 for r in rows)
            trained += len(rows)
            engine.dispose()
    assert user.warm_pid() == pid
    assert "Ray's messages" not in second.stderr  # the driver never started a Ray of its own
    listed = user.run("status", "--db", sqlite).stdout  # what `status` says of them: every field, as measured
    line = next(line for line in listed.splitlines() if line.startswith("warm workers:"))
    found = re.fullmatch(r"warm workers: pid (\d+), 2 workers, started (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d), "
                         r"idle for (\d+) s \(they end after 600 s idle\), (\d+) cells trained, code ([0-9a-f]{16})", line)
    assert found, line
    assert int(found[1]) == pid and int(found[4]) == trained  # both studies' cells, on these workers
    started = time.mktime(time.strptime(found[2], "%Y-%m-%d %H:%M:%S"))
    assert started <= time.time() and time.time() - started < 600 and int(found[3]) < 120
    assert found[5] == code_version()  # the code they run is this checkout's


def test_ctrl_c_in_the_foreground_hands_the_cells_back_and_the_warm_workers_serve_on(user, tmp_path):
    db = f"sqlite:///{tmp_path / 'slow.db'}"
    body = "[optimizers.adam]\nlr = [0.001, 0.002, 0.003, 0.004, 0.005, 0.006]\n[task_options]\nseconds = 0.5\n"
    adamscape("submit", study_file(tmp_path, name="slow", body=body, epochs=4, task="noop", metric="train_loss",
                                   seeds=[0]), "--db", db)
    pid = user.warm_pid()
    driver = user.start("run", "slow", "--db", db, "--population", "1")
    engine = store.connect(db)
    _wait(lambda: any(r["status"] == "complete" for r in _cells(engine, "slow")), 120, "a finished cell")
    driver.send_signal(signal.SIGINT)
    out, err = driver.communicate(timeout=60)
    assert driver.returncode == 130, err
    assert "interrupted: the running cells were handed back" in err and "Traceback" not in err
    rows = _cells(engine, "slow")
    assert not any(r["status"] == "running" for r in rows), rows  # handed back, not left to expire
    finished = {r["cell_index"]: r["finished_at"] for r in rows if r["status"] == "complete"}
    serving = user.warm_pid()
    assert serving is not None and (pid is None or serving == pid)
    again = user.run("run", "slow", "--db", db, "--population", "1")
    assert f"pid {serving}" in again.stderr, again.stderr
    rows = _each_cell_once(engine, db, "slow")
    assert {r["cell_index"]: r["finished_at"] for r in rows if r["cell_index"] in finished} == finished
    engine.dispose()


def test_other_workers_or_gpu_share_restart_an_idle_set_in_one_line(user, tmp_path):
    db = f"sqlite:///{tmp_path / 'one.db'}"
    before = user.warm_pid()
    ran = user.run("submit", _study(tmp_path, "one"), "--db", db, "--run", "--workers", "1")
    assert "they are 2 workers and this run asks for 1 (--workers); restarting them" in ran.stderr or before is None
    assert "starting 1 warm workers" in ran.stderr, ran.stderr
    after = user.warm_pid()
    assert after not in (None, before) and (before is None or not psutil.pid_exists(before))
    engine = store.connect(db)
    _each_cell_once(engine, db, "one")
    engine.dispose()


def test_a_killed_set_is_replaced_by_the_next_command_without_a_hang(user, tmp_path):
    db = f"sqlite:///{tmp_path / 'after.db'}"
    adamscape("submit", _study(tmp_path, "after"), "--db", db)
    pid = user.warm_pid()
    if pid is None:
        user.run("run", "after", "--db", db)
        pid = user.warm_pid()
        adamscape("submit", _study(tmp_path, "later"), "--db", db)
        name = "later"
    else:
        name = "after"
    os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    ran = user.run("run", name, "--db", db, timeout=120)
    assert "starting" in ran.stderr and f"pid {pid}" not in ran.stderr, ran.stderr
    assert time.monotonic() - started < 90
    new = user.warm_pid()
    assert new is not None and new != pid
    engine = store.connect(db)
    _each_cell_once(engine, db, name)
    engine.dispose()


def test_two_users_never_share_warm_workers(user, tmp_path):
    """Before the shutdown test (tests run in file order): this user's set is still up, none to restart."""
    other = User(tmp_path / "other")
    db = f"sqlite:///{tmp_path / 'theirs.db'}"
    try:
        if user.warm_pid() is None:
            user.run("run", "status", "--db", user.status_db)
        mine = user.warm_pid()
        ran = other.run("submit", _study(tmp_path, "theirs"), "--db", db, "--run")
        assert "starting" in ran.stderr and f"pid {mine}" not in ran.stderr, ran.stderr
        theirs = other.warm_pid()
        assert theirs not in (None, mine) and user.warm_pid() == mine
        # the other user's runtime file names a port: without this user's secret nothing is shared
        assert (other.state / "warm" / "workers.json").stat().st_mode & 0o077 == 0
    finally:
        other.end()
    other.assert_nothing_left()


def test_shutdown_leaves_no_process_and_says_so_when_there_is_none(user):
    if user.warm_pid() is None:
        user.run("run", "status", "--db", user.status_db)
    stopped = user.run("shutdown")
    assert re.match(r"warm workers \(pid \d+\) stopped", stopped.stdout), stopped.stdout
    user.assert_nothing_left()
    assert user.run("shutdown").stdout.strip() == "no warm workers were running"
    assert user.warm_pid() is None


def test_idle_warm_workers_end_by_themselves(tmp_path):
    brief = User(tmp_path / "brief", keep_warm="3s")
    db = f"sqlite:///{tmp_path / 'idle.db'}"
    try:
        ran = brief.run("submit", _study(tmp_path, "idle"), "--db", db, "--run")
        assert "kept 3 s after the last study" in ran.stderr, ran.stderr
        brief.assert_nothing_left(timeout=60)
        assert not (brief.state / "warm" / "workers.json").exists()
    finally:
        brief.end()


def test_keep_warm_0_runs_on_workers_that_end_with_the_command(tmp_path):
    cold = User(tmp_path / "cold", keep_warm="0")
    db = f"sqlite:///{tmp_path / 'cold.db'}"
    try:
        ran = cold.run("submit", _study(tmp_path, "cold"), "--db", db, "--run")
        assert "warm workers" not in ran.stderr and "Ray's messages" in ran.stderr, ran.stderr
        cold.assert_nothing_left()
    finally:
        cold.end()
