"""The driver loop against a scripted pool: every event sequence ends with each cell finished once.

No Ray here: ``ScriptedPool`` plays the workers (epochs, results, errors, lost workers, stale events,
in any interleaving) while the database, the leases and Optuna's storage are real.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from typing import Any

import optuna
import pytest
import sqlalchemy as sa

from study import spec, store
from study.driver.runner import RunOptions, StudyReplaced, run
from study.errors import UserError
from study.interrupts import protected, stop_on
from study.protocol import CellFailure, CellLost, CellResult, EpochRecord
from study.store.optuna_log import distributions
from tests.support.cli import study_file
from tests.support.pool import FAST, ScriptedPool, healthy

import optimizers

def _setup(url: str, tmp_path, body: str | None = None, **top):
    engine = store.connect(url)
    study = spec.load(study_file(tmp_path, body=body, **top))
    store.register(engine, study)
    return engine, study


def _cells(engine, study: str | None = None) -> list[dict]:
    """The cells of every study, or of study ``study``, in cell order."""
    query = "SELECT c.* FROM sweep_cells c JOIN sweep_studies s ON s.id = c.study_id"
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(query + (" WHERE s.name = :name" if study else "")
                                                      + " ORDER BY c.cell_index"), {"name": study}).mappings()]


def _trials(url: str, name: str, optimizer: str) -> list:
    return optuna.load_study(study_name=store.optuna_study_name(name, optimizer), storage=url).trials


def _assert_exactly_once(engine, url: str, study: spec.StudySpec) -> list[dict]:
    """The invariant: every cell finished once, one Optuna trial each, the last attempt's curve complete."""
    rows = _cells(engine, study.name)
    assert len(rows) == study.cell_count()
    assert all(r["status"] in ("complete", "diverged", "failed") for r in rows), [r["status"] for r in rows]
    assert all(r["lease_owner"] is None for r in rows)
    for key in study.optimizers:
        trials = _trials(url, study.name, key)
        mine = [r for r in rows if r["optimizer"] == key]
        trials = [t for t in trials if "cell" in t.user_attrs]  # not the FAILs of retried cells (their history)
        assert sorted(t.user_attrs["cell"] for t in trials) == [r["cell_index"] for r in mine]
        assert {t.user_attrs["cell"]: t.number for t in trials} == {r["cell_index"]: r["optuna_trial"] for r in mine}
    with engine.connect() as conn:
        epochs = dict(conn.execute(sa.text(
            "SELECT c.id, COUNT(*) FROM sweep_curves k JOIN sweep_cells c ON c.id = k.cell_id "
            "AND k.attempt = c.attempts GROUP BY c.id")).all())
    for row in rows:
        if row["status"] == "complete":
            assert epochs.get(row["id"]) == study.total_epochs, row
    return rows


def test_every_cell_once_with_its_trial_in_its_optimizers_study(db_url, tmp_path):
    engine, study = _setup(db_url, tmp_path)
    pool = ScriptedPool(size=3)
    counts = run(engine, "tiny", pool, FAST)
    assert counts == {"complete": 10}
    rows = _assert_exactly_once(engine, db_url, study)
    assert len(pool.dispatched) == 10 and all(r["attempts"] == 1 for r in rows)
    adam = _trials(db_url, "tiny", "adam")
    assert sorted({t.params["lr"] for t in adam}) == pytest.approx([1e-3, 1e-2, 1e-1])
    assert all(t.intermediate_values == {1: 0.1, 2: 0.2} for t in adam)
    assert {t.user_attrs["seed"] for t in adam} == {0, 1}


@pytest.mark.parametrize("population,sizes", [(None, [5, 5]), (3, [3, 3, 2, 2]), (1, [1] * 10)])
def test_workers_get_consecutive_cells_in_batches_balanced_across_workers(sqlite_url, tmp_path, population, sizes):
    """auto: up to 64 per batch, shrunk so both workers get a share of the 10 cells; K: at most K.
    Consecutive in the study's run order, which the batches follow from its start to its end."""
    engine, study = _setup(sqlite_url, tmp_path)
    pool = ScriptedPool(size=2)
    run(engine, "tiny", pool, dataclasses.replace(FAST, population=population))
    _assert_exactly_once(engine, sqlite_url, study)
    position = {r["id"]: r["run_order"] for r in _cells(engine)}
    assert [len(batch) for batch in pool.batches] == sizes
    assert [position[key] for batch in pool.batches for key in batch] == list(range(10))


