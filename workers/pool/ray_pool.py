"""The pool of worker actors the driver runs a study on.

The pool never touches the database: it takes batches (:class:`~study.protocol.BatchPayload`) and returns
events (:data:`study.protocol.Event`: the workers' epoch records, results and failures). Nothing waits
forever: a worker or a node that dies, a worker's resource fault, or a cell that reports nothing for
``stall_seconds``, becomes a :class:`~study.protocol.CellLost` (the cell is retried on a fresh actor, placed
by Ray on a surviving node); a cluster that is gone (its head or the driver's own node) raises
:class:`~study.errors.ClusterLost` within seconds."""

from __future__ import annotations

import concurrent.futures
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError, WorkerCrashedError

from study.errors import ClusterLost  # defined torch- and Ray-free: the driver catches it without importing Ray
from study.protocol import (BatchPayload, CellFailure, CellLost, CellResult, DeviceInfo, EpochRecord, Event,
                            ResourceFault, WarmUp)

from workers.pool.actor import CellWorker
from workers.pool.connect import first_line, unreachable

ACTOR_LOST = (RayActorError, ActorDiedError, ActorUnavailableError, WorkerCrashedError)


log = logging.getLogger("adamscape")


@dataclass
class _Slot:
    actor: Any
    starting: Any  # the actor's node() call until it answers, then None
    spawned: float
    node: str | None = None
    keys: list = field(default_factory=list)  # the dispatched cells that have not ended yet
    stream: Any = None
    last_progress: float = 0.0
    stall_seconds: float | None = None  # this batch's own limit (a warm pool serves commands with their own)

    @property
    def busy(self) -> bool:
        return bool(self.keys)


