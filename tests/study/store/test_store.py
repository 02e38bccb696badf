"""The results store on real SQLite and real PostgreSQL."""

from __future__ import annotations

import threading

import pandas as pd
import sqlalchemy as sa

from study import spec, store
from study.store.optuna_log import OptunaLog
from study.errors import UserError
from tests.support.cli import study_file
from tests.support.db import pg_database, read_only_role, table_counts

import pytest

VIEW_COLUMNS = ["study", "optimizer", "seed", "status", "lr", "beta1", "beta2", "eps", "weight_decay", "final_lr",
                "gamma", "beta3", "momentum", "momentum_decay", "alpha", "lr_decay", "initial_accumulator_value",
                "final_train_loss", "final_test_loss", "final_test_accuracy", "best_test_accuracy", "diverged",
                "wall_seconds", "cell", "error", "score", "final_metrics", "hparams",
                "started_at", "finished_at", "device", "peak_memory_mib"]


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


def test_the_results_name_the_hyperparameters_of_a_studys_own_optimizers(db_url, tmp_path):
    """A hyperparameter without a column (an own optimizer's: only the ``hparams`` JSON holds it) becomes a
    column of the results, which name it in their attrs: the analysis takes it, and only it, as one more."""
    from study import analysis
    from study.store.results import OWN_HPARAMS
    from study.store.schema import cells

    engine = store.connect(db_url)
    store.register(engine, spec.load(study_file(tmp_path)))
    with engine.begin() as conn:
        for cell_id, hparams, index in conn.execute(sa.select(cells.c.id, cells.c.hparams, cells.c.cell_index)).all():
            conn.execute(sa.update(cells).where(cells.c.id == cell_id).values(hparams={**hparams, "rho": index % 2}))
    frame = store.results("tiny", engine)
    assert frame.attrs[OWN_HPARAMS] == ("rho",)
    assert frame["rho"].tolist() == [index % 2 for index in range(10)]
    assert analysis.hparam_columns(frame)[-1] == "rho" and analysis.swept_axes(frame, "adam") == ["lr", "rho"]


def test_the_cell_statuses_are_the_documented_ones():
    from study.statuses import ENDED, FINISHED, OPEN, SCORED, CellStatus
    from tests.support.paths import ROOT

    documented = next(line for line in (ROOT / "docs" / "results.md").read_text().splitlines()
                      if line.startswith("| status |"))
    assert documented == f"| status | {', '.join(CellStatus)} |"
    assert set(OPEN) | set(ENDED) == set(CellStatus) and not set(OPEN) & set(ENDED)
    assert set(SCORED) < set(FINISHED) < set(ENDED)


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


# --- read-only connections: nothing is written unless the caller writes ----------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def throwaway_url(request, tmp_path):
    """A new empty database on SQLite or PostgreSQL (this one dropped afterwards)."""
    if request.param == "sqlite":
        sqlite3_file = tmp_path / "results.db"
        sa.create_engine(f"sqlite:///{sqlite3_file}").connect().close()  # an existing, empty file
        yield f"sqlite:///{sqlite3_file}"
        return
    with pg_database() as url:
        yield url


