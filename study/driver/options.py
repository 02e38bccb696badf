"""The driver's options and their defaults, declared once: the driver reads them (``runner``), and so do the
options of ``adamscape run``, ``serve`` and ``submit --run`` (``study.cli.options``). Imports nothing of the
project: every command loads it."""

from __future__ import annotations

from dataclasses import dataclass

AUTO_POPULATION = 64  # cells per worker pass at most, when the population is auto


@dataclass
class RunOptions:
    lease_seconds: float = 60.0
    max_attempts: int = 3  # worker deaths on one cell before it fails
    poll_seconds: float = 0.5
    db_retry_seconds: float = 300.0  # how long an unreachable database is retried before the driver gives up
    counts_every: float = 5.0  # seconds between status-count queries (other drivers' progress); in memory between
    queue_every: float = 0.25  # seconds between looks at the queue (new, paused, cancelled or replaced studies)
    population: int | None = None  # cells per worker pass: K, or None for auto (up to AUTO_POPULATION, as memory allows)
