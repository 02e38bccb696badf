"""The migrations create exactly the tables study.store.schema describes."""

import sqlalchemy as sa

from study import store
from study.store.schema import metadata


def test_migrated_database_matches_the_schema_module(db_url):
    engine = store.connect(db_url)
    inspector = sa.inspect(engine)
    for table in metadata.sorted_tables:
        live = {c["name"] for c in inspector.get_columns(table.name)}
        assert live == {c.name for c in table.columns}, table.name
        primary_key = set(inspector.get_pk_constraint(table.name)["constrained_columns"])
        assert primary_key == {c.name for c in table.primary_key.columns}, table.name


def test_upgrading_an_existing_database_keeps_its_rows(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    store.migrate(engine, "0001")
    with engine.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO sweep_studies (id, name, task, metric, direction, fingerprint, spec, total_cells, created_at)"
            " VALUES (1, 'old', 'digits-mlp', 'final_test_accuracy', 'maximize', 'f', '{}', 1, 0)"))
        connection.execute(sa.text(
            "INSERT INTO sweep_cells (study_id, cell_index, optimizer, seed, lr, status, attempts, final_test_accuracy)"
            " VALUES (1, 0, 'adam', 0, 0.001, 'complete', 1, 0.9)"))
    store.migrate(engine)
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT study, lr, alpha, final_test_accuracy FROM sweep_results")).all()
    assert [tuple(r) for r in rows] == [("old", 0.001, None, 0.9)]


def test_the_schema_head_the_store_checks_is_alembics_head():
    """``connect`` compares the version table with SCHEMA_HEAD without importing alembic: a new
    migration must move it."""
    from alembic.script import ScriptDirectory

    assert store.SCHEMA_HEAD == ScriptDirectory.from_config(store.engine._alembic_config()).get_current_head()


def test_cells_of_a_database_from_0007_get_the_run_order_a_new_study_gets(db_url, tmp_path):
    """0008 computes each existing cell's place in its study's run order from its stored row (hyperparameters
    from the ``hparams`` JSON, or from the columns for rows older than it); finished cells keep their
    results and the pending ones are then leased in that order."""
    from study import spec
    from tests.conftest import study_file

    engine = sa.create_engine(db_url)
    store.migrate(engine, "0007")
    body = "[optimizers.adam]\nlr = { log = [1e-4, 1e-1], num = 5 }\nbeta1 = [0.5, 0.7, 0.9]\n\n" \
           "[optimizers.sgdm]\nlr = [0.01, 0.1, 1.0]\n"
    studies = {name: spec.load(study_file(tmp_path, name=name, body=body, seeds=[3, 1])) for name in ("a", "b")}
    with engine.begin() as conn:
        table = sa.Table("sweep_cells", sa.MetaData(), autoload_with=conn)
        assert "run_order" not in table.c
        for study_id, (name, study) in enumerate(studies.items(), start=1):
            conn.execute(sa.text(
                "INSERT INTO sweep_studies (id, name, task, metric, direction, fingerprint, spec, total_cells, "
                "created_at) VALUES (:id, :name, 'digits-mlp', 'test_accuracy', 'maximize', 'f', '{}', :n, 0)"),
                {"id": study_id, "name": name, "n": study.cell_count()})
            rows = []
            for cell in spec.expand(study):
                row = store.studies._cell_row(study_id, cell, position=0)
                del row["run_order"]
                if name == "b":  # a row from before the hparams JSON: its columns say it all
                    row["hparams"] = None
                row["status"] = "complete" if cell.index % 4 == 0 else "pending"
                rows.append(row)
            conn.execute(sa.insert(table), rows)
    store.migrate(engine)
    engine = store.connect(db_url)
    for study_id, (name, study) in enumerate(studies.items(), start=1):
        expected = spec.run_order(spec.expand(study))
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT cell_index, run_order, status FROM sweep_cells WHERE study_id = :id "
                                          "ORDER BY cell_index"), {"id": study_id}).all()
        assert [r.run_order for r in stored] == expected
        assert [r.status for r in stored] == ["complete" if r.cell_index % 4 == 0 else "pending" for r in stored]
        row = store.get_study(engine, name)
        leased = store.claim(engine, row, "driver", 1000, lease_seconds=60)
        pending = sorted((r for r in stored if r.status == "pending"), key=lambda r: r.run_order)
        assert [c["cell_index"] for c in leased] == [r.cell_index for r in pending]
    engine.dispose()