def _objects(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        return set(inspector.get_table_names()) | set(inspector.get_view_names())
    finally:
        engine.dispose()


def _version(url: str) -> str:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT version_num FROM sweep_alembic_version")).scalar()
    finally:
        engine.dispose()


def test_read_only_connect_to_an_empty_database_creates_nothing(throwaway_url):
    with pytest.raises(UserError, match=r"^no adamscape results in .*; submit a study first") as raised:
        store.connect(throwaway_url, read_only=True)
    assert "\n" not in str(raised.value)
    assert _objects(throwaway_url) == set()
    store.connect(throwaway_url)  # a writing connect creates the schema
    assert "sweep_studies" in _objects(throwaway_url)


def test_read_only_connect_to_an_older_or_newer_schema_says_so_and_leaves_it(throwaway_url):
    old = sa.create_engine(throwaway_url)
    store.migrate(old, "0005")
    with pytest.raises(UserError, match=rf"is at schema 0005, this adamscape needs {store.SCHEMA_HEAD}: run any writing command "
                                        r"\(e.g. `adamscape submit`\) with a role that may migrate"):
        store.connect(throwaway_url, read_only=True)
    assert _version(throwaway_url) == "0005" and "sweep_services" not in _objects(throwaway_url)  # 0006's table
    with old.begin() as conn:
        conn.execute(sa.text("UPDATE sweep_alembic_version SET version_num = '0099'"))
    old.dispose()
    for read_only in (True, False):  # a writing command cannot migrate it either
        with pytest.raises(UserError, match="is at schema 0099, newer than this adamscape knows .*upgrade adamscape"):
            store.connect(throwaway_url, read_only=read_only)
    assert _version(throwaway_url) == "0099"


def _try_every_kind_of_write(engine, tmp_path) -> None:
    """Writes through a read-only engine: each a one-line UserError, none retried."""
    writes = [
        lambda: store.register(engine, spec.load(study_file(tmp_path, name="other"))),
        lambda: store.set_state(engine, "tiny", "pause"),
        lambda: store.claim(engine, store.get_study(engine, "tiny"), "driver-x", 2, lease_seconds=60),
        lambda: store.service_beat(engine, "host:1:x", host="host", pid=1, workers=1, ray="local", code="0" * 16),
    ]
    for write in writes:
        with pytest.raises(UserError, match="is open read-only here and refused a write") as raised:
            write()
        assert "\n" not in str(raised.value)
    with pytest.raises(UserError, match="refused a write"):
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM sweep_cells"))


def _a_finished_study(url: str, tmp_path) -> None:
    engine = store.connect(url)
    store.register(engine, spec.load(study_file(tmp_path)))
    claimed = store.claim(engine, store.get_study(engine, "tiny"), "driver-a", 3, lease_seconds=60)
    with store.transaction(engine) as conn:
        store.finish(conn, "driver-a", [{"cell": cell, "status": "complete", "final": {"test_accuracy": 0.5}}
                                        for cell in claimed])
    engine.dispose()


def test_a_read_only_role_reads_results_and_overview_and_every_write_is_refused(tmp_path):
    with pg_database() as url:
        _a_finished_study(url, tmp_path)
        with read_only_role(url) as ro_url:
            before = table_counts(url)
            engine = store.connect(ro_url, read_only=True)
            frame = store.results("tiny", engine)
            assert frame.shape[0] == 10 and (frame["status"] == "complete").sum() == 3
            assert store.results("tiny", ro_url).shape[0] == 10  # a URL: results connects read-only itself
            (row,) = store.overview(engine)
            assert row["name"] == "tiny" and row["counts"] == {"complete": 3, "pending": 7}
            assert store.services_alive(engine) == [] and store.list_studies(engine) == ["tiny"]
            _try_every_kind_of_write(engine, tmp_path)
            engine.dispose()
            assert table_counts(url) == before
            # the role itself may not write either: a session not marked read-only is refused by privileges
            plain = sa.create_engine(ro_url)
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                with plain.begin() as conn:
                    conn.execute(sa.text("DELETE FROM sweep_cells"))
            plain.dispose()
            assert table_counts(url) == before


def test_a_writing_command_through_a_read_only_role_is_one_line_and_writes_nothing(tmp_path):
    """`submit` with the dashboard's role: the server's "permission denied" is one error line, exit 2 —
    on a current schema (the insert is refused) and on an older one (the migration is refused)."""
    from tests.conftest import adamscape, study_file

    with pg_database() as url:
        _a_finished_study(url, tmp_path)
        with read_only_role(url) as ro_url:
            before = table_counts(url)
            refused = adamscape("submit", study_file(tmp_path, name="other"), "--db", ro_url, check=False)
            assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
            assert refused.stderr.startswith("error: ") and "may not do that (permission denied" in refused.stderr
            with sa.create_engine(url).begin() as conn:  # an older schema: only the application role migrates
                conn.execute(sa.text("UPDATE sweep_alembic_version SET version_num = '0005'"))
            older = adamscape("run", "tiny", "--db", ro_url, check=False)
            assert older.returncode == 2 and older.stderr.count("\n") == 1, older.stderr
            assert "may not do that (must be owner of" in older.stderr  # alembic's DDL on the view
            assert table_counts(url) == before


def test_a_read_only_sqlite_connection_refuses_writes_and_keeps_the_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'results.db'}"
    _a_finished_study(url, tmp_path)
    before = table_counts(url)
    engine = store.connect(url, read_only=True)
    assert store.results("tiny", engine).shape[0] == 10
    _try_every_kind_of_write(engine, tmp_path)
    engine.dispose()
    assert table_counts(url) == before


def test_a_file_that_is_not_sqlite_is_one_user_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping: milk, eggs\n" * 20)
    for read_only in (False, True):
        with pytest.raises(UserError) as raised:
            store.connect("sqlite:///notes.txt", read_only=read_only)
        assert str(raised.value) == ("notes.txt is not an SQLite database (file is not a database); point --db / "
                                     "ADAMSCAPE_DB at an adamscape results file or a new path")
    assert notes.read_text() == "shopping: milk, eggs\n" * 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no -wal, -shm or .lock beside it


