"""The migrations create exactly the tables study.schema describes."""

import sqlalchemy as sa

from study import store
from study.schema import metadata


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

    assert store.SCHEMA_HEAD == ScriptDirectory.from_config(store._alembic_config()).get_current_head()
