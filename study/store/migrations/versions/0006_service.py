"""The study service: a queue of studies (priority, paused / cancelled), when each cell started, and the
heartbeat rows of running ``adamscape serve`` processes.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

from study.store import views

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


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
    op.execute(views.sql(revision))


def downgrade() -> None:
    op.execute("DROP VIEW sweep_results")
    op.drop_table("sweep_services")
    with op.batch_alter_table("sweep_cells") as batch:
        batch.drop_column("started_at")
    with op.batch_alter_table("sweep_studies") as batch:
        batch.drop_column("state")
        batch.drop_column("priority")
    op.execute(views.sql(down_revision))