@pytest.mark.parametrize("url,shown,port", [
    ("postgresql+psycopg://u@localhost:abc/test", "postgresql+psycopg://u@localhost:abc/test", "abc"),
    ("postgresql+psycopg://u:s3cret@db.example:54x2/test", "postgresql+psycopg://u:***@db.example:54x2/test", "54x2"),
])
def test_a_port_that_is_not_a_number_is_one_user_error(url, shown, port):
    for read_only in (False, True):
        with pytest.raises(UserError) as raised:
            store.connect(url, read_only=read_only)
        message = str(raised.value)
        assert message.startswith(f"database URL {shown} has a port that is not a number ({port}); ")
        assert "host:PORT with digits" in message and "--db or ADAMSCAPE_DB" in message and "s3cret" not in message
        assert "\n" not in message


# --- the run order and retrying failed cells --------------------------------------------------------

def test_register_stores_the_run_order_and_claims_follow_it(db_url, tmp_path):
    engine = store.connect(db_url)
    study = spec.load(study_file(tmp_path, body="[optimizers.adam]\nlr = { log = [1e-4, 1e-1], num = 5 }\n"
                                                "beta1 = [0.5, 0.9]\n\n[optimizers.sgdm]\nlr = [0.1, 0.2, 0.3]\n"))
    store.register(engine, study)
    expected = spec.run_order(spec.expand(study))
    assert expected != sorted(expected)  # not file order
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT cell_index, run_order FROM sweep_cells ORDER BY cell_index")).all()
    assert [r.run_order for r in stored] == expected
    row = store.get_study(engine, "tiny")
    leased = []
    for limit in (3, 7, 1, 100):
        batch = store.claim(engine, row, "driver-a", limit, lease_seconds=60)
        assert len(batch) == min(limit, len(expected) - len(leased))
        leased += batch
    assert [expected[c["cell_index"]] for c in leased] == list(range(len(expected)))


def _finished_with_failures(engine, tmp_path):
    """The tiny study run to its end by hand: 3 cells failed (one after a worker died on it), the rest
    complete, each with a curve of its first attempt and its Optuna trial."""
    from study.store.optuna_log import OptunaLog

    store.register(engine, spec.load(study_file(tmp_path)))
    row = store.get_study(engine, "tiny")
    cells = store.claim(engine, row, "driver-a", 100, lease_seconds=60)
    doomed = {cells[1]["id"], cells[4]["id"], cells[8]["id"]}
    with store.transaction(engine) as conn:
        store.record_epochs(conn, "driver-a", [(cell, 1, {"train_loss": 1.0}) for cell in cells])
        store.finish(conn, "driver-a", [{"cell": cell, "status": "failed" if cell["id"] in doomed else "complete",
                                         "error": f"boom {cell['cell_index']}" if cell["id"] in doomed else None,
                                         "final": {} if cell["id"] in doomed else {"test_accuracy": 0.5},
                                         "device": "cpu"} for cell in cells if cell["id"] != cells[8]["id"]])
        store.release(conn, cells[8], "driver-a", lost="worker died: node gone", max_attempts=1)
    log = OptunaLog(engine, row)
    log.open()
    log.report([cell["id"] for cell in cells])
    log.close()
    return row, {cell["id"]: cell for cell in cells}, doomed


def _trials(engine, name="tiny"):
    import optuna

    url = engine.url.render_as_string(hide_password=False)
    return {optimizer: optuna.load_study(study_name=store.optuna_study_name(name, optimizer), storage=url).trials
            for optimizer in ("adam", "sgdm")}


def _rows(engine):
    with engine.connect() as conn:
        return {r["id"]: dict(r) for r in conn.execute(sa.text("SELECT * FROM sweep_cells")).mappings()}


