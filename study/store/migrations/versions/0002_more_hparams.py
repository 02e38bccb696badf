"""Hyperparameter columns for NAdam, RMSprop and Adagrad; the view shows them (DDL frozen at this revision; the
view's in ``study.store.views``).

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

from study.store import views

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NEW_HPARAMS = views.VERSIONS[revision].hparams[len(views.VERSIONS[down_revision].hparams):]


def upgrade() -> None:
    op.execute("DROP VIEW sweep_results")
    with op.batch_alter_table("sweep_cells") as batch:
        for name in NEW_HPARAMS:
            batch.add_column(sa.Column(name, sa.Float))
    op.execute(views.sql(revision))


def downgrade() -> None:
    op.execute("DROP VIEW sweep_results")
    with op.batch_alter_table("sweep_cells") as batch:
        for name in NEW_HPARAMS:
            batch.drop_column(name)
    op.execute(views.sql(down_revision))
