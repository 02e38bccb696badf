"""The exactly-once invariant itself (tests/support/invariants.py), on studies run against the scripted pool
(no Ray): it holds where it should, whatever the study file leaves to its task, and fails where it should."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from study import spec, store
from study.catalog import TASKS
from study.driver.runner import run
from tests.support.cli import write_study
from tests.support.db import query
from tests.support.invariants import assert_exactly_once, study_epochs
from tests.support.pool import FAST, ScriptedPool, healthy

BODY = "[optimizers.adam]\nlr = [1e-3, 1e-2]\n\n[optimizers.sgdm]\nlr = [0.1]\n"


def _run(url: str, path, epochs: int) -> None:
    """Submit the study and drive it to the end; every cell streams ``epochs`` epochs."""
    engine = store.connect(url)
    study = spec.load(path)
    store.register(engine, study)
    pool = ScriptedPool(size=2, behave=lambda key, cell, attempt: healthy(key, cell, epochs=epochs))
    assert run(engine, study.name, pool, FAST) == {"complete": study.cell_count()}


def test_a_study_that_leaves_its_epochs_to_the_task_is_checked_against_the_tasks_default(sqlite_url, tmp_path):
    default = TASKS["digits-mlp"].default_epochs
    path = write_study(tmp_path / "d.toml", "defaulted", BODY, epochs=None, task="digits-mlp",
                       metric="test_accuracy", seeds="[0, 1]")
    _run(sqlite_url, path, epochs=default)
    (stored,), = query(sqlite_url, "SELECT spec FROM sweep_studies WHERE name = 'defaulted'")
    assert json.loads(stored).get("epochs") is None  # what the helper read raw before: no number at all
    assert study_epochs(stored) == default
    rows = assert_exactly_once(sqlite_url, "defaulted")
    assert len(rows) == 6 and {r.status for r in rows} == {"complete"}


def test_the_files_own_epochs_win_over_the_tasks_default(sqlite_url, tmp_path):
    assert TASKS["digits-mlp"].default_epochs != 3
    path = write_study(tmp_path / "e.toml", "given", BODY, epochs=3, task="digits-mlp", metric="test_accuracy")
    _run(sqlite_url, path, epochs=3)
    (stored,), = query(sqlite_url, "SELECT spec FROM sweep_studies WHERE name = 'given'")
    assert study_epochs(stored) == 3
    assert_exactly_once(sqlite_url, "given")


def test_a_cell_whose_last_curve_stops_short_of_the_tasks_default_breaks_the_invariant(sqlite_url, tmp_path):
    default = TASKS["digits-mlp"].default_epochs
    path = write_study(tmp_path / "s.toml", "short", BODY, epochs=None, task="digits-mlp", metric="test_accuracy")
    _run(sqlite_url, path, epochs=default)
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:  # one complete cell's final attempt loses its last epoch
        conn.execute(sa.text("DELETE FROM sweep_curves WHERE cell_id = (SELECT MIN(id) FROM sweep_cells) "
                             "AND epoch = :last"), {"last": default})
    engine.dispose()
    with pytest.raises(AssertionError):
        assert_exactly_once(sqlite_url, "short")
