"""Kill things mid-study on a three-node Ray cluster, then check the invariant (not just the exit code).

The tests share one cluster and run in file order; the last one kills the cluster's head.
"""

from __future__ import annotations

import signal
import time

import psutil

import optimizers
from study import spec, store
from tests.faults.conftest import pg_restart
from tests.support.cli import driver, write_study
from tests.support.db import query
from tests.support.invariants import assert_exactly_once, cells_where, epochs_recorded, finished, snapshot
from tests.support.wait import wait_for

# every registered optimizer in one file: different ranges per optimizer, scalars, default-only ones
EVERY_OPTIMIZER = """
[optimizers.adam]
lr = [1e-3, 1e-2]
beta1 = [0.5, 0.9]

[optimizers.sgdm]
lr = [0.01, 0.1]
momentum = 0.5

[optimizers.adabound]
final_lr = [0.01, 0.1]
""" + "".join(f"\n[optimizers.{name}]\n" for name in optimizers.names() if name not in ("adam", "sgdm", "adabound"))

SMALL = """
[optimizers.adam]
lr = { log = [1e-3, 1e-1], num = 4 }

[optimizers.sgdm]
lr = [0.05, 1000.0]
"""


def submit(path, db: str, replace: bool = False) -> str:
    """What `adamscape submit` does (in this process: the console script's start-up is not under test here)."""
    return store.register(store.connect(db), spec.load(path), replace=replace)[0]


def _exit(process, timeout: float = 300) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def _kill_a_training_process(cluster, db: str, name: str, then_finished: int):
    """Once two cells of study ``name`` have finished: SIGKILL a training process on a worker node, then wait
    until ``then_finished`` more cells than before the kill have finished. The snapshot taken before the kill."""
    wait_for(lambda: finished(db, name) >= 2, what="two finished cells")
    before = snapshot(db, name)
    trainers = [p for node in cluster.workers for p in node.processes("CellWorker.train")]
    assert trainers, "no training process found"
    trainers[0].kill()
    wait_for(lambda: finished(db, name) >= len(before) + then_finished, what="progress after the worker kill")
    return before


def test_killed_training_process_and_killed_worker_node(cluster, pg_url, tmp_path):
    """A training process SIGKILLed mid-cell, then a whole worker node (its raylet): the driver
    respawns on the surviving node and every cell of all 13 optimizers finishes once."""
    db = pg_url
    submit(write_study(tmp_path / "every.toml", "every", EVERY_OPTIMIZER, epochs=30), db)
    run = driver("run", "every", "--db", db, "--address", cluster.address)
    before = _kill_a_training_process(cluster, db, "every", then_finished=3)
    victim = cluster.workers.pop()
    victim.kill("raylet")
    killed_at = time.monotonic()
    code, out, err = _exit(run)
    assert code == 0, err
    assert "Traceback" not in err
    rows = assert_exactly_once(db, "every", untouched=before)
    assert len(rows) == 4 + 2 + 2 + len(optimizers.names()) - 3
    lost = cells_where(db, "every", "losses > 0")[0]
    assert lost >= 1  # the killed process's cell (and the dead node's) ran again
    assert "failed" not in {r.status for r in rows}  # each lost cell ran again and ended with a result
    print(f"study finished {time.monotonic() - killed_at:.1f} s after the node kill")
    victim.stop()
    cluster.workers.append(cluster.add_worker())  # the next tests have two worker nodes again


