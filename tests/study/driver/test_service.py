"""``adamscape serve`` for real: service processes on the shared Ray head, the real SQLite and
PostgreSQL, studies submitted, paused, cancelled and re-prioritised through the CLI; each test ends
with the exactly-once invariant."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest
import sqlalchemy as sa

from study import store
from study.driver import service
from tests.support.cli import adamscape, study_file
from tests.support.invariants import cells as _cells, each_cell_once as _each_cell_once
from tests.support.paths import BIN
from tests.support.wait import wait_for as _wait

SLOW = "[optimizers.adam]\nlr = [0.001, 0.002, 0.003, 0.004]\n"  # noop cells: `seconds` per epoch


class Service:
    """One ``adamscape serve`` process; its output is kept line by line."""

    def __init__(self, db: str, address: str, *args: str):
        self.process = subprocess.Popen(
            [str(BIN / "adamscape"), "serve", "--db", db, "--address", address, *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"},
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 120) -> None:
        _wait(lambda: any(text in line for line in self.lines), timeout, f"{text!r} in the service's output",
              lambda: "\n".join(self.lines))

    def stop(self, timeout: float = 15) -> float:
        """SIGTERM; returns how long it took to exit."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=timeout)
        return time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def services():
    started: list[Service] = []
    yield lambda *args: started.append(Service(*args)) or started[-1]
    for one in started:
        one.kill()


def _overview(engine, name: str) -> dict:
    return next(row for row in store.overview(engine) if row["name"] == name)


def test_an_idle_service_runs_studies_submitted_afterwards_each_cell_once(sqlite_url, ray_address, tmp_path, services):
    """On SQLite (polled); PostgreSQL's LISTEN/NOTIFY wakes the idle services of the next test."""
    db_url = sqlite_url
    engine = store.connect(db_url)
    serving = services(db_url, ray_address, "--workers", "2")
    serving.wait_for("2 workers ready")
    assert "service" in adamscape("status", "--db", db_url).stdout  # its heartbeat row
    submitted = adamscape("submit", study_file(tmp_path, name="first"), "--db", db_url).stdout
    assert "queued at position 1" in submitted and "adamscape watch first" in submitted
    adamscape("submit", study_file(tmp_path, name="second", seeds=[3]), "--db", db_url)
    watched = adamscape("watch", "first", "--db", db_url, timeout=120)
    assert "study first: finished" in watched.stdout
    _wait(lambda: _overview(engine, "second")["display"] == "finished", 120, "the second study")
    for name in ("first", "second"):
        assert all(r["attempts"] == 1 for r in _each_cell_once(engine, db_url, name))
    assert any("study second: finished" in line for line in serving.lines)
    assert serving.stop() < 10
    assert store.services_alive(engine) == []  # its heartbeat row went with it
    assert "none running" in adamscape("status", "--db", db_url).stdout
    late = adamscape("submit", study_file(tmp_path, name="third"), "--db", db_url).stdout
    assert "no service is running: `adamscape run third`" in late


