"""Polling for a condition (never a fixed sleep that hopes it is long enough)."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Callable


def wait_for(condition: Callable[[], bool], timeout: float = 120, what: str = "condition",
             context: Callable[[], str] = lambda: "", every: float = 0.1) -> None:
    """Return as soon as ``condition()`` holds; fail after ``timeout`` seconds, saying what it waited for
    (and ``context()``: what the test can tell about why)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            extra = context()
            raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f"\n{extra}" if extra else ""))
        time.sleep(every)


def wait_healthy(port: int, server: subprocess.Popen | None = None, seconds: float = 60) -> None:
    """Until the Streamlit server on ``port`` answers its health check ("ok"); fails at once if ``server``
    (its process) has exited."""
    def healthy() -> bool:
        if server is not None and server.poll() is not None:
            output = server.stderr.read() if server.stderr else ""
            raise AssertionError(f"the dashboard exited {server.returncode}: {output}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as answer:
                return answer.status == 200 and answer.read().strip() == b"ok"
        except OSError:
            return False

    wait_for(healthy, seconds, f"the dashboard on port {port} to answer its health check", every=0.25)
