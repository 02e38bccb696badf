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

import math
from typing import Any

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from sqlalchemy import Engine

import optimizers
from . import store
from .spec import StudySpec, expand

_STATES = {"complete": TrialState.COMPLETE, "diverged": TrialState.PRUNED, "failed": TrialState.FAIL}
IDENTITY = "adamscape_study"  # user attr tying an Optuna study to one registered sweep study


def distributions(spec: StudySpec) -> dict[str, dict[str, FloatDistribution]]:
    """Per optimizer: each hyperparameter's registry search range widened to the values its cells use."""
    used: dict[str, dict[str, list[float]]] = {}
    for cell in expand(spec):
        for name, value in cell.hparams.items():
            used.setdefault(cell.optimizer, {}).setdefault(name, []).append(value)
    result = {}
    for key, values in used.items():
        hparams = optimizers.spec(key).hparams
        result[key] = {}
        for name, seen in values.items():
            low, high = min(*seen, hparams[name].search[0]), max(*seen, hparams[name].search[1])
            result[key][name] = FloatDistribution(low, high, log=hparams[name].log and low > 0)
    return result


class OptunaLog:
    def __init__(self, engine: Engine, study: dict[str, Any]):
        self.engine, self.study = engine, study
        self.spec = StudySpec.model_validate(study["spec"])
        self.dists = distributions(self.spec)
        self.storage = store.optuna_storage(engine)
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
            for cell in pending:
                number = known.get((cell["optimizer"], cell["cell_index"]))
                if number is None:
                    self._create_trial(cell)
                else:
                    store.set_optuna_trial(self.engine, cell["id"], number)

    def report(self, cell_ids: list[int]) -> None:
        """Add each finished cell's trial unless it has one (another driver may have reported it)."""
        with self._lock():
            for cell in store.get_cells(self.engine, cell_ids):
                if cell["status"] in _STATES and cell["optuna_trial"] is None:
                    self._create_trial(cell)

    def _create_trial(self, cell: dict[str, Any]) -> None:
        metric = self.study["metric"]
        value = (cell["final_metrics"] or {}).get(metric)
        state = _STATES[cell["status"]]
        if state == TrialState.COMPLETE and (value is None or not math.isfinite(value)):
            state = TrialState.FAIL
        dists = self.dists[cell["optimizer"]]
        params = {name: cell[name] for name in dists if cell[name] is not None}
        trial = optuna.trial.create_trial(
            params=params, distributions={name: dists[name] for name in params}, state=state,
            value=value if state == TrialState.COMPLETE else None,
            intermediate_values={row["epoch"]: row[metric] for row in store.curve(self.engine, cell)
                                 if row.get(metric) is not None},
            user_attrs={"cell": cell["cell_index"], "seed": cell["seed"], "status": cell["status"],
                        "error": cell["error"]})
        trial_id = self.storage.create_new_trial(self.ids[cell["optimizer"]], template_trial=trial)
        store.set_optuna_trial(self.engine, cell["id"], self.storage.get_trial_number_from_id(trial_id))

    def close(self) -> None:
        self.storage.engine.dispose()
