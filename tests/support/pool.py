"""A scripted stand-in for the Ray workers: the driver loop's tests run against it with a real database,
real leases and Optuna's real storage (no Ray). It speaks the workers' protocol (study.protocol): it takes
``BatchPayload`` s and returns their events (``EpochRecord``, ``CellResult``, ``CellFailure``, ``CellLost``)."""

from __future__ import annotations

import math
from typing import Any

from study.driver.runner import RunOptions
from study.protocol import BatchPayload, CellFailure, CellLost, CellPayload, CellResult, EpochRecord, Event

FAST = RunOptions(lease_seconds=30, poll_seconds=0.01, db_retry_seconds=30, counts_every=0.05, queue_every=0.0)


def healthy(key, cell: CellPayload, epochs: int = 2):
    """What a worker streams for a cell that trains normally: its lr decides its accuracy."""
    for epoch in range(1, epochs + 1):
        yield EpochRecord(epoch, {"train_loss": 1.0 / epoch, "test_accuracy": 0.1 * epoch}, key=key)
    accuracy = 0.5 + 0.01 * math.log10(cell.hparams.get("lr", 1.0))
    yield CellResult("complete", {"train_loss": 0.5, "test_accuracy": accuracy}, best_test_accuracy=accuracy,
                     wall_seconds=0.01, key=key)


class ScriptedPool:
    """``size`` slots; each dispatched batch of cells streams, for each cell, what
    ``behave(key, cell, attempt)`` yields (``cell``: its ``CellPayload``), one item per running cell per
    ``events`` call, so cells and batches interleave (None: nothing this call)."""

    def __init__(self, size: int = 2, behave=None, before_events=None, late: int = 0):
        """``late``: that many slots are still starting until the first ``events`` call."""
        self.size, self.behave, self.before_events, self.late = size, behave, before_events, late
        self.running: dict[int, dict[Any, Any]] = {}  # slot -> {key: script} of its unfinished cells
        self.dispatched: list[tuple[Any, CellPayload]] = []
        self.batches: list[list[Any]] = []
        self.payloads: list[BatchPayload] = []
        self.cancelled: list[Any] = []
        self.calls = 0

    def free_slots(self) -> list[int]:
        started = self.size - (self.late if self.calls == 0 else 0)
        return [slot for slot in range(started) if slot not in self.running]

    def dispatch(self, slot, payload: BatchPayload) -> None:
        self.payloads.append(payload)
        scripts = {}
        for cell in payload.cells:
            key = cell.key
            attempt = sum(1 for k, _ in self.dispatched if k == key) + 1
            self.dispatched.append((key, cell))
            scripts[key] = iter(self.behave(key, cell, attempt) if self.behave else healthy(key, cell))
        self.batches.append(list(scripts))
        self.running[slot] = scripts

    def events(self, timeout: float) -> list[Event]:
        self.calls += 1
        found = list(self.before_events(self) or []) if self.before_events else []
        for slot, scripts in list(self.running.items()):
            for key, script in list(scripts.items()):
                event = next(script, "ended")
                if event == "ended" or isinstance(event, (CellResult, CellFailure, CellLost)):
                    del scripts[key]
                if isinstance(event, (EpochRecord, CellResult, CellFailure, CellLost)):
                    found.append(event)
            if not scripts:
                del self.running[slot]
        return found

    def cancel(self, key) -> list:
        self.cancelled.append(key)
        for slot, scripts in list(self.running.items()):
            if key in scripts:
                del self.running[slot]
                return [k for k in scripts if k != key]
        return []
