"""The driver's cell lifecycle, exactly once.

A cell is leased by a conditional UPDATE; leases expire on the *database's* clock, never a client's;
``attempts`` only grows (each lease is a new attempt, and curves are keyed by it); every write a driver
makes about a cell is conditional on still holding its lease, so a driver whose lease was taken over,
or whose study was replaced, changes nothing."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, and_, bindparam, case, select, update

from study.statuses import FINISHED, CellStatus
from study.store.engine import db_now, transaction
from study.store.queue import claimable
from study.store.schema import RESULT_COLUMNS, cells, curves, studies
from study.store.studies import is_current

if TYPE_CHECKING:  # pandas, alembic and the study-file models are imported where used: `status` needs none

    pass


def claim(engine: Engine, study: dict[str, Any], owner: str, limit: int, lease_seconds: float) -> list[dict[str, Any]]:
    """Lease up to ``limit`` cells (pending, or running under an expired lease) of ``study`` in its run
    order (``run_order``, :func:`study.spec.run_order`: every optimizer coarse to fine, in chunks of one
    optimizer and seed, so the cells of one claim form few populations); returned in that order.

    Each lease is a conditional UPDATE, so two drivers never get the same cell; each starts a
    new attempt. Nothing is leased once the study was replaced, paused or cancelled.
    """
    claimed = []
    with transaction(engine) as conn:
        now = db_now(conn)
        active = is_current(study).where(studies.c.state == "active")
        candidates = conn.execute(select(cells.c.id).where(cells.c.study_id == study["id"], claimable(now), active)
                                  .order_by(cells.c.run_order, cells.c.cell_index).limit(limit)).scalars().all()
        for cell_id in candidates:
            row = conn.execute(update(cells).where(cells.c.id == cell_id, claimable(now)).values(
                status=CellStatus.RUNNING, lease_owner=owner, lease_expires=now + lease_seconds, started_at=now,
                attempts=cells.c.attempts + 1).returning(*cells.c)).mappings().first()
            if row:
                claimed.append(dict(row))
    return claimed


def heartbeat(engine: Engine, owner: str, cell_ids: Iterable[int], lease_seconds: float) -> set[int]:
    """Extend this driver's leases; returns the ids it still holds (the others were taken over)."""
    ids = list(cell_ids)
    if not ids:
        return set()
    with transaction(engine) as conn:
        held = conn.execute(update(cells).where(cells.c.id.in_(ids), _held(owner))
                            .values(lease_expires=db_now(conn) + lease_seconds).returning(cells.c.id)).scalars()
        return set(held)


def _held(owner: str):
    return and_(cells.c.lease_owner == owner, cells.c.status == CellStatus.RUNNING)