def test_a_worker_killed_mid_population_returns_all_its_cells_and_each_finishes_once(cluster, sqlite_url, tmp_path):
    """Two workers, two populations of three (one optimizer, two seeds): SIGKILL one training process mid-way;
    its three cells come back as one worker death each and run again, the other population is untouched."""
    db = sqlite_url
        # two seeds of three lr: in the run order each seed's grid is one batch (the first seed's is its scout)
    body = "[task_options]\nseconds = 0.05\n\n[optimizers.adam]\nlr = { log = [1e-3, 1e-1], num = 3 }\n"
    submit(write_study(tmp_path / "p.toml", "population", body, epochs=600, task="noop", metric="train_loss",
                       seeds="[0, 1]"), db)  # 30 s populations: both overlap on a loaded machine too
    # populations of three asked for: auto would time noop's sleeping epochs as free and train one at a time;
    # two workers named: Ray may still count the node the test before killed (3 CPUs: batches of two)
    run = driver("run", "population", "--db", db, "--address", cluster.address, "--population", "3",
                 "--workers", "2", ADAMSCAPE_LOG_DIR=str(tmp_path))
    training = "SELECT COUNT(DISTINCT cell_id) FROM sweep_curves"
    wait_for(lambda: query(db, training)[0][0] == 6, what="both populations training")
    assert finished(db, "population") == 0
    trainers = [p for node in cluster.workers for p in node.processes("CellWorker.train")]
    assert len(trainers) == 2, trainers
    trainers[0].kill()
    code, out, err = _exit(run)
    assert code == 0 and "Traceback" not in err, err
    rows = assert_exactly_once(db, "population")
    assert {r.status for r in rows} == {"complete"}
    losses = query(db, "SELECT cell_index, losses, attempts FROM sweep_cells ORDER BY cell_index")
    killed = sorted(r.cell_index for r in losses if r.losses == 1)
    in_run_order = [r.cell_index for r in query(db, "SELECT cell_index FROM sweep_cells ORDER BY run_order")]
    batches = sorted(in_run_order[:3]), sorted(in_run_order[3:])  # the driver's two batches of three
    assert killed in batches, losses  # the whole population, and only it
    assert all(r.attempts == (2 if r.cell_index in killed else 1) for r in losses)
    # Ray's note on the dead worker went to the log the driver named, not among its progress bar
    assert "(raylet)" not in out + err and "worker died" not in (out + err).lower()
    [log] = tmp_path.glob("ray-*.log")
    assert err.count(str(log)) == 1 and "A worker died" in log.read_text()


def test_killed_driver_then_ctrl_c_then_resume(cluster, sqlite_url, tmp_path):
    db = sqlite_url
    submit(write_study(tmp_path / "s.toml", "resume", SMALL, epochs=40, seeds="[0, 1]"), db)
    common = ["--db", db, "--address", cluster.address, "--lease-seconds", "3"]
    first = driver("run", "resume", *common)
    wait_for(lambda: finished(db, "resume") >= 3, what="three finished cells")
    first.send_signal(signal.SIGKILL)  # no clean-up: its leases must expire
    first.wait()
    done = snapshot(db, "resume")
    assert 3 <= len(done) < 12

    recorded = epochs_recorded(db, "resume")
    second = driver("run", "resume", *common)
    wait_for(lambda: epochs_recorded(db, "resume") >= recorded + 3, what="epochs from the second driver")
    second.send_signal(signal.SIGINT)  # a real Ctrl-C
    code, out, err = _exit(second, timeout=60)
    assert code == 130 and "interrupted" in err and "Traceback" not in err, err
    assert cells_where(db, "resume", "status = 'running' AND lease_expires > "
                                     "(julianday('now') - 2440587.5) * 86400.0")[0] == 0  # handed back, not leased
    done = snapshot(db, "resume")

    code, out, err = _exit(driver("run", "resume", *common))
    assert code == 0, err
    rows = assert_exactly_once(db, "resume", untouched=done)
    assert cells_where(db, "resume", "TRUE", "MAX(attempts)")[0] >= 2  # the killed driver's cells ran again
    assert {r.status for r in rows} == {"complete", "diverged"}


def test_two_drivers_on_one_postgres_study_through_a_server_restart(cluster, pg_url, tmp_path):
    """Two drivers at once; PostgreSQL restarted while both run: both finish, each cell once."""
    db = pg_url
    body = "[optimizers.adam]\nlr = { log = [1e-4, 1e-1], num = 6 }\n\n[optimizers.amsgrad]\nlr = [1e-3, 1e-2]\n"
    submit(write_study(tmp_path / "two.toml", "two", body, epochs=30, seeds="[0, 1]"), db)
    # populations of 4: each driver leases 4 cells at a time, so both have work when the server restarts
    drivers = [driver("run", "two", "--db", db, "--address", cluster.address, "--workers", "1", "--population", "4")
               for _ in range(2)]
    wait_for(lambda: finished(db, "two") >= 3, what="three finished cells")
    before = snapshot(db, "two")
    pg_restart()
    results = [_exit(d) for d in drivers]
    assert [code for code, _, _ in results] == [0, 0], [err for _, _, err in results]
    assert all("Traceback" not in err for _, _, err in results)
    assert any("unavailable" in err for _, _, err in results)  # the retries were logged
    assert_exactly_once(db, "two", untouched=before)
    assert cells_where(db, "two", "TRUE", "MAX(attempts)")[0] == 1  # no cell ran twice