def test_a_worker_that_starts_late_gets_as_large_a_share_as_the_first(sqlite_url, tmp_path):
    engine, study = _setup(sqlite_url, tmp_path)
    pool = ScriptedPool(size=2, late=1)
    run(engine, "tiny", pool, FAST)
    _assert_exactly_once(engine, sqlite_url, study)
    assert [len(batch) for batch in pool.batches] == [5, 5]  # not 5, 3, 2: two populations, not three


def test_different_ranges_per_optimizer_defaults_scalars_and_all_registered_optimizers(sqlite_url, tmp_path):
    """On main: one distribution per hyperparameter across optimizers, so adam's default lr 1e-3 fell
    outside sgdm's [0.01, 0.1] and every run crashed in Optuna."""
    body = "[optimizers.adam]\nbeta1 = [0.5, 0.9]\n\n[optimizers.sgdm]\nlr = [0.01, 0.1]\nmomentum = 0.5\n"
    body += "".join(f"\n[optimizers.{name}]\n" for name in optimizers.names() if name not in ("adam", "sgdm"))
    engine, study = _setup(sqlite_url, tmp_path, body=body, seeds=[0])
    counts = run(engine, "tiny", ScriptedPool(size=4), FAST)
    assert counts == {"complete": 2 + 2 + len(optimizers.names()) - 2}
    _assert_exactly_once(engine, sqlite_url, study)
    adam = _trials(sqlite_url, "tiny", "adam")
    assert {t.params["lr"] for t in adam} == {1e-3} and {t.params["beta1"] for t in adam} == {0.5, 0.9}
    lr = adam[0].distributions["lr"]
    assert lr.log and lr.low <= 1e-5 and lr.high >= 1e-1  # the registry's search range, joined with the values
    assert not adam[0].distributions["beta1"].log  # betas are never log-scaled
    assert {t.params["momentum"] for t in _trials(sqlite_url, "tiny", "sgdm")} == {0.5}


def test_distributions_follow_the_registry_and_contain_every_value(tmp_path):
    study = spec.load(study_file(tmp_path, body="[optimizers.adamw]\nlr = [1e-7, 3.0]\nweight_decay = [0.0, 0.1]\n"))
    dists = distributions(study)["adamw"]
    assert dists["lr"].low == 1e-7 and dists["lr"].high == 3.0 and dists["lr"].log
    assert dists["weight_decay"].low == 0.0 and not dists["weight_decay"].log  # log is impossible from 0
    assert set(dists) == set(optimizers.spec("adamw").hparams)


def test_a_lost_worker_is_retried_and_fails_with_its_cause_after_max_attempts(sqlite_url, tmp_path):
    engine, study = _setup(sqlite_url, tmp_path)

    def behave(key, cell, attempt):
        if cell.optimizer == "adam" and cell.hparams["lr"] == pytest.approx(1e-2) and cell.seed == 0:
            yield EpochRecord(1, {"train_loss": 1.0, "test_accuracy": 0.1}, key=key)
            yield CellLost(key, f"worker died: node gone ({attempt})")
        elif cell.optimizer == "sgdm" and cell.seed == 1 and attempt == 1:
            yield CellLost(key, "worker died once")
        else:
            yield from healthy(key, cell)

    pool = ScriptedPool(size=2, behave=behave)
    run(engine, "tiny", pool, FAST)
    rows = _assert_exactly_once(engine, sqlite_url, study)
    doomed = [r for r in rows if r["status"] == "failed"]
    assert len(doomed) == 1 and doomed[0]["attempts"] == 3 and doomed[0]["losses"] == 3
    # each retry trains in populations half as large as the attempt before (it may have run out of memory)
    assert [p.halvings for p in pool.payloads if doomed[0]["id"] in {c.key for c in p.cells}] == [0, 1, 2]
    assert "worker died: node gone (3)" in doomed[0]["error"]
    retried = [r for r in rows if r["optimizer"] == "sgdm" and r["seed"] == 1]
    assert all(r["status"] == "complete" and r["attempts"] == 2 and r["losses"] == 1 for r in retried)
    with engine.connect() as conn:  # one curve per attempt, never overwritten
        attempts = conn.execute(sa.text("SELECT attempt, epoch FROM sweep_curves WHERE cell_id = :id "
                                        "ORDER BY attempt"), {"id": doomed[0]["id"]}).all()
    assert attempts == [(1, 1), (2, 1), (3, 1)]
    trial = next(t for t in _trials(sqlite_url, "tiny", "adam") if t.user_attrs["cell"] == doomed[0]["cell_index"])
    assert trial.state == optuna.trial.TrialState.FAIL and "node gone" in trial.user_attrs["error"]


