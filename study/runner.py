"""The driver: lease cells from the database, run them on a worker pool, write results back.

Only this loop writes results. Every cell ends exactly once: complete or
diverged (a result), or failed (its error recorded) after a trial crash or
after ``max_attempts`` worker deaths. A driver that dies leaves leases that
expire after ``lease_seconds``; the next ``run`` takes those cells over.

Each worker is sent a batch of consecutive cells (those sharing optimizer and
seed train as one population, ``workers.population``); its K leases are taken,
heart-beaten and handed back together, and each cell's result is written on its
own. Each pass drains whatever the pool has ready and writes it in one
transaction; a database that stops answering is retried with bounded backoff
while the results wait in memory (and in the workers' streams). Every write is
conditional on this driver's lease: a cell taken over by another driver is
dropped here (its worker stopped), and a study replaced under a running driver
stops the driver with a clear error.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine

from . import store
from .errors import RunAborted
from .optuna_log import OptunaLog
from .spec import StudySpec

log = logging.getLogger("adamscape")
T = TypeVar("T")


class Event(Protocol):
    key: Any  # what the driver dispatched the payload under
    kind: str  # "epoch" | "done" | "error" | "lost"
    data: dict[str, Any]


class Pool(Protocol):
    """What the driver needs from an executor (workers.executor.RayPool; tests script a fake one).

    ``dispatch`` starts a payload (see :func:`payload`) on an idle worker; every event carries
    the ``key`` of one of its cells. ``events`` returns what the running cells reported within
    ``timeout`` seconds (possibly nothing) and is also where the pool notices dead or stalled
    workers (a ``lost`` event for each of their unfinished cells) or a cluster that is gone (it
    raises). ``cancel`` stops a cell whose lease this driver lost and returns the other
    unfinished cells stopped with it.
    """

    size: int  # workers

    def free_slots(self) -> list[int]: ...
    def dispatch(self, slot: int, payload: dict[str, Any]) -> None: ...
    def events(self, timeout: float) -> list[Event]: ...
    def cancel(self, key: Any) -> list[Any]: ...


@dataclass
class RunOptions:
    lease_seconds: float = 60.0
    max_attempts: int = 3  # worker deaths on one cell before it fails
    poll_seconds: float = 0.5
    db_retry_seconds: float = 300.0  # how long an unreachable database is retried before the driver gives up
    counts_every: float = 5.0  # seconds between status-count queries (other drivers' progress); in memory between
    population: int | None = None  # cells per worker pass: K, or None for auto (up to AUTO_POPULATION, as memory allows)


AUTO_POPULATION = 64


class StudyReplaced(RunAborted):
    pass


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def payload(study: dict[str, Any], protocol: dict[str, Any], cells: list[dict[str, Any]],
            population: int | None) -> dict[str, Any]:
    """What a worker trains in one pass: ``cells`` of one study (keyed by cell id), in populations of at
    most ``population`` configs (None: as many as fit its device)."""
    return {"task": study["task"], "protocol": protocol, "population": population,
            "plugins": study["spec"].get("plugins", {}),
            "cells": [{"key": cell["id"], "optimizer": cell["optimizer"], "seed": cell["seed"],
                       "hparams": store.cell_hparams(cell)} for cell in cells]}


def run(engine: Engine, name: str, pool: Pool, options: RunOptions = RunOptions(),
        on_progress: Callable[[dict[str, int]], None] = lambda counts: None) -> dict[str, int]:
    """Run every cell of study ``name`` that is not finished; return the final status counts."""
    study = store.get_study(engine, name)
    return _Driver(engine, study, pool, options, on_progress).run()


class _Driver:
    def __init__(self, engine: Engine, study: dict[str, Any], pool: Pool, options: RunOptions,
                 on_progress: Callable[[dict[str, int]], None]):
        self.engine, self.study, self.pool, self.options, self.on_progress = engine, study, pool, options, on_progress
        self.protocol = asdict(StudySpec.model_validate(study["spec"]).protocol())
        self.owner = new_owner()
        self.inflight: dict[int, dict[str, Any]] = {}  # cell id -> the cell row as leased
        self.optuna = OptunaLog(engine, study)
        self.counts: dict[str, int] = {}
        self.counted_at = 0.0

    def db(self, call: Callable[[], T]) -> T:
        return store.retrying(call, self.options.db_retry_seconds)

    def run(self) -> dict[str, int]:
        self.db(self.optuna.open)
        self.db(self.optuna.reconcile)
        try:
            counts = self._loop()
        finally:
            self._hand_back()
            self.optuna.close()
        return counts

    def _loop(self) -> dict[str, int]:
        last_beat = time.monotonic()
        self._refresh_counts()
        while True:
            claimed = self._claim()
            events = self.pool.events(timeout=self.options.poll_seconds if self.inflight else 0.0)
            wrote = self._write(events) if events else False
            if wrote:
                self.on_progress(self.counts)
            now = time.monotonic()
            if self.inflight and now - last_beat > self.options.lease_seconds / 4:
                self._heartbeat()
                last_beat = now
            if not self.inflight and not claimed and not wrote:  # after a write: claim for the freed workers first
                counts = self._refresh_counts()
                if counts.get("pending", 0) + counts.get("running", 0) == 0:
                    self.db(self.optuna.reconcile)  # cells other drivers finished but left unreported
                    return counts
                self._check_study()
                time.sleep(self.options.poll_seconds)  # cells leased by another (or a dead) driver
            elif now - self.counted_at > self.options.counts_every:
                self._refresh_counts()

    def _refresh_counts(self) -> dict[str, int]:
        """Status counts from the database (what other drivers did too); kept in memory in between."""
        self.counts = self.db(lambda: store.status_counts(self.engine, self.study["id"]))
        self.counted_at = time.monotonic()
        self.on_progress(self.counts)
        return self.counts

    def _count(self, before: str, after: str) -> None:
        self.counts[before] = max(0, self.counts.get(before, 0) - 1)
        self.counts[after] = self.counts.get(after, 0) + 1

    def _batch_size(self) -> int:
        """Cells per worker pass: the population cap, shrunk so every worker gets an equal share of the
        work left, counting what is in flight (a worker that starts late gets as much as the first one)."""
        cap = self.options.population or AUTO_POPULATION
        share = math.ceil((self.counts.get("pending", 0) + len(self.inflight)) / max(1, self.pool.size))
        return max(1, min(cap, share))

    def _claim(self) -> int:
        free = self.pool.free_slots()
        if not free:
            return 0
        size = self._batch_size()
        leased = self.db(lambda: store.claim(self.engine, self.study, self.owner, len(free) * size,
                                             self.options.lease_seconds))
        for start, slot in zip(range(0, len(leased), size), free):
            batch = leased[start:start + size]
            for cell in batch:
                self.inflight[cell["id"]] = cell
                self._count("pending", "running")
            self.pool.dispatch(slot, payload(self.study, self.protocol, batch, self.options.population))
        return len(leased)

    def _write(self, events: list[Event]) -> bool:
        """Everything received in one transaction (retried whole); then each finished cell's trial.
        False when none of it was about a cell in flight here."""
        mine = [e for e in events if e.key in self.inflight]  # late events of a cell we dropped are stale
        if not mine:
            return False
        outcomes = self.db(lambda: self._write_once(mine))
        for cell_id, status, _ in outcomes:
            del self.inflight[cell_id]
            self._count("running", status)
        # a cell whose lease went to another driver: its result stands there
        lost_lease = any(action is None for _, _, action in outcomes)
        finished = [cell_id for cell_id, _, action in outcomes if action == "reported"]
        if finished:
            try:
                self.db(lambda: self.optuna.report(finished))
            except KeyError:  # an Optuna study was deleted: by a `submit --replace`, checked below
                lost_lease = True
        if lost_lease:
            self._check_study()
        return True

    def _write_once(self, events: list[Event]) -> list[tuple[int, str, str | None]]:
        """Returns, per cell that left flight, its id, new status and what to do: "reported" (finished
        here: report it), "pending" (handed back to be retried), or None (this driver no longer held its
        lease)."""
        epochs, results, lost, ended = [], [], [], set()
        for event in events:
            if event.key in ended:
                continue  # nothing after a cell's last event counts
            cell = self.inflight[event.key]
            if event.kind == "epoch":
                epochs.append((cell, event.data["epoch"], {k: v for k, v in event.data.items() if k != "epoch"}))
                continue
            ended.add(event.key)
            if event.kind == "lost":
                lost.append((cell, event.data["error"]))
            elif event.kind == "error":
                results.append({"cell": cell, "status": "failed", "error": event.data["error"]})
            else:
                results.append({"cell": cell, **event.data})
        outcomes = []
        with store.transaction(self.engine) as conn:
            store.record_epochs(conn, self.owner, epochs)
            recorded = store.finish(conn, self.owner, results, metric=self.study["metric"])
            for result in results:
                key = result["cell"]["id"]
                outcomes.append((key, result["status"], "reported") if key in recorded else (key, "running", None))
            for cell, error in lost:
                status = store.release(conn, cell, self.owner, lost=error, max_attempts=self.options.max_attempts)
                outcomes.append((cell["id"], status or "running", "reported" if status == "failed" else status))
        return outcomes

    def _heartbeat(self) -> None:
        held = self.db(lambda: store.heartbeat(self.engine, self.owner, self.inflight, self.options.lease_seconds))
        taken = [cell_id for cell_id in self.inflight if cell_id not in held]
        stopped = []
        for cell_id in taken:
            log.warning("cell %d was taken over by another driver (this driver's lease expired); dropped here",
                        self.inflight[cell_id]["cell_index"])
            stopped += [key for key in self.pool.cancel(cell_id) if key in self.inflight and key not in taken]
            del self.inflight[cell_id]
        if stopped:  # cells that shared the stopped worker: back to pending (no attempt lost)
            self._release([self.inflight.pop(key) for key in stopped], retry_seconds=self.options.db_retry_seconds)
        if taken:
            self._check_study()

    def _check_study(self) -> None:
        if not self.db(lambda: store.study_is_current(self.engine, self.study)):
            raise StudyReplaced(f"study {self.study['name']!r} was replaced or deleted while this driver ran it "
                                f"(`submit --replace`); stopped. Run `adamscape run {self.study['name']}` "
                                "for the new one")

    def _hand_back(self) -> None:
        """Interrupted or aborted: give every leased cell back at once (pending, no attempt lost)."""
        if not self.inflight:
            return
        cells = list(self.inflight.values())
        self.inflight.clear()
        self._release(cells, retry_seconds=min(30.0, self.options.db_retry_seconds))

    def _release(self, cells: list[dict[str, Any]], retry_seconds: float) -> None:
        """Hand ``cells`` back as pending, in one transaction; if the database is gone too, their leases
        expire on their own."""
        def release_all() -> None:
            with store.transaction(self.engine) as conn:
                for cell in cells:
                    if store.release(conn, cell, self.owner) == "pending":
                        self._count("running", "pending")

        try:
            store.retrying(release_all, retry_seconds)
        except Exception as exc:
            log.warning("could not hand %d cells back (%s); their leases expire in %g s", len(cells),
                        str(exc).splitlines()[0][:160], self.options.lease_seconds)
