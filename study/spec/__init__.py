"""The study file: read, resolve, validate, expand into cells, and order them.

A study file (TOML) names a task, the optimizers with a grid per hyperparameter, and the seeds.
Every problem is reported as a :class:`~study.errors.UserError` naming the file, the key and the fix.

* ``values``: the grid forms of an axis and the limits of every value;
* ``model``: :class:`StudySpec` (the validated file) and :class:`Cell`, :func:`expand`;
* ``order``: the run order (every optimizer coarse to fine);
* ``resolve``: the file's own optimizers and task, imported and described (the one step that runs user code);
* ``parse``: :func:`read` (TOML) and :func:`validate`, which run no user code; :func:`parse` and :func:`load`
  run read, resolution and validation in turn.
"""

from study.spec.model import Cell, ConstantSchedule, CosineSchedule, Schedule, StepSchedule, StudySpec, expand
from study.spec.order import ORDER_CHUNK, SCOUT_CELLS, run_order
from study.spec.parse import load, parse, read, validate
from study.spec.values import AXIS_FORMS, FINITE, MAX_AXIS_POINTS, MAX_CELLS, MAX_SEED, axis_values

__all__ = ["AXIS_FORMS", "Cell", "ConstantSchedule", "CosineSchedule", "FINITE", "MAX_AXIS_POINTS", "MAX_CELLS",
           "MAX_SEED", "ORDER_CHUNK", "SCOUT_CELLS", "Schedule", "StepSchedule", "StudySpec", "axis_values", "expand",
           "load", "parse", "read", "run_order", "validate"]
