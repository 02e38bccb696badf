"""Every finished cell becomes one finished trial in its optimizer's Optuna study.

One Optuna study per (study, optimizer), ``adamscape/NAME/OPTIMIZER``, whose
distributions are the registry's search range for each hyperparameter joined
with the values the cells use (log where the registry says so): any valid
study file logs valid trials, and Optuna's importance evaluators and
optuna-dashboard's slice/contour plots read one optimizer's space each.

Trials are added whole when a cell ends, so a crash never leaves a dangling
RUNNING trial. Reporting holds a per-study lock and re-reads the cell, and the
cell row records the trial number, so a cell gets exactly one trial even when
drivers race; cells finished by a driver that died before reporting are
reconciled (their trial looked up by cell index first) on the next run.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

import optuna
from optuna.distributions import FloatDistribution, distribution_to_json
from optuna.storages._rdb import models as rdb
from optuna.trial import TrialState
from sqlalchemy import Connection, Engine, bindparam, func, insert, select, update

from study import store
from study.spec import StudySpec, expand
from study.statuses import CellStatus

optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial would drown the progress bar

_STATES = {CellStatus.COMPLETE: TrialState.COMPLETE, CellStatus.DIVERGED: TrialState.PRUNED,
           CellStatus.FAILED: TrialState.FAIL}
IDENTITY = "adamscape_study"  # user attr tying an Optuna study to one registered sweep study


def distributions(spec: StudySpec) -> dict[str, dict[str, FloatDistribution]]:
    """Per optimizer: each hyperparameter's registry search range widened to the values its cells use."""
    used: dict[str, dict[str, list[float]]] = {}
    for cell in expand(spec):
        for name, value in cell.hparams.items():
            used.setdefault(cell.optimizer, {}).setdefault(name, []).append(value)
    result = {}
    for key, values in used.items():
        hparams = spec.optimizer_spec(key).hparams
        result[key] = {}
        for name, seen in values.items():
            low, high = min(*seen, hparams[name].search[0]), max(*seen, hparams[name].search[1])
            result[key][name] = FloatDistribution(low, high, log=hparams[name].log and low > 0)
    return result


class OptunaLog:
    def __init__(self, engine: Engine, study: dict[str, Any], storage: optuna.storages.RDBStorage | None = None):
        """``storage``: Optuna's storage on ``engine``, shared by a driver's studies (made here if None,
        and then disposed of by :meth:`close`)."""
        self.engine, self.study = engine, study
        self.spec = StudySpec.model_validate(study["spec"])
        self.dists = distributions(self.spec)
        self.own_storage = storage is None
        self.storage = storage or store.optuna_storage(engine)
        self.identity = f"{study['id']}:{study['fingerprint']}"
        self.ids: dict[str, int] = {}  # optimizer -> Optuna study id

    def _lock(self):
        return store.exclusive(self.engine, f"optuna:{self.study['name']}")

    def open(self) -> None:
        """Create (or check) each optimizer's Optuna study; one left by a replaced study, a failed
        submit or a database older than per-optimizer studies is rebuilt from the cells."""
        with self._lock():
            legacy = self._find(store.legacy_optuna_study_name(self.study["name"]))
            if legacy is not None:
                self.storage.delete_study(legacy)
                store.forget_optuna_trials(self.engine, self.study["id"])
            for key in self.spec.optimizers:
                name = store.optuna_study_name(self.study["name"], key)
                study_id = self._find(name)
                if study_id is not None and self.storage.get_study_user_attrs(study_id).get(IDENTITY) != self.identity:
                    self.storage.delete_study(study_id)
                    store.forget_optuna_trials(self.engine, self.study["id"], key)
                    study_id = None
                if study_id is None:
                    direction = optuna.study.StudyDirection[self.study["direction"].upper()]
                    study_id = self.storage.create_new_study([direction], name)
                    self.storage.set_study_user_attr(study_id, IDENTITY, self.identity)
                self.ids[key] = study_id

    def _find(self, name: str) -> int | None:
        try:
            return self.storage.get_study_id_from_name(name)
        except KeyError:
            return None

    def reconcile(self) -> None:
        """Report finished cells a dead driver left unreported, unless their trial exists already."""
        if not store.unreported_cells(self.engine, self.study["id"]):
            return
        with self._lock():
            pending = store.unreported_cells(self.engine, self.study["id"])  # again, now that we hold the lock
            known = {(key, t.user_attrs.get("cell")): t.number for key, study_id in self.ids.items()
                     for t in self.storage.get_all_trials(study_id, deepcopy=False)}
            found = {cell["id"]: known[(cell["optimizer"], cell["cell_index"])] for cell in pending
                     if (cell["optimizer"], cell["cell_index"]) in known}
            with store.transaction(self.engine) as conn:
                store.set_optuna_trials(conn, found)
                self._add_trials(conn, [cell for cell in pending if cell["id"] not in found])

    def report(self, cell_ids: list[int]) -> None:
        """Add each finished cell's trial unless it has one (another driver may have reported it)."""
        with self._lock(), store.transaction(self.engine) as conn:
            cells = [cell for cell in store.get_cells(conn, cell_ids)
                     if cell["status"] in _STATES and cell["optuna_trial"] is None]
            self._add_trials(conn, cells)

    def trial(self, cell: dict[str, Any], curve: list[dict[str, Any]]) -> optuna.trial.FrozenTrial:
        """The finished trial a cell is logged as (its Optuna study is its optimizer's)."""
        metric = self.study["metric"]
        value = (cell["final_metrics"] or {}).get(metric)
        state = _STATES[cell["status"]]
        if state == TrialState.COMPLETE and (value is None or not math.isfinite(value)):
            state = TrialState.FAIL
        dists = self.dists[cell["optimizer"]]
        values = store.cell_hparams(cell)
        params = {name: values[name] for name in dists if values.get(name) is not None}
        return optuna.trial.create_trial(
            params=params, distributions={name: dists[name] for name in params}, state=state,
            value=value if state == TrialState.COMPLETE else None,
            intermediate_values={row["epoch"]: row[metric] for row in curve if row.get(metric) is not None},
            user_attrs={"cell": cell["cell_index"], "seed": cell["seed"], "status": cell["status"],
                        "error": cell["error"]})

    def _add_trials(self, conn: Connection, cells: list[dict[str, Any]]) -> None:
        """Write the cells' trials into Optuna's tables, a few statements for any number of cells.

        ``RDBStorage.create_new_trial`` makes about 30 round trips per trial (50 ms on SQLite), which
        would cap a study at ~20 cells/s; the rows written here are the ones it writes (Optuna's own
        table definitions and value encodings; a test compares the two), numbered as it numbers
        them, under this study's lock.
        """
        if not cells:
            return
        curves = store.last_curves(conn, cells)
        now = datetime.now(timezone.utc).replace(tzinfo=None)  # Optuna stores naive UTC
        numbers: dict[int, int] = {}
        for optimizer in dict.fromkeys(cell["optimizer"] for cell in cells):
            mine = [cell for cell in cells if cell["optimizer"] == optimizer]
            trials = [self.trial(cell, curves.get(cell["id"], [])) for cell in mine]
            numbers |= _insert_trials(conn, self.ids[optimizer], trials, [cell["id"] for cell in mine], now)
        store.set_optuna_trials(conn, numbers)

    def close(self) -> None:
        if self.own_storage:
            self.storage.engine.dispose()


