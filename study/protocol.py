"""What crosses between the driver and its workers, and the plugin record: frozen dataclasses, each with an
explicit ``kind``.

The driver sends a worker a :class:`BatchPayload` (its :class:`CellPayload` s), or at start a
:class:`WarmUp`; the worker streams back, per cell, :class:`EpochRecord` s and then one
:class:`CellResult` (complete or diverged) or :class:`CellFailure` (the trial crashed), or a
:class:`ResourceFault` (out of device memory, a CUDA error: the worker's fault, not the cell's). The pool
turns a dead, stalled or faulted worker into a :class:`CellLost` for each of its unfinished cells, so
what the driver reads (:data:`Event`) is one of epoch, result, failure, lost. A reader tells them apart by
type (``match`` / ``isinstance``) or by ``kind``, never by which fields are set: an epoch record and a
result both carry metrics. The background warm workers (``workers.pool.warm_server``) carry these
objects across their socket pickled (``multiprocessing.connection``), with :class:`PoolLost` when their
pool is gone; a worker describes its device in a :class:`DeviceInfo`.

A plugin record (:class:`OptimizerPlugin`, :class:`TaskPlugin`; located but not yet described:
:class:`PluginCode`) says where a study file's own optimizer or task lives, which code it is, and what the
study side needs to know of it (``study.plugins``). It is stored as JSON inside the study's spec:
:meth:`PluginCode.to_dict` writes the same object, key for key and in the same order, as the plain
dicts of earlier versions did, and :func:`plugin_record` reads it back.

Imports neither torch, Ray nor pydantic: the driver, the CLI and the workers all import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, Union

from study.catalog import TrainingProtocol

Key = Any  # what the driver dispatched a cell under: its id (the warm workers wrap it as (command, id))


# --- driver -> worker ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellPayload:
    """One cell of a batch: its key, optimizer, seed and every hyperparameter (defaults included)."""

    key: Key
    optimizer: str
    seed: int
    hparams: dict[str, float]
    kind: Literal["cell"] = field(default="cell", init=False)


@dataclass(frozen=True)
class BatchPayload:
    """What a worker trains in one pass (``study.driver.runner.payload``): ``cells`` of one study, those
    sharing optimizer and seed as populations of at most ``population`` configs (None: as many as fit its
    device), halved ``halvings`` times (once per worker lost on any of them); ``plugins``: the study's own
    optimizers and task, installed first."""

    task: str
    protocol: TrainingProtocol
    cells: tuple[CellPayload, ...]
    population: int | None = None
    halvings: int = 0
    plugins: dict[str, PluginRecord] = field(default_factory=dict)
    kind: Literal["batch"] = field(default="batch", init=False)

    def keyed(self, wrap) -> BatchPayload:
        """The same batch with each cell's key replaced by ``wrap(key)``."""
        return BatchPayload(self.task, self.protocol, tuple(CellPayload(wrap(c.key), c.optimizer, c.seed, c.hparams)
                                                            for c in self.cells),
                            self.population, self.halvings, self.plugins)


@dataclass(frozen=True)
class WarmUp:
    """What each worker builds while it starts, before any cell is sent: the study's task under its protocol
    (imports, dataset), with the study's own plugins installed."""

    task: str
    protocol: TrainingProtocol
    plugins: dict[str, PluginRecord] = field(default_factory=dict)
    kind: Literal["warm-up"] = field(default="warm-up", init=False)


# --- worker -> driver ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpochRecord:
    """A cell's metrics after epoch ``epoch`` (``train_loss`` always, the test metrics when evaluated).
    ``key`` is None inside the training loop; ``workers.population.train_payload`` sets it."""

    epoch: int
    metrics: dict[str, float]
    key: Key = None
    kind: Literal["epoch"] = field(default="epoch", init=False)


@dataclass(frozen=True)
class PopulationNote:
    """How the pass that trained a cell was sized: ``size`` configs, and why."""

    size: int
    why: str


@dataclass(frozen=True)
class CellResult:
    """A cell that trained to its end (``complete``) or stopped as ``diverged``: its final metrics (with
    ``initial_<name>`` for each at initialisation), best test accuracy, wall time (its share of its
    population's), what it trained on and the peak memory of its pass (CUDA only), and how its pass was
    sized (``population``, set by ``workers.population.train_cells``)."""

    status: Literal["complete", "diverged"]
    final: dict[str, float]
    best_test_accuracy: float | None = None
    wall_seconds: float | None = None
    device: str | None = None
    peak_memory_mib: float | None = None
    population: PopulationNote | None = None
    key: Key = None
    kind: Literal["result"] = field(default="result", init=False)


@dataclass(frozen=True)
class CellFailure:
    """A trial that crashed (its traceback, and the device where the worker says so): the cell fails."""

    key: Key
    error: str
    device: str | None = None
    kind: Literal["failure"] = field(default="failure", init=False)


@dataclass(frozen=True)
class ResourceFault:
    """The worker ran out of device memory or hit a CUDA error while training ``key``'s group: not the
    cell's doing. The pool replaces the worker and reports its unfinished cells as :class:`CellLost`."""

    key: Key
    fault: str
    kind: Literal["fault"] = field(default="fault", init=False)


