"""Studies, cells, curves and the sweep_results view (DDL frozen at this revision; the view's in
``study.store.views``).

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

from study.store import views

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

VIEW = views.VERSIONS[revision]  # its hyperparameter and results columns are the table's


def upgrade() -> None:
    op.create_table(
        "sweep_studies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("fingerprint", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("total_cells", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "sweep_cells",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("study_id", sa.Integer, sa.ForeignKey("sweep_studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("cell_index", sa.Integer, nullable=False),
        sa.Column("optimizer", sa.String(32), nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        *[sa.Column(name, sa.Float) for name in VIEW.hparams],
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_expires", sa.Float),
        *[sa.Column(name, sa.Float) for name in VIEW.results],
        sa.Column("final_metrics", sa.JSON),
        sa.Column("diverged", sa.Boolean),
        sa.Column("wall_seconds", sa.Float),
        sa.Column("error", sa.Text),
        sa.Column("optuna_trial", sa.Integer),
        sa.Column("finished_at", sa.Float),
        sa.UniqueConstraint("study_id", "cell_index", name="uq_sweep_cells_study_index"),
    )
    op.create_index("ix_sweep_cells_study_status", "sweep_cells", ["study_id", "status"])
    op.create_table(
        "sweep_curves",
        sa.Column("cell_id", sa.Integer, sa.ForeignKey("sweep_cells.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("epoch", sa.Integer, primary_key=True),
        sa.Column("train_loss", sa.Float),
        sa.Column("test_loss", sa.Float),
        sa.Column("test_accuracy", sa.Float),
        sa.Column("metrics", sa.JSON, nullable=False),
    )
    op.execute(VIEW.sql())


def downgrade() -> None:
    op.execute("DROP VIEW sweep_results")
    for table in ("sweep_curves", "sweep_cells", "sweep_studies"):
        op.drop_table(table)
