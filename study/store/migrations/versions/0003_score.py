"""A score column (the final value of the study's metric) and the final_metrics JSON in the view
(DDL frozen at this revision).

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

HPARAMS = ("lr", "beta1", "beta2", "eps", "weight_decay", "final_lr", "gamma", "beta3", "momentum",
           "momentum_decay", "alpha", "lr_decay", "initial_accumulator_value")
RESULTS = ("final_train_loss", "final_test_loss", "final_test_accuracy", "best_test_accuracy")


def _create_view(extra: str) -> None:
    op.execute(f"""
        CREATE VIEW sweep_results AS
        SELECT s.name AS study, c.optimizer, c.seed, c.status,
               {", ".join(f"c.{name}" for name in HPARAMS)},
               {", ".join(f"c.{name}" for name in RESULTS)},
               c.diverged, c.wall_seconds, c.cell_index AS cell, c.error{extra}
        FROM sweep_cells c JOIN sweep_studies s ON s.id = c.study_id
    """)


def upgrade() -> None:
    op.execute("DROP VIEW sweep_results")
    with op.batch_alter_table("sweep_cells") as batch:
        batch.add_column(sa.Column("score", sa.Float))
    op.execute("""
        UPDATE sweep_cells SET score = CASE
            (SELECT s.metric FROM sweep_studies s WHERE s.id = sweep_cells.study_id)
            WHEN 'test_accuracy' THEN final_test_accuracy
            WHEN 'test_loss' THEN final_test_loss
            WHEN 'train_loss' THEN final_train_loss END
    """)
    _create_view(", c.score, c.final_metrics")


def downgrade() -> None:
    op.execute("DROP VIEW sweep_results")
    with op.batch_alter_table("sweep_cells") as batch:
        batch.drop_column("score")
    _create_view("")
