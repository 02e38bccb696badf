"""The study file: parse, validate, and expand into cells.

A study file (TOML) names a task, the optimizers with a grid per
hyperparameter, and the seeds. Every problem is reported as a
:class:`~study.errors.UserError` naming the file, the key and the fix.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import tomllib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import optimizers
from . import plugins as plugin_code
from .catalog import MAX_WHOLE, TASKS, Option, TaskInfo, TrainingProtocol, fits_a_float
from .errors import UserError

MAX_CELLS = 100_000  # beyond this a grid is almost certainly a typo (num = 1e5 …)
MAX_AXIS_POINTS = 1_000
MAX_SEED = MAX_WHOLE  # seeds: 0 … 2**31 - 1, what PostgreSQL's integer column and torch/numpy seeding accept
FINITE = "must be a finite number (inf and nan are not allowed)"


AXIS_FORMS = "a number, a list of numbers, { log = [lo, hi], num = n } or { linear = [lo, hi], num = n }"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value: Any, limit: int = 40) -> str:
    """``value`` as a study file writes it, cut short (a 400-digit integer fits no message)."""
    text = {True: "true", False: "false"}[value] if isinstance(value, bool) else \
        f"{value:g}" if isinstance(value, float) else repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _as_float(value: int | float) -> float:
    """``float(value)``, with a ValueError naming the value where an integer is beyond the float range."""
    if not fits_a_float(value):
        raise ValueError(f"{_shown(value)} is too large for a floating-point number")
    return float(value)


def axis_values(axis: Any) -> list[float]:
    """The values one hyperparameter entry of a study file stands for (ValueError if malformed).

    Explicit values may come back non-finite (the hyperparameter's check refuses them);
    range bounds must be finite numbers.
    """
    if isinstance(axis, bool) or isinstance(axis, str):
        raise ValueError(f"expected {AXIS_FORMS}")
    if isinstance(axis, (int, float)):
        return [_as_float(axis)]
    if isinstance(axis, list):
        if not all(_is_number(v) for v in axis):
            raise ValueError(f"expected {AXIS_FORMS}")
        return [_as_float(v) for v in axis]
    if isinstance(axis, dict) and set(axis) in ({"log", "num"}, {"linear", "num"}):
        kind = "log" if "log" in axis else "linear"
        bounds, num = axis[kind], axis["num"]
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, (int, float)) for b in bounds)):
            raise ValueError(f"{kind} must be [lo, hi]")
        if not all(_is_number(b) and fits_a_float(b) and math.isfinite(b) for b in bounds):
            raise ValueError(f"range bounds must be finite numbers (got [{', '.join(map(_shown, bounds))}])")
        if isinstance(num, bool) or not isinstance(num, int) or not 1 <= num <= MAX_AXIS_POINTS:
            raise ValueError(f"num must be a whole number from 1 to {MAX_AXIS_POINTS}")
        return _spaced(float(bounds[0]), float(bounds[1]), num, log=kind == "log")
    raise ValueError(f"expected {AXIS_FORMS}")


def _spaced(low: float, high: float, num: int, log: bool) -> list[float]:
    """num points from low to high, both ends included, evenly spaced (in log10 when log).

    ``low`` and ``high`` are finite; a range numpy cannot space without overflowing is a ValueError.
    """
    if not low <= high:
        raise ValueError(f"range start must not exceed its end (got [{low:g}, {high:g}])")
    if num > 1 and low == high:
        raise ValueError(f"range [{low:g}, {high:g}] is a single point; use a scalar or num = 1")
    if log and low <= 0:
        raise ValueError(f"log range [{low:g}, {high:g}] must be positive")
    too_wide = ValueError(f"range [{low:g}, {high:g}] is too wide to space {num} points in; narrow it")
    if not math.isfinite(high - low):
        raise too_wide
    try:
        import numpy as np  # here: `status` and `--help` load study files' models without it

        with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
            points = np.logspace(np.log10(low), np.log10(high), num) if log else np.linspace(low, high, num)
    except FloatingPointError:
        raise too_wide from None
    values = [float(f"{x:.12g}") for x in points]  # 1e-3, not 0.0010000000000000002
    if not all(math.isfinite(v) for v in values):
        raise too_wide
    return values


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


class StudySpec(_Strict):
    """The validated contents of a study file.

    ``plugins``: the file's own optimizers and task, described when the file was loaded
    (``study.plugins``); never written in a study file.
    """

    plugins: dict[str, dict[str, Any]] = {}
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
                raise ValueError(f"each seed must be a whole number from 0 to {MAX_SEED} (got {_shown(seed)})")
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
                raise ValueError(f"task_options.{key} = {_shown(value)} {problem}")
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
        return TaskInfo(self.task, record["description"], record["metrics"], record["epochs"], record["batch_size"],
                        options={name: Option(default, "") for name, default in record["options"].items()},
                        primary=record["primary"])

    def optimizer_spec(self, key: str) -> optimizers.OptimizerSpec:
        """The optimizer the file names ``key``: registered, or its own (described when the file was loaded)."""
        record = self.plugins.get(key)
        return plugin_code.optimizer_spec(record) if record and record["kind"] == "optimizer" else optimizers.spec(key)

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


ORDER_CHUNK = 64  # cells of one (optimizer, seed) per round of the run order: runner.AUTO_POPULATION (a test checks)
SCOUT_CELLS = 16  # at most this many cells per optimizer in the run order's first round


def _bisection(n: int) -> dict[int, tuple[int, int]]:
    """Indices 0 … n-1 of one sorted axis coarse to fine: both ends (level 0), then the middle of each
    interval between points already taken, breadth first (level 1, 2, …). {index: (position, level)}."""
    order = [(0, 0)] + ([(n - 1, 0)] if n > 1 else [])
    intervals = deque([(0, n - 1, 1)])
    while intervals:
        low, high, level = intervals.popleft()
        if high - low < 2:
            continue
        middle = (low + high) // 2
        order.append((middle, level))
        intervals.extend([(low, middle, level + 1), (middle, high, level + 1)])
    return {index: (position, level) for position, (index, level) in enumerate(order)}


def _coarse_to_fine(points: list[dict[str, float]]) -> tuple[list[int], int]:
    """The positions of one (optimizer, seed)'s grid ``points`` in coarse-to-fine order, and how many of
    them form its scout (the level-≤1 sub-grid: each swept axis' ends and middle, at most SCOUT_CELLS).

    A point's level is the finest level (see :func:`_bisection`) of its coordinates, so every prefix
    that ends a level is a sub-grid: the corners, then ends and middles (3 × 3 on two axes), then
    5 × 5 …; within a level, points whose coordinates came earlier on their axes go first."""
    values = {name: sorted({p[name] for p in points if name in p}) for name in {n for p in points for n in p}}
    swept = sorted(name for name, seen in values.items() if len(seen) > 1)
    rank = {}
    for name in swept:
        walk = _bisection(len(values[name]))
        rank[name] = {value: walk[i] for i, value in enumerate(values[name])}

    def key(k: int) -> tuple:
        coordinates = [rank[name][points[k][name]] for name in swept]
        return (max((level for _, level in coordinates), default=0), sum(position for position, _ in coordinates),
                tuple(position for position, _ in coordinates), k)

    keys = sorted((key(k) for k in range(len(points))))
    scout = min(SCOUT_CELLS, sum(1 for k in keys if k[0] <= 1))
    return [k[-1] for k in keys], scout


def run_order(cells: Sequence[Cell]) -> list[int]:
    """The study's run order: ``result[k]`` is the position of ``cells[k]`` (cells as :func:`expand` lists
    them) in the order the driver leases cells. Stored per cell (``sweep_cells.run_order``) so that
    every driver and every resume agree; a pure function of the cells, so a database migrated from
    before it gets the same order from its stored rows.

    Goal: any finished prefix is a coarse map of every optimizer, while a batch of consecutive cells
    (a worker's pass: up to 64, runner.AUTO_POPULATION) still forms few, large (optimizer, seed)
    groups, each trained as one population. Each (optimizer, seed) walks its grid coarse to fine
    (:func:`_coarse_to_fine`) and is cut into chunks that the order deals out in rounds:

    * round 0, the scouts: for the first seed only, each optimizer's level-≤1 sub-grid (ends and
      middle of each swept axis: 3 points on one axis, 3 × 3 on two, at most SCOUT_CELLS), optimizers
      in file order. A few percent of a study, and every optimizer has a readable coarse map;
    * round r ≥ 1: for each seed (file order), for each optimizer, the grid points ``[(r-1)·64, r·64)``
      of its order (the first seed's round 1 starts after its scout), i.e. population-sized chunks:
      every later seed and every next 64 points of every optimizer, coarse to fine.

    Why populations keep their size: a chunk is a run of consecutive cells of one (optimizer, seed),
    as large as a worker's batch (a grid of ≤ 64 points per seed is one chunk, whole, as in file
    order), so a batch spans one or two groups, as in file order, except for the scouts: each
    optimizer's scout is one extra, small population (≤ SCOUT_CELLS configurations) when it is sent
    in another batch than the rest of its first seed's grid. That is the price of covering every
    optimizer before any one is complete; a cell costs the same wherever it is trained. Seeds come
    after the first seed's coarse maps on purpose: a map of one seed per point is readable, a
    second seed of a few points is not.
    """
    optimizers_ = list(dict.fromkeys(cell.optimizer for cell in cells))
    seeds = list(dict.fromkeys(cell.seed for cell in cells))
    groups: dict[tuple[str, int], list[int]] = {}
    for k, cell in enumerate(cells):
        groups.setdefault((cell.optimizer, cell.seed), []).append(k)
    chunks = []  # (round, seed position, optimizer position, cells in order)
    for (optimizer, seed), members in groups.items():
        walk, scout = _coarse_to_fine([cells[k].hparams for k in members])
        ordered = [members[i] for i in walk]
        first_seed = seeds.index(seed) == 0
        bounds = [0, scout] if first_seed and scout < len(ordered) else [0]
        bounds += [b for b in range(ORDER_CHUNK, len(ordered), ORDER_CHUNK) if b > bounds[-1]] + [len(ordered)]
        for start, end in zip(bounds, bounds[1:]):
            round_ = 0 if first_seed and start == 0 else start // ORDER_CHUNK + 1
            chunks.append((round_, seeds.index(seed), optimizers_.index(optimizer), ordered[start:end]))
    positions = [0] * len(cells)
    for position, k in enumerate(k for *_, chunk in sorted(chunks, key=lambda c: c[:3]) for k in chunk):
        positions[k] = position
    return positions


_EXPECTED = {"bool_type": "true or false", "string_type": "a string in quotes", "int_type": "a whole number",
             "float_type": "a number", "list_type": "a list [...]", "dict_type": "a table"}


def _format_validation_error(source: str, error: ValidationError) -> str:
    first = error.errors()[0]
    loc = list(first["loc"])
    if len(loc) > 1 and loc[0] == "lr_schedule" and loc[1] in ("constant", "step", "cosine"):
        del loc[1]  # the kind pydantic puts in the path: lr_schedule.factor, not lr_schedule.step.factor
    where = ".".join(str(p) for p in loc if not str(p).startswith(("function-", "union")))
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing":
        message = "missing required key"
    elif first["type"] == "extra_forbidden":
        message = "unknown key (check the spelling; see README 'The study file')"
    elif first["type"] == "finite_number":
        message = FINITE
    elif first["type"] == "float_type" and _is_number(first.get("input")):
        message = f"{_shown(first['input'])} is too large for a floating-point number"
    elif first["type"] == "int_type" and isinstance(first.get("input"), float):
        message = FINITE if not math.isfinite(first["input"]) else f"must be a whole number (got {first['input']!r})"
    elif first["type"] in _EXPECTED:  # strict types: "yes" is not true, 1 is not a string
        message = f"must be {_EXPECTED[first['type']]} (got {_shown(first.get('input'))})"
    return f"{source}: {where + ': ' if where else ''}{message}"


def _describe_plugins(raw: dict[str, Any], base_dir: Path) -> dict[str, dict[str, Any]]:
    """The file's own optimizers and task, imported and described (study.plugins); names that are neither
    built in nor found are left for validation to report."""
    found = {}
    task = raw.get("task")
    if isinstance(task, str) and task not in TASKS:
        if plugin_code.is_reference(task) or plugin_code.entry_point(plugin_code.TASK_GROUP, task):
            found[task] = plugin_code.describe_task(plugin_code.locate(task, "task", base_dir))
    for key in raw.get("optimizers") or {} if isinstance(raw.get("optimizers"), dict) else {}:
        if key not in optimizers.REGISTRY and (plugin_code.is_reference(key)
                                               or plugin_code.entry_point(plugin_code.OPTIMIZER_GROUP, key)):
            found[key] = plugin_code.describe_optimizer(plugin_code.locate(key, "optimizer", base_dir))
    return found


def parse(text: str, source: str = "<study>", base_dir: Path | None = None) -> StudySpec:
    """Parse and validate study-file text; raise UserError with one readable line. Plugin paths are
    relative to ``base_dir`` (the study file's folder; default: the current directory)."""
    try:
        raw = tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{source}: not valid TOML: {exc}") from None
    except ValueError:  # Python refuses to read an integer of more than 4300 digits
        raise UserError(f"{source}: not valid TOML: a number has too many digits to read") from None
    if "plugins" in raw:
        raise UserError(f"{source}: plugins: unknown key (check the spelling; see README 'The study file')")
    try:
        described = _describe_plugins(raw, base_dir or Path.cwd())
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    if described:
        raw["plugins"] = described
    try:
        return StudySpec.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_format_validation_error(source, exc)) from None


def load(path: str | Path) -> StudySpec:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"study file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read study file {path}: {exc}") from None
    return parse(text, str(path), path.resolve().parent)