def test_a_crashed_trial_fails_once_and_stale_events_are_ignored(sqlite_url, tmp_path):
    engine, study = _setup(sqlite_url, tmp_path)
    first_key = []

    def behave(key, payload, attempt):
        first_key.append(key)
        if len(first_key) == 1:
            yield CellFailure(key, "Traceback: ValueError: boom")
        else:
            yield from healthy(key, payload)

    def stale(pool):  # late events of a cell that already ended, and of a cell never dispatched
        return [EpochRecord(9, {"train_loss": 0.0}, key=first_key[0]),
                CellResult("complete", {"test_accuracy": 1.0}, best_test_accuracy=1.0, wall_seconds=0.0,
                           key=first_key[0]),
                EpochRecord(1, {}, key=10**9)] if pool.calls > 3 else []

    run(engine, "tiny", ScriptedPool(size=2, behave=behave, before_events=stale), FAST)
    rows = _assert_exactly_once(engine, sqlite_url, study)
    crashed = next(r for r in rows if r["id"] == first_key[0])
    assert crashed["status"] == "failed" and "boom" in crashed["error"] and crashed["attempts"] == 1
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM sweep_curves WHERE cell_id = :id"),
                            {"id": crashed["id"]}).scalar() == 0


def test_a_lease_lost_mid_cell_drops_the_cell_here_and_keeps_the_other_drivers_result(sqlite_url, tmp_path):
    engine, study = _setup(sqlite_url, tmp_path)
    taken = {}

    def steal(pool):
        """Another driver takes over one running cell (as after an expired lease) and finishes it."""
        if not taken and pool.running:
            key = next(iter(next(iter(pool.running.values()))))
            taken["key"] = key
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE sweep_cells SET lease_owner = 'other', attempts = attempts + 1, "
                                     "lease_expires = lease_expires + 3600 WHERE id = :id"), {"id": key})  # live
        elif taken and "done" not in taken and pool.calls > 10:
            taken["done"] = True
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE sweep_cells SET status = 'complete', lease_owner = NULL, "
                                     "score = 0.25, final_metrics = '{\"test_accuracy\": 0.25}' WHERE id = :id"),
                             {"id": taken["key"]})
                for epoch in (1, 2):
                    conn.execute(sa.text("INSERT INTO sweep_curves (cell_id, attempt, epoch, metrics) "
                                         "VALUES (:id, 2, :epoch, '{}')"), {"id": taken["key"], "epoch": epoch})
        return []

    def slow(key, payload, attempt):
        for _ in range(30):  # long enough for a heartbeat to notice
            time.sleep(0.005)
            yield None
        yield from healthy(key, payload)

    pool = ScriptedPool(size=2, behave=slow, before_events=steal)
    run(engine, "tiny", pool, RunOptions(lease_seconds=0.2, poll_seconds=0.01, db_retry_seconds=30))
    assert pool.cancelled == [taken["key"]]
    rows = _assert_exactly_once(engine, sqlite_url, study)
    stolen = next(r for r in rows if r["id"] == taken["key"])
    assert stolen["score"] == 0.25 and stolen["attempts"] == 2  # the other driver's result stands
    siblings = [r for r in rows if r["id"] != taken["key"] and r["id"] in next(b for b in pool.batches
                                                                             if taken["key"] in b)]
    assert siblings and all(r["status"] == "complete" and r["attempts"] == 2 for r in siblings)  # handed back, rerun
    assert all(r["losses"] == 0 for r in rows)  # stopping them was not a worker death
    with engine.connect() as conn:  # nothing of ours was written under the other driver's attempt
        assert conn.execute(sa.text("SELECT metrics FROM sweep_curves WHERE cell_id = :id AND attempt = 2"),
                            {"id": taken["key"]}).scalars().all() == ["{}", "{}"]


