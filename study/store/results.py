"""Reading results: the ``sweep_results`` rows (plain or as a DataFrame), curves, status counts."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, func, select, text

from study.interrupts import protected
from study.store.engine import DEFAULT_DB, connect
from study.store.leases import last_curves
from study.store.schema import cells
from study.store.studies import get_study

if TYPE_CHECKING:  # pandas, alembic and the study-file models are imported where used: `status` needs none
    import pandas as pd

OWN_HPARAMS = "own_hparams"  # results' attrs: the columns of the study's own optimizers' hyperparameters


def cell_curves(engine: Engine, name: str, cell_indexes: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
    """Per cell index of study ``name``, the per-epoch metrics of the cell's last attempt."""
    study = get_study(engine, name)
    with protected(), engine.connect() as conn:
        of = [dict(row) for row in conn.execute(
            select(cells.c.id, cells.c.cell_index, cells.c.attempts)
            .where(cells.c.study_id == study["id"], cells.c.cell_index.in_(list(cell_indexes)))).mappings()]
        found = last_curves(conn, of)
    return {cell["cell_index"]: found.get(cell["id"], []) for cell in of}


def status_counts(engine: Engine, study_id: int) -> dict[str, int]:
    with protected(), engine.connect() as conn:
        rows = conn.execute(select(cells.c.status, func.count()).where(cells.c.study_id == study_id)
                            .group_by(cells.c.status)).all()
    return {status: count for status, count in rows}


def result_rows(engine: Engine, name: str) -> tuple[list[str], list[tuple]]:
    """The ``sweep_results`` rows of study ``name`` as plain tuples (in cell order) and their column
    names: the view's columns, then a column for each hyperparameter of the study's own optimizers
    (the view keeps them in ``hparams``, as JSON) and ``final_<name>`` for each metric that only the
    ``final_metrics`` JSON holds (x, distance …). No pandas: `adamscape results` answers at once."""
    columns, rows, _ = _result_table(engine, name)
    return columns, rows


def _result_table(engine: Engine, name: str) -> tuple[list[str], list[tuple], list[str]]:
    """:func:`result_rows`, and the names of the columns it added for the study's own hyperparameters."""
    get_study(engine, name)
    with protected(), engine.connect() as conn:
        result = conn.execute(text("SELECT * FROM sweep_results WHERE study = :name ORDER BY cell"), {"name": name})
        columns, rows = list(result.keys()), [dict(row._mapping) for row in result]
    hparams = [_parsed_json(row.pop("hparams")) for row in rows]
    metrics = [_parsed_json(row.pop("final_metrics")) for row in rows]
    columns = [c for c in columns if c not in ("hparams", "final_metrics")]
    own_hparams = sorted({n for values in hparams for n in values} - set(columns))
    columns += own_hparams
    metric_columns = sorted({f"final_{n}" for values in metrics for n in values} - set(columns))
    for row, own, final in zip(rows, hparams, metrics):
        row.update((n, v) for n, v in own.items() if n not in row)
        row.update((c, final.get(c.removeprefix("final_"))) for c in metric_columns)
    columns += metric_columns
    return columns, [tuple(row.get(c) for c in columns) for row in rows], own_hparams


def _parsed_json(value: Any) -> dict:
    return json.loads(value) if isinstance(value, str) else value if isinstance(value, dict) else {}


def results(name: str, db: str | Engine = DEFAULT_DB) -> pd.DataFrame:
    """The ``sweep_results`` rows of study ``name`` as a DataFrame (one row per cell, in cell order;
    the columns of :func:`result_rows`). Its ``attrs[OWN_HPARAMS]`` names the columns of the study's own
    optimizers' hyperparameters: with the registry's (``optimizers.HPARAM_NAMES``), the hyperparameters
    that the analysis groups configurations by."""
    import pandas as pd

    engine = db if isinstance(db, Engine) else connect(db, read_only=True)
    columns, rows, own = _result_table(engine, name)
    frame = pd.DataFrame.from_records(rows, columns=columns, coerce_float=True)  # as pandas.read_sql builds it
    frame.attrs[OWN_HPARAMS] = tuple(own)
    frame["diverged"] = frame["diverged"].astype("boolean")
    for column in columns:
        if column.startswith("final_") and frame[column].dtype == object:  # NULL for some cells: NaN
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame
