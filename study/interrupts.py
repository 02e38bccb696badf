"""Ctrl-C (and a service's SIGTERM) at a safe point.

A stop raises ``KeyboardInterrupt`` wherever the driver is, except inside a :func:`protected` section
(a database transaction or read, a cross-process lock, a request to the warm workers): there it waits
for the section to end. Raised in the middle of one, it could leave a lock file flocked by a descriptor
nobody closes (the next lock in this process then waits forever), a SQLite writer lock held, or half a
message read from the warm workers. A second signal during the same section raises at once: a user who
presses Ctrl-C twice is never kept waiting on a stuck call.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

_main = threading.local()  # signal handlers run in the main thread: only its sections defer a stop


@contextmanager
def protected() -> Iterator[None]:
    """A section a stop never interrupts; a stop that arrives meanwhile is raised when it ends."""
    depth = getattr(_main, "depth", 0)
    _main.depth = depth + 1
    try:
        yield
    finally:
        _main.depth = depth
        if depth == 0 and getattr(_main, "pending", False):
            _main.pending = False
            raise KeyboardInterrupt


@contextmanager
def stop_on(*signals: int) -> Iterator[threading.Event]:
    """While inside: each of ``signals`` sets the event it yields and raises ``KeyboardInterrupt`` at the
    next safe point. Landing inside a library's call, that can come out as another error (psycopg's "can't
    change 'autocommit' now"): callers treat any error after the event is set as the stop. A signal this
    process was started ignoring (a background job of a script) stays ignored."""
    stop = threading.Event()

    def interrupt(signum, frame):
        if getattr(_main, "depth", 0) and not getattr(_main, "pending", False):
            _main.pending = True  # raised by protected() when its section ends
            stop.set()
            return
        _main.pending = False
        stop.set()
        raise KeyboardInterrupt

    previous = {number: signal.getsignal(number) for number in signals}
    for number, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(number, interrupt)
    try:
        yield stop
    finally:
        _main.pending = False
        for number, handler in previous.items():
            signal.signal(number, handler)
