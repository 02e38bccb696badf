"""A cell's status: one enum, and the sets of statuses the code asks about, derived from it.

No imports: the store, the driver, the analysis, the CLI, the dashboard and the workers all read it. The
values are the strings stored in ``sweep_cells.status`` and shown by the ``sweep_results`` view
(docs/results.md); a member compares and hashes equal to its string (``CellStatus.PENDING ==
"pending"``), so counts keyed by the stored strings are looked up with the members."""

from __future__ import annotations

from enum import StrEnum


class CellStatus(StrEnum):
    PENDING = "pending"  # waiting for a lease
    RUNNING = "running"  # leased by a driver (its lease may have expired: then it is claimable again)
    COMPLETE = "complete"  # trained to the end: a result
    DIVERGED = "diverged"  # stopped on divergence: a result, which the maps show
    FAILED = "failed"  # an exception in training, or max_attempts worker deaths; the cause in ``error``
    CANCELLED = "cancelled"  # its study was cancelled before the cell ended


OPEN = (CellStatus.PENDING, CellStatus.RUNNING)  # left to run
SCORED = (CellStatus.COMPLETE, CellStatus.DIVERGED)  # have a score (a failed cell has none)
FINISHED = (*SCORED, CellStatus.FAILED)  # results: each is one Optuna trial
ENDED = (*FINISHED, CellStatus.CANCELLED)  # never run again
