"""``adamscape serve``: the long-running driver of a study queue, beside its warm Ray workers.

The loop itself is :mod:`study.driver.runner`'s (the one ``adamscape run`` uses); this module adds what a
service needs around it: a heartbeat row (``sweep_services``) that ``submit`` and ``status`` read,
waking within a second of a submission (PostgreSQL ``LISTEN``, or short polls of SQLite), and a
restart when the adamscape code or its lock file changes on disk (the warm workers would otherwise
keep running the old code).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from study import store
from study.protocol import BatchPayload, CellPayload

log = logging.getLogger("adamscape")
ROOT = Path(__file__).resolve().parents[2]
CODE_PACKAGES = ("study", "workers", "optimizers")
BEAT_SECONDS = 2.0  # heartbeat row refresh; a service is taken for gone after store.SERVICE_ALIVE_SECONDS
CODE_CHECK_SECONDS = 5.0
SQLITE_POLL_SECONDS = 0.1


def code_version(root: Path = ROOT) -> str:
    """A hash of the code the workers run (the packages' .py files) and of the lock file."""
    digest = hashlib.sha256()
    files = sorted(p for package in CODE_PACKAGES for p in (root / package).rglob("*.py"))
    for path in [*files, root / "uv.lock", root / "pyproject.toml"]:
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class Waker:
    """``waker(seconds)`` returns when the queue may have changed: on PostgreSQL at a NOTIFY on
    :data:`store.QUEUE_CHANNEL` (or the timeout); on SQLite after a short poll interval."""

    def __init__(self, engine: Engine):
        self.engine, self.conn = engine, None

    def _listen(self):
        import psycopg

        if self.conn is None or self.conn.closed:
            url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            self.conn = psycopg.connect(url, autocommit=True, connect_timeout=5)
            self.conn.execute(f"LISTEN {store.QUEUE_CHANNEL}")
        return self.conn

    def __call__(self, seconds: float) -> None:
        if self.engine.dialect.name != "postgresql":
            time.sleep(min(seconds, SQLITE_POLL_SECONDS))
            return
        try:
            for _ in self._listen().notifies(timeout=min(seconds, 1.0), stop_after=1):
                pass
        except Exception:  # the server restarts: the driver's own retries report it; listen again later
            self.close()
            time.sleep(min(seconds, 1.0))

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None


class Ticker:
    """Runs every driver pass: keeps the heartbeat row fresh, and drains the driver (lease nothing more,
    end when the cells in flight end) once the code on disk changed: the service then restarts."""

    def __init__(self, engine: Engine, owner: str, details: dict[str, Any], retry_seconds: float):
        self.engine, self.owner, self.details, self.retry_seconds = engine, owner, details, retry_seconds
        self.code = details["code"]
        self.beat_at = self.checked_at = -float("inf")
        self.restart = self.ready = False

    def __call__(self, driver) -> None:
        now = time.monotonic()
        if not self.ready and driver.pool.started() == driver.pool.size:
            self.ready = True
            driver.announce(f"{driver.pool.size} workers ready")
        if now - self.beat_at > BEAT_SECONDS:
            self.beat_at = now
            store.retrying(lambda: store.service_beat(self.engine, self.owner, **self.details), self.retry_seconds)
        if not self.restart and now - self.checked_at > CODE_CHECK_SECONDS:
            self.checked_at = now
            if code_version() != self.code:
                self.restart = driver.draining = True
                log.warning("adamscape's code or lock file changed on disk: the cells in flight finish, then the "
                            "service restarts with the new code")


def warm_up() -> BatchPayload:
    """What a service's workers train once when they start: two cells of a one-epoch digits-logreg
    study (about 2 s of imports and first-call costs that the first real cells would otherwise pay)."""
    from study.spec import StudySpec

    spec = StudySpec.model_validate({"name": "warm-up", "task": "digits-logreg", "epochs": 1, "seeds": [0],
                                     "optimizers": {"adam": {"lr": [1e-3, 1e-2]}}})
    return BatchPayload(spec.task, spec.protocol(), tuple(CellPayload(index, "adam", 0, {"lr": lr})
                                                          for index, lr in enumerate((1e-3, 1e-2))))


def details(workers: int, address: str | None) -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "workers": workers, "ray": address or "local",
            "code": code_version()}