def test_database_errors_are_retried_and_nothing_is_lost_or_doubled(db_url, tmp_path):
    """The connection drops three times while epochs are written: the batch is written once, later."""
    engine, study = _setup(db_url, tmp_path)
    failures = {"left": 3}

    @sa.event.listens_for(engine, "before_cursor_execute")
    def drop_connection(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO SWEEP_CURVES") and failures["left"]:
            failures["left"] -= 1
            raise sa.exc.OperationalError(statement, parameters, Exception("server closed the connection"))

    run(engine, "tiny", ScriptedPool(size=2), RunOptions(lease_seconds=30, poll_seconds=0.01, db_retry_seconds=30))
    assert failures["left"] == 0
    _assert_exactly_once(engine, db_url, study)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM sweep_curves")).scalar() == 20


def test_interrupt_hands_cells_back_and_the_next_run_uses_new_attempts(sqlite_url, tmp_path):
    """On main a Ctrl-C decremented ``attempts``: the next claim reused the attempt number and
    inserting its first epoch violated (cell_id, attempt, epoch) on every later run."""
    engine, study = _setup(sqlite_url, tmp_path)

    def interrupt(pool):
        if pool.calls == 3:
            raise KeyboardInterrupt
        return []

    interrupted = ScriptedPool(size=2, before_events=interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(engine, "tiny", interrupted, FAST)
    rows = _cells(engine)
    handed_back = [r for r in rows if r["attempts"] == 1 and r["status"] == "pending"]
    assert {r["id"] for r in handed_back} == {key for key, _ in interrupted.dispatched}  # the whole batches
    assert all(r["lease_owner"] is None for r in handed_back)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM sweep_curves")).scalar() >= 2  # epochs were recorded
    run(engine, "tiny", ScriptedPool(size=2), FAST)
    rows = _assert_exactly_once(engine, sqlite_url, study)
    assert {r["attempts"] for r in rows if r["id"] in {h["id"] for h in handed_back}} == {2}
    assert all(r["losses"] == 0 for r in rows)  # an interrupt is not a worker death


def test_a_ctrl_c_during_a_claim_hands_back_the_cells_it_leased_too(sqlite_url, tmp_path, monkeypatch):
    """A real SIGINT while the second claim's transaction runs: it is raised when that transaction has
    committed, before its cells reach the driver's books; they are handed back all the same."""
    engine, study = _setup(sqlite_url, tmp_path)
    claim, claims = store.claim, []

    def claim_with_a_ctrl_c(*args, **kwargs):
        claims.append(1)
        if len(claims) != 2:
            return claim(*args, **kwargs)
        with protected():  # as the claim's own transaction is: the stop waits for its commit
            claim(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGINT)
        raise AssertionError("the stop was not raised at the end of the section")

    monkeypatch.setattr(store, "claim", claim_with_a_ctrl_c)
    with stop_on(signal.SIGINT), pytest.raises(KeyboardInterrupt):
        run(engine, "tiny", ScriptedPool(size=2), FAST)
    assert len(claims) == 2
    rows = _cells(engine)
    assert not [r for r in rows if r["status"] == "running"], rows  # none left to wait for its lease
    assert all(r["lease_owner"] is None for r in rows)
    monkeypatch.setattr(store, "claim", claim)
    run(engine, "tiny", ScriptedPool(size=2), FAST)
    _assert_exactly_once(engine, sqlite_url, study)


def test_a_study_replaced_under_a_running_driver_stops_it_cleanly(sqlite_url, tmp_path):
    engine, study = _setup(sqlite_url, tmp_path)

    def replace(pool):
        if pool.calls == 2:  # mid-run: every cell has one epoch left
            store.register(engine, spec.load(study_file(tmp_path, epochs=3)), replace=True)
        return []

    with pytest.raises(StudyReplaced, match="replaced"):
        run(engine, "tiny", ScriptedPool(size=2, before_events=replace), FAST)
    rows = _cells(engine)
    assert all(r["status"] == "pending" and r["attempts"] == 0 for r in rows)  # the new study is untouched
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM sweep_curves")).scalar() == 0


def test_two_drivers_racing_on_one_database_run_and_report_each_cell_once(db_url, tmp_path):
    body = "[optimizers.adam]\nlr = { log = [1e-4, 1e-1], num = 6 }\n\n[optimizers.sgdm]\nlr = [0.1, 0.2, 0.3]\n"
    engine, study = _setup(db_url, tmp_path, body=body, seeds=[0, 1, 2])
    errors = []

    def driver():
        try:
            run(store.connect(db_url), "tiny", ScriptedPool(size=2), FAST)
        except Exception as exc:  # pragma: no cover - the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=driver) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    rows = _assert_exactly_once(engine, db_url, study)
    assert all(r["attempts"] == 1 for r in rows)


def test_the_driver_never_idles_while_cells_are_pending_and_workers_free(sqlite_url, tmp_path, monkeypatch):
    """On main a pass that ended the last running cell slept poll_seconds before claiming again (one
    worker ran ~7 trivial cells/s); the driver only sleeps when every pending cell is leased elsewhere."""
    from study.driver import runner

    engine, study = _setup(sqlite_url, tmp_path)
    slept = []
    monkeypatch.setattr(runner.time, "sleep", slept.append)
    run(engine, "tiny", ScriptedPool(size=1), dataclasses.replace(FAST, population=1))
    _assert_exactly_once(engine, sqlite_url, study)
    assert slept == []


# --- the service's queue: priority, fair share, cancel, pause ----------------------------------------

def _serve_until_done(engine, pool, options=FAST, resumed=lambda: True):
    """``serve`` that drains (and so returns) once the queue is empty and ``resumed()``."""
    from study.driver.runner import serve

    def tick(driver):
        driver.draining = resumed() and not store.queue(engine)

    serve(engine, pool, options, tick=tick)


def _study_of(engine) -> dict[int, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT c.id, s.name FROM sweep_cells c JOIN sweep_studies s "
                                         "ON s.id = c.study_id")).all())


