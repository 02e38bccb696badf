"""The results database: engine factory, migrations, and every query adamscape makes.

Only the driver (CLI) and the dashboard open it; workers never do.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, and_, create_engine, delete, event, func, insert, or_, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from optimizers import HPARAM_NAMES
from .errors import UserError
from .schema import FINISHED, cells, curves, studies
from .spec import Cell, StudySpec, expand

DEFAULT_DB = "sqlite:///adamscape.db"
MIGRATIONS = Path(__file__).parent / "migrations"


def _describe(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def connect(url: str, must_exist: bool = False) -> Engine:
    """An engine for ``url`` that is known to answer, with the schema migrated.

    ``must_exist``: refuse to create a new SQLite file (read-only commands).
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(f"database URL {url!r} is not a URL; use e.g. sqlite:///adamscape.db or "
                        "postgresql+psycopg://user@host/db (--db or ADAMSCAPE_DB)") from None
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite and must_exist and parsed.database and not Path(parsed.database).exists():
        raise UserError(f"no results database at {parsed.database}; submit a study first, or point --db / "
                        "ADAMSCAPE_DB at an existing one")
    try:
        engine = create_engine(url, **({"connect_args": {"timeout": 60}} if is_sqlite else {"pool_pre_ping": True}))
    except Exception as exc:  # unknown driver, bad options
        raise UserError(f"cannot use database URL {_describe(url)}: {exc}") from None
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise UserError(f"cannot reach the results database {_describe(url)} ({reason}); start it or fix "
                        "--db / ADAMSCAPE_DB") from None
    migrate(engine)
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets the dashboard read while the driver writes; foreign keys make CASCADE work.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (tests step through older ones)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def optuna_storage(engine: Engine):
    import optuna

    return optuna.storages.RDBStorage(engine.url.render_as_string(hide_password=False),
                                      engine_kwargs={"connect_args": {"timeout": 60}}
                                      if engine.dialect.name == "sqlite" else {"pool_pre_ping": True})


def optuna_study_name(name: str) -> str:
    return f"adamscape/{name}"


# --- studies -------------------------------------------------------------------------------------

def find_study(engine: Engine, name: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(studies).where(studies.c.name == name)).mappings().first()
    return dict(row) if row else None


def get_study(engine: Engine, name: str) -> dict[str, Any]:
    study = find_study(engine, name)
    if study is None:
        known = list_studies(engine)
        hint = f"known: {', '.join(known)}" if known else "none are registered; run `adamscape submit FILE`"
        raise UserError(f"no study named {name!r} in this database ({hint})")
    return study


def list_studies(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(studies.c.name).order_by(studies.c.id)).scalars())


def register(engine: Engine, spec: StudySpec, replace: bool = False) -> tuple[str, int]:
    """Create the study and its cells; returns ("created" | "unchanged" | "replaced", number of cells).

    Same file again: nothing happens. A changed file under an existing name is
    refused unless ``replace``, which discards the old study's results.
    """
    import optuna

    existing = find_study(engine, spec.name)
    if existing and existing["fingerprint"] == spec.fingerprint():
        return "unchanged", existing["total_cells"]
    if existing and not replace:
        raise UserError(f"a different study named {spec.name!r} is already in this database; give the file a new "
                        "`name`, or resubmit with --replace to discard the old study and its results")
    all_cells = expand(spec)
    storage = optuna_storage(engine)
    if existing:
        _delete_optuna_study(storage, spec.name)
    # Optuna commits on its own connection: create its study before ours holds SQLite's write lock.
    optuna.create_study(study_name=optuna_study_name(spec.name), storage=storage, direction=spec.direction,
                        load_if_exists=True)
    with engine.begin() as conn:
        if existing:
            conn.execute(delete(studies).where(studies.c.id == existing["id"]))
        study_id = conn.execute(insert(studies).values(
            name=spec.name, task=spec.task, metric=spec.metric, direction=spec.direction,
            fingerprint=spec.fingerprint(), spec=spec.model_dump(mode="json"), total_cells=len(all_cells),
            created_at=time.time())).inserted_primary_key[0]
        conn.execute(insert(cells), [_cell_row(study_id, cell) for cell in all_cells])
    return ("replaced" if existing else "created"), len(all_cells)


def _delete_optuna_study(storage, name: str) -> None:
    import optuna

    try:
        optuna.delete_study(study_name=optuna_study_name(name), storage=storage)
    except KeyError:
        pass


def _cell_row(study_id: int, cell: Cell) -> dict[str, Any]:
    return {"study_id": study_id, "cell_index": cell.index, "optimizer": cell.optimizer, "seed": cell.seed,
            "status": "pending", "attempts": 0,
            **{name: cell.hparams.get(name) for name in HPARAM_NAMES}}


# --- the driver's cell lifecycle ------------------------------------------------------------------

def claim(engine: Engine, study_id: int, owner: str, limit: int, lease_seconds: float) -> list[dict[str, Any]]:
    """Lease up to ``limit`` cells (pending, or running under an expired lease) in cell order.

    Each lease is a conditional UPDATE, so two drivers never get the same cell.
    """
    now = time.time()
    claimable = or_(cells.c.status == "pending", and_(cells.c.status == "running", cells.c.lease_expires < now))
    claimed = []
    with engine.begin() as conn:
        candidates = conn.execute(select(cells.c.id).where(cells.c.study_id == study_id, claimable)
                                  .order_by(cells.c.cell_index).limit(limit)).scalars().all()
        for cell_id in candidates:
            won = conn.execute(update(cells).where(cells.c.id == cell_id, claimable).values(
                status="running", lease_owner=owner, lease_expires=now + lease_seconds,
                attempts=cells.c.attempts + 1)).rowcount
            if won:
                claimed.append(dict(conn.execute(select(cells).where(cells.c.id == cell_id)).mappings().one()))
    return claimed


