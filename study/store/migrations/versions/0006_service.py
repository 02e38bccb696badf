"""The study service: a queue of studies (priority, paused / cancelled), when each cell started, and the
heartbeat rows of running ``adamscape serve`` processes.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

HPARAMS = ("lr", "beta1", "beta2", "eps", "weight_decay", "final_lr", "gamma", "beta3", "momentum",
           "momentum_decay", "alpha", "lr_decay", "initial_accumulator_value")
RESULTS = ("final_train_loss", "final_test_loss", "final_test_accuracy", "best_test_accuracy")


def _view(times: bool) -> str:
    return f"""
    CREATE VIEW sweep_results AS
    SELECT s.name AS study, c.optimizer, c.seed, c.status,
           {", ".join(f"c.{name}" for name in HPARAMS)},
           {", ".join(f"c.{name}" for name in RESULTS)},
           c.diverged, c.wall_seconds, c.cell_index AS cell, c.error, c.score, c.final_metrics, c.hparams
           {", c.started_at, c.finished_at" if times else ""}
    FROM sweep_cells c JOIN sweep_studies s ON s.id = c.study_id
"""


def upgrade() -> None:
    op.execute("DROP VIEW sweep_results")
    with op.batch_alter_table("sweep_studies") as batch:
        batch.add_column(sa.Column("priority", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("state", sa.String(16), nullable=False, server_default="active"))
    with op.batch_alter_table("sweep_cells") as batch:
        batch.add_column(sa.Column("started_at", sa.Float))
    op.create_table(
        "sweep_services",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False, unique=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("workers", sa.Integer, nullable=False),
        sa.Column("ray", sa.String(255), nullable=False),
        sa.Column("code", sa.String(16), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
    )
    op.execute(_view(times=True))


def downgrade() -> None:
    op.execute("DROP VIEW sweep_results")
    op.drop_table("sweep_services")
    with op.batch_alter_table("sweep_cells") as batch:
        batch.drop_column("started_at")
    with op.batch_alter_table("sweep_studies") as batch:
        batch.drop_column("state")
        batch.drop_column("priority")
    op.execute(_view(times=False))
