"""What each cell trained on: its device ("cpu", or "cuda (GPU name)") and, on CUDA, its peak memory.

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

HPARAMS = ("lr", "beta1", "beta2", "eps", "weight_decay", "final_lr", "gamma", "beta3", "momentum",
           "momentum_decay", "alpha", "lr_decay", "initial_accumulator_value")
RESULTS = ("final_train_loss", "final_test_loss", "final_test_accuracy", "best_test_accuracy")


def _view(device: bool) -> str:
    return f"""
    CREATE VIEW sweep_results AS
    SELECT s.name AS study, c.optimizer, c.seed, c.status,
           {", ".join(f"c.{name}" for name in HPARAMS)},
           {", ".join(f"c.{name}" for name in RESULTS)},
           c.diverged, c.wall_seconds, c.cell_index AS cell, c.error, c.score, c.final_metrics, c.hparams,
           c.started_at, c.finished_at{", c.device, c.peak_memory_mib" if device else ""}
    FROM sweep_cells c JOIN sweep_studies s ON s.id = c.study_id
"""


def upgrade() -> None:
    op.execute("DROP VIEW sweep_results")  # SQLite rebuilds the table below; the view must not pin it
    with op.batch_alter_table("sweep_cells") as batch:
        batch.add_column(sa.Column("device", sa.String(255)))
        batch.add_column(sa.Column("peak_memory_mib", sa.Float))
    op.execute(_view(device=True))


def downgrade() -> None:
    op.execute("DROP VIEW sweep_results")
    with op.batch_alter_table("sweep_cells") as batch:
        batch.drop_column("peak_memory_mib")
        batch.drop_column("device")
    op.execute(_view(device=False))