def test_replace_under_a_running_driver_stops_it_with_one_line(cluster, sqlite_url, tmp_path):
    db = sqlite_url
    submit(write_study(tmp_path / "r.toml", "swap", SMALL, epochs=100, seeds="[0, 1]"), db)
    run = driver("run", "swap", "--db", db, "--address", cluster.address)
    wait_for(lambda: finished(db, "swap") >= 2, what="two finished cells")
    changed = write_study(tmp_path / "r.toml", "swap", "[optimizers.adam]\nlr = [1e-3, 1e-2]\n", epochs=2)
    assert submit(changed, db, replace=True) == "replaced"
    code, out, err = _exit(run, timeout=120)
    assert code == 1 and "Traceback" not in err, err
    assert "replaced" in err and err.count("error: ") == 1
    assert tuple(cells_where(db, "swap", "TRUE", "COUNT(*), SUM(attempts)")) == (2, 0)  # the new study untouched
    code, out, err = _exit(driver("run", "swap", "--db", db, "--address", cluster.address))
    assert code == 0, err
    assert_exactly_once(db, "swap")


def test_a_service_survives_a_killed_worker_and_a_postgres_restart(cluster, pg_url, tmp_path):
    """``adamscape serve`` on the cluster: a training process SIGKILLed, then PostgreSQL restarted under
    it; it finishes the study, still takes a study submitted after the restart (its LISTEN connection
    is back), and a SIGTERM ends it cleanly."""
    db = pg_url
    service = driver("serve", "--db", db, "--address", cluster.address, "--workers", "2", "--population", "1")
    wait_for(lambda: store.services_alive(store.connect(db)), what="the service's heartbeat")
    submit(write_study(tmp_path / "served.toml", "served", SMALL, epochs=40, seeds="[0, 1]"), db)
    before = _kill_a_training_process(cluster, db, "served", then_finished=2)
    pg_restart()
    wait_for(lambda: finished(db, "served") == 12, what="the study, after the database restart")
    submit(write_study(tmp_path / "after.toml", "after", SMALL, epochs=2), db)
    wait_for(lambda: finished(db, "after") == 6, what="a study submitted after the restart")
    assert service.poll() is None  # the service outlived both faults
    service.send_signal(signal.SIGTERM)
    code, out, err = _exit(service, timeout=30)
    assert code == 0, err
    assert "Traceback" not in err
    assert_exactly_once(db, "served", untouched=before)
    assert_exactly_once(db, "after")
    assert cells_where(db, "served", "losses > 0")[0] >= 1  # the killed process's cell ran again
    assert not store.services_alive(store.connect(db))


def test_lost_cluster_head_then_lost_local_ray_each_exit_and_the_next_run_resumes(cluster, ray_address, sqlite_url,
                                                                                     tmp_path):
    """Last in the file: it kills the shared cluster's head. A driver attached to it exits within
    60 s with one line; the resumed run (a local Ray) loses its node too (its DashboardAgent
    SIGKILLed, which takes the raylet) and exits the same way; the third run (on the session's Ray
    head: any live cluster will do, and it saves a third Ray start) finishes."""
    db = sqlite_url
    # long cells: sgdm's diverging ones come early in the run order and finish at once, and a worker node
    # streams on for seconds after the head is gone; the kills must land with most of the study left
    submit(write_study(tmp_path / "h.toml", "head", SMALL, epochs=150, seeds="[0, 1, 2]"), db)
    one_by_one = ("--population", "1")  # cells finish one at a time: the kills land mid-study
    run = driver("run", "head", "--db", db, "--address", cluster.address, *one_by_one)
    wait_for(lambda: finished(db, "head") >= 2, what="two finished cells")
    cluster.head.kill("gcs_server")
    cluster.head.kill("raylet")
    killed = time.monotonic()
    code, out, err = _exit(run, timeout=90)
    assert time.monotonic() - killed < 60
    assert code == 1 and "Traceback" not in err and "error: " in err and "Ray" in err, (out[-600:], err)
    done = snapshot(db, "head")
    assert cells_where(db, "head", "status = 'running'")[0] == 0  # handed back

    local = driver("run", "head", "--db", db, "--workers", "2", *one_by_one)  # no address: a local Ray of its own
    wait_for(lambda: finished(db, "head") >= len(done) + 2, timeout=180, what="progress on the local Ray")
    agents = [p for p in psutil.Process(local.pid).children(recursive=True)
              if "DashboardAgent" in " ".join(p.cmdline())]
    assert agents, "the local Ray has no DashboardAgent"
    agents[0].kill()
    killed = time.monotonic()
    code, out, err = _exit(local, timeout=90)
    assert time.monotonic() - killed < 60
    assert code == 1 and "Traceback" not in err and "died" in err, err
    done = snapshot(db, "head")

    code, out, err = _exit(driver("run", "head", "--db", db, "--address", ray_address, "--workers", "2"))
    assert code == 0, err
    assert_exactly_once(db, "head", untouched=done)
