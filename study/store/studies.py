"""Registered studies: finding, registering (with the run order of their cells) and retrying failed cells."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, delete, exists, insert, select, update

from optimizers import HPARAM_NAMES
from study.errors import UserError
from study.interrupts import protected
from study.statuses import CellStatus
from study.store.engine import db_now, exclusive, transaction
from study.store.queue import notify
from study.store.schema import RESULT_COLUMNS, cells, studies
from study.store.trials import delete_optuna_studies, retire_trials

if TYPE_CHECKING:  # pandas, alembic and the study-file models are imported where used: `status` needs none

    from study.spec import Cell, StudySpec


def find_study(engine: Engine, name: str) -> dict[str, Any] | None:
    with protected(), engine.connect() as conn:
        row = conn.execute(select(studies).where(studies.c.name == name)).mappings().first()
    return dict(row) if row else None


def is_current(study: dict[str, Any]):
    """The registered study is still this one (SQLite reuses the id of a replaced study; its fingerprint differs)."""
    return exists().where(studies.c.id == study["id"], studies.c.fingerprint == study["fingerprint"])


def study_is_current(engine: Engine, study: dict[str, Any]) -> bool:
    with protected(), engine.connect() as conn:
        return bool(conn.execute(select(is_current(study))).scalar())


def get_study(engine: Engine, name: str) -> dict[str, Any]:
    study = find_study(engine, name)
    if study is None:
        known = list_studies(engine)
        hint = f"known: {', '.join(known)}" if known else "none are registered; run `adamscape submit FILE`"
        raise UserError(f"no study named {name!r} in this database ({hint})")
    return study


def list_studies(engine: Engine) -> list[str]:
    with protected(), engine.connect() as conn:
        return list(conn.execute(select(studies.c.name).order_by(studies.c.id)).scalars())


def register(engine: Engine, spec: StudySpec, replace: bool = False, priority: int | None = None) -> tuple[str, int]:
    """Create the study and its cells; returns ("created" | "unchanged" | "replaced", number of cells).

    Same file again: nothing happens. A changed file under an existing name is
    refused unless ``replace``, which discards the old study's results. Atomic: one
    transaction, under a lock so that concurrent submits of one file agree; Optuna's
    studies are created by the first run, so a failed submit leaves nothing behind.
    ``priority`` (default 0): higher runs first on a service; given for an unchanged study, it
    re-prioritises it.
    """
    from study.spec import expand, run_order

    all_cells = expand(spec)
    positions = run_order(all_cells)
    with exclusive(engine, f"study:{spec.name}"):
        existing = find_study(engine, spec.name)
        if existing and existing["fingerprint"] == spec.fingerprint():
            if priority is not None and priority != existing["priority"]:
                with transaction(engine) as conn:
                    conn.execute(update(studies).where(studies.c.id == existing["id"]).values(priority=priority))
                    notify(conn)
            return "unchanged", existing["total_cells"]
        if existing and not replace:
            raise UserError(f"a different study named {spec.name!r} is already in this database; give the file a "
                            "new `name`, or resubmit with --replace to discard the old study and its results")
        with transaction(engine) as conn:
            if existing:
                conn.execute(delete(studies).where(studies.c.id == existing["id"]))
            study_id = conn.execute(insert(studies).values(
                name=spec.name, task=spec.task, metric=spec.metric, direction=spec.direction,
                fingerprint=spec.fingerprint(), spec=spec.model_dump(mode="json"), total_cells=len(all_cells),
                created_at=db_now(conn), priority=priority or 0, state="active")).inserted_primary_key[0]
            conn.execute(insert(cells), [_cell_row(study_id, cell, position)
                                         for cell, position in zip(all_cells, positions)])
            notify(conn)
    if existing:  # after the commit: a failure here leaves stale Optuna studies, which the next run discards
        delete_optuna_studies(engine, spec.name)
    return ("replaced" if existing else "created"), len(all_cells)


def cell_hparams(cell: dict[str, Any]) -> dict[str, float]:
    """A stored cell's hyperparameters: its ``hparams`` JSON, or (rows older than it) its columns."""
    return cell["hparams"] or {name: cell[name] for name in HPARAM_NAMES if cell[name] is not None}


def _cell_row(study_id: int, cell: Cell, position: int) -> dict[str, Any]:
    return {"study_id": study_id, "cell_index": cell.index, "run_order": position, "optimizer": cell.optimizer,
            "seed": cell.seed, "status": CellStatus.PENDING, "attempts": 0, "losses": 0, "hparams": cell.hparams,
            **{name: cell.hparams.get(name) for name in HPARAM_NAMES}}


def retry_failed(engine: Engine, name: str) -> int:
    """Put study ``name``'s ``failed`` cells back to pending, to run again (`adamscape run NAME
    --retry-failed`); returns how many. A finished study becomes queued again (its state stays
    ``active``: "finished" only means nothing is left); a paused one stays paused until resumed; a
    cancelled one, or an unknown name, is a UserError.

    What a retried cell keeps: ``attempts`` (the next lease is a new attempt, with its own curve; the
    failed attempts' curves stay); ``error`` until its next attempt ends (a result clears it, a new
    failure replaces it). What it loses: its lease bookkeeping, ``losses`` (workers that died on it:
    a retry is a fresh budget of ``max_attempts`` deaths, in full-size populations again) and its
    failed result (device, memory, times).

    Optuna, the record of finished cells: the FAIL trial of a retried cell stays in its optimizer's
    study as history (state, error and intermediate values as they were), but its ``cell`` user
    attribute becomes ``retried_cell``: the cell's next result is reported as a new trial, and a
    driver reconciling an unreported result (it looks trials up by ``cell``) never mistakes the old
    FAIL for it. So each cell still has exactly one trial with ``cell`` = its index once it finishes.
    Done under the lock trials are reported under, in one transaction with the cells.
    """
    with exclusive(engine, f"optuna:{name}"), transaction(engine) as conn:
        study = conn.execute(select(studies).where(studies.c.name == name)).mappings().first()
        if study is None:
            raise UserError(f"no study named {name!r} in this database (`adamscape status` lists them)")
        if study["state"] == "cancelled":
            raise UserError(f"study {name!r} was cancelled; resubmit its file with --replace to run it again")
        failed = conn.execute(select(cells.c.id, cells.c.optimizer, cells.c.optuna_trial).where(
            cells.c.study_id == study["id"], cells.c.status == CellStatus.FAILED)).all()
        if not failed:
            return 0
        retire_trials(conn, name, {(optimizer, number) for _, optimizer, number in failed if number is not None})
        conn.execute(update(cells).where(cells.c.id.in_([cell_id for cell_id, _, _ in failed]),
                                         cells.c.status == CellStatus.FAILED).values(
            status=CellStatus.PENDING, lease_owner=None, lease_expires=None, losses=0, diverged=None, finished_at=None,
            optuna_trial=None, wall_seconds=None, device=None, peak_memory_mib=None, final_metrics=None, score=None,
            **dict.fromkeys(RESULT_COLUMNS)))
        notify(conn)
    return len(failed)