def test_retry_failed_reruns_only_failed_cells_and_keeps_their_history(db_url, tmp_path):
    import optuna

    from study.store.optuna_log import OptunaLog

    engine = store.connect(db_url)
    row, cells, doomed = _finished_with_failures(engine, tmp_path)
    before = _rows(engine)
    assert sorted(r["status"] for r in before.values()).count("failed") == 3
    assert store.queue(engine) == [] and store.overview(engine)[0]["display"] == "finished"
    old_fail = {r["cell_index"]: r["optuna_trial"] for r in before.values() if r["id"] in doomed}

    assert store.retry_failed(engine, "tiny") == 3
    after = _rows(engine)
    for cell_id, cell in after.items():
        if cell_id not in doomed:
            assert cell == before[cell_id]  # finished results are untouched
            continue
        assert cell["status"] == "pending" and cell["attempts"] == 1 and cell["losses"] == 0
        assert cell["error"] == before[cell_id]["error"] and cell["error"]  # the last error, until a new attempt ends
        assert cell["lease_owner"] is None and cell["optuna_trial"] is None and cell["finished_at"] is None
        assert cell["device"] is None and cell["diverged"] is None
    (queued,) = store.queue(engine)  # a finished study is queued again
    assert queued["name"] == "tiny" and queued["claimable"]
    (overview,) = store.overview(engine)
    assert overview["display"] == "running" and overview["position"] == 1  # not "finished" any more
    assert store.get_study(engine, "tiny")["state"] == "active"

    # Optuna: each old FAIL stays, as history, no longer under the cell's index
    trials = _trials(engine)
    history = {t.user_attrs["retried_cell"]: t for ts in trials.values() for t in ts if "retried_cell" in t.user_attrs}
    assert {index: t.number for index, t in history.items()} == old_fail
    assert all(t.state == optuna.trial.TrialState.FAIL and "cell" not in t.user_attrs for t in history.values())
    assert {t.user_attrs["error"] for t in history.values()} == {before[i]["error"] for i in doomed}

    # the next run leases exactly those cells, as new attempts; their first curves stay
    again = store.claim(engine, row, "driver-b", 100, lease_seconds=60)
    assert {c["id"] for c in again} == doomed and all(c["attempts"] == 2 for c in again)
    with store.transaction(engine) as conn:
        store.record_epochs(conn, "driver-b", [(cell, 1, {"train_loss": 0.25}) for cell in again])
        store.finish(conn, "driver-b", [{"cell": cell, "status": "complete", "final": {"test_accuracy": 0.75}}
                                        for cell in again])
    with engine.connect() as conn:
        curves = conn.execute(sa.text("SELECT cell_id, attempt FROM sweep_curves WHERE cell_id IN :ids")
                              .bindparams(sa.bindparam("ids", expanding=True)), {"ids": list(doomed)}).all()
    assert sorted(curves) == sorted((cell_id, attempt) for cell_id in doomed for attempt in (1, 2))
    assert all(_rows(engine)[i]["error"] is None for i in doomed)  # a result clears it
    # a driver that died before reporting them: the next one reconciles them as new trials, not the old FAILs
    log = OptunaLog(engine, row)
    log.open()
    log.reconcile()
    log.close()
    trials = _trials(engine)
    final = _rows(engine)
    for optimizer, ts in trials.items():
        current = {t.user_attrs["cell"]: t for t in ts if "cell" in t.user_attrs}
        mine = {r["cell_index"]: r for r in final.values() if r["optimizer"] == optimizer}
        assert sorted(current) == sorted(mine)  # one trial per cell under its index
        for index, t in current.items():
            assert t.number == mine[index]["optuna_trial"]
            if mine[index]["id"] in doomed:
                assert t.state == optuna.trial.TrialState.COMPLETE and t.value == 0.75
                assert t.number != old_fail[index]
    assert sum(len(ts) for ts in trials.values()) == 10 + 3
    assert store.retry_failed(engine, "tiny") == 0


def test_retry_failed_refuses_a_cancelled_or_unknown_study_and_leaves_a_paused_one_paused(db_url, tmp_path):
    engine = store.connect(db_url)
    _finished_with_failures(engine, tmp_path)
    with pytest.raises(UserError, match="no study named 'ghost'"):
        store.retry_failed(engine, "ghost")
    other = spec.load(study_file(tmp_path, name="other"))
    store.register(engine, other)
    store.set_state(engine, "other", "cancel")
    with pytest.raises(UserError, match="was cancelled; resubmit its file with --replace"):
        store.retry_failed(engine, "other")
    with engine.begin() as conn:  # a failed cell of a paused study: pending again, but only after `resume`
        conn.execute(sa.text("UPDATE sweep_cells SET status = 'pending' WHERE status = 'complete'"))
    store.set_state(engine, "tiny", "pause")
    assert store.retry_failed(engine, "tiny") == 3
    assert store.get_study(engine, "tiny")["state"] == "paused" and store.queue(engine) == []
    assert store.claim(engine, store.get_study(engine, "tiny"), "driver-a", 100, lease_seconds=60) == []
