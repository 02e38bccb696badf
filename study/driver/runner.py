"""The driver: lease cells from the database, run them on a worker pool, write results back.

One driver, two entry points: ``adamscape run NAME`` drives one study until it is done
(:func:`run`); ``adamscape serve`` drives every queued study and waits for more (:func:`serve`).
Free workers go to the queue's highest priority first; among studies of equal priority, each free
worker goes to the study that has the fewest workers at that moment, and on a tie to the one served
least recently, then the earliest submitted (round-robin over the queued studies: a large study never
starves a small one submitted after it).
A study that is paused, cancelled or replaced while its cells run has them stopped here within a
pass (its leases were taken away by that command, so nothing of them is written).

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
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine

from study import store
from study.catalog import TrainingProtocol
from study.driver.options import AUTO_POPULATION, RunOptions
from study.errors import RunAborted
from study.protocol import (BatchPayload, CellFailure, CellLost, CellPayload, CellResult, EpochRecord, Event,
                            PluginRecord)
from study.spec import StudySpec
from study.statuses import CellStatus
from study.store.optuna_log import OptunaLog

log = logging.getLogger("adamscape")
T = TypeVar("T")


class Pool(Protocol):
    """What the driver needs from an executor (workers.pool.RayPool; tests script a fake one).

    ``dispatch`` starts a batch (see :func:`payload`) on an idle worker; every event carries the
    ``key`` of one of its cells. ``events`` returns what the running cells reported within ``timeout``
    seconds (possibly nothing: :data:`study.protocol.Event` s, epoch records, results and failures) and
    is also where the pool notices dead or stalled workers (a :class:`~study.protocol.CellLost` for each
    of their unfinished cells) or a cluster that is gone (it raises). ``cancel`` stops a cell whose lease
    this driver lost and returns the other unfinished cells stopped with it.
    """

    size: int  # workers

    def free_slots(self) -> list[int]: ...
    def dispatch(self, slot: int, payload: BatchPayload) -> None: ...
    def events(self, timeout: float) -> list[Event]: ...
    def cancel(self, key: Any) -> list[Any]: ...


class StudyReplaced(RunAborted):
    pass


class StudyPaused(RunAborted):
    pass


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def payload(task: str, protocol: TrainingProtocol, plugins: dict[str, PluginRecord], cells: list[dict[str, Any]],
            population: int | None) -> BatchPayload:
    """What a worker trains in one pass: ``cells`` of one study (their rows as leased; keyed by cell id), in
    populations of at most ``population`` configs (None: as many as fit its device), halved once per worker
    lost on any of them (``halvings``): a population that ran out of device memory is not tried at its
    size again."""
    halvings = max((cell.get("losses") or 0 for cell in cells), default=0)
    return BatchPayload(task, protocol, tuple(CellPayload(cell["id"], cell["optimizer"], cell["seed"],
                                                          store.cell_hparams(cell)) for cell in cells),
                        population=population, halvings=halvings, plugins=plugins)


def run(engine: Engine, name: str, pool: Pool, options: RunOptions = RunOptions(),
        on_progress: Callable[[dict[str, int]], None] = lambda counts: None,
        announce: Callable[[str], None] = lambda line: None) -> dict[str, int]:
    """Run every cell of study ``name`` that is not finished; return the final status counts. ``announce``
    gets the driver's notes (why a population has the size it has)."""
    study = store.get_study(engine, name)
    if study["state"] == "paused":
        raise StudyPaused(f"study {name!r} is paused; `adamscape resume {name}` first")
    return Driver(engine, pool, options, only=study, on_progress=on_progress, announce=announce).run()


def serve(engine: Engine, pool: Pool, options: RunOptions = RunOptions(),
          wait: Callable[[float], None] | None = None, tick: Callable[["Driver"], None] = lambda driver: None,
          owner: str | None = None, announce: Callable[[str], None] = lambda line: None) -> None:
    """Run the queue's studies for ever (until ``tick`` sets ``driver.draining`` and the cells in flight
    have ended, or an exception such as a SIGTERM's ends it). ``wait(seconds)`` idles until the queue may
    have changed (a PostgreSQL notification, or just the time); ``tick`` runs every pass (heartbeat);
    ``announce`` gets a line when a study starts or leaves the queue."""
    Driver(engine, pool, options, wait=wait, tick=tick, owner=owner, announce=announce).run()