def test_a_service_serves_higher_priority_first_then_round_robin_over_studies(sqlite_url, tmp_path):
    engine = store.connect(sqlite_url)
    big = spec.load(study_file(tmp_path, name="big", seeds=[0, 1, 2]))  # 15 cells
    small = spec.load(study_file(tmp_path, name="small", seeds=[0]))  # 5 cells, submitted after big
    urgent = spec.load(study_file(tmp_path, name="urgent", body="[optimizers.adam]\nlr = [0.01, 0.1]\n", seeds=[0]))
    store.register(engine, big)
    store.register(engine, small)
    store.register(engine, urgent, priority=5)
    pool = ScriptedPool(size=1)
    _serve_until_done(engine, pool, dataclasses.replace(FAST, population=1))
    study_of = _study_of(engine)
    order = [study_of[key] for batch in pool.batches for key in batch]
    assert order[:2] == ["urgent", "urgent"]  # priority first
    assert order[2:12] == ["big", "small"] * 5  # then a worker each in turn: small is not starved by big
    assert order[12:] == ["big"] * 10
    for study in (big, small, urgent):
        _assert_exactly_once(engine, sqlite_url, study)


def test_equal_priority_studies_share_the_workers(sqlite_url, tmp_path):
    engine = store.connect(sqlite_url)
    for name in ("first", "second"):
        store.register(engine, spec.load(study_file(tmp_path, name=name, seeds=[0, 1, 2, 3])))
    pool = ScriptedPool(size=4)
    _serve_until_done(engine, pool, dataclasses.replace(FAST, population=2))
    study_of = _study_of(engine)
    first_four = [study_of[batch[0]] for batch in pool.batches[:4]]
    assert sorted(first_four) == ["first", "first", "second", "second"]  # two workers each, not four to the first


