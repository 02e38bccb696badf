"""What each cell trained on: its device ("cpu", or "cuda (GPU name)") and, on CUDA, its peak memory.

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

from study.store import views

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP VIEW sweep_results")  # SQLite rebuilds the table below; the view must not pin it
    with op.batch_alter_table("sweep_cells") as batch:
        batch.add_column(sa.Column("device", sa.String(255)))
        batch.add_column(sa.Column("peak_memory_mib", sa.Float))
    op.execute(views.sql(revision))


def downgrade() -> None:
    op.execute("DROP VIEW sweep_results")
    with op.batch_alter_table("sweep_cells") as batch:
        batch.drop_column("peak_memory_mib")
        batch.drop_column("device")
    op.execute(views.sql(down_revision))
