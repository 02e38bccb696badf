"""Hyperparameter columns for NAdam, RMSprop and Adagrad; the view shows them (DDL frozen at this revision).

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

OLD_HPARAMS = ("lr", "beta1", "beta2", "eps", "weight_decay", "final_lr", "gamma", "beta3", "momentum")
NEW_HPARAMS = ("momentum_decay", "alpha", "lr_decay", "initial_accumulator_value")
RESULTS = ("final_train_loss", "final_test_loss", "final_test_accuracy", "best_test_accuracy")


def _create_view(hparams: tuple[str, ...]) -> None:
    op.execute(f"""
        CREATE VIEW sweep_results AS
        SELECT s.name AS study, c.optimizer, c.seed, c.status,
               {", ".join(f"c.{name}" for name in hparams)},
               {", ".join(f"c.{name}" for name in RESULTS)},
               c.diverged, c.wall_seconds, c.cell_index AS cell, c.error
        FROM sweep_cells c JOIN sweep_studies s ON s.id = c.study_id
    """)


def upgrade() -> None:
    op.execute("DROP VIEW sweep_results")
    with op.batch_alter_table("sweep_cells") as batch:
        for name in NEW_HPARAMS:
            batch.add_column(sa.Column(name, sa.Float))
    _create_view(OLD_HPARAMS + NEW_HPARAMS)


def downgrade() -> None:
    op.execute("DROP VIEW sweep_results")
    with op.batch_alter_table("sweep_cells") as batch:
        for name in NEW_HPARAMS:
            batch.drop_column(name)
    _create_view(OLD_HPARAMS)
