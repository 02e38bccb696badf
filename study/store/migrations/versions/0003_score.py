"""A score column (the final value of the study's metric) and the final_metrics JSON in the view
(DDL frozen at this revision; the view's in ``study.store.views``).

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

from study.store import views

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


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
    op.execute(views.sql(revision))


def downgrade() -> None:
    op.execute("DROP VIEW sweep_results")
    with op.batch_alter_table("sweep_cells") as batch:
        batch.drop_column("score")
    op.execute(views.sql(down_revision))
