"""The ``sweep_results`` view, every version of it: the one place its columns are declared.

Each version is the one before with what its migration added; a migration creates the version it names
(``sql("0005")``) and recreates the one before on downgrade. :data:`NEWEST` is the view as documented
(docs/results.md); ``schema`` takes the results columns of ``sweep_cells`` from it. A version, once a
migration has created it, is never edited: a new column is a new version and a new migration, which adds
the column to ``sweep_cells`` and creates that version (a test does exactly this)."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class View:
    """The view's columns of ``sweep_cells c`` (``sweep_studies s`` gives the study's name), in order and
    in the lines the SQL writes them on."""

    hparams: tuple[str, ...]  # a column per hyperparameter of the optimizer registry
    results: tuple[str, ...]  # the cell's results: ``final_<metric>`` (the final value of a metric) or a result's own
    outcome: tuple[str, ...]  # how the cell ended, and its JSON columns
    run: tuple[str, ...] = ()  # when and on what its last attempt ran

    def sql(self) -> str:
        lines = [", ".join(f"c.{name}" for name in names) for names in (self.hparams, self.results, self.outcome,
                                                                         self.run) if names]
        columns = ",\n           ".join(["s.name AS study, c.optimizer, c.seed, c.status", *lines])
        return f"""
    CREATE VIEW sweep_results AS
    SELECT {columns}
    FROM sweep_cells c JOIN sweep_studies s ON s.id = c.study_id
"""

    def columns(self) -> list[str]:
        """The view's column names, in order."""
        every = (*self.hparams, *self.results, *self.outcome, *self.run)
        return ["study", "optimizer", "seed", "status", *(name.split(" AS ")[-1] for name in every)]


_V1 = View(hparams=("lr", "beta1", "beta2", "eps", "weight_decay", "final_lr", "gamma", "beta3", "momentum"),
           results=("final_train_loss", "final_test_loss", "final_test_accuracy", "best_test_accuracy"),
           outcome=("diverged", "wall_seconds", "cell_index AS cell", "error"))
_V2 = replace(_V1, hparams=(*_V1.hparams, "momentum_decay", "alpha", "lr_decay", "initial_accumulator_value"))
_V3 = replace(_V2, outcome=(*_V2.outcome, "score", "final_metrics"))
_V5 = replace(_V3, outcome=(*_V3.outcome, "hparams"))
_V6 = replace(_V5, run=("started_at", "finished_at"))
_V7 = replace(_V6, run=(*_V6.run, "device", "peak_memory_mib"))

# each version under the revision of the migration that made it
VERSIONS = {"0001": _V1, "0002": _V2, "0003": _V3, "0005": _V5, "0006": _V6, "0007": _V7}
NEWEST = VERSIONS[max(VERSIONS)]


def sql(version: str) -> str:
    """``CREATE VIEW sweep_results`` as migration ``version`` made it."""
    return VERSIONS[version].sql()
