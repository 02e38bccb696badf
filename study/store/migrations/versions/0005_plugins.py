"""A study file's own optimizers and tasks: longer names, every hyperparameter of a cell as JSON.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

HPARAMS = ("lr", "beta1", "beta2", "eps", "weight_decay", "final_lr", "gamma", "beta3", "momentum",
           "momentum_decay", "alpha", "lr_decay", "initial_accumulator_value")
RESULTS = ("final_train_loss", "final_test_loss", "final_test_accuracy", "best_test_accuracy")


def _view(hparams_json: bool) -> str:
    return f"""
    CREATE VIEW sweep_results AS
    SELECT s.name AS study, c.optimizer, c.seed, c.status,
           {", ".join(f"c.{name}" for name in HPARAMS)},
           {", ".join(f"c.{name}" for name in RESULTS)},
           c.diverged, c.wall_seconds, c.cell_index AS cell, c.error, c.score, c.final_metrics
           {", c.hparams" if hparams_json else ""}
    FROM sweep_cells c JOIN sweep_studies s ON s.id = c.study_id
"""


def upgrade() -> None:
    op.execute("DROP VIEW sweep_results")  # SQLite rebuilds the tables below; the view must not pin them
    with op.batch_alter_table("sweep_cells") as batch:
        batch.alter_column("optimizer", type_=sa.String(255), existing_type=sa.String(32))
        batch.add_column(sa.Column("hparams", sa.JSON))
    with op.batch_alter_table("sweep_studies") as batch:
        batch.alter_column("task", type_=sa.String(255), existing_type=sa.String(64))
    op.execute(_view(hparams_json=True))


def downgrade() -> None:
    op.execute("DROP VIEW sweep_results")
    with op.batch_alter_table("sweep_cells") as batch:
        batch.drop_column("hparams")
        batch.alter_column("optimizer", type_=sa.String(32), existing_type=sa.String(255))
    with op.batch_alter_table("sweep_studies") as batch:
        batch.alter_column("task", type_=sa.String(64), existing_type=sa.String(255))
    op.execute(_view(hparams_json=False))
