"""The queue: what services run, in which order, the users' controls (pause, resume, cancel) and the
services' heartbeat rows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, and_, delete, exists, func, insert, or_, select, text, update

from study.errors import UserError
from study.interrupts import protected
from study.statuses import OPEN, CellStatus
from study.store.engine import db_now, transaction
from study.store.schema import cells, services, studies

if TYPE_CHECKING:  # pandas, alembic and the study-file models are imported where used: `status` needs none

    pass

QUEUE_CHANNEL = "adamscape_queue"  # PostgreSQL NOTIFY channel: a study was submitted, paused, resumed or cancelled


SERVICE_ALIVE_SECONDS = 15.0  # a service whose heartbeat is older than this is gone


def notify(conn: Connection) -> None:
    """Wake every waiting service (PostgreSQL LISTEN/NOTIFY, sent when the transaction commits; services
    on SQLite poll)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"NOTIFY {QUEUE_CHANNEL}"))


def claimable(now):
    """A cell a driver may lease: pending, or running under a lease that expired (``now``: the database's clock)."""
    return or_(cells.c.status == CellStatus.PENDING,
               and_(cells.c.status == CellStatus.RUNNING, cells.c.lease_expires < now))


def _queued(*columns):
    """``columns`` of the active studies with cells left (pending or running), in the order a service serves
    them: higher ``priority`` first, then submission order."""
    left = exists().where(cells.c.study_id == studies.c.id, cells.c.status.in_(OPEN))
    return (select(*columns).where(studies.c.state == "active", left)
            .order_by(studies.c.priority.desc(), studies.c.created_at, studies.c.id))


def queue(engine: Engine, name: str | None = None) -> list[dict[str, Any]]:
    """The queue (:func:`_queued`). Each study: id, name, fingerprint, priority, created_at, and
    ``claimable`` (a cell is pending, or running under an expired lease)."""
    with protected(), engine.connect() as conn:
        now = db_now(conn)
        leasable = exists().where(cells.c.study_id == studies.c.id, claimable(now))
        query = _queued(studies.c.id, studies.c.name, studies.c.fingerprint, studies.c.priority,
                        studies.c.created_at, leasable.label("claimable"))
        if name is not None:
            query = query.where(studies.c.name == name)
        return [dict(row) for row in conn.execute(query).mappings()]


def study_states(engine: Engine, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """{id: {fingerprint, state}} of those studies that still exist."""
    with protected(), engine.connect() as conn:
        rows = conn.execute(select(studies.c.id, studies.c.fingerprint, studies.c.state)
                            .where(studies.c.id.in_(list(ids)))).mappings()
        return {row["id"]: dict(row) for row in rows}


def set_state(engine: Engine, name: str, action: str) -> dict[str, int]:
    """``action`` on study ``name``: "cancel" (every pending and running cell becomes ``cancelled``; a
    driver's later writes about them are dropped, as for a lost lease), "pause" (running cells go back
    to pending, no attempt lost, and nothing is leased until "resume"). Returns how many cells it
    touched per former status; a study that cannot take ``action`` is one UserError line."""
    target = {"cancel": "cancelled", "pause": "paused", "resume": "active"}[action]
    with transaction(engine) as conn:
        study = conn.execute(select(studies).where(studies.c.name == name)).mappings().first()
        if study is None:
            raise UserError(f"no study named {name!r} in this database (`adamscape status` lists them)")
        left = conn.execute(select(func.count()).where(cells.c.study_id == study["id"],
                                                       cells.c.status.in_(OPEN))).scalar()
        problem = _cannot(study, action, left)
        if problem:
            raise UserError(problem)
        touched: dict[str, int] = {}
        if action in ("cancel", "pause"):
            for status in OPEN if action == "cancel" else (CellStatus.RUNNING,):
                values: dict[str, Any] = {"lease_owner": None, "lease_expires": None}
                values.update({"status": CellStatus.CANCELLED, "finished_at": db_now(conn)} if action == "cancel"
                              else {"status": CellStatus.PENDING})
                touched[status] = conn.execute(update(cells).where(cells.c.study_id == study["id"],
                                                                   cells.c.status == status)
                                               .values(**values)).rowcount
        conn.execute(update(studies).where(studies.c.id == study["id"]).values(state=target))
        notify(conn)
    return touched


def _cannot(study: dict[str, Any], action: str, left: int) -> str | None:
    name, state = study["name"], study["state"]
    if state == "cancelled":
        return f"study {name!r} was cancelled; resubmit its file with --replace to run it again"
    if action == "resume" and state != "paused":
        return f"study {name!r} is not paused"
    if action == "pause" and state == "paused":
        return f"study {name!r} is already paused (`adamscape resume {name}`)"
    if action != "resume" and not left:
        return f"study {name!r} has finished: nothing left to {action}"
    return None


def services_alive(engine: Engine) -> list[dict[str, Any]]:
    """The running ``adamscape serve`` processes (heartbeat within SERVICE_ALIVE_SECONDS), oldest first."""
    with protected(), engine.connect() as conn:
        rows = conn.execute(select(services, (db_now(conn) - services.c.heartbeat_at).label("age"))
                            .where(services.c.heartbeat_at > db_now(conn) - SERVICE_ALIVE_SECONDS)
                            .order_by(services.c.started_at)).mappings()
        return [dict(row) for row in rows]


def service_beat(engine: Engine, owner: str, **details: Any) -> None:
    """Create or refresh a service's heartbeat row (``details``: host, pid, workers, ray, code); rows of
    services dead for a minute are removed."""
    with transaction(engine) as conn:
        now = db_now(conn)
        if not conn.execute(update(services).where(services.c.owner == owner).values(heartbeat_at=now)).rowcount:
            conn.execute(delete(services).where(services.c.heartbeat_at < now - 60))
            conn.execute(insert(services).values(owner=owner, started_at=now, heartbeat_at=now, **details))


def service_stopped(engine: Engine, owner: str) -> None:
    with transaction(engine) as conn:
        conn.execute(delete(services).where(services.c.owner == owner))


def overview(engine: Engine) -> list[dict[str, Any]]:
    """Every study as ``status`` and the dashboard show it: counts per cell status, its state (queued,
    running, paused, cancelled, finished), priority, position in the queue (1 = served first) and the
    services running its cells."""
    with protected(), engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(
            studies.c.id, studies.c.name, studies.c.task, studies.c.metric, studies.c.total_cells,
            studies.c.priority, studies.c.state, studies.c.created_at).order_by(studies.c.id)).mappings()]
        counts: dict[int, dict[str, int]] = {}
        for study_id, status, count in conn.execute(select(cells.c.study_id, cells.c.status, func.count())
                                                    .group_by(cells.c.study_id, cells.c.status)):
            counts.setdefault(study_id, {})[status] = count
        owners: dict[int, set[str]] = {}
        for study_id, owner in conn.execute(select(cells.c.study_id, cells.c.lease_owner).distinct()
                                            .where(cells.c.status == CellStatus.RUNNING)):
            owners.setdefault(study_id, set()).add(owner)
        order = {study_id: position for position, study_id in
                 enumerate(conn.execute(_queued(studies.c.id)).scalars(), start=1)}
    for row in rows:
        row["counts"] = counts.get(row["id"], {})
        row["position"] = order.get(row["id"])
        row["runners"] = sorted(owners.get(row["id"], ()))
        if row["state"] != "active":
            row["display"] = row["state"]
        elif row["position"] is None:
            row["display"] = "finished"
        else:
            started = sum(v for k, v in row["counts"].items() if k != CellStatus.PENDING)
            row["display"] = "running" if started or row["runners"] else "queued"
    return rows
