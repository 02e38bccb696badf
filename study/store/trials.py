"""Optuna's storage beside ours: its studies' names, and which cells' trials are recorded."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, bindparam, exists, select, update

from study.interrupts import protected
from study.statuses import FINISHED
from study.store.engine import exclusive, transaction
from study.store.schema import cells, studies

if TYPE_CHECKING:  # pandas, alembic and the study-file models are imported where used: `status` needs none

    pass


def optuna_storage(engine: Engine):
    """Optuna's storage on our database (created under a lock: Optuna's first use creates its tables,
    which two processes must not do at once)."""
    import optuna

    with exclusive(engine, "optuna-schema"):
        return optuna.storages.RDBStorage(engine.url.render_as_string(hide_password=False),
                                          engine_kwargs={"connect_args": {"timeout": 60}}
                                          if engine.dialect.name == "sqlite" else {"pool_pre_ping": True})


def optuna_study_name(name: str, optimizer: str) -> str:
    """One Optuna study per (study, optimizer): its distributions are that optimizer's."""
    return f"adamscape/{name}/{optimizer}"


def legacy_optuna_study_name(name: str) -> str:
    """The single Optuna study of every optimizer that databases before migration 0004 hold."""
    return f"adamscape/{name}"


def delete_optuna_studies(engine: Engine, name: str) -> None:
    """Drop every Optuna study that belongs to study ``name`` (the per-optimizer ones and the legacy one)."""
    storage = optuna_storage(engine)
    prefix = f"adamscape/{name}/"
    for summary in storage.get_all_studies():
        if summary.study_name.startswith(prefix) or summary.study_name == legacy_optuna_study_name(name):
            try:
                storage.delete_study(summary._study_id)
            except KeyError:  # another process deleted it first
                pass
    storage.engine.dispose()


def set_optuna_trials(conn: Connection, numbers: dict[int, int]) -> None:
    """Record each cell's Optuna trial number ({cell id: number})."""
    if numbers:
        conn.execute(update(cells).where(cells.c.id == bindparam("cell")).values(optuna_trial=bindparam("number")),
                     [{"cell": cell_id, "number": number} for cell_id, number in numbers.items()])


def forget_optuna_trials(engine: Engine, study_id: int, optimizer: str | None = None) -> None:
    """Mark the study's cells unreported (their Optuna study was rebuilt)."""
    condition = [cells.c.study_id == study_id] + ([cells.c.optimizer == optimizer] if optimizer else [])
    with transaction(engine) as conn:
        conn.execute(update(cells).where(*condition).values(optuna_trial=None))


def unreported_cells(engine: Engine, study_id: int) -> list[dict[str, Any]]:
    """Finished cells whose Optuna trial has not been recorded (e.g. the driver died in between;
    cancelled cells have no result and no trial)."""
    with protected(), engine.connect() as conn:
        rows = conn.execute(select(cells).where(cells.c.study_id == study_id, cells.c.status.in_(FINISHED),
                                                cells.c.optuna_trial.is_(None))
                            .order_by(cells.c.cell_index)).mappings().all()
    return [dict(r) for r in rows]


def unreported_studies(engine: Engine) -> list[str]:
    """Studies with finished cells whose Optuna trial is missing (a driver stopped between the two)."""
    with protected(), engine.connect() as conn:
        return list(conn.execute(select(studies.c.name).where(exists().where(
            cells.c.study_id == studies.c.id, cells.c.status.in_(FINISHED), cells.c.optuna_trial.is_(None))))
            .scalars())


def retire_trials(conn: Connection, name: str, trials: set[tuple[str, int]]) -> None:
    """Rename the ``cell`` user attribute of these (optimizer, trial number) trials of study ``name`` to
    ``retried_cell`` (Optuna's own tables, in this transaction)."""
    if not trials:
        return
    from optuna.storages._rdb import models as rdb

    attrs, trial_rows, optuna_studies = (rdb.TrialUserAttributeModel.__table__, rdb.TrialModel.__table__,
                                         rdb.StudyModel.__table__)
    for optimizer in {optimizer for optimizer, _ in trials}:
        numbers = [number for o, number in trials if o == optimizer]
        ids = select(trial_rows.c.trial_id).join(optuna_studies, optuna_studies.c.study_id == trial_rows.c.study_id) \
            .where(optuna_studies.c.study_name == optuna_study_name(name, optimizer), trial_rows.c.number.in_(numbers))
        conn.execute(update(attrs).where(attrs.c.trial_id.in_(ids), attrs.c.key == "cell").values(key="retried_cell"))