def _insert_trials(conn: Connection, study_id: int, trials: list[optuna.trial.FrozenTrial], keys: list[int],
                   now: datetime) -> dict[int, int]:
    """Insert finished ``trials`` into Optuna study ``study_id``; returns {key: trial number}.

    A trial's number is the count of the study's trials with a smaller id (Optuna's rule).
    """
    table = rdb.TrialModel.__table__
    before = conn.execute(select(func.count()).select_from(table).where(table.c.study_id == study_id)).scalar()
    ids = conn.execute(insert(table).returning(table.c.trial_id, sort_by_parameter_order=True), [
        {"study_id": study_id, "number": None, "state": trial.state, "datetime_start": now,
         "datetime_complete": now} for trial in trials]).scalars().all()
    rank = {trial_id: before + position for position, trial_id in enumerate(sorted(ids))}
    conn.execute(update(table).where(table.c.trial_id == bindparam("id")).values(number=bindparam("n")),
                 [{"id": trial_id, "n": rank[trial_id]} for trial_id in ids])
    rows: dict[Any, list[dict[str, Any]]] = {model: [] for model in (
        rdb.TrialParamModel, rdb.TrialValueModel, rdb.TrialIntermediateValueModel, rdb.TrialUserAttributeModel)}
    for trial_id, trial in zip(ids, trials):
        for name, value in trial.params.items():
            dist = trial.distributions[name]
            rows[rdb.TrialParamModel].append({"trial_id": trial_id, "param_name": name,
                                              "param_value": dist.to_internal_repr(value),
                                              "distribution_json": distribution_to_json(dist)})
        if trial.value is not None:
            stored, kind = rdb.TrialValueModel.value_to_stored_repr(trial.value)
            rows[rdb.TrialValueModel].append({"trial_id": trial_id, "objective": 0, "value": stored,
                                              "value_type": kind})
        for step, value in trial.intermediate_values.items():
            stored, kind = rdb.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
            rows[rdb.TrialIntermediateValueModel].append({"trial_id": trial_id, "step": step,
                                                          "intermediate_value": stored,
                                                          "intermediate_value_type": kind})
        for key, value in trial.user_attrs.items():
            rows[rdb.TrialUserAttributeModel].append({"trial_id": trial_id, "key": key,
                                                      "value_json": json.dumps(value)})
    for model, values in rows.items():
        if values:
            conn.execute(insert(model.__table__), values)
    return {key: rank[trial_id] for key, trial_id in zip(keys, ids)}
