"""A study file's own optimizers and tasks: longer names, every hyperparameter of a cell as JSON.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

from study.store import views

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP VIEW sweep_results")  # SQLite rebuilds the tables below; the view must not pin them
    with op.batch_alter_table("sweep_cells") as batch:
        batch.alter_column("optimizer", type_=sa.String(255), existing_type=sa.String(32))
        batch.add_column(sa.Column("hparams", sa.JSON))
    with op.batch_alter_table("sweep_studies") as batch:
        batch.alter_column("task", type_=sa.String(255), existing_type=sa.String(64))
    op.execute(views.sql(revision))


def downgrade() -> None:
    op.execute("DROP VIEW sweep_results")
    with op.batch_alter_table("sweep_cells") as batch:
        batch.drop_column("hparams")
        batch.alter_column("optimizer", type_=sa.String(32), existing_type=sa.String(255))
    with op.batch_alter_table("sweep_studies") as batch:
        batch.alter_column("task", type_=sa.String(64), existing_type=sa.String(255))
    op.execute(views.sql("0003"))