def test_cancel_stops_running_cells_and_pending_ones_never_start(db_url, tmp_path):
    engine, study = _setup(db_url, tmp_path, seeds=[0, 1, 2])
    other = spec.load(study_file(tmp_path, name="other", seeds=[0]))
    store.register(engine, other)
    cancelled = {}

    def cancel(pool):
        running = [key for scripts in pool.running.values() for key in scripts]
        study_of = _study_of(engine)
        some_done = any(r["status"] == "complete" for r in _cells(engine, "tiny"))
        if not cancelled and some_done and any(study_of[key] == "tiny" for key in running):
            cancelled["running"] = [key for key in running if study_of[key] == "tiny"]
            cancelled["touched"] = store.set_state(engine, "tiny", "cancel")
        return []

    def slow(key, payload, attempt):
        for _ in range(3):
            yield None
        yield from healthy(key, payload)

    pool = ScriptedPool(size=2, behave=slow, before_events=cancel)
    _serve_until_done(engine, pool, dataclasses.replace(FAST, population=2))
    assert set(cancelled["running"]) <= set(pool.cancelled)  # its workers were stopped
    rows = _cells(engine, "tiny")
    statuses = [r["status"] for r in rows]
    assert set(statuses) == {"complete", "cancelled"} and statuses.count("cancelled") >= 2
    assert cancelled["touched"]["running"] == len(cancelled["running"])
    assert all(r["lease_owner"] is None and r["attempts"] <= 1 for r in rows)
    dispatched_after = {key for key, _ in pool.dispatched} & {r["id"] for r in rows if r["status"] == "cancelled"}
    assert dispatched_after == set(cancelled["running"])  # no pending cell of it started after the cancel
    trials = [t for key in study.optimizers for t in _trials(db_url, "tiny", key)]
    assert sorted(t.user_attrs["cell"] for t in trials) == sorted(r["cell_index"] for r in rows
                                                                 if r["status"] == "complete")
    _assert_exactly_once(engine, db_url, other)  # the service went on with the next study
    with pytest.raises(UserError, match="was cancelled"):
        store.set_state(engine, "tiny", "resume")


def test_pause_hands_running_cells_back_and_resume_finishes_each_once(sqlite_url, tmp_path):
    engine, study = _setup(sqlite_url, tmp_path, seeds=[0, 1, 2])
    state = {"paused_at": None, "resumed": False}

    def control(pool):
        if state["paused_at"] is None and pool.calls == 3:
            state["paused_at"] = pool.calls
            state["touched"] = store.set_state(engine, "tiny", "pause")
        elif state["paused_at"] and not state["resumed"] and pool.calls == state["paused_at"] + 20:
            assert all(r["status"] != "running" for r in _cells(engine))
            store.set_state(engine, "tiny", "resume")
            state["resumed"] = True
        return []

    pool = ScriptedPool(size=2, behave=lambda key, payload, attempt: (yield from [None, None, *healthy(key, payload)]),
                        before_events=control)
    _serve_until_done(engine, pool, dataclasses.replace(FAST, population=2), resumed=lambda: state["resumed"])
    rows = _assert_exactly_once(engine, sqlite_url, study)
    handed_back = [r for r in rows if r["attempts"] == 2]
    assert len(handed_back) == state["touched"]["running"] > 0 and all(r["losses"] == 0 for r in rows)


def test_run_stops_on_a_pause_and_ends_on_a_cancel(sqlite_url, tmp_path):
    from study.driver.runner import StudyPaused

    engine, study = _setup(sqlite_url, tmp_path)

    def pause(pool):
        if pool.calls == 2:
            store.set_state(engine, "tiny", "pause")
        return []

    slow = lambda key, payload, attempt: (yield from [None, None, *healthy(key, payload)])  # noqa: E731
    with pytest.raises(StudyPaused, match="paused"):
        run(engine, "tiny", ScriptedPool(size=2, behave=slow, before_events=pause), FAST)
    assert all(r["status"] == "pending" and r["lease_owner"] is None for r in _cells(engine))
    store.set_state(engine, "tiny", "resume")

    def cancel(pool):
        if pool.calls == 2:
            store.set_state(engine, "tiny", "cancel")
        return []

    counts = run(engine, "tiny", ScriptedPool(size=2, behave=slow, before_events=cancel), dataclasses.replace(FAST, population=2))
    assert counts.get("cancelled", 0) > 0 and counts.get("pending", 0) == counts.get("running", 0) == 0


