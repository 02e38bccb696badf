"""Submits that race, and values that used to pass `submit` but break storage: no Ray needed."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
import sqlalchemy as sa

from study import spec, store
from study.cli import main
from study.driver.runner import run
from tests.support.cli import write_study
from tests.support.db import query
from tests.support.paths import BIN
from tests.support.pool import FAST, ScriptedPool

BODY = "[optimizers.adam]\nlr = [1e-3, 1e-2]\n"


def test_concurrent_submits_of_one_file_on_an_empty_database(db_url, tmp_path):
    """Three processes migrate the empty database (``db_url`` is a new one, no tables at all) and
    register one new file at once: one registers, the others find it registered; no traceback."""
    empty_db = db_url
    path = write_study(tmp_path / "race.toml", "race", BODY, epochs=1)
    processes = [subprocess.Popen([str(BIN / "adamscape"), "submit", str(path), "--db", empty_db],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outcomes = [(p.wait(timeout=120), *p.communicate()) for p in processes]
    assert [code for code, _, _ in outcomes] == [0, 0, 0], [err for _, _, err in outcomes]
    said = sorted("unchanged" in out for _, out, _ in outcomes)
    assert said == [False, True, True]
    assert query(empty_db, "SELECT name, total_cells FROM sweep_studies") == [("race", 2)]


def _cli(capsys, *args) -> tuple[int, str]:
    """The console script's entry point, in this process (its start-up is tested elsewhere)."""
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["adamscape", *map(str, args)])
        with pytest.raises(SystemExit) as exit_:
            main()
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize("line", [
    "seeds = [9223372036854775808]",  # 2**63: OverflowError on SQLite
    "seeds = [2147483648]",  # integer out of range on PostgreSQL
    "seeds = [9223372036854775807]",
    "weight_decay = inf",  # Token "Infinity" is invalid JSON on PostgreSQL
    "divergence_factor = inf",
    "[task_options]\nC = inf",
])
def test_values_that_broke_storage_are_refused_before_anything_is_written(line, db_url, tmp_path, capsys):
    top = 'name = "bad"\ntask = "reddi"\nmetric = "x"\n' + ("" if line.startswith("seeds") else "seeds = [0]\n")
    table = line.startswith("[")
    path = tmp_path / "bad.toml"
    path.write_text(top + ("" if table else line + "\n") + BODY + ("\n" + line + "\n" if table else ""))
    store.connect(db_url)  # an existing database: nothing may be added to it
    code, stderr = _cli(capsys, "submit", path, "--db", db_url)
    assert code == 2 and "Traceback" not in stderr, stderr
    assert stderr.startswith("error: ") and len(stderr.strip().splitlines()) == 1
    assert query(db_url, "SELECT COUNT(*) FROM sweep_studies")[0][0] == 0
    assert optuna.get_all_study_names(storage=db_url) == []


def test_an_optuna_study_left_behind_is_rebuilt_not_reused(db_url, tmp_path):
    """On main a failed submit left an orphan Optuna study that a corrected file reused: a test_loss
    study kept direction MAXIMIZE. Whatever is left under the name, the run's studies are its own."""
    orphan = optuna.create_study(study_name=store.optuna_study_name("orphan", "adam"), storage=db_url,
                                 direction="maximize")
    orphan.add_trial(optuna.trial.create_trial(value=1.0))
    engine = store.connect(db_url)
    store.register(engine, spec.load(write_study(tmp_path / "o.toml", "orphan", BODY, epochs=2,
                                                 task="digits-mlp", metric="test_loss")))
    run(engine, "orphan", ScriptedPool(size=2), FAST)
    rebuilt = optuna.load_study(study_name=store.optuna_study_name("orphan", "adam"), storage=db_url)
    assert rebuilt.direction == optuna.study.StudyDirection.MINIMIZE
    assert sorted(t.user_attrs["cell"] for t in rebuilt.trials) == [0, 1]


def test_legacy_single_optuna_study_is_migrated_to_per_optimizer_studies(sqlite_url, tmp_path):
    """A database from before per-optimizer studies: its `adamscape/NAME` study goes, its finished
    cells are reported again into their optimizer's study."""
    engine = store.connect(sqlite_url)
    store.register(engine, spec.load(write_study(tmp_path / "l.toml", "legacy", BODY, epochs=2)))
    run(engine, "legacy", ScriptedPool(size=2), FAST)
    optuna.delete_study(study_name=store.optuna_study_name("legacy", "adam"), storage=sqlite_url)
    old = optuna.create_study(study_name="adamscape/legacy", storage=sqlite_url)
    old.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"cell": 0}))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE sweep_cells SET optuna_trial = 0"))
    run(engine, "legacy", ScriptedPool(size=2), FAST)
    assert "adamscape/legacy" not in optuna.get_all_study_names(storage=sqlite_url)
    trials = optuna.load_study(study_name="adamscape/legacy/adam", storage=sqlite_url).trials
    assert sorted(t.user_attrs["cell"] for t in trials) == [0, 1]