@dataclass(frozen=True)
class CellLost:
    """The worker of cell ``key`` died, stalled or faulted (said by the pool, not the worker): the cell is
    handed back to be retried, and fails after ``max_attempts`` of these."""

    key: Key
    error: str
    kind: Literal["lost"] = field(default="lost", init=False)


@dataclass(frozen=True)
class PoolLost:
    """The warm workers' pool is gone (its Ray stopped): the driver's next ``events`` raises ClusterLost."""

    error: str
    kind: Literal["pool-lost"] = field(default="pool-lost", init=False)


@dataclass(frozen=True)
class DeviceInfo:
    """What a worker trains on (``CellWorker.describe``): its device, torch and CUDA versions and Ray's GPU
    ids; for a GPU share the GPU's name, compute capability, memory and this worker's fraction of it;
    ``problem``: why a GPU share cannot be used there (None if it can)."""

    device: str
    torch: str
    cuda: str | None
    gpu_ids: tuple[str, ...] = ()
    problem: str | None = None
    gpu: str | None = None
    capability: str | None = None
    memory_gib: float | None = None
    memory_fraction: float | None = None
    kind: Literal["device"] = field(default="device", init=False)


WorkerRecord = Union[EpochRecord, CellResult, CellFailure, ResourceFault]  # what a worker's stream yields
Event = Union[EpochRecord, CellResult, CellFailure, CellLost]  # what a pool's ``events`` returns to the driver
Ended = Union[CellResult, CellFailure, CellLost]  # the events after which nothing of a cell counts


# --- the plugin record ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PluginCode:
    """A study file's own optimizer or task, located (``study.plugins.locate``): the ``reference`` as the file
    writes it, the ``attribute`` to load, and where it lives: a ``file`` (its ``path``) or a ``module`` (its
    installed ``version``, and for a package adamscape does not provide, the ``package`` folder that is
    shipped to workers); ``sha256`` of its sources; ``entry_point`` when a bare name found it."""

    kind: Literal["optimizer", "task"]
    reference: str
    entry_point: str | None = None
    attribute: str
    source: Literal["file", "module"]
    path: str | None = None
    module: str | None = None
    version: str | None = None
    package: str | None = None
    sha256: str | None = None

    def location(self) -> dict[str, Any]:
        """The fields :class:`PluginCode` has (what a described record keeps of it), by name."""
        return {f.name: getattr(self, f.name) for f in fields(PluginCode) if f.name != "kind"}

    def _kept_when_none(self) -> set[str]:
        """Fields written even when None: a module's version (None when its distribution is unknown)."""
        return {"version"} if self.source == "module" else set()

    def to_dict(self) -> dict[str, Any]:
        """The record as stored in a study's spec (JSON): the fields that are set, in their order."""
        kept = self._kept_when_none()
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None or f.name in kept}


@dataclass(frozen=True, kw_only=True)
class OptimizerPlugin(PluginCode):
    """A study file's own optimizer, described (``study.plugins.describe_optimizer``): its summary, whether it
    has the batched kernel, its packed tensors and hyperparameters (each a JSON object: ``default``,
    ``low``/``high`` with None for an infinite bound, ``search``, ``log``, ``open_low``, ``closed_high``)."""

    kind: Literal["optimizer"] = field(default="optimizer", init=False)
    summary: str
    batched: bool
    packed: dict[str, list[str]]
    hparams: dict[str, dict[str, Any]]

    def _kept_when_none(self) -> set[str]:
        return super()._kept_when_none() | {"summary", "batched", "packed", "hparams"}


@dataclass(frozen=True, kw_only=True)
class TaskPlugin(PluginCode):
    """A study file's own task, described (``study.plugins.describe_task``): its metrics and directions, the
    primary one, its default epochs and batch size, its options' defaults, a one-line description; and,
    once ``adamscape check`` found that it cannot train as a population, why (``populations``)."""

    kind: Literal["task"] = field(default="task", init=False)
    metrics: dict[str, str]
    primary: str
    epochs: int
    batch_size: int
    options: dict[str, Any]
    description: str | None
    populations: str | None = None

    def _kept_when_none(self) -> set[str]:
        return super()._kept_when_none() | {"metrics", "primary", "epochs", "batch_size", "options", "description"}


PluginRecord = Union[OptimizerPlugin, TaskPlugin]
_PLUGIN_KINDS: dict[str, type[PluginCode]] = {"optimizer": OptimizerPlugin, "task": TaskPlugin}


def plugin_record(value: PluginRecord | dict[str, Any]) -> PluginRecord:
    """A described plugin record from its stored JSON form (:meth:`PluginCode.to_dict`); a record as it is.
    Raises ValueError for an unknown kind, a missing or an unknown field."""
    if isinstance(value, (OptimizerPlugin, TaskPlugin)):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"a plugin record is an object, not {type(value).__name__}")
    cls = _PLUGIN_KINDS.get(value.get("kind"))
    if cls is None:
        raise ValueError(f"unknown plugin kind {value.get('kind')!r} (optimizer or task)")
    try:
        return cls(**{name: item for name, item in value.items() if name != "kind"})
    except TypeError as exc:
        raise ValueError(f"plugin record {value.get('reference')!r}: {exc}") from None


def plugin_records(values: dict[str, Any] | None) -> dict[str, PluginRecord]:
    """Every record of a study's ``plugins`` (stored JSON or records), by the name the study file gives it."""
    return {name: plugin_record(value) for name, value in (values or {}).items()}
