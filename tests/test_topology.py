"""docker-compose.yml's topology without Docker, on this machine: a Ray head and a second node that
joins it, a driver that submits through the head's address into PostgreSQL, and the dashboard
serving the finished study through a role that may only read.

Real processes throughout (``ray start``, the ``adamscape`` console script, the Streamlit server,
Chromium where installed); each is stopped by this module alone (no ``ray stop``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import psutil
import pytest
import sqlalchemy as sa

from study import spec, store
from study.errors import UserError
from tests.support.browser import chromium_path, headless_page
from tests.support.cli import adamscape, study_file
from tests.support.db import TABLES, pg_database, read_only_role, table_counts
from tests.support.invariants import assert_exactly_once
from tests.support.paths import BIN, ROOT
from tests.support.ray import RayNode, free_port as _free_port
from tests.support.wait import wait_healthy

NAME = "topology"
CELLS = 6  # adam: 3 learning rates × 2 seeds
RAY_ENV = {"RAY_AUTH_MODE": "disabled"}  # a loopback-only test cluster: no token


@pytest.fixture(scope="module")
def cluster():
    """A 1-CPU head and a 1-CPU node joined to it (`ray start --address HEAD`): two workers, one per node."""
    head = RayNode(head_port=_free_port(), num_cpus=1)
    try:
        joined = RayNode(address=head.address, num_cpus=1)
    except BaseException:
        head.stop()
        raise
    yield {"head": head, "joined": joined}
    joined.stop(timeout=10)
    head.stop(timeout=10)


class Trainers(threading.Thread):
    """Which nodes ran a CellWorker, and which of them trained cells (its process title while in ``train``)."""

    def __init__(self, nodes: dict[str, RayNode]):
        super().__init__(daemon=True)
        self.nodes, self.stopping = nodes, threading.Event()
        self.workers: set[str] = set()
        self.trained: set[str] = set()

    def run(self) -> None:
        while not self.stopping.is_set():
            for name, node in self.nodes.items():
                for proc in node.processes("ray::CellWorker"):
                    try:
                        title = " ".join(proc.cmdline())
                    except psutil.Error:
                        continue
                    self.workers.add(name)
                    if "CellWorker.train" in title:
                        self.trained.add(name)
            time.sleep(0.05)

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


@pytest.fixture(scope="module")
def finished(cluster, tmp_path_factory):
    """The study submitted and run by the real CLI, on the two-node cluster, into a new PostgreSQL database."""
    tmp = tmp_path_factory.mktemp("topology")
    # noop epochs of 0.1 s: a worker pass lasts 4 s however loaded the machine is, longer than the second
    # node's worker takes to come up after the first's, so each takes half the cells (digits-logreg's pass
    # of about a second was sometimes over before it did, and the head's worker ran every cell)
    path = study_file(tmp, name=NAME, task="noop", metric="train_loss", epochs=40,
                      body="[task_options]\nseconds = 0.1\n\n[optimizers.adam]\nlr = { log = [1e-3, 1e-1], num = 3 }\n")
    with pg_database() as url:
        adamscape("submit", path, "--db", url, env=RAY_ENV)
        trainers = Trainers(cluster)
        trainers.start()
        started = time.monotonic()
        try:
            ran = adamscape("run", NAME, "--db", url, "--address", cluster["head"].address, "--workers", "2",
                            env=RAY_ENV, timeout=120)
        finally:
            trainers.stop()
        yield {"url": url, "run": ran, "trainers": trainers, "seconds": time.monotonic() - started}


def test_a_driver_runs_every_cell_once_on_both_nodes_through_the_heads_address(finished):
    ran = finished["run"]
    assert f"study {NAME}: {CELLS} complete, 0 diverged, 0 failed" in ran.stdout, ran.stdout + ran.stderr
    assert "Traceback" not in ran.stderr
    rows = assert_exactly_once(finished["url"], NAME)  # each cell finished once, one Optuna trial each
    assert len(rows) == CELLS and {r.status for r in rows} == {"complete"}
    assert {r.attempts for r in rows} == {1}  # nothing was leased twice
    trainers = finished["trainers"]
    assert trainers.workers == {"head", "joined"}, trainers.workers  # one 1-CPU worker per node
    assert trainers.trained == {"head", "joined"}, trainers.trained  # and each node trained cells
    print(f"run: {finished['seconds']:.1f} s")


def _role_sessions(url: str, role: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE usename = :r"),
                                {"r": role}).scalar()
    finally:
        engine.dispose()


def _serve(ro_url: str, port: int) -> subprocess.Popen:
    """``adamscape dashboard`` (which runs the Streamlit server as its child) in a session of its own."""
    return subprocess.Popen([str(BIN / "adamscape"), "dashboard", "--db", ro_url, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _stop(server: subprocess.Popen) -> str:
    """SIGTERM to the dashboard and its Streamlit server, then wait for both; its stderr."""
    try:
        family = [server.pid, *(p.pid for p in psutil.Process(server.pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        family = [server.pid]
    for pid in reversed(family):  # the server first, then the CLI that waits for it
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    _, err = server.communicate(timeout=30)
    gone, alive = psutil.wait_procs([p for p in map(_process, family[1:]) if p], timeout=30)
    assert not alive, f"the dashboard's processes outlived SIGTERM: {alive}"
    return err


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _page_shows_the_study(port: int, ro_url: str, monkeypatch) -> None:
    """The served page in a real Chromium; where none is installed, the same app under AppTest."""
    chromium = chromium_path()
    if chromium is None:
        from streamlit.testing.v1 import AppTest

        monkeypatch.setenv("ADAMSCAPE_DB", ro_url)
        app = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60).run()
        assert not app.exception and not app.error
        assert app.sidebar.selectbox[0].value == NAME
        assert f"{CELLS} of {CELLS} cells finished" in app.get("progress")[0].proto.text
        return
    with headless_page(chromium, height=1000) as page:
        page.goto(f"http://127.0.0.1:{port}/")
        page.get_by_text(f"{CELLS} of {CELLS} cells finished").wait_for(timeout=60_000)
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
        assert page.locator(".js-plotly-plot").count() == 1  # adam's map
        assert page.get_by_text("task noop", exact=False).count() >= 1
        assert page.locator("[data-testid='stException']").count() == 0


def test_the_dashboard_serves_the_finished_study_through_a_read_only_role(finished, tmp_path, monkeypatch):
    url = finished["url"]
    with read_only_role(url) as ro_url:
        role = sa.engine.make_url(ro_url).username
        before = table_counts(url, (*TABLES, "trials"))
        port = _free_port()
        server = _serve(ro_url, port)
        try:
            wait_healthy(port, server)
            _page_shows_the_study(port, ro_url, monkeypatch)
            if chromium_path() is not None:
                assert _role_sessions(url, role) >= 1  # the served page read the study as the role
        finally:
            err = _stop(server)
        assert "Traceback" not in err, err

        # the engine the dashboard uses reads the study, and any write through it is refused cleanly
        engine = store.connect(ro_url, read_only=True)
        try:
            frame = store.results(NAME, engine)
            assert frame.shape[0] == CELLS and set(frame["status"]) == {"complete"}
            (row,) = store.overview(engine)
            assert row["display"] == "finished" and row["counts"] == {"complete": CELLS}
            with pytest.raises(UserError, match="is open read-only here and refused a write"):
                store.register(engine, spec.load(study_file(tmp_path, name="intruder", epochs=1)))
            with pytest.raises(UserError, match="refused a write"):
                store.service_beat(engine, "dashboard:1:x", host="dashboard", pid=1, workers=0, ray="none",
                                   code="0" * 16)
            with pytest.raises(UserError, match="refused a write"):
                with engine.begin() as conn:
                    conn.execute(sa.text("DELETE FROM sweep_cells"))
        finally:
            engine.dispose()
        assert table_counts(url, (*TABLES, "trials")) == before  # the dashboard's whole session and the refused writes changed nothing