def test_priority_and_round_robin_pause_and_cancel_through_the_cli(sqlite_url, ray_address, tmp_path, services):
    engine = store.connect(sqlite_url)
    for name, priority in (("big", 0), ("small", 0), ("urgent", 5)):
        path = study_file(tmp_path, name=name, body=SLOW + "\n[task_options]\nseconds = 0.3\n", epochs=1,
                          task="noop", metric="train_loss", seeds=[0, 1] if name == "big" else [0])
        adamscape("submit", path, "--db", sqlite_url, *(["--priority", str(priority)] if priority else []))
    serving = services(sqlite_url, ray_address, "--workers", "1", "--population", "1")
    _wait(lambda: _overview(engine, "big")["display"] == "finished", 180, "the queue", lambda: "\n".join(serving.lines))
    with engine.connect() as conn:
        order = [name for name, in conn.execute(sa.text(
            "SELECT s.name FROM sweep_cells c JOIN sweep_studies s ON s.id = c.study_id ORDER BY c.started_at"))]
    assert order == ["urgent"] * 4 + ["big", "small"] * 4 + ["big"] * 4  # priority, then one cell each in turn
    for name in ("big", "small", "urgent"):
        _each_cell_once(engine, sqlite_url, name)

    # pause and resume: the running cell is handed back and nothing of the study runs meanwhile
    path = study_file(tmp_path, name="paused", body="[optimizers.adam]\nlr = [0.001, 0.002]\n\n[task_options]\n"
                      "seconds = 0.4\n", epochs=10, task="noop", metric="train_loss", seeds=[0])  # 4 s cells
    adamscape("submit", path, "--db", sqlite_url)
    _wait(lambda: _overview(engine, "paused")["counts"].get("running", 0) == 1, 60, "a running cell")
    paused = adamscape("pause", "paused", "--db", sqlite_url).stdout
    assert "1 running cells handed back" in paused
    time.sleep(2.5)  # long enough for the service to have started the other cell, were it still leasing
    row = _overview(engine, "paused")
    assert row["display"] == "paused" and row["counts"] == {"pending": 2}
    assert "resumed: queued at position 1" in adamscape("resume", "paused", "--db", sqlite_url).stdout
    _wait(lambda: _overview(engine, "paused")["display"] == "finished", 60, "the resumed study")
    rows = _each_cell_once(engine, sqlite_url, "paused")
    assert [r["attempts"] for r in rows] == [2, 1]  # the handed-back cell ran again, whole

    # cancel: the running cell stops within seconds, the pending ones never start; the service goes on
    path = study_file(tmp_path, name="doomed", body=SLOW + "\n[task_options]\nseconds = 0.5\n", epochs=10,
                      task="noop", metric="train_loss", seeds=[0])
    adamscape("submit", path, "--db", sqlite_url)
    _wait(lambda: _overview(engine, "doomed")["counts"].get("running", 0) == 1, 60, "a running cell")
    cancelled = adamscape("cancel", "doomed", "--db", sqlite_url).stdout
    assert "1 running cells stopped, 3 pending cells will not run" in cancelled
    adamscape("submit", study_file(tmp_path, name="after"), "--db", sqlite_url)
    _wait(lambda: _overview(engine, "after")["display"] == "finished", 60, "the study after the cancelled one")
    rows = _each_cell_once(engine, sqlite_url, "doomed", allowed=("cancelled",))
    assert [r["attempts"] for r in rows] == [1, 0, 0, 0]
    with engine.connect() as conn:  # the stopped cell wrote at most the epoch it was in when cancelled
        assert conn.execute(sa.text("SELECT COUNT(*) FROM sweep_curves k JOIN sweep_cells c ON c.id = k.cell_id "
                                    "WHERE c.id = :id"), {"id": rows[0]["id"]}).scalar() <= 10
    _each_cell_once(engine, sqlite_url, "after")
    assert _overview(engine, "doomed")["display"] == "cancelled"
    assert "study 'doomed' was cancelled" in adamscape("resume", "doomed", "--db", sqlite_url, check=False).stderr


@pytest.mark.postgres
def test_two_services_on_one_postgres_database_and_a_sigterm_then_restart(pg_url, ray_address, tmp_path, services):
    url = pg_url
    engine = store.connect(url)
    body = "[optimizers.adam]\nlr = { log = [1e-4, 1e-1], num = 8 }\n\n[task_options]\nseconds = 0.3\n"
    one = services(url, ray_address, "--workers", "1", "--population", "1")
    two = services(url, ray_address, "--workers", "1", "--population", "1")
    one.wait_for("1 workers ready")
    two.wait_for("1 workers ready")
    assert len(store.services_alive(engine)) == 2
    adamscape("submit", study_file(tmp_path, name="shared", body=body, epochs=4, task="noop", metric="train_loss",
                                   seeds=[0, 1]), "--db", url)
    owners: set[str] = set()

    def both_running() -> bool:
        owners.update(r["lease_owner"] for r in _cells(engine, "shared") if r["status"] == "running")
        return len(owners) == 2

    _wait(both_running, 60, "both services running cells of the study")
    assert one.stop() < 10  # SIGTERM: its running cell is handed back at once
    assert len(store.services_alive(engine)) == 1
    restarted = services(url, ray_address, "--workers", "1", "--population", "1")
    _wait(lambda: _overview(engine, "shared")["display"] == "finished", 120, "the shared study",
          lambda: "\n".join(two.lines + restarted.lines))
    rows = _each_cell_once(engine, url, "shared")
    assert max(r["attempts"] for r in rows) <= 2
    assert any(r["attempts"] == 2 for r in rows)  # the cell handed back by the SIGTERM ran again
    _wait(lambda: len(store.services_alive(engine)) == 2, 30, "the restarted service's heartbeat")


