"""The driver: lease cells from the database, run them on a worker pool, write results back.

Only this loop writes results. Every cell ends exactly once: complete or
diverged (a result), or failed (its error recorded) after a trial crash or
after ``max_attempts`` worker deaths. A driver that dies leaves leases that
expire after ``lease_seconds``; the next ``run`` takes those cells over.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from sqlalchemy import Engine

from optimizers import HPARAM_NAMES
from . import store
from .optuna_log import OptunaLog
from .spec import StudySpec


class Pool(Protocol):
    """What the driver needs from an executor (workers.executor.RayPool)."""

    def free_slots(self) -> list[int]: ...
    def dispatch(self, slot: int, key: Any, payload: dict[str, Any]) -> None: ...
    def events(self, timeout: float) -> list[Any]: ...


@dataclass
class RunOptions:
    lease_seconds: float = 60.0
    max_attempts: int = 3
    poll_seconds: float = 0.5


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def payload(study: dict[str, Any], protocol: dict[str, Any], cell: dict[str, Any]) -> dict[str, Any]:
    return {"task": study["task"], "optimizer": cell["optimizer"], "seed": cell["seed"], "protocol": protocol,
            "hparams": {n: cell[n] for n in HPARAM_NAMES if cell[n] is not None}}


def run(engine: Engine, name: str, pool: Pool, options: RunOptions = RunOptions(),
        on_progress: Callable[[dict[str, int]], None] = lambda counts: None) -> dict[str, int]:
    """Run every cell of study ``name`` that is not finished; return the final status counts."""
    study = store.get_study(engine, name)
    protocol = asdict(StudySpec.model_validate(study["spec"]).protocol())
    log = OptunaLog(engine, study)
    log.reconcile()
    owner, inflight = new_owner(), {}
    last_beat = time.monotonic()
    try:
        while True:
            free = pool.free_slots()
            if free:
                for slot, cell in zip(free, store.claim(engine, study["id"], owner, len(free), options.lease_seconds)):
                    inflight[cell["id"]] = cell
                    pool.dispatch(slot, cell["id"], payload(study, protocol, cell))
            counts = store.status_counts(engine, study["id"])
            on_progress(counts)
            if not inflight:
                if counts.get("pending", 0) + counts.get("running", 0) == 0:
                    return counts
                time.sleep(options.poll_seconds)  # cells leased by another (or a dead) driver
                continue
            for event in pool.events(timeout=options.poll_seconds):
                _handle(engine, log, owner, inflight, event, options, study["metric"])
            if time.monotonic() - last_beat > options.lease_seconds / 4:
                store.heartbeat(engine, owner, inflight, options.lease_seconds)
                last_beat = time.monotonic()
    finally:
        for cell in inflight.values():  # interrupted: hand the cells back untouched
            store.release(engine, cell, owner, error=None, max_attempts=options.max_attempts, count_attempt=False)


def _handle(engine, log, owner, inflight, event, options: RunOptions, metric: str) -> None:
    cell = inflight[event.key]
    if event.kind == "epoch":
        store.record_epoch(engine, cell, event.data["epoch"],
                           {k: v for k, v in event.data.items() if k != "epoch"})
        return
    del inflight[event.key]
    if event.kind == "lost":
        store.release(engine, cell, owner, error=event.data["error"], max_attempts=options.max_attempts)
        if cell["attempts"] < options.max_attempts:
            return
    elif event.kind == "error":
        store.finish(engine, cell, owner, "failed", error=event.data["error"])
    elif not store.finish(engine, cell, owner, event.data["status"], final=event.data["final"],
                          metric=metric, best_test_accuracy=event.data["best_test_accuracy"],
                          wall_seconds=event.data["wall_seconds"]):
        return  # our lease expired and another driver took the cell over: its result stands
    log.report(store.get_cell(engine, cell["id"]))