def heartbeat(engine: Engine, owner: str, cell_ids: Iterable[int], lease_seconds: float) -> None:
    ids = list(cell_ids)
    if ids:
        with engine.begin() as conn:
            conn.execute(update(cells).where(cells.c.id.in_(ids), cells.c.lease_owner == owner,
                                             cells.c.status == "running")
                         .values(lease_expires=time.time() + lease_seconds))


def _finite(value: Any) -> float | None:
    """Non-finite numbers become NULL: SQLite and PostgreSQL store NaN differently."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def record_epoch(engine: Engine, cell: dict[str, Any], epoch: int, metrics: dict[str, float]) -> None:
    clean = {name: _finite(value) for name, value in metrics.items()}
    with engine.begin() as conn:
        conn.execute(insert(curves).values(
            cell_id=cell["id"], attempt=cell["attempts"], epoch=epoch, train_loss=clean.get("train_loss"),
            test_loss=clean.get("test_loss"), test_accuracy=clean.get("test_accuracy"), metrics=clean))


def finish(engine: Engine, cell: dict[str, Any], owner: str, status: str, *, final: dict[str, float] | None = None,
           metric: str | None = None, best_test_accuracy: float | None = None, wall_seconds: float | None = None,
           error: str | None = None) -> bool:
    """Record a finished cell, its ``score`` being the final value of the study's ``metric``;
    False if this driver no longer holds its lease (the result is dropped)."""
    assert status in FINISHED
    final = {name: _finite(value) for name, value in (final or {}).items()}
    with engine.begin() as conn:
        return bool(conn.execute(update(cells).where(
            cells.c.id == cell["id"], cells.c.lease_owner == owner, cells.c.status == "running").values(
            status=status, lease_owner=None, lease_expires=None, final_metrics=final,
            final_train_loss=final.get("train_loss"), final_test_loss=final.get("test_loss"),
            final_test_accuracy=final.get("test_accuracy"), best_test_accuracy=_finite(best_test_accuracy),
            score=final.get(metric) if metric else None,
            diverged=status == "diverged", wall_seconds=wall_seconds, error=error,
            finished_at=time.time())).rowcount)


def release(engine: Engine, cell: dict[str, Any], owner: str, error: str | None, max_attempts: int,
            count_attempt: bool = True) -> str:
    """Give a leased cell back: pending again, or failed once its worker died ``max_attempts`` times.

    ``count_attempt=False`` (the driver was interrupted) does not count this attempt.
    """
    status = "failed" if count_attempt and cell["attempts"] >= max_attempts else "pending"
    values: dict[str, Any] = {"status": status, "lease_owner": None, "lease_expires": None}
    if error is not None:
        values["error"] = error
    if status == "failed":
        values.update(diverged=False, finished_at=time.time())
    if not count_attempt:
        values["attempts"] = cells.c.attempts - 1
    with engine.begin() as conn:
        conn.execute(update(cells).where(cells.c.id == cell["id"], cells.c.lease_owner == owner,
                                         cells.c.status == "running").values(**values))
    return status


def get_cell(engine: Engine, cell_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(select(cells).where(cells.c.id == cell_id)).mappings().one())


def set_optuna_trial(engine: Engine, cell_id: int, number: int) -> None:
    with engine.begin() as conn:
        conn.execute(update(cells).where(cells.c.id == cell_id).values(optuna_trial=number))


def unreported_cells(engine: Engine, study_id: int) -> list[dict[str, Any]]:
    """Finished cells whose Optuna trial has not been recorded (e.g. the driver died in between)."""
    with engine.connect() as conn:
        rows = conn.execute(select(cells).where(cells.c.study_id == study_id, cells.c.status.in_(FINISHED),
                                                cells.c.optuna_trial.is_(None))).mappings().all()
    return [dict(r) for r in rows]


def curve(engine: Engine, cell: dict[str, Any]) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(curves.c.epoch, curves.c.metrics).where(
            curves.c.cell_id == cell["id"], curves.c.attempt == cell["attempts"]).order_by(curves.c.epoch))
        return [{"epoch": epoch, **metrics} for epoch, metrics in rows]


# --- queries -------------------------------------------------------------------------------------

def status_counts(engine: Engine, study_id: int) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(cells.c.status, func.count()).where(cells.c.study_id == study_id)
                            .group_by(cells.c.status)).all()
    return {status: count for status, count in rows}


def results(name: str, db: str | Engine = DEFAULT_DB) -> pd.DataFrame:
    """The ``sweep_results`` rows of study ``name`` as a DataFrame (one row per cell, in cell order)."""
    engine = db if isinstance(db, Engine) else connect(db, must_exist=True)
    get_study(engine, name)
    with engine.connect() as conn:
        frame = pd.read_sql(text("SELECT * FROM sweep_results WHERE study = :name ORDER BY cell"), conn,
                            params={"name": name})
    frame["diverged"] = frame["diverged"].astype("boolean")
    return _with_final_metric_columns(frame)


def _with_final_metric_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``final_<name>`` for each metric that only the ``final_metrics`` JSON holds (x, distance …)."""
    parsed = [json.loads(v) if isinstance(v, str) else v if isinstance(v, dict) else {}  # NULL reads as NaN
              for v in frame.pop("final_metrics")]
    names = sorted({name for metrics in parsed for name in metrics} - {c.removeprefix("final_") for c in frame})
    for name in names:
        frame[f"final_{name}"] = pd.Series([m.get(name) for m in parsed], index=frame.index, dtype="float64")
    return frame
