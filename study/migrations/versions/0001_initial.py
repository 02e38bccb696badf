"""Studies, cells, curves and the sweep_results view.

Revision ID: 0001
Revises:
"""
from alembic import op

from study.schema import RESULTS_VIEW_SQL, curves, studies, cells

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    for table in (studies, cells, curves):
        table.create(bind)
    op.execute(RESULTS_VIEW_SQL)


def downgrade() -> None:
    op.execute("DROP VIEW sweep_results")
    bind = op.get_bind()
    for table in (curves, cells, studies):
        table.drop(bind)