def test_the_ticker_drains_the_service_when_the_code_on_disk_changes(sqlite_url, monkeypatch):
    """A changed file under study/, workers/, optimizers/ or the lock file: the service finishes what
    is in flight and restarts rather than running stale code on its warm workers."""

    class Pool:
        size = 1

        def started(self) -> int:
            return 1

    class Driver:
        pool, draining = Pool(), False
        announced: list[str] = []

        def announce(self, line: str) -> None:
            self.announced.append(line)

    engine = store.connect(sqlite_url)
    ticker = service.Ticker(engine, "host:1:abc", service.details(1, None), retry_seconds=5)
    driver = Driver()
    ticker(driver)
    assert not driver.draining and driver.announced == ["1 workers ready"]
    assert [s["owner"] for s in store.services_alive(engine)] == ["host:1:abc"]
    monkeypatch.setattr(service, "code_version", lambda root=service.ROOT: "changed")
    ticker.checked_at = -float("inf")
    ticker(driver)
    assert driver.draining and ticker.restart


def test_code_version_covers_the_packages_and_the_lock_file(tmp_path):
    for package in service.CODE_PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "a.py").write_text("x = 1\n")
    (tmp_path / "uv.lock").write_text("lock\n")
    before = service.code_version(tmp_path)
    (tmp_path / "workers" / "a.py").write_text("x = 2\n")
    after_code = service.code_version(tmp_path)
    (tmp_path / "uv.lock").write_text("lock 2\n")
    assert len({before, after_code, service.code_version(tmp_path)}) == 3
    (tmp_path / "notes.txt").write_text("not code\n")
    assert service.code_version(tmp_path) == service.code_version(tmp_path)


def test_submit_cluster_runs_the_study_as_a_ray_job(tmp_path, monkeypatch):
    """`submit --cluster` registers the study and hands `adamscape run` to the cluster through Ray's Jobs
    API: the job, not this process, runs every cell."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    from tests.conftest import RayNode, _free_port

    monkeypatch.setenv("PATH", f"{BIN}:{os.environ['PATH']}")  # a cluster's nodes have adamscape installed
    port = _free_port()
    head = RayNode(head_port=_free_port(), num_cpus=2, dashboard_port=port)
    try:
        url = f"sqlite:///{tmp_path / 'cluster.db'}"
        address = f"http://127.0.0.1:{port}"
        submitted = adamscape("submit", study_file(tmp_path, name="remote"), "--db", url, "--cluster", address,
                              "--workers", "1", "--population", "3")
        job = submitted.stdout.split("Ray job ")[1].split()[0]
        client = JobSubmissionClient(address)
        assert client.get_job_info(job).entrypoint.endswith("--workers 1 --population 3")  # run's options travel
        _wait(lambda: client.get_job_status(job) in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED),
              180, "the Ray job", lambda: client.get_job_logs(job))
        assert client.get_job_status(job) == JobStatus.SUCCEEDED, client.get_job_logs(job)
        assert "study remote: 8 complete, 2 diverged, 0 failed" in client.get_job_logs(job)
        engine = store.connect(url)
        _each_cell_once(engine, url, "remote")
        refused = adamscape("submit", study_file(tmp_path, name="local"), "--db", "sqlite:///relative.db",
                            "--cluster", address, check=False)
        assert refused.returncode == 2 and "a SQLite file on this machine" in refused.stderr
        unreachable = adamscape("submit", study_file(tmp_path, name="nowhere"), "--db", url, "--cluster",
                                f"http://127.0.0.1:{_free_port()}", check=False)
        assert unreachable.returncode == 2 and unreachable.stderr.count("\n") == 1, unreachable.stderr
        assert "cannot submit a Ray job" in unreachable.stderr and "Traceback" not in unreachable.stderr
    finally:
        head.stop()


def test_watch_follows_a_queued_study_and_ctrl_c_leaves_it_queued(sqlite_url, tmp_path):
    engine = store.connect(sqlite_url)
    adamscape("submit", study_file(tmp_path, name="waiting"), "--db", sqlite_url)
    watcher = subprocess.Popen([str(BIN / "adamscape"), "watch", "waiting", "--db", sqlite_url],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "COLUMNS": "200"},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(3)  # no service: the bar waits at 0/10
    assert watcher.poll() is None
    watcher.send_signal(signal.SIGINT)
    out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    assert "stopped watching; study waiting goes on" in out and "Traceback" not in err
    assert _overview(engine, "waiting")["display"] == "queued"
    missing = adamscape("watch", "nothing", "--db", sqlite_url, check=False)
    assert missing.returncode == 2 and "no study named 'nothing'" in missing.stderr
