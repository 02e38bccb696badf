"""Lease bookkeeping for exactly-once runs: ``losses`` counts worker deaths (``attempts`` only
grows now), ``lease_owner`` wide enough for host:pid:uuid on long host names.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

HPARAMS = ("lr", "beta1", "beta2", "eps", "weight_decay", "final_lr", "gamma", "beta3", "momentum",
           "momentum_decay", "alpha", "lr_decay", "initial_accumulator_value")
RESULTS = ("final_train_loss", "final_test_loss", "final_test_accuracy", "best_test_accuracy")
VIEW = f"""
    CREATE VIEW sweep_results AS
    SELECT s.name AS study, c.optimizer, c.seed, c.status,
           {", ".join(f"c.{name}" for name in HPARAMS)},
           {", ".join(f"c.{name}" for name in RESULTS)},
           c.diverged, c.wall_seconds, c.cell_index AS cell, c.error, c.score, c.final_metrics
    FROM sweep_cells c JOIN sweep_studies s ON s.id = c.study_id
"""


def upgrade() -> None:
    op.execute("DROP VIEW sweep_results")  # SQLite rebuilds the table below; the view must not pin it
    with op.batch_alter_table("sweep_cells") as batch:
        batch.add_column(sa.Column("losses", sa.Integer, nullable=False, server_default="0"))
        batch.alter_column("lease_owner", type_=sa.String(255), existing_type=sa.String(64))
    # before, an open cell's attempts counted the workers that died on it (plus the running one)
    op.execute("UPDATE sweep_cells SET losses = CASE status WHEN 'pending' THEN attempts "
               "WHEN 'running' THEN attempts - 1 ELSE 0 END")
    op.execute(VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW sweep_results")
    with op.batch_alter_table("sweep_cells") as batch:
        batch.drop_column("losses")
        batch.alter_column("lease_owner", type_=sa.String(64), existing_type=sa.String(255))
    op.execute(VIEW)
