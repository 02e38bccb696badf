"""The results store on real SQLite and real PostgreSQL."""

from __future__ import annotations

import threading

import pandas as pd
import sqlalchemy as sa

from study import spec, store
from study.optuna_log import OptunaLog
from study.errors import UserError
from tests.conftest import study_file

import pytest

VIEW_COLUMNS = ["study", "optimizer", "seed", "status", "lr", "beta1", "beta2", "eps", "weight_decay", "final_lr",
                "gamma", "beta3", "momentum", "momentum_decay", "alpha", "lr_decay", "initial_accumulator_value",
                "final_train_loss", "final_test_loss", "final_test_accuracy", "best_test_accuracy", "diverged",
                "wall_seconds", "cell", "error", "score", "final_metrics", "hparams",
                "started_at", "finished_at"]


def test_schema_lives_beside_optunas_without_collisions(db_url, tmp_path):
    engine = store.connect(db_url)
    store.register(engine, spec.load(study_file(tmp_path)))
    OptunaLog(engine, store.get_study(engine, "tiny")).open()  # the first run creates Optuna's studies
    inspector = sa.inspect(engine)
    tables = set(inspector.get_table_names())
    assert {"studies", "trials", "alembic_version"} <= tables  # Optuna's, created in the same database
    ours = {t for t in tables if t.startswith("sweep_")}
    assert ours == {"sweep_studies", "sweep_cells", "sweep_curves", "sweep_services", "sweep_alembic_version"}
    assert "sweep_results" in inspector.get_view_names()
    with engine.connect() as conn:
        columns = list(conn.execute(sa.text("SELECT * FROM sweep_results")).keys())
    assert columns == VIEW_COLUMNS


def test_register_is_idempotent_and_refuses_a_changed_file(db_url, tmp_path):
    engine = store.connect(db_url)
    study = spec.load(study_file(tmp_path))
    assert store.register(engine, study) == ("created", 10)
    assert store.register(engine, study) == ("unchanged", 10)
    changed = spec.load(study_file(tmp_path, epochs=3))
    with pytest.raises(UserError, match="--replace"):
        store.register(engine, changed)
    assert store.results("tiny", engine).shape[0] == 10
    assert store.register(engine, changed, replace=True) == ("replaced", 10)
    assert store.get_study(engine, "tiny")["spec"]["epochs"] == 3


def test_two_drivers_never_lease_the_same_cell(db_url, tmp_path):
    engine = store.connect(db_url)
    store.register(engine, spec.load(study_file(tmp_path)))
    study_id = store.get_study(engine, "tiny")  # the study row: leases check it is still the registered one
    first = store.claim(engine, study_id, "driver-a", 6, lease_seconds=60)
    second = store.claim(engine, study_id, "driver-b", 6, lease_seconds=60)
    assert len(first) == 6 and len(second) == 4
    assert not {c["id"] for c in first} & {c["id"] for c in second}
    assert store.claim(engine, study_id, "driver-c", 6, lease_seconds=60) == []
    # an expired lease is taken over, and the old owner can no longer finish that cell
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE sweep_cells SET lease_expires = 0 WHERE lease_owner = 'driver-a'"))
    taken = store.claim(engine, study_id, "driver-c", 10, lease_seconds=60)
    assert {c["id"] for c in taken} == {c["id"] for c in first}
    assert all(c["attempts"] == 2 for c in taken)
    with engine.begin() as conn:
        assert not store.finish(conn, "driver-a", [{"cell": first[0], "status": "complete",
                                                    "final": {"test_accuracy": 0.5}}])
        assert store.finish(conn, "driver-c", [{"cell": taken[0], "status": "complete",
                                                "final": {"test_accuracy": float("nan")}}]) == {taken[0]["id"]}
    row = store.results("tiny", engine).set_index("cell").loc[taken[0]["cell_index"]]
    assert row["status"] == "complete" and pd.isna(row["final_test_accuracy"])  # NaN is stored as NULL


def test_a_write_transaction_reads_and_writes_one_state_of_the_database(db_url, tmp_path):
    # A driver checks which cells it still holds, then stores their epochs; a `submit --replace` from
    # another process must not delete those cells in between (on SQLite the insert then broke the
    # curves' foreign key, and a reused cell id could be claimed for the wrong study).
    engine, other = store.connect(db_url), store.connect(db_url)
    store.register(engine, spec.load(study_file(tmp_path)))
    claimed = store.claim(engine, store.get_study(engine, "tiny"), "driver-a", 3, lease_seconds=60)
    changed = spec.load(study_file(tmp_path, epochs=3))
    replaced = threading.Event()
    replace = threading.Thread(target=lambda: (store.register(other, changed, replace=True), replaced.set()))
    with store.transaction(engine) as conn:
        assert store.held(conn, "driver-a", [cell["id"] for cell in claimed]) == {cell["id"] for cell in claimed}
        replace.start()
        assert not replaced.wait(1.5), "the replace went through between this transaction's read and its write"
        store.record_epochs(conn, "driver-a", [(cell, 1, {"train_loss": 0.5}) for cell in claimed])
    replace.join(30)
    assert replaced.is_set()
    assert store.get_study(engine, "tiny")["spec"]["epochs"] == 3
    with engine.connect() as conn:  # the old cells' curves went with them
        assert conn.execute(sa.text("SELECT count(*) FROM sweep_curves")).scalar() == 0


def test_read_commands_do_not_create_a_database(tmp_path):
    with pytest.raises(UserError, match="no results database"):
        store.connect(f"sqlite:///{tmp_path / 'missing.db'}", must_exist=True)
    assert not (tmp_path / "missing.db").exists()


def test_unreachable_database_is_a_user_error():
    with pytest.raises(UserError, match="cannot reach the results database"):
        store.connect("postgresql+psycopg://nobody@127.0.0.1:1/none")
