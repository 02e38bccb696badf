"""Every finished cell becomes one finished trial in the study's Optuna study.

Trials are added whole when a cell ends, so a crash never leaves a dangling
RUNNING trial; the cell row records the trial number, and cells finished by
a driver that died before reporting are reconciled on the next run, so a
cell is reported exactly once.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from sqlalchemy import Engine

from optimizers import HPARAM_NAMES
from . import store
from .spec import StudySpec

_STATES = {"complete": TrialState.COMPLETE, "diverged": TrialState.PRUNED, "failed": TrialState.FAIL}


def _distributions(spec: StudySpec) -> dict[str, Any]:
    """One distribution per hyperparameter in the file, spanning its values over all the study's optimizers."""
    values: dict[str, list[float]] = {}
    for key in spec.optimizers:
        for name, grid in spec.grid(key).items():
            values.setdefault(name, []).extend(grid)
    dists: dict[str, Any] = {"optimizer": CategoricalDistribution(list(spec.optimizers)),
                             "seed": IntDistribution(min(spec.seeds), max(spec.seeds))}
    for name in HPARAM_NAMES:
        if name in values:
            low, high = min(values[name]), max(values[name])
            dists[name] = FloatDistribution(low, high, log=low > 0 and high > low)
    return dists


class OptunaLog:
    def __init__(self, engine: Engine, study: dict[str, Any]):
        self.engine, self.study = engine, study
        self.storage = store.optuna_storage(engine)
        self.study_id = self.storage.get_study_id_from_name(store.optuna_study_name(study["name"]))
        self.dists = _distributions(StudySpec.model_validate(study["spec"]))

    def reconcile(self) -> None:
        """Report finished cells a dead driver left unreported, unless their trial exists already."""
        pending = store.unreported_cells(self.engine, self.study["id"])
        if not pending:
            return
        known = {t.user_attrs.get("cell"): t.number for t in self.storage.get_all_trials(self.study_id, deepcopy=False)}
        for cell in pending:
            if cell["cell_index"] in known:
                store.set_optuna_trial(self.engine, cell["id"], known[cell["cell_index"]])
            else:
                self.report(cell)

    def report(self, cell: dict[str, Any]) -> None:
        metric = self.study["metric"]
        value = (cell["final_metrics"] or {}).get(metric)
        state = _STATES[cell["status"]]
        if state == TrialState.COMPLETE and (value is None or not math.isfinite(value)):
            state = TrialState.FAIL
        params = {"optimizer": cell["optimizer"], "seed": cell["seed"],
                  **{n: cell[n] for n in HPARAM_NAMES if n in self.dists and cell[n] is not None}}
        trial = optuna.trial.create_trial(
            params=params, distributions={k: self.dists[k] for k in params}, state=state,
            value=value if state == TrialState.COMPLETE else None,
            intermediate_values={row["epoch"]: row[metric] for row in store.curve(self.engine, cell)
                                 if row.get(metric) is not None},
            user_attrs={"cell": cell["cell_index"], "status": cell["status"], "error": cell["error"]})
        trial_id = self.storage.create_new_trial(self.study_id, template_trial=trial)
        store.set_optuna_trial(self.engine, cell["id"], self.storage.get_trial_number_from_id(trial_id))
