"""The CLI end to end: real console script, real Ray head, real SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import subprocess

import optuna
import pandas as pd
import pytest
import sqlalchemy as sa

from study import store
from study.catalog import TrainingProtocol
from tests.conftest import adamscape, study_file
from workers import training


def _direct_run(row) -> dict:
    """Train the cell in this process, independently of Ray and the database."""
    hparams = {n: row[n] for n in ("lr", "beta1", "beta2", "eps", "weight_decay", "momentum") if pd.notna(row[n])}
    *_, summary = training.train("digits-mlp", row["optimizer"], hparams, int(row["seed"]),
                                 TrainingProtocol(epochs=2, batch_size=128))
    return summary


def test_submit_run_results_end_to_end(db_url, ray_address, tmp_path):
    path = study_file(tmp_path)
    first = adamscape("submit", path, "--db", db_url)
    assert "10 cells" in first.stdout
    assert "unchanged" in adamscape("submit", path, "--db", db_url).stdout
    adamscape("run", "tiny", "--db", db_url, "--address", ray_address, "--workers", "2")

    frame = pd.read_csv(io.StringIO(adamscape("results", "tiny", "--db", db_url, "--format", "csv").stdout))
    assert len(frame) == 10 and frame["cell"].tolist() == list(range(10))
    assert (frame.groupby(["optimizer"]).size().to_dict()) == {"adam": 6, "sgdm": 4}
    adam, sgdm = frame[frame.optimizer == "adam"], frame[frame.optimizer == "sgdm"]
    # values actually used, defaults included; NULL where the optimizer has no such hyperparameter
    assert set(adam.beta1) == {0.9} and set(adam.beta2) == {0.999} and set(adam.eps) == {1e-8}
    assert adam.momentum.isna().all() and adam.final_lr.isna().all() and sgdm.beta1.isna().all()
    assert set(sgdm.momentum) == {0.9} and sorted(set(adam.lr)) == pytest.approx([1e-3, 1e-2, 1e-1])
    # an lr of 1000 for SGD diverges, everything else completes
    exploded = frame[(frame.optimizer == "sgdm") & (frame.lr == 1000.0)]
    assert set(exploded.status) == {"diverged"} and exploded.diverged.all()
    healthy = frame.drop(exploded.index)
    assert set(healthy.status) == {"complete"} and not healthy.diverged.any()
    assert (healthy.best_test_accuracy >= healthy.final_test_accuracy).all()
    assert (healthy.wall_seconds > 0).all()
    # the numbers in the database are the numbers the cell produces when trained directly
    for _, row in healthy.iloc[[0, 5]].iterrows():
        direct = _direct_run(row)
        assert row.final_test_accuracy == pytest.approx(direct["final"]["test_accuracy"], abs=1e-6)
        assert row.final_train_loss == pytest.approx(direct["final"]["train_loss"], rel=1e-4)

    # the same rows through pandas and through plain SQL on the view
    assert store.results("tiny", db_url)["final_test_accuracy"].tolist() == pytest.approx(
        frame["final_test_accuracy"].tolist(), nan_ok=True)
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        counts = dict(conn.execute(sa.text(
            "SELECT status, COUNT(*) FROM sweep_results WHERE study = 'tiny' GROUP BY status")).all())
        epochs = conn.execute(sa.text("SELECT COUNT(*) FROM sweep_curves")).scalar()
    assert counts == {"complete": 8, "diverged": 2}
    assert epochs == 8 * 2 + sum(1 for _ in range(2))  # 2 epochs per healthy cell, 1 per diverged cell

    # one Optuna trial per cell, in its optimizer's Optuna study
    trials = [t for key in ("adam", "sgdm")
              for t in optuna.load_study(study_name=f"adamscape/tiny/{key}", storage=db_url).trials]
    assert sorted(t.user_attrs["cell"] for t in trials) == list(range(10))
    assert sum(t.state == optuna.trial.TrialState.PRUNED for t in trials) == 2

    as_json = json.loads(adamscape("results", "tiny", "--db", db_url, "--format", "json").stdout)
    assert len(as_json) == 10 and as_json[0]["study"] == "tiny"
    assert "tiny" in adamscape("status", "--db", db_url).stdout


def _run_rc(*args, **kw) -> subprocess.CompletedProcess:
    return adamscape(*args, check=False, **kw)


@pytest.mark.parametrize("args,needle", [
    (["status", "--db", "sqlite:///{tmp}/none.db"], "no results database"),
    (["run", "ghost", "--db", "{db}"], "no study named 'ghost'"),
    (["run", "ghost", "--db", "{db}", "--population", "0"], "--population must be auto or a whole number"),
    (["results", "ghost", "--db", "{db}"], "no study named 'ghost'"),
    (["submit", "{tmp}/missing.toml", "--db", "{db}"], "not found"),
    (["submit", "{bad}", "--db", "{db}"], "unknown optimizer 'adm'"),
    (["status", "--db", "postgresql+psycopg://nobody@127.0.0.1:1/none"], "cannot reach the results database"),
    (["status", "--db", "not a url"], "is not a URL"),
    (["submit", "{nodata}", "--db", "{db}"], "set download = true in the study file"),
])
def test_user_errors_are_one_line_exit_2_and_write_nothing(args, needle, tmp_path, sqlite_url):
    engine = store.connect(sqlite_url)  # an existing, empty database
    bad = study_file(tmp_path, name="bad", body="[optimizers.adm]\nlr = 0.1\n")
    nodata = study_file(tmp_path, name="nodata", task="cifar10-3c3d", data_dir=str(tmp_path / "no-such-dir"))
    result = _run_rc(*[a.format(tmp=tmp_path, db=sqlite_url, bad=bad, nodata=nodata) for a in args])
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("error: ") == 1
    assert store.list_studies(engine) == []
    assert not (tmp_path / "none.db").exists()


def test_changed_file_is_refused_and_unreachable_ray_is_reported(tmp_path, sqlite_url):
    adamscape("submit", study_file(tmp_path), "--db", sqlite_url)
    changed = _run_rc("submit", study_file(tmp_path, epochs=3), "--db", sqlite_url)
    assert changed.returncode == 2 and "--replace" in changed.stderr
    assert store.get_study(store.connect(sqlite_url), "tiny")["spec"]["epochs"] == 2
    no_ray = _run_rc("run", "tiny", "--db", sqlite_url, "--address", "127.0.0.1:1", timeout=120)
    assert no_ray.returncode == 2 and "cannot reach the Ray cluster" in no_ray.stderr
