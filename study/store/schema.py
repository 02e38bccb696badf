"""adamscape's tables as the queries see them (and ``views`` the ``sweep_results`` view); ``migrations/``
creates them (a test checks they agree).

All are prefixed ``sweep_`` so they never collide with Optuna's (``studies``,
``trials``, ``alembic_version`` …) in the same database."""

from __future__ import annotations

from sqlalchemy import (
                        JSON,
                        Boolean,
                        Column,
                        Float,
                        ForeignKey,
                        Index,
                        Integer,
                        MetaData,
                        String,
                        Table,
                        Text,
                        UniqueConstraint,
)

from optimizers import HPARAM_NAMES
from study.statuses import CellStatus
from study.store.views import NEWEST

VERSION_TABLE = "sweep_alembic_version"
RESULT_COLUMNS = NEWEST.results  # the results columns the view shows (views.py declares them)

metadata = MetaData()

studies = Table(
    "sweep_studies", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("task", String(255), nullable=False),  # a built-in name or the file's own (study.plugins)
    Column("metric", String(64), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("fingerprint", String(16), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("total_cells", Integer, nullable=False),
    Column("created_at", Float, nullable=False),  # unix seconds
    Column("priority", Integer, nullable=False, default=0),  # higher runs first (`submit --priority`)
    Column("state", String(16), nullable=False, default="active"),  # active | paused | cancelled
)

cells = Table(
    "sweep_cells", metadata,
    Column("id", Integer, primary_key=True),
    Column("study_id", Integer, ForeignKey("sweep_studies.id", ondelete="CASCADE"), nullable=False),
    Column("cell_index", Integer, nullable=False),  # the cell's identity in its study: expand()'s (file) order
    # its position in the study's run order (spec.run_order): claim leases in it. Set for every cell by
    # register and, for cells of older databases, by migration 0008 (the column stays nullable there, so
    # that SQLite never rebuilds the table)
    Column("run_order", Integer),
    Column("optimizer", String(255), nullable=False),  # as the study file names it
    Column("seed", Integer, nullable=False),
    *[Column(name, Float) for name in HPARAM_NAMES],
    Column("hparams", JSON),  # every hyperparameter of the cell (a plugin's may have other names)
    Column("status", String(16), nullable=False, default=CellStatus.PENDING),  # a CellStatus
    Column("attempts", Integer, nullable=False, default=0),  # leases taken; only grows (curves are keyed by it)
    Column("losses", Integer, nullable=False, default=0),  # workers that died on it (max_attempts counts these)
    Column("lease_owner", String(255)),  # host:pid:uuid of the driver holding it
    Column("lease_expires", Float),  # unix seconds on the database's clock
    Column("started_at", Float),  # when its last attempt was leased (database clock)
    *[Column(name, Float) for name in RESULT_COLUMNS],
    Column("score", Float),  # the final value of the study's metric
    Column("final_metrics", JSON),
    Column("diverged", Boolean),
    Column("wall_seconds", Float),
    Column("device", String(255)),  # "cpu", or "cuda (GPU name)": what the cell trained on
    Column("peak_memory_mib", Float),  # CUDA only: peak allocated memory of the pass that trained it
    Column("error", Text),
    Column("optuna_trial", Integer),
    Column("finished_at", Float),
    UniqueConstraint("study_id", "cell_index", name="uq_sweep_cells_study_index"),
    Index("ix_sweep_cells_study_status", "study_id", "status"),
    Index("ix_sweep_cells_study_order", "study_id", "run_order", unique=True),
)

services = Table(
    "sweep_services", metadata,  # one row per running `adamscape serve`, kept fresh by its heartbeat
    Column("id", Integer, primary_key=True),
    Column("owner", String(255), nullable=False, unique=True),  # its lease owner (host:pid:uuid)
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("workers", Integer, nullable=False),
    Column("ray", String(255), nullable=False),  # the Ray cluster it runs on ("local" or an address)
    Column("code", String(16), nullable=False),  # hash of the adamscape code and lock file it runs
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
)

curves = Table(
    "sweep_curves", metadata,
    Column("cell_id", Integer, ForeignKey("sweep_cells.id", ondelete="CASCADE"), primary_key=True),
    Column("attempt", Integer, primary_key=True),  # a retried cell keeps one curve per attempt
    Column("epoch", Integer, primary_key=True),
    Column("train_loss", Float),
    Column("test_loss", Float),
    Column("test_accuracy", Float),
    Column("metrics", JSON, nullable=False),
)
