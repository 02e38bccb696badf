"""Lease bookkeeping for exactly-once runs: ``losses`` counts worker deaths (``attempts`` only
grows now), ``lease_owner`` wide enough for host:pid:uuid on long host names.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

from study.store import views

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

VIEW = views.sql("0003")  # unchanged, but recreated: the table is rebuilt below


def upgrade() -> None:
    op.execute("DROP VIEW sweep_results")  # SQLite rebuilds the table below; the view must not pin it
    with op.batch_alter_table("sweep_cells") as batch:
        batch.add_column(sa.Column("losses", sa.Integer, nullable=False, server_default="0"))
        batch.alter_column("lease_owner", type_=sa.String(255), existing_type=sa.String(64))
    # before, an open cell's attempts counted the workers that died on it (plus the running one)
    op.execute("UPDATE sweep_cells SET losses = CASE status WHEN 'pending' THEN attempts "
               "WHEN 'running' THEN attempts - 1 ELSE 0 END")
    op.execute(VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW sweep_results")
    with op.batch_alter_table("sweep_cells") as batch:
        batch.drop_column("losses")
        batch.alter_column("lease_owner", type_=sa.String(64), existing_type=sa.String(255))
    op.execute(VIEW)
