"""Fault injection on a multi-node Ray cluster on this machine (a head with no CPUs, two 1-CPU
worker nodes) with the real PostgreSQL and SQLite; each test ends with the exactly-once invariant."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

from tests.conftest import BIN, RayNode, _free_port


class Cluster:
    def __init__(self):
        self.head = RayNode(head_port=_free_port(), num_cpus=0)  # drivers attach here; cells run on workers
        self.workers = [self.add_worker(), self.add_worker()]

    @property
    def address(self) -> str:
        return self.head.address

    def add_worker(self) -> RayNode:
        return RayNode(address=self.head.address, num_cpus=1)

    def stop(self) -> None:
        for node in [*self.workers, self.head]:
            node.stop(timeout=5)  # a node whose head is dead may not stop cleanly: it is killed


@pytest.fixture(scope="module")
def cluster():
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a loopback-only test cluster
    nodes = Cluster()
    yield nodes
    nodes.stop()


def driver(*args: str, **env: str) -> subprocess.Popen:
    """``adamscape ARGS`` in the background, with SIGINT at its default (a real Ctrl-C works)."""
    return subprocess.Popen([str(BIN / "adamscape"), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200", **env},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(condition: Callable[[], bool], timeout: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def query(url: str, sql: str, **params):
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).all()
    finally:
        engine.dispose()


OF_STUDY = "study_id = (SELECT id FROM sweep_studies WHERE name = :name)"


def finished(url: str, name: str) -> int:
    return query(url, f"SELECT COUNT(*) FROM sweep_cells WHERE {OF_STUDY} AND "
                      "status IN ('complete', 'diverged', 'failed')", name=name)[0][0]


def epochs_recorded(url: str, name: str) -> int:
    return query(url, f"SELECT COUNT(*) FROM sweep_curves WHERE cell_id IN (SELECT id FROM sweep_cells WHERE "
                      f"{OF_STUDY})", name=name)[0][0]


def cells_where(url: str, name: str, condition: str, what: str = "COUNT(*)"):
    """``SELECT what FROM sweep_cells`` of study ``name`` where ``condition``."""
    return query(url, f"SELECT {what} FROM sweep_cells WHERE {OF_STUDY} AND ({condition})", name=name)[0]


def snapshot(url: str, name: str) -> dict[int, tuple]:
    """Finished cells as they are now: they must never run again."""
    rows = query(url, "SELECT cell_index, wall_seconds, finished_at, attempts, score FROM sweep_cells "
                      f"WHERE {OF_STUDY} AND status IN ('complete', 'diverged', 'failed')", name=name)
    return {row[0]: tuple(row[1:]) for row in rows}


def assert_exactly_once(url: str, name: str, untouched: dict[int, tuple] | None = None) -> list:
    """Rows = grid, each cell finished once, one Optuna trial per finished cell in its optimizer's
    study, the final attempt's curve complete, finished cells never re-run."""
    (study_id, total, spec), = query(url, "SELECT id, total_cells, spec FROM sweep_studies WHERE name = :n", n=name)
    rows = query(url, "SELECT cell_index, optimizer, status, lease_owner, attempts, optuna_trial, id "
                      "FROM sweep_cells WHERE study_id = :s ORDER BY cell_index", s=study_id)
    assert [r.cell_index for r in rows] == list(range(total))
    assert {r.status for r in rows} <= {"complete", "diverged", "failed"}, [r.status for r in rows]
    assert all(r.lease_owner is None for r in rows)
    for key in {r.optimizer for r in rows}:
        trials = optuna.load_study(study_name=f"adamscape/{name}/{key}", storage=url).trials
        mine = {r.cell_index: r.optuna_trial for r in rows if r.optimizer == key}
        assert {t.user_attrs["cell"]: t.number for t in trials} == mine, key  # one trial each, none extra
    epochs = dict(query(url, "SELECT k.cell_id, COUNT(*) FROM sweep_curves k JOIN sweep_cells c "
                             "ON c.id = k.cell_id AND k.attempt = c.attempts WHERE c.study_id = :s "
                             "GROUP BY k.cell_id", s=study_id))
    total_epochs = (spec if isinstance(spec, dict) else json.loads(spec))["epochs"]
    for row in rows:
        if row.status == "complete":
            assert epochs.get(row.id) == total_epochs, row
        elif row.status == "diverged":
            assert epochs.get(row.id, 0) >= 1, row
    if untouched:
        now = snapshot(url, name)
        assert {k: now[k] for k in untouched} == untouched  # wall_seconds, finished_at, attempts, score
    return rows


def write_study(path: Path, name: str, body: str, epochs: int, seeds: str = "[0]", task: str = "rosenbrock",
                metric: str = "distance") -> Path:
    """Rosenbrock by default: a cell's length is set by its epochs (100 steps each), and its workers
    start in about a second (no scikit-learn or torchvision to import)."""
    path.write_text(f'name = "{name}"\ntask = "{task}"\nepochs = {epochs}\nseeds = {seeds}\n'
                    f'metric = "{metric}"\n\n{body}')
    return path


def pg_restart() -> None:
    """Restart the local PostgreSQL server (every connection to it drops)."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True,
                   capture_output=True, timeout=60)
