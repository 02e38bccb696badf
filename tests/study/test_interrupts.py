"""A real SIGINT to this process: inside a protected section (a transaction, a lock) it waits for the
section's end, a second one does not wait, and outside it stops at once."""

from __future__ import annotations

import os
import signal
import threading

import pytest
import sqlalchemy as sa

from study import store
from study.interrupts import protected, stop_on


def _ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def test_a_stop_inside_a_transaction_waits_for_its_commit_then_stops(tmp_path):
    engine = store.connect(f"sqlite:///{tmp_path / 'r.db'}")
    reached = []
    with stop_on(signal.SIGINT) as stop, pytest.raises(KeyboardInterrupt):
        with store.transaction(engine) as conn:
            conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
            _ctrl_c()
            reached.append("after the signal")  # the handler ran above (the main thread, at once)
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))
    assert stop.is_set() and reached == ["after the signal"]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT x FROM t")).scalars().all() == [1]  # committed whole
    engine.dispose()


def test_a_stop_inside_a_lock_ends_its_section_and_the_lock_is_taken_again_at_once(tmp_path):
    engine = store.connect(f"sqlite:///{tmp_path / 'r.db'}")
    reached = []
    with stop_on(signal.SIGINT), pytest.raises(KeyboardInterrupt):
        with store.exclusive(engine, "optuna:s"):
            _ctrl_c()
            reached.append("after the signal")
    assert reached == ["after the signal"]
    taken = threading.Event()

    def again() -> None:
        with store.exclusive(engine, "optuna:s"):
            taken.set()

    worker = threading.Thread(target=again, daemon=True)
    worker.start()
    assert taken.wait(10), "the lock stayed held after the stop"
    engine.dispose()


def test_a_second_signal_inside_a_section_stops_at_once():
    reached = []
    with stop_on(signal.SIGINT), pytest.raises(KeyboardInterrupt):
        with protected():
            _ctrl_c()
            reached.append(1)
            _ctrl_c()
            reached.append(2)
    assert reached == [1]


def test_outside_a_section_a_stop_raises_where_the_driver_is_and_the_handlers_come_back():
    before = signal.getsignal(signal.SIGINT)
    reached = []
    with stop_on(signal.SIGINT) as stop, pytest.raises(KeyboardInterrupt):
        _ctrl_c()
        reached.append(1)
    assert stop.is_set() and reached == []
    assert signal.getsignal(signal.SIGINT) is before
    with protected():  # no stop left pending for a later section
        pass