def _summary(counts: dict[str, int]) -> str:
    return ", ".join(f"{count} {status}" for status, count in sorted(counts.items()) if count)


class _Study:
    """A study this driver runs: its row, its in-memory counts, its Optuna log (opened on first use)."""

    def __init__(self, row: dict[str, Any]):
        self.row = row
        spec = StudySpec.model_validate(row["spec"])
        self.protocol, self.plugins = spec.protocol(), spec.plugins
        self.counts: dict[str, int] = {}
        self.priority = row["priority"]
        self.claimable = True  # cleared when a claim finds nothing, set again by the queue
        self.served = 0  # the driver's dispatch count when a worker was last sent its cells (round-robin)
        self.optuna: OptunaLog | None = None

    @property
    def id(self) -> int:
        return self.row["id"]

    def count(self, before: str, after: str) -> None:
        self.counts[before] = max(0, self.counts.get(before, 0) - 1)
        self.counts[after] = self.counts.get(after, 0) + 1


class Driver:
    """The loop both entry points share. ``only``: the one study of ``adamscape run`` (it ends when that
    study has nothing left; a replaced or paused study stops it with an error); otherwise every
    queued study, for ever."""

    def __init__(self, engine: Engine, pool: Pool, options: RunOptions, only: dict[str, Any] | None = None,
                 on_progress: Callable[[dict[str, int]], None] = lambda counts: None,
                 wait: Callable[[float], None] | None = None, tick: Callable[["Driver"], None] = lambda driver: None,
                 owner: str | None = None, announce: Callable[[str], None] = lambda line: None):
        self.engine, self.pool, self.options, self.only = engine, pool, options, only
        self.on_progress, self.tick, self.announce = on_progress, tick, announce
        self.wait = wait or (lambda seconds: time.sleep(seconds))
        self.owner = owner or new_owner()
        self.studies: dict[int, _Study] = {}
        self.inflight: dict[int, tuple[dict[str, Any], _Study]] = {}  # cell id -> (its row as leased, study)
        self.slot_study: dict[int, int] = {}  # worker slot -> the study of the batch last sent to it
        self.storage = None  # Optuna's storage, shared by the studies' logs
        self.draining = False  # set by ``tick``: lease nothing more, end once nothing is in flight
        self.finished: _Study | None = None  # ``only``, once it left the queue
        self.dispatches = 0
        self.claiming = False  # between a lease and its cells in ``inflight``
        self.queue_at = self.counted_at = -math.inf
        self.populations_said: set[tuple[int, str]] = set()  # (study id, optimizer): its population note said

    def db(self, call: Callable[[], T]) -> T:
        return store.retrying(call, self.options.db_retry_seconds)

    def run(self) -> dict[str, int]:
        try:
            if self.only is None:
                self._reconcile_all()
            return self._loop()
        finally:
            self._hand_back()
            for study in self.studies.values():  # a stop between a result and its trial: report it now
                self._try(lambda: store.unreported_cells(self.engine, study.id) and self._log(study).reconcile())
                self._close(study)
            if self.storage is not None:
                self.storage.engine.dispose()

    def _try(self, call: Callable[[], Any]) -> None:
        """Best effort on the way out (the next driver reconciles what this one could not)."""
        try:
            store.retrying(call, min(10.0, self.options.db_retry_seconds))
        except Exception as exc:
            log.warning("could not report finished cells to Optuna (%s); the next driver will",
                        str(exc).splitlines()[0][:160])

    def _reconcile_all(self) -> None:
        """A service starting: report what a stopped driver left unreported, in studies that may never be
        queued again (every cell finished)."""
        for name in self.db(lambda: store.unreported_studies(self.engine)):
            row = self.db(lambda: store.find_study(self.engine, name))
            if row is not None:
                study = _Study(row)
                self.db(self._log(study).reconcile)
                self._close(study)

    def _loop(self) -> dict[str, int]:
        last_beat = time.monotonic()
        while True:
            self.tick(self)
            now = time.monotonic()
            if now - self.queue_at > self.options.queue_every:
                self._refresh_queue()
            claimed = 0 if self.draining else self._claim()
            if claimed:
                self._open_logs()
            events = self.pool.events(timeout=self.options.poll_seconds if self.inflight else 0.0)
            wrote = self._write(events) if events else False
            now = time.monotonic()
            if self.inflight and now - last_beat > self.options.lease_seconds / 4:
                self._heartbeat()
                last_beat = now
            if now - self.counted_at > self.options.counts_every:
                self._refresh_counts()
            if not self.inflight and not claimed and not wrote:  # after a write: claim for the freed workers first
                self._refresh_queue()
                if self.only is not None:
                    study = self.studies.get(self.only["id"])
                    if study is None:
                        return self._ended()
                elif self.draining:
                    return {}
                if not any(study.claimable for study in self.studies.values()):
                    self.wait(self.options.poll_seconds)  # nothing to lease: cells leased elsewhere, or none queued

    # --- the queue -----------------------------------------------------------------------------------

    def _refresh_queue(self) -> None:
        """Take up new studies, and drop the ones that ended here or were paused, cancelled or replaced
        (their cells in flight are stopped: their leases are gone)."""
        self.queue_at = time.monotonic()
        name = self.only["name"] if self.only is not None else None
        queued = {row["id"]: row for row in self.db(lambda: store.queue(self.engine, name))}
        for study_id, row in queued.items():
            study = self.studies.get(study_id)
            if study is not None and study.row["fingerprint"] != row["fingerprint"]:
                self._drop(study)  # replaced under the same id (SQLite reuses it)
                study = None
            if study is None:
                full = self.db(lambda: store.find_study(self.engine, row["name"]))
                if full is None or full["id"] != study_id:
                    continue  # replaced again meanwhile: the next look takes the new one
                study = self.studies[study_id] = _Study(full)
                self._refresh_counts([study])
                if self.only is None:
                    self.announce(f"study {full['name']}: running ({_summary(study.counts)})")
            study.priority, study.claimable = row["priority"], bool(row["claimable"])
        for study in [s for s in self.studies.values() if s.id not in queued]:
            self._drop(study)

    def _drop(self, study: _Study) -> None:
        """``study`` left the queue: finished, or paused, cancelled or replaced (its cells in flight here
        are stopped: that command took their leases)."""
        for cell_id in [cell_id for cell_id, (_, s) in self.inflight.items() if s is study]:
            self.pool.cancel(cell_id)  # stops its worker; the cells it shares it with are this study's too
            del self.inflight[cell_id]
        del self.studies[study.id]
        outcome = self._settle(study)
        if self.only is not None and study.id == self.only["id"]:
            self.finished = study
        else:
            self._close(study)
            self._refresh_counts([study])
            self.announce(f"study {study.row['name']}: {outcome} ({_summary(study.counts)})")

    def _settle(self, study: _Study) -> str:
        """A study that left the queue: report what other drivers finished but left unreported; for
        ``adamscape run``, a replaced or paused study is an error. Returns what happened to it."""
        state = self.db(lambda: store.study_states(self.engine, [study.id])).get(study.id)
        name = study.row["name"]
        if state is None or state["fingerprint"] != study.row["fingerprint"]:
            if self.only is not None:
                raise StudyReplaced(f"study {name!r} was replaced or deleted while this driver ran it "
                                    f"(`submit --replace`); stopped. Run `adamscape run {name}` for the new one")
            return "replaced or deleted: its cells here were stopped"
        if state["state"] == "paused" and self.only is not None:
            raise StudyPaused(f"study {name!r} was paused; its running cells were handed back "
                              f"(`adamscape resume {name}`, then run it again)")
        self.db(self._log(study).reconcile)
        return {"active": "finished", "paused": "paused", "cancelled": "cancelled"}[state["state"]]

    def _ended(self) -> dict[str, int]:
        """``adamscape run``: its study left the queue (finished or cancelled); its final counts."""
        study = self.finished
        if study is None:  # it was never in the queue: nothing was left to run
            study = _Study(self.only)
            self._settle(study)
        self._refresh_counts([study])
        if self.only is not None:
            self.on_progress(study.counts)
        self._close(study)
        return study.counts

    def _open_logs(self) -> None:
        """Open the Optuna log of each study just sent to workers, while they train its first epoch (not
        when its first results are waiting to be written)."""
        for study in {id(s): s for _, s in self.inflight.values()}.values():
            if study.optuna is None:
                self._log(study)

    def _log(self, study: _Study) -> OptunaLog:
        if study.optuna is None:
            if self.storage is None:
                self.storage = self.db(lambda: store.optuna_storage(self.engine))
            log_ = OptunaLog(self.engine, study.row, self.storage)
            self.db(log_.open)
            self.db(log_.reconcile)
            study.optuna = log_
        return study.optuna

    def _close(self, study: _Study) -> None:
        if study.optuna is not None:
            study.optuna.close()
            study.optuna = None

    def _refresh_counts(self, studies: list[_Study] | None = None) -> None:
        """Status counts from the database (what other drivers did too); kept in memory in between."""
        if studies is None:
            self.counted_at = time.monotonic()
        for study in self.studies.values() if studies is None else studies:
            study.counts = self.db(lambda: store.status_counts(self.engine, study.id))
        self._progress()

    def _progress(self) -> None:
        if self.only is not None and self.only["id"] in self.studies:
            self.on_progress(self.studies[self.only["id"]].counts)

    # --- leasing ---------------------------------------------------------------------------------------

    def _next_study(self, busy: dict[int, int]) -> _Study | None:
        """The study the next free worker goes to: the highest priority; then the fewest workers; then the
        one served least recently (never served first); then the earliest submitted."""
        ready = [study for study in self.studies.values() if study.claimable]
        if not ready:
            return None
        workers = lambda study: sum(1 for study_id in busy.values() if study_id == study.id)  # noqa: E731
        return min(ready, key=lambda study: (-study.priority, workers(study), study.served,
                                             study.row["created_at"], study.id))

    def _batch_size(self, study: _Study) -> int:
        """Cells per worker pass: the population cap, shrunk so every worker gets an equal share of the
        study's work left, counting what is in flight (a worker that starts late gets as much as the first)."""
        cap = self.options.population or AUTO_POPULATION
        flying = sum(1 for _, s in self.inflight.values() if s is study)
        share = math.ceil((study.counts.get(CellStatus.PENDING, 0) + flying) / max(1, self.pool.size))
        return max(1, min(cap, share))

    def _claim(self) -> int:
        free = self.pool.free_slots()
        busy = {slot: study_id for slot, study_id in self.slot_study.items() if slot not in free}
        total = 0
        while free:
            study = self._next_study(busy)
            if study is None:
                break
            size = self._batch_size(study)
            self.claiming = True  # a stop before the cells reach inflight: _hand_back finds them by owner
            leased = self.db(lambda: store.claim(self.engine, study.row, self.owner, size, self.options.lease_seconds))
            if not leased:
                self.claiming = False
                study.claimable = False  # until the queue says otherwise (another driver holds the rest)
                continue
            slot = free.pop(0)
            for cell in leased:
                self.inflight[cell["id"]] = (cell, study)
                study.count(CellStatus.PENDING, CellStatus.RUNNING)
            self.claiming = False
            self.pool.dispatch(slot, payload(study.row["task"], study.protocol, study.plugins, leased,
                                             self.options.population))
            busy[slot] = self.slot_study[slot] = study.id
            total += len(leased)
            self.dispatches += 1
            study.served = self.dispatches
        if total:
            self._progress()
        return total

    # --- results -----------------------------------------------------------------------------------------

    def _write(self, events: list[Event]) -> bool:
        """Everything received in one transaction (retried whole); then each finished cell's trial.
        False when none of it was about a cell in flight here."""
        mine = [e for e in events if e.key in self.inflight]  # late events of a cell we dropped are stale
        if not mine:
            return False
        self._say_populations(mine)
        outcomes = self.db(lambda: self._write_once(mine))
        finished: dict[int, list[int]] = {}
        lost_lease = False
        for cell_id, status, action in outcomes:
            _, study = self.inflight.pop(cell_id)
            study.count(CellStatus.RUNNING, status)
            if action == "reported":
                finished.setdefault(study.id, []).append(cell_id)
            lost_lease |= action is None  # a cell whose lease went elsewhere: its result stands there
        for study_id, cell_ids in finished.items():
            study = self.studies.get(study_id)
            if study is None:
                continue
            try:
                self.db(lambda: self._log(study).report(cell_ids))
            except KeyError:  # an Optuna study was deleted: by a `submit --replace`, seen below
                lost_lease = True
        self._progress()
        if lost_lease:
            self._refresh_queue()
        return True

    def _say_populations(self, events: list[Event]) -> None:
        """Announce, once per (study, optimizer), the first worker note on how its cells' passes were sized
        (a result's ``population``, ``workers.population.train_cells``)."""
        for event in events:
            if not isinstance(event, CellResult) or event.population is None or not event.population.why:
                continue
            cell, study = self.inflight[event.key]
            if (study.id, cell["optimizer"]) not in self.populations_said:
                self.populations_said.add((study.id, cell["optimizer"]))
                self.announce(f"study {study.row['name']}, {cell['optimizer']}: {event.population.why}")

    def _write_once(self, events: list[Event]) -> list[tuple[int, str, str | None]]:
        """Returns, per cell that left flight, its id, new status and what to do: "reported" (finished
        here: report it), "pending" (handed back to be retried), or None (this driver no longer held its
        lease)."""
        epochs, results, lost, ended = [], [], [], set()
        for event in events:
            if event.key in ended:
                continue  # nothing after a cell's last event counts
            cell, _ = self.inflight[event.key]
            match event:  # the store's rows as they always were (study.store.leases)
                case EpochRecord():
                    epochs.append((cell, event.epoch, dict(event.metrics)))
                    continue
                case CellLost():
                    lost.append((cell, event.error))
                case CellFailure():
                    results.append({"cell": cell, "status": CellStatus.FAILED, "error": event.error,
                                    "device": event.device})
                case CellResult():
                    results.append({"cell": cell, "final": event.final, "status": event.status,
                                    "best_test_accuracy": event.best_test_accuracy,
                                    "wall_seconds": event.wall_seconds, "device": event.device,
                                    "peak_memory_mib": event.peak_memory_mib})
                case _:
                    raise TypeError(f"the pool returned {event!r}, which is no event of study.protocol")
            ended.add(event.key)
        outcomes = []
        with store.transaction(self.engine) as conn:
            store.record_epochs(conn, self.owner, epochs)
            by_study: dict[int, list[dict[str, Any]]] = {}
            for result in results:
                by_study.setdefault(result["cell"]["study_id"], []).append(result)
            for study_results in by_study.values():
                study = self.inflight[study_results[0]["cell"]["id"]][1]
                recorded = store.finish(conn, self.owner, study_results, metric=study.row["metric"])
                for result in study_results:
                    key = result["cell"]["id"]
                    outcomes.append((key, result["status"], "reported") if key in recorded
                                    else (key, CellStatus.RUNNING, None))
            for cell, error in lost:
                status = store.release(conn, cell, self.owner, lost=error, max_attempts=self.options.max_attempts)
                outcomes.append((cell["id"], status or CellStatus.RUNNING,
                                 "reported" if status == CellStatus.FAILED else status))
        return outcomes

    def _heartbeat(self) -> None:
        held = self.db(lambda: store.heartbeat(self.engine, self.owner, self.inflight, self.options.lease_seconds))
        taken = [cell_id for cell_id in self.inflight if cell_id not in held]
        stopped = []
        for cell_id in taken:
            cell, study = self.inflight[cell_id]
            log.warning("cell %d of study %s was taken over by another driver (this driver's lease expired); "
                        "dropped here", cell["cell_index"], study.row["name"])
            stopped += [key for key in self.pool.cancel(cell_id) if key in self.inflight and key not in taken]
            del self.inflight[cell_id]
        if stopped:  # cells that shared the stopped worker: back to pending (no attempt lost)
            self._release([self.inflight.pop(key)[0] for key in set(stopped)],
                          retry_seconds=self.options.db_retry_seconds)
        if taken:
            self._refresh_queue()

    def _hand_back(self) -> None:
        """Interrupted or aborted: give every cell this driver holds back at once (pending, no attempt lost),
        those in flight and any whose lease a stop cut short before it reached ``inflight``."""
        if not self.inflight and not self.claiming:
            return
        self.inflight.clear()

        def release_held() -> None:
            with store.transaction(self.engine) as conn:
                store.release_held(conn, self.owner)

        try:
            store.retrying(release_held, min(30.0, self.options.db_retry_seconds))
        except Exception as exc:
            log.warning("could not hand the running cells back (%s); their leases expire in %g s",
                        str(exc).splitlines()[0][:160], self.options.lease_seconds)

    def _release(self, cells: list[dict[str, Any]], retry_seconds: float) -> None:
        """Hand ``cells`` back as pending, in one transaction; if the database is gone too, their leases
        expire on their own."""
        def release_all() -> None:
            with store.transaction(self.engine) as conn:
                for cell in cells:
                    store.release(conn, cell, self.owner)

        try:
            store.retrying(release_all, retry_seconds)
        except Exception as exc:
            log.warning("could not hand %d cells back (%s); their leases expire in %g s", len(cells),
                        str(exc).splitlines()[0][:160], self.options.lease_seconds)
