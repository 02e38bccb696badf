"""The validated study (a strict pydantic model of the study file) and its cells.

Every problem is a ``ValueError`` that :mod:`study.spec.parse` turns into one
:class:`~study.errors.UserError` line naming the file, the key and the fix."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, field_validator, model_validator

import optimizers
from study import plugins as plugin_code
from study.catalog import MAX_WHOLE, TASKS, Option, TaskInfo, TrainingProtocol
from study.protocol import OptimizerPlugin, PluginRecord, TaskPlugin, plugin_record
from study.spec.values import FINITE, MAX_CELLS, MAX_SEED, axis_values, shown


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)  # TOML's inf and nan break runs and storage; `amp = "yes"` is not a bool


class ConstantSchedule(_Strict):
    kind: Literal["constant"]


class StepSchedule(_Strict):
    """lr × factor at each milestone epoch (torch's MultiStepLR)."""

    kind: Literal["step"]
    milestones: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    factor: Annotated[float, Field(gt=0, le=1)] = 0.1

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, milestones: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise ValueError("milestones must increase")
        return milestones


class CosineSchedule(_Strict):
    """Cosine from lr down to lr × final_factor over the epochs (per step)."""

    kind: Literal["cosine"]
    final_factor: Annotated[float, Field(ge=0, le=1)] = 0.0


Schedule = Annotated[ConstantSchedule | StepSchedule | CosineSchedule, Field(discriminator="kind")]

# a plugin record (study.protocol), stored in the spec's JSON as the same object it always was
StoredPlugin = Annotated[PluginRecord, PlainValidator(plugin_record),
                         PlainSerializer(lambda record: record.to_dict(), return_type=dict)]


class StudySpec(_Strict):
    """The validated contents of a study file.

    ``plugins``: the file's own optimizers and task, described when the file was loaded
    (``study.plugins``); never written in a study file.
    """

    plugins: dict[str, StoredPlugin] = {}
    name: Annotated[str, Field(min_length=1, max_length=100)]
    task: Annotated[str, Field(min_length=1, max_length=255)]
    epochs: Annotated[int | None, Field(ge=1, le=100_000)] = None  # None: the task's default
    batch_size: Annotated[int | None, Field(ge=1, le=1_000_000)] = None
    seeds: Annotated[list[int], Field(min_length=1)]
    metric: str | None = None  # None: the task's primary metric
    optimizers: Annotated[dict[str, dict[str, Any]], Field(min_length=1)]
    lr_schedule: Schedule = ConstantSchedule(kind="constant")
    weight_decay: Annotated[float | None, Field(ge=0)] = None  # every optimizer's, unless its grid sets one
    eval_every: Annotated[int, Field(ge=1, le=MAX_WHOLE)] = 1
    divergence_factor: Annotated[float, Field(ge=0)] = 100.0
    data_dir: str = "data"
    download: bool = False
    amp: bool = False
    deterministic: bool = False
    task_options: dict[str, Any] = {}

    @field_validator("name")
    @classmethod
    def _name_is_a_slug(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError("use letters, digits, '-', '_' and '.' (starting with a letter or digit)")
        return name

    @field_validator("task")
    @classmethod
    def _task_is_known(cls, task: str, info) -> str:
        if task not in TASKS and task not in info.data.get("plugins", {}):
            known = [name for name, known_task in TASKS.items() if known_task.listed]
            raise ValueError(f"unknown task {task!r}; known: {', '.join(known)} (see `adamscape tasks`), or your "
                             "own as \"./file.py:build\" (README 'Your own task')")
        return task

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds_in_range(cls, seeds: Any) -> Any:
        for seed in seeds if isinstance(seeds, list) else ():
            whole = isinstance(seed, int) or (isinstance(seed, float) and seed.is_integer())
            if isinstance(seed, bool) or not whole or not 0 <= seed <= MAX_SEED:
                raise ValueError(f"each seed must be a whole number from 0 to {MAX_SEED} (got {shown(seed)})")
        return [int(seed) for seed in seeds] if isinstance(seeds, list) else seeds  # 5.0 is seed 5

    @field_validator("divergence_factor", mode="before")
    @classmethod
    def _divergence_factor_finite(cls, factor: Any) -> Any:
        if isinstance(factor, float) and not math.isfinite(factor):
            raise ValueError(f"{FINITE}; use 0 to stop only on a non-finite loss")
        return factor

    @field_validator("seeds")
    @classmethod
    def _seeds_unique(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must not repeat")
        return seeds

    @model_validator(mode="after")
    def _check_metric_and_grids(self) -> StudySpec:
        metrics = self.task_info.metrics
        if self.metric is None:
            self.metric = self.task_info.primary
        if self.metric not in metrics:
            raise ValueError(f"metric {self.metric!r} is not reported by task {self.task}; "
                             f"choose one of: {', '.join(metrics)}")
        info = self.task_info
        for key, value in self.task_options.items():
            if key not in info.options:
                known = ", ".join(info.options) or "none"
                raise ValueError(f"task_options.{key}: task {self.task} has no such option (it takes: {known})")
            problem = info.options[key].check(value)
            if problem:
                raise ValueError(f"task_options.{key} = {shown(value)} {problem}")
        if isinstance(self.lr_schedule, StepSchedule) and self.lr_schedule.milestones[-1] > self.total_epochs:
            raise ValueError(f"lr_schedule.milestones: {self.lr_schedule.milestones[-1]} is beyond the last epoch "
                             f"({self.total_epochs})")
        for key, axes in self.optimizers.items():
            _check_optimizer(key, axes, self.optimizer_spec)
        total = self.cell_count()
        if total > MAX_CELLS:
            raise ValueError(f"the grid expands to {total:,} cells, more than the {MAX_CELLS:,} allowed; "
                             "reduce num or the number of values")
        return self

    @property
    def task_info(self) -> TaskInfo:
        """The task as the study side knows it: built-in, or described from the file's own task."""
        if self.task in TASKS:
            return TASKS[self.task]
        record = self.plugins[self.task]
        if not isinstance(record, TaskPlugin):
            raise ValueError(f"task {self.task!r}: its plugin record is a {record.kind}'s")
        return TaskInfo(self.task, record.description, record.metrics, record.epochs, record.batch_size,
                        options={name: Option(default, "") for name, default in record.options.items()},
                        primary=record.primary)

    def optimizer_spec(self, key: str) -> optimizers.OptimizerSpec:
        """The optimizer the file names ``key``: registered, or its own (described when the file was loaded)."""
        record = self.plugins.get(key)
        return plugin_code.optimizer_spec(record) if isinstance(record, OptimizerPlugin) else optimizers.spec(key)

    @property
    def direction(self) -> str:
        return self.task_info.metrics[self.metric]

    @property
    def total_epochs(self) -> int:
        return self.epochs or self.task_info.default_epochs

    def protocol(self) -> TrainingProtocol:
        """How every cell trains: the file's training keys, task defaults filled in."""
        info = self.task_info
        options = {name: option.default for name, option in info.options.items()}
        return TrainingProtocol(epochs=self.total_epochs, batch_size=self.batch_size or info.default_batch_size,
                        lr_schedule=self.lr_schedule.model_dump(), eval_every=self.eval_every,
                        divergence_factor=self.divergence_factor, data_dir=self.data_dir, download=self.download,
                        amp=self.amp, deterministic=self.deterministic, task_options={**options, **self.task_options})

    def grid(self, optimizer: str) -> dict[str, list[float]]:
        """Each hyperparameter's values for ``optimizer``: swept ones and fixed ones alike."""
        return {name: axis_values(axis) for name, axis in self.optimizers[optimizer].items()}

    def swept_axes(self, optimizer: str) -> list[str]:
        """Hyperparameters with more than one value, in the optimizer's order."""
        grid = self.grid(optimizer)
        return [n for n in self.optimizer_spec(optimizer).hparams if len(grid.get(n, [])) > 1]

    def cell_count(self) -> int:
        return len(self.seeds) * sum(math.prod(len(v) for v in self.grid(key).values()) for key in self.optimizers)

    def canonical_json(self) -> str:
        """The parsed spec without keys left at their defaults (adding a key to the format keeps fingerprints)."""
        return json.dumps(self.model_dump(mode="json", exclude_defaults=True), sort_keys=True, separators=(",", ":"))

    def fingerprint(self) -> str:
        """Equal for the same file with the same code: a plugin counts by its identity (content hash or
        version), not by where it sits on this machine."""
        text = self.canonical_json()
        if self.plugins:
            content = json.loads(text) | {"plugins": {key: plugin_code.identity(record)
                                                      for key, record in self.plugins.items()}}
            text = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Cell:
    """One training run: optimizer × hyperparameter point × seed."""

    index: int  # deterministic position in the study (optimizer, seed, grid point): the cell's identity
    optimizer: str
    seed: int
    hparams: dict[str, float]  # every hyperparameter the optimizer takes, defaults included


def _check_optimizer(key: str, axes: dict[str, Any], spec_of) -> None:
    try:
        opt = spec_of(key)
    except KeyError as exc:
        raise ValueError(f"optimizers.{key}: {exc}") from None
    for name, axis in axes.items():
        if name not in opt.hparams:
            raise ValueError(f"optimizers.{key}: unknown hyperparameter {name!r}; {key} takes "
                             f"{', '.join(opt.hparams)} (see `adamscape optimizers`)")
        try:
            values = axis_values(axis)
        except ValueError as exc:
            raise ValueError(f"optimizers.{key}.{name}: {exc}") from None
        if not values:
            raise ValueError(f"optimizers.{key}.{name}: empty list of values")
        for value in values:  # before the repeat check: [nan, nan] is not finite rather than "repeating"
            problem = opt.hparams[name].check(value)
            if problem:
                raise ValueError(f"optimizers.{key}.{name} = {value:g} {problem}")
        if len(set(values)) != len(values):
            raise ValueError(f"optimizers.{key}.{name}: values repeat")


def expand(spec: StudySpec) -> list[Cell]:
    """All cells in a deterministic order: optimizer (file order), seed, then grid point."""
    cells = []
    for key in spec.optimizers:
        defaults = spec.optimizer_spec(key).defaults()
        if spec.weight_decay is not None and "weight_decay" in defaults:
            defaults["weight_decay"] = spec.weight_decay
        grid = {**{n: [v] for n, v in defaults.items()}, **spec.grid(key)}
        names = list(grid)
        points = list(itertools.product(*(grid[n] for n in names)))
        for seed in spec.seeds:
            for point in points:
                cells.append(Cell(len(cells), key, seed, dict(zip(names, point))))
    return cells
