"""The trials adamscape writes in bulk are the trials Optuna's own ``create_new_trial`` writes."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy as sa

from study import store
from study.store.optuna_log import OptunaLog
from study.driver.runner import run
from study.protocol import CellFailure, CellResult, EpochRecord
from tests.study.driver.test_runner import _setup
from tests.support.pool import FAST, ScriptedPool, healthy


def _mixed(key, cell, attempt):
    """Complete cells, one diverged (PRUNED), one crashed (FAIL with its error), one NaN final metric."""
    lr = cell.hparams["lr"]
    if cell.optimizer == "sgdm" and lr == 1000.0:
        yield EpochRecord(1, {"train_loss": float("inf")}, key=key)
        yield CellResult("diverged", {"train_loss": float("inf")}, best_test_accuracy=None, wall_seconds=0.1, key=key)
    elif cell.optimizer == "adam" and lr == pytest.approx(1e-2) and cell.seed == 1:
        yield CellFailure(key, "Traceback …\nValueError: boom")
    elif cell.optimizer == "adam" and lr == pytest.approx(1e-1) and cell.seed == 0:
        yield CellResult("complete", {"test_accuracy": float("nan")}, best_test_accuracy=None, wall_seconds=0.1,
                         key=key)
    else:
        yield from healthy(key, cell)


def _comparable(trial: optuna.trial.FrozenTrial) -> dict:
    return {"state": trial.state, "values": trial.values, "params": trial.params,
            "distributions": trial.distributions, "user_attrs": trial.user_attrs,
            "system_attrs": trial.system_attrs, "intermediate_values": trial.intermediate_values}


def test_bulk_trials_equal_optunas_own_and_optuna_reads_them(db_url, tmp_path):
    engine, study = _setup(db_url, tmp_path)
    run(engine, "tiny", ScriptedPool(size=2, behave=_mixed), FAST)
    log = OptunaLog(engine, store.get_study(engine, "tiny"))
    log.open()
    storage = optuna.storages.RDBStorage(db_url)
    scratch = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "scratch")
    with engine.connect() as conn:
        cells = store.get_cells(conn, [r[0] for r in conn.execute(sa.text("SELECT id FROM sweep_cells"))])
        curves = store.last_curves(conn, cells)
    states = set()
    for optimizer in study.optimizers:
        loaded = optuna.load_study(study_name=store.optuna_study_name("tiny", optimizer), storage=db_url)
        mine = sorted((c for c in cells if c["optimizer"] == optimizer), key=lambda c: c["optuna_trial"])
        assert [t.number for t in loaded.trials] == list(range(len(mine)))
        assert [c["optuna_trial"] for c in mine] == list(range(len(mine)))
        for trial, cell in zip(loaded.trials, mine):
            theirs = storage.get_trial(storage.create_new_trial(scratch, template_trial=log.trial(
                cell, curves.get(cell["id"], []))))
            assert _comparable(trial) == _comparable(theirs), cell["cell_index"]
            assert trial.user_attrs["cell"] == cell["cell_index"] and trial.datetime_complete is not None
            states.add(trial.state)
        assert loaded.best_trial.value == max(t.value for t in loaded.trials if t.value is not None)
        assert len(loaded.trials_dataframe()) == len(mine)
    assert states == {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                      optuna.trial.TrialState.FAIL}
    storage.engine.dispose()
    log.close()