def test_a_stop_between_a_result_and_its_trial_is_reported_on_the_way_out_or_by_the_next_service(
        sqlite_url, tmp_path, monkeypatch):
    from study.store import optuna_log

    engine, study = _setup(sqlite_url, tmp_path)
    real_report = optuna_log.OptunaLog.report

    def interrupted(self, cell_ids):  # SIGTERM lands just after the results were written
        monkeypatch.setattr(optuna_log.OptunaLog, "report", real_report)
        raise KeyboardInterrupt

    monkeypatch.setattr(optuna_log.OptunaLog, "report", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(engine, "tiny", ScriptedPool(size=2), FAST)
    finished = [r for r in _cells(engine) if r["status"] == "complete"]
    assert finished and all(r["optuna_trial"] is not None for r in finished)  # reconciled in the driver's finally
    run(engine, "tiny", ScriptedPool(size=2), FAST)
    _assert_exactly_once(engine, sqlite_url, study)
    with engine.begin() as conn:  # a driver that died before reporting a finished study's last cell
        conn.execute(sa.text("UPDATE sweep_cells SET optuna_trial = NULL WHERE cell_index = 0"))
    _serve_until_done(engine, ScriptedPool(size=1))  # the queue is empty: it only starts and stops
    _assert_exactly_once(engine, sqlite_url, study)


# --- the run order: a map worth reading early, populations kept ------------------------------------

PROGRESSIVE = """
[optimizers.adam]
lr = { log = [1e-4, 1e-1], num = 8 }
beta1 = [0.5, 0.9]

[optimizers.adabound]
lr = { log = [1e-4, 1e-1], num = 8 }
final_lr = [0.01, 0.1]
"""


def test_a_study_stopped_early_has_a_coarse_map_of_every_optimizer_then_resumes_and_retries_failures(
        db_url, tmp_path):
    """64 cells (2 optimizers × 8 lr × 2 values of a second axis × 2 seeds) stopped after 16 finished:
    both optimizers finished points across both axes, ends included; resuming finishes every other cell
    once; ``retry_failed`` reruns exactly the cells that failed."""
    engine, study = _setup(db_url, tmp_path, body=PROGRESSIVE, seeds=[0, 1])
    assert study.cell_count() == 64

    def stop_after_16(pool):
        if sum(r["status"] == "complete" for r in _cells(engine)) >= 16:
            raise KeyboardInterrupt
        return []

    first = ScriptedPool(size=2, before_events=stop_after_16)
    with pytest.raises(KeyboardInterrupt):
        run(engine, "tiny", first, dataclasses.replace(FAST, population=4))
    rows = _cells(engine)
    done = [r for r in rows if r["status"] == "complete"]
    assert len(done) == 16 and {r["status"] for r in rows} == {"complete", "pending"}
    assert sorted(r["run_order"] for r in done) == list(range(16))  # leased in run order
    for optimizer, second in (("adam", "beta1"), ("adabound", "final_lr")):
        grid = study.grid(optimizer)
        mine = [r for r in done if r["optimizer"] == optimizer]
        for axis in ("lr", second):
            seen = {r[axis] for r in mine}
            assert len(seen) >= 2 and {min(grid[axis]), max(grid[axis])} <= seen, (optimizer, axis, seen)
    # file order would have finished 16 cells of adam's first seed: adabound not at all

    doomed = set()

    def some_fail(key, payload, attempt):  # three cells crash on their first attempt after the resume
        if len(doomed) < 3 and key not in doomed and payload.seed == 1:
            doomed.add(key)
            yield CellFailure(key, f"Traceback: boom {attempt}")
        else:
            yield from healthy(key, payload)

    second = ScriptedPool(size=2, behave=some_fail)
    counts = run(engine, "tiny", second, FAST)
    assert counts == {"complete": 61, "failed": 3}
    assert not {key for key, _ in second.dispatched} & {r["id"] for r in done}  # finished cells never re-run
    rows = _assert_exactly_once(engine, db_url, study)
    assert {r["id"] for r in rows if r["status"] == "failed"} == doomed

    assert store.retry_failed(engine, "tiny") == 3
    third = ScriptedPool(size=2)
    assert run(engine, "tiny", third, FAST) == {"complete": 64}
    assert sorted(key for key, _ in third.dispatched) == sorted(doomed)  # only the failed cells ran again
    rows = _assert_exactly_once(engine, db_url, study)
    assert all(r["attempts"] == 2 for r in rows if r["id"] in doomed)
    trials = [t for optimizer in study.optimizers for t in _trials(db_url, "tiny", optimizer)]
    history = [t for t in trials if "retried_cell" in t.user_attrs]  # the FAILs stay, as history
    assert len(trials) == 64 + 3 and len(history) == 3
    assert all(t.state == optuna.trial.TrialState.FAIL and "boom" in t.user_attrs["error"] for t in history)


def _grid_throughput():
    import importlib.util

    from tests.conftest import ROOT

    loader = importlib.util.spec_from_file_location("grid_throughput", ROOT / "benchmarks" / "grid_throughput.py")
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def _populations(batches: list[list[Any]], group: dict[Any, tuple]) -> list[int]:
    """The sizes of the (optimizer, seed) groups of each batch: what a worker trains as one population."""
    sizes = []
    for batch in batches:
        counted: dict[tuple, int] = {}
        for key in batch:
            counted[group[key]] = counted.get(group[key], 0) + 1
        sizes += counted.values()
    return sizes


def test_on_the_512_cell_benchmark_grid_the_run_order_keeps_populations_large(sqlite_url, tmp_path):
    """benchmarks/grid_throughput.py's 512 cells (10 optimizers × 8 lr × 3-4 × 2 seeds) on 2 workers,
    against file order (the same cells re-ordered by cell index, as before the run order).

    Every optimizer is in the first 20 % (file order: two). The price, and its bound: each optimizer's
    scout (3 × 3 points of its first seed) is a population of its own, sent before the rest of that
    seed's grid; apart from that, a batch is cut from runs of one (optimizer, seed) as in file order.
    So the populations number at most one per (optimizer, seed) + one per optimizer + one per batch
    boundary (a batch cutting a run), where file order's number at most one per (optimizer, seed) +
    one per batch boundary. Here: 35 against 24; the average cell trains in a population of 18.5
    instead of 24. Not "as large as file order": no order can be here, since a batch is 64 cells and a
    seed's grid 24 or 32, so covering 10 optimizers in the first two batches (the first 25 %) splits the
    grids of at least six of them. The test shows the bound, and that a naive interleaving is far off."""
    body = _grid_throughput().GRIDS["512"]
    engine, study = _setup(sqlite_url, tmp_path, body=body, seeds=[0, 1])
    assert study.cell_count() == 512
    pool = ScriptedPool(size=2)
    run(engine, "tiny", pool, FAST)
    _assert_exactly_once(engine, sqlite_url, study)
    rows = {r["id"]: r for r in _cells(engine)}
    group = {key: (r["optimizer"], r["seed"]) for key, r in rows.items()}
    progressive = _populations(pool.batches, group)

    with engine.begin() as conn:  # the same study in file order, as before the run order
        conn.execute(sa.text("UPDATE sweep_cells SET run_order = -1 - cell_index"))
        conn.execute(sa.text("UPDATE sweep_cells SET run_order = cell_index, status = 'pending', attempts = 0, "
                             "optuna_trial = NULL"))
    store.delete_optuna_studies(engine, "tiny")
    file_pool = ScriptedPool(size=2)
    run(engine, "tiny", file_pool, FAST)
    file_order = _populations(file_pool.batches, group)
    assert [len(b) for b in file_pool.batches] == [len(b) for b in pool.batches] == [64] * 8  # the same batches

    def optimizers_in(batches, share):
        first = [key for batch in batches for key in batch][:int(share * 512)]
        return {group[key][0] for key in first}

    assert optimizers_in(pool.batches, 0.2) == set(study.optimizers)
    assert optimizers_in(file_pool.batches, 0.2) == {"adam", "adamw"}
    groups, boundaries = len(set(group.values())), len(pool.batches) - 1
    assert sum(progressive) == sum(file_order) == 512
    assert len(file_order) <= groups + boundaries
    assert len(progressive) <= groups + len(study.optimizers) + boundaries
    assert max(progressive) == max(file_order) == 32  # the later seed's grids, whole
    # a naive interleaving (one cell of each optimizer and seed in turn) breaks the bound many times over
    naive = sorted(rows, key=lambda key: (rows[key]["cell_index"] % 24, group[key][1], group[key][0]))
    assert len(_populations([naive[i:i + 64] for i in range(0, 512, 64)], group)) > 4 * len(progressive)
