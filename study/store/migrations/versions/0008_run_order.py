"""The run order: each cell's position in its study's progressive order (``study.spec.run_order``), which
``claim`` leases in; ``cell_index`` stays the cell's identity.

Existing cells get the order a new study would get, computed here from their stored rows (optimizer,
seed and hyperparameters, in cell order), so an interrupted study resumes its pending cells coarse to
fine. The column is added without rebuilding the table (SQLite would drop and copy ``sweep_cells``,
whose curves cascade), so it stays nullable in the database; every insert sets it.

Revision ID: 0008
Revises: 0007
"""
import json

import sqlalchemy as sa
from alembic import op

from study.store import views

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

HPARAMS = views.VERSIONS["0007"].hparams  # the hyperparameter columns at this revision


def _hparams(row) -> dict:
    """A stored cell's hyperparameters: its ``hparams`` JSON, or (rows from before 0005) its columns."""
    stored = row["hparams"]
    if isinstance(stored, str):
        stored = json.loads(stored)
    return stored or {name: row[name] for name in HPARAMS if row[name] is not None}


def upgrade() -> None:
    from study.spec import Cell, run_order  # the order `register` gives a new study

    op.add_column("sweep_cells", sa.Column("run_order", sa.Integer))
    conn = op.get_bind()
    rows = conn.execute(sa.text(f"SELECT id, study_id, cell_index, optimizer, seed, hparams, {', '.join(HPARAMS)} "
                                "FROM sweep_cells ORDER BY study_id, cell_index")).mappings().all()
    by_study: dict[int, list] = {}
    for row in rows:
        by_study.setdefault(row["study_id"], []).append(row)
    updates = []
    for cells in by_study.values():
        order = run_order([Cell(row["cell_index"], row["optimizer"], row["seed"], _hparams(row)) for row in cells])
        updates += [{"id": row["id"], "position": position} for row, position in zip(cells, order)]
    if updates:
        conn.execute(sa.text("UPDATE sweep_cells SET run_order = :position WHERE id = :id"), updates)
    op.create_index("ix_sweep_cells_study_order", "sweep_cells", ["study_id", "run_order"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_sweep_cells_study_order", table_name="sweep_cells")
    op.drop_column("sweep_cells", "run_order")  # SQLite ≥ 3.35 drops a column in place
