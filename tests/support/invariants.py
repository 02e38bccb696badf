"""The exactly-once invariant, read from the database alone (no study file needed)."""

from __future__ import annotations

import json

import optuna
import sqlalchemy as sa

from study import store

from study.spec import StudySpec
from tests.support.db import query

OF_STUDY = "study_id = (SELECT id FROM sweep_studies WHERE name = :name)"


def study_epochs(stored_spec: dict | str) -> int:
    """The epochs every cell of a study trains for, from its stored spec: the file's ``epochs``, or the
    task's default where the file gives none (resolved as the study resolved it: built-in tasks from
    ``study.catalog``, the file's own task from the description stored with the spec)."""
    spec = stored_spec if isinstance(stored_spec, dict) else json.loads(stored_spec)
    return StudySpec.model_validate(spec).total_epochs


def finished(url: str, name: str) -> int:
    return query(url, f"SELECT COUNT(*) FROM sweep_cells WHERE {OF_STUDY} AND "
                      "status IN ('complete', 'diverged', 'failed')", name=name)[0][0]


def epochs_recorded(url: str, name: str) -> int:
    return query(url, f"SELECT COUNT(*) FROM sweep_curves WHERE cell_id IN (SELECT id FROM sweep_cells WHERE "
                      f"{OF_STUDY})", name=name)[0][0]


def cells_where(url: str, name: str, condition: str, what: str = "COUNT(*)"):
    """``SELECT what FROM sweep_cells`` of study ``name`` where ``condition``."""
    return query(url, f"SELECT {what} FROM sweep_cells WHERE {OF_STUDY} AND ({condition})", name=name)[0]


def snapshot(url: str, name: str) -> dict[int, tuple]:
    """Finished cells as they are now: they must never run again."""
    rows = query(url, "SELECT cell_index, wall_seconds, finished_at, attempts, score FROM sweep_cells "
                      f"WHERE {OF_STUDY} AND status IN ('complete', 'diverged', 'failed')", name=name)
    return {row[0]: tuple(row[1:]) for row in rows}


def assert_exactly_once(url: str, name: str, untouched: dict[int, tuple] | None = None) -> list:
    """Rows = grid, each cell finished once, one Optuna trial per finished cell in its optimizer's
    study, the final attempt's curve complete (the study's epochs: its file's, or its task's default),
    finished cells never re-run."""
    (study_id, total, spec), = query(url, "SELECT id, total_cells, spec FROM sweep_studies WHERE name = :n", n=name)
    rows = query(url, "SELECT cell_index, optimizer, status, lease_owner, attempts, optuna_trial, id "
                      "FROM sweep_cells WHERE study_id = :s ORDER BY cell_index", s=study_id)
    assert [r.cell_index for r in rows] == list(range(total))
    assert {r.status for r in rows} <= {"complete", "diverged", "failed"}, [r.status for r in rows]
    assert all(r.lease_owner is None for r in rows)
    for key in {r.optimizer for r in rows}:
        trials = optuna.load_study(study_name=f"adamscape/{name}/{key}", storage=url).trials
        mine = {r.cell_index: r.optuna_trial for r in rows if r.optimizer == key}
        assert {t.user_attrs["cell"]: t.number for t in trials} == mine, key  # one trial each, none extra
    epochs = dict(query(url, "SELECT k.cell_id, COUNT(*) FROM sweep_curves k JOIN sweep_cells c "
                             "ON c.id = k.cell_id AND k.attempt = c.attempts WHERE c.study_id = :s "
                             "GROUP BY k.cell_id", s=study_id))
    total_epochs = study_epochs(spec)
    for row in rows:
        if row.status == "complete":
            assert epochs.get(row.id) == total_epochs, row
        elif row.status == "diverged":
            assert epochs.get(row.id, 0) >= 1, row
    if untouched:
        now = snapshot(url, name)
        assert {k: now[k] for k in untouched} == untouched  # wall_seconds, finished_at, attempts, score
    return rows


def cells(engine, name: str) -> list[dict]:
    """The cells of study ``name`` (every column), in cell order."""
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(
            "SELECT c.* FROM sweep_cells c JOIN sweep_studies s ON s.id = c.study_id WHERE s.name = :name "
            "ORDER BY c.cell_index"), {"name": name}).mappings()]


def each_cell_once(engine, url: str, name: str, allowed=("complete", "diverged", "failed")) -> list[dict]:
    """Every cell of a served study ended once (``allowed``: its statuses); one Optuna trial per finished
    cell, none for a cancelled one; no worker death (stopping a service is never one)."""
    rows = cells(engine, name)
    assert rows and all(r["status"] in allowed and r["lease_owner"] is None for r in rows), rows
    assert all(r["losses"] == 0 for r in rows)  # stopping a service is never a worker death
    finished = sorted((r["optimizer"], r["cell_index"]) for r in rows if r["status"] != "cancelled")
    trials = sorted((key, t.user_attrs["cell"]) for key in {r["optimizer"] for r in rows}
                    for t in optuna.load_study(study_name=store.optuna_study_name(name, key), storage=url).trials)
    assert trials == finished
    return rows
