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


# the view exactly as migration 0007 created it before its versions moved to study.store.views: SQLite keeps
# the text it was given, which must not change for a database migrated today
VIEW_0007 = """CREATE VIEW sweep_results AS
    SELECT s.name AS study, c.optimizer, c.seed, c.status,
           c.lr, c.beta1, c.beta2, c.eps, c.weight_decay, c.final_lr, c.gamma, c.beta3, c.momentum, c.momentum_decay, c.alpha, c.lr_decay, c.initial_accumulator_value,
           c.final_train_loss, c.final_test_loss, c.final_test_accuracy, c.best_test_accuracy,
           c.diverged, c.wall_seconds, c.cell_index AS cell, c.error, c.score, c.final_metrics, c.hparams,
           c.started_at, c.finished_at, c.device, c.peak_memory_mib
    FROM sweep_cells c JOIN sweep_studies s ON s.id = c.study_id"""


def test_the_migrated_view_is_the_newest_version_and_its_text_is_unchanged(db_url):
    from optimizers import HPARAM_NAMES
    from study.store import views

    engine = store.connect(db_url)
    with engine.connect() as conn:
        assert list(conn.execute(sa.text("SELECT * FROM sweep_results")).keys()) == views.NEWEST.columns()
        if engine.dialect.name == "sqlite":
            assert conn.execute(sa.text("SELECT sql FROM sqlite_master WHERE name = 'sweep_results'")).scalar() \
                == VIEW_0007
    engine.dispose()
    assert views.NEWEST.hparams == HPARAM_NAMES  # a new registry hyperparameter needs a column and a view version


def test_every_view_version_survives_a_downgrade_and_upgrade(tmp_path):
    """Each migration recreates the version before it on downgrade (columns as that version declares)."""
    from alembic import command

    from study.store import views

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'steps.db'}")
    store.migrate(engine)
    config = store.engine._alembic_config()
    for revision in sorted(views.VERSIONS, reverse=True)[1:]:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, revision)
        with engine.connect() as conn:
            assert list(conn.execute(sa.text("SELECT * FROM sweep_results")).keys()) == \
                views.VERSIONS[revision].columns(), revision
    store.migrate(engine)
    with engine.connect() as conn:
        assert list(conn.execute(sa.text("SELECT * FROM sweep_results")).keys()) == views.NEWEST.columns()
    engine.dispose()


NEW_MIGRATION = '''"""A results column: each cell's final gradient norm.

Revision ID: 0100
Revises: {head}
"""
import sqlalchemy as sa
from alembic import op

from study.store import views

revision = "0100"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP VIEW sweep_results")
    op.add_column("sweep_cells", sa.Column("final_grad_norm", sa.Float))
    op.execute(views.sql(revision))


def downgrade() -> None:
    op.execute("DROP VIEW sweep_results")
    op.drop_column("sweep_cells", "final_grad_norm")
    op.execute(views.sql("{view}"))
'''

WITH_THE_COLUMN = '''
import json, sys
import sqlalchemy as sa
from study import analysis, spec, store
from study.store.schema import metadata

engine = store.connect(sys.argv[1])
live = {c["name"] for c in sa.inspect(engine).get_columns("sweep_cells")}
store.register(engine, spec.load(sys.argv[2]))
study = store.get_study(engine, "tiny")
cells = store.claim(engine, study, "driver", 100, lease_seconds=60)
with engine.begin() as conn:
    store.finish(conn, "driver", [{"cell": cell, "status": "complete", "final": {"test_accuracy": 0.9,
                                   "grad_norm": 1.0 + cell["cell_index"]}} for cell in cells], study["metric"])
frame = store.results("tiny", engine)
scores = analysis.cell_scores(frame, "test_accuracy")
print(json.dumps({"head": store.SCHEMA_HEAD, "table_agrees": live == {c.name for c in metadata.tables["sweep_cells"].c},
                  "columns": list(frame.columns), "values": frame.set_index("cell")["final_grad_norm"].tolist(),
                  "hparams": analysis.hparam_columns(frame), "configurations": len(scores),
                  "runs": scores["runs"].tolist()}))
'''


def test_a_new_results_column_is_one_view_version_and_one_migration(tmp_path):
    """Adding a results column touches two source files: ``study/store/views.py`` (a view version with the
    column among the results) and a new migration (adds the column to ``sweep_cells``, creates that
    version). The rest follows: the table, what a finished cell writes (``final_<metric>`` from its final
    metrics), the results frame, and the analysis, which does not take it for a hyperparameter."""
    import filecmp
    import json
    import os
    import shutil
    import subprocess
    import sys

    from study.store import views
    from tests.support.cli import study_file
    from tests.support.paths import ROOT

    copy = tmp_path / "tree"
    shutil.copytree(ROOT / "study", copy / "study", ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "study" / "store" / "views.py", "a") as view_file:  # the one declaration
        view_file.write('VERSIONS["0100"] = replace(NEWEST, results=(*NEWEST.results, "final_grad_norm"))\n'
                        'NEWEST = VERSIONS["0100"]\n')
    (copy / "study" / "store" / "migrations" / "versions" / "0100_grad_norm.py").write_text(
        NEW_MIGRATION.format(head=store.SCHEMA_HEAD, view=max(views.VERSIONS)))

    changed = []

    def compare(diff: filecmp.dircmp, where: str = "") -> None:
        changed.extend(f"{where}{name}" for name in diff.diff_files + diff.left_only + diff.right_only
                       if name != "__pycache__")
        for name, sub in diff.subdirs.items():
            compare(sub, f"{where}{name}/")

    compare(filecmp.dircmp(ROOT / "study", copy / "study"))
    assert sorted(changed) == ["store/migrations/versions/0100_grad_norm.py", "store/views.py"]

    url = f"sqlite:///{tmp_path / 'results.db'}"
    ran = subprocess.run([sys.executable, "-c", WITH_THE_COLUMN, url, str(study_file(tmp_path))], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": f"{copy}:{ROOT}"})
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout.splitlines()[-1])
    assert seen["head"] == "0100" and seen["table_agrees"]
    columns = seen["columns"]
    assert columns[columns.index("best_test_accuracy") - 3:columns.index("best_test_accuracy") + 2] == [
        "final_train_loss", "final_test_loss", "final_test_accuracy", "best_test_accuracy", "final_grad_norm"]
    assert seen["values"] == [1.0 + index for index in range(10)]  # each cell's final grad_norm
    assert "final_grad_norm" not in seen["hparams"] and "lr" in seen["hparams"]
    assert seen["configurations"] == 5 and seen["runs"] == [2] * 5  # its 10 values split no configuration