def _finite(value: Any) -> float | None:
    """Non-finite numbers become NULL: SQLite and PostgreSQL store NaN differently."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def held(conn: Connection, owner: str, cell_ids: Iterable[int]) -> set[int]:
    """Which of ``cell_ids`` ``owner`` still holds; on PostgreSQL their rows stay locked until the
    transaction ends, so no other driver can take them over in between (SQLite's writer lock does that)."""
    ids = list(cell_ids)
    if not ids:
        return set()
    query = select(cells.c.id).where(cells.c.id.in_(ids), _held(owner))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return set(conn.execute(query).scalars())


def record_epochs(conn: Connection, owner: str, epochs: list[tuple[dict[str, Any], int, dict[str, float]]]) -> None:
    """Store epochs ``(cell, epoch, metrics)`` of the cells' current attempts, for the cells ``owner``
    still holds (the others' are dropped). Written at most once: a transaction retried after a dropped
    connection cannot duplicate an epoch."""
    mine = held(conn, owner, {cell["id"] for cell, _, _ in epochs})
    rows = []
    for cell, epoch, metrics in epochs:
        if cell["id"] in mine:
            clean = {name: _finite(value) for name, value in metrics.items()}
            rows.append({"cell_id": cell["id"], "attempt": cell["attempts"], "epoch": epoch, "metrics": clean,
                         **{name: clean.get(name) for name in ("train_loss", "test_loss", "test_accuracy")}})
    if rows:
        from sqlalchemy.dialects import postgresql, sqlite  # each loaded only by its own engine otherwise

        dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        conn.execute(dialect_insert(curves).on_conflict_do_nothing(), rows)


def finish(conn: Connection, owner: str, results: list[dict[str, Any]], metric: str | None = None) -> set[int]:
    """Record finished cells; returns the ids recorded (those ``owner`` still held; the others' results
    are dropped). Each result: ``cell`` (its row), ``status`` and optionally ``final`` (metrics; the
    study's ``metric`` among them is the cell's ``score``), ``best_test_accuracy``, ``wall_seconds``,
    ``device``, ``peak_memory_mib``, ``error``."""
    mine = held(conn, owner, {result["cell"]["id"] for result in results})
    rows = []
    for result in results:
        if result["cell"]["id"] not in mine:
            continue
        assert result["status"] in FINISHED
        final = {name: _finite(value) for name, value in (result.get("final") or {}).items()}
        rows.append({"b_id": result["cell"]["id"], "b_status": result["status"], "b_final": final,
                     **{f"b_{name}": _result(name, final, result) for name in RESULT_COLUMNS},
                     "b_score": final.get(metric) if metric else None,
                     "b_diverged": result["status"] == CellStatus.DIVERGED,
                     "b_wall": result.get("wall_seconds"), "b_error": result.get("error"),
                     "b_device": result.get("device"), "b_memory": _finite(result.get("peak_memory_mib"))})
    if rows:
        conn.execute(update(cells).where(cells.c.id == bindparam("b_id")).values(
            status=bindparam("b_status"), lease_owner=None, lease_expires=None,
            final_metrics=bindparam("b_final", type_=cells.c.final_metrics.type),
            **{name: bindparam(f"b_{name}") for name in RESULT_COLUMNS}, score=bindparam("b_score"),
            diverged=bindparam("b_diverged"), wall_seconds=bindparam("b_wall"),
            device=bindparam("b_device"), peak_memory_mib=bindparam("b_memory"), error=bindparam("b_error"),
            finished_at=db_now(conn)), rows)
    return {row["b_id"] for row in rows}


def _result(column: str, final: dict[str, Any], result: dict[str, Any]) -> Any:
    """A results column's value: ``final_<metric>``, the metric's final value; any other, the result's own
    (``best_test_accuracy``)."""
    return final.get(column.removeprefix("final_")) if column.startswith("final_") else _finite(result.get(column))


def release(conn: Connection, cell: dict[str, Any], owner: str, *, lost: str | None = None,
            max_attempts: int = 3) -> str | None:
    """Give a leased cell back; returns its new status, or None if ``owner`` no longer held it.

    ``lost`` (the worker died, with this cause): counted; the cell fails once ``max_attempts``
    workers died on it. Otherwise (the driver stopped) the cell just becomes pending again.
    Either way ``attempts`` stays: the next lease is a new attempt with its own curve.
    """
    values: dict[str, Any] = {"lease_owner": None, "lease_expires": None}
    if lost is None:
        values["status"] = CellStatus.PENDING
    else:
        gives_up = cells.c.losses + 1 >= max_attempts
        values.update(losses=cells.c.losses + 1, error=lost,
                      status=case((gives_up, CellStatus.FAILED), else_=CellStatus.PENDING),
                      diverged=case((gives_up, False), else_=None),
                      finished_at=case((gives_up, db_now(conn)), else_=None))
    return conn.execute(update(cells).where(cells.c.id == cell["id"], _held(owner)).values(**values)
                        .returning(cells.c.status)).scalar()


def release_held(conn: Connection, owner: str) -> int:
    """Give back every cell ``owner`` holds (a driver stopping): pending again, attempts kept. Also the
    cells of a lease whose answer a stop cut short, which the driver never saw."""
    return conn.execute(update(cells).where(_held(owner))
                        .values(status=CellStatus.PENDING, lease_owner=None, lease_expires=None)).rowcount


def get_cells(conn: Connection, cell_ids: list[int]) -> list[dict[str, Any]]:
    """The rows of the cells ``cell_ids`` that exist, in cell order."""
    rows = conn.execute(select(cells).where(cells.c.id.in_(cell_ids)).order_by(cells.c.cell_index)).mappings()
    return [dict(row) for row in rows]


def last_curves(conn: Connection, of: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Per cell id, the per-epoch metrics of the cell's last attempt (one query for all the cells)."""
    attempt = {cell["id"]: cell["attempts"] for cell in of}
    found: dict[int, list[dict[str, Any]]] = {}
    rows = conn.execute(select(curves.c.cell_id, curves.c.attempt, curves.c.epoch, curves.c.metrics)
                        .where(curves.c.cell_id.in_(list(attempt))).order_by(curves.c.cell_id, curves.c.epoch))
    for cell_id, attempt_of_row, epoch, metrics in rows:
        if attempt_of_row == attempt[cell_id]:
            found.setdefault(cell_id, []).append({"epoch": epoch, **metrics})
    return found