class RayPool:
    """``size`` CellWorker actors, each training one batch of cells at a time (a population, or one by one).

    ``stall_seconds``: a running cell that reports nothing for this long is treated as a lost
    worker. ``start_seconds``: if no actor at all has come up for this long, the cluster
    cannot hold a worker and :class:`ClusterLost` is raised.
    """

    def __init__(self, size: int, gpus_per_trial: float = 0.0, cpus_per_trial: float = 1.0,
                 stall_seconds: float = 3600.0, start_seconds: float = 300.0, health_seconds: float = 1.0,
                 unreachable_seconds: float = 10.0, warm: WarmUp | BatchPayload | None = None):
        self.size, self.gpus, self.cpus, self.warm = size, gpus_per_trial, cpus_per_trial, warm
        self.stall_seconds, self.start_seconds = stall_seconds, start_seconds
        self.health_seconds, self.unreachable_seconds = health_seconds, unreachable_seconds
        context = ray.get_runtime_context()
        self.own_node, self.gcs_address = context.get_node_id(), context.gcs_address
        self.slots = [self._spawn() for _ in range(size)]
        self.last_health = self.last_answer = self.last_ready = time.monotonic()
        self.start_failures = 0
        self.probe = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ray-health")

    def _spawn(self) -> _Slot:
        actor = CellWorker.options(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0).remote(
            max(1, int(self.cpus)), self.warm, self.gpus)
        return _Slot(actor, actor.node.remote(), time.monotonic())

    def _respawn(self, index: int) -> None:
        try:
            ray.kill(self.slots[index].actor, no_restart=True)
        except Exception:  # already gone with its node
            pass
        self.slots[index] = self._spawn()

    # --- what the driver calls ---------------------------------------------------------------------

    def free_slots(self) -> list[int]:
        self._poll_starting()
        return [i for i, slot in enumerate(self.slots) if slot.starting is None and not slot.busy]

    def devices(self, timeout: float) -> list[DeviceInfo]:
        """Every worker's :meth:`CellWorker.describe`, once each is up (at most ``timeout`` seconds)."""
        return ray.get([slot.actor.describe.remote() for slot in self.slots], timeout=timeout)

    def started(self) -> int:
        """How many workers are up (and warm: an actor answers once its warm-up is done)."""
        self._poll_starting()
        return sum(1 for slot in self.slots if slot.starting is None)

    def dispatch(self, index: int, payload: BatchPayload, stall_seconds: float | None = None) -> None:
        """Start ``payload.cells`` on worker ``index``; their events come back under each cell's ``key``.
        ``stall_seconds``: this batch's limit, instead of the pool's."""
        slot = self.slots[index]
        slot.keys, slot.last_progress = [cell.key for cell in payload.cells], time.monotonic()
        slot.stall_seconds = stall_seconds
        slot.stream = slot.actor.train.options(num_returns="streaming").remote(payload)

    def cancel(self, key: Any) -> list[Any]:
        """Stop the cell ``key`` (its lease went to another driver): its actor is replaced. Returns the
        other unfinished cells that actor was training, stopped with it (the caller hands them back)."""
        for index, slot in enumerate(self.slots):
            if key in slot.keys:
                others = [k for k in slot.keys if k != key]
                self._respawn(index)
                return others
        return []

    def events(self, timeout: float) -> list[Event]:
        """Everything the running cells have reported, waiting up to ``timeout`` seconds for the first."""
        found: list[Event] = []
        running = self._running()
        if running:
            ready = ray.wait(list(running.values()), num_returns=1, timeout=timeout)[0]
            while ready and len(found) < 10_000:  # drain: every stream that has something, all it has
                index_of = {id(stream): index for index, stream in running.items()}
                for stream in ready:
                    found.extend(self._next_events(index_of[id(stream)]))
                running = self._running()
                streams = list(running.values())
                ready = ray.wait(streams, num_returns=len(streams), timeout=0)[0] if streams else []
        elif timeout:
            time.sleep(timeout)
        return found + self._check_health()

    def _running(self) -> dict[int, Any]:
        return {index: slot.stream for index, slot in enumerate(self.slots) if slot.busy}

    def close(self) -> None:
        self.probe.shutdown(wait=False, cancel_futures=True)
        for slot in self.slots:
            try:
                ray.kill(slot.actor)
            except Exception:
                pass

    # --- internals ---------------------------------------------------------------------------------

    def _next_events(self, index: int) -> list[Event]:
        """The stream's next record as an event; every unfinished cell of the worker when it failed."""
        slot = self.slots[index]
        slot.last_progress = time.monotonic()
        try:
            item = ray.get(next(slot.stream))
        except StopIteration:
            return self._lose(index, "worker stream ended without a result")
        except ACTOR_LOST as exc:
            return self._lose(index, f"worker died: {type(exc).__name__}: {first_line(exc)}")
        except RayTaskError as exc:
            keys, slot.keys, slot.stream = slot.keys, [], None
            return [CellFailure(key, str(exc)) for key in keys]
        match item:
            case ResourceFault():  # out of device memory, a CUDA error: its cells run again, on a fresh worker
                return self._lose(index, f"resource fault on the worker: {item.fault}")
            case EpochRecord():
                return [item]
            case CellResult() | CellFailure():
                slot.keys.remove(item.key)
                if not slot.keys:
                    slot.stream = None
                return [item]
        raise TypeError(f"a worker streamed {item!r}, which is no record of study.protocol")

    def _lose(self, index: int, error: str) -> list[Event]:
        """Every unfinished cell of worker ``index`` is lost (``error`` says why); the worker is replaced."""
        keys = self.slots[index].keys
        self._respawn(index)
        return [CellLost(key, error) for key in keys]

    def _poll_starting(self) -> None:
        starting = {id(slot.starting): i for i, slot in enumerate(self.slots) if slot.starting is not None}
        if not starting:
            return
        refs = [self.slots[i].starting for i in starting.values()]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in ready:
            index = starting[id(ref)]
            try:
                self.slots[index].node = ray.get(ref)
                self.slots[index].starting = None
                self.last_ready = time.monotonic()
            except ACTOR_LOST + (RayTaskError,) as exc:
                self.start_failures += 1
                if self.start_failures > 3 * self.size:
                    raise ClusterLost(f"worker actors keep failing to start: {first_line(exc)}") from None
                self._respawn(index)

    def _check_health(self) -> list[Event]:
        """Every ``health_seconds``: is the cluster there, which nodes are alive, which cells stalled."""
        now = time.monotonic()
        if now - self.last_health < self.health_seconds:
            return []
        self.last_health = now
        alive = self._alive_nodes()
        if alive is None:
            if now - self.last_answer > self.unreachable_seconds:
                raise ClusterLost(f"the Ray cluster at {self.gcs_address} stopped answering for "
                                  f"{self.unreachable_seconds:g} s (its head is gone)")
            return []
        self.last_answer = now
        if self.own_node not in alive:
            raise ClusterLost("the Ray node this driver runs on died (its raylet is gone)")
        lost = []
        for index, slot in enumerate(self.slots):
            if slot.node is not None and slot.node not in alive:
                lost += self._lose(index, f"worker node {slot.node[:12]} died")
            elif slot.busy and now - slot.last_progress > (slot.stall_seconds or self.stall_seconds):
                stall = slot.stall_seconds or self.stall_seconds
                lost += self._lose(index, f"no progress for {stall:g} s: worker presumed lost")
        if any(slot.starting is None for slot in self.slots):
            self.last_ready = now
        elif now - self.last_ready > self.start_seconds:
            raise ClusterLost(f"no worker could start in {self.start_seconds:g} s: the cluster has no room for an "
                              f"actor with num_cpus={self.cpus:g}, num_gpus={self.gpus:g}")
        return lost

    def _alive_nodes(self) -> set[str] | None:
        """Ids of the alive nodes, or None when the cluster does not answer (checked without
        blocking the driver: a dead head makes Ray's own calls hang)."""
        if unreachable(self.gcs_address, timeout=2.0):
            return None
        future = self.probe.submit(lambda: {n["NodeID"] for n in ray.nodes() if n["Alive"]})
        try:
            return future.result(timeout=5)
        except (concurrent.futures.TimeoutError, Exception):
            return None
