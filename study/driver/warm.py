"""Warm workers by default: the command side of the per-user background workers (``workers.pool.warm_server``).

``adamscape run`` and ``submit --run`` without ``--address`` drive their study through the warm workers of
this user on this machine: they are found through a runtime file in the user's state folder
(``ADAMSCAPE_STATE_DIR``, default ``~/.local/state/adamscape``; folder 0700, file 0600, holding the
connection's secret), started in the background when there are none, and left running for ``keep_warm``
seconds after the last command (like Gradle's daemon or Bazel's server). The command stays the driver: it
opens the database, leases cells and writes every result exactly as with workers of its own; only the
:class:`study.driver.runner.Pool` calls travel to the background process, their batches and events as the
:mod:`study.protocol` objects themselves (pickled by ``multiprocessing.connection``). A set that is gone,
hung or stale (its pid dead, its port silent) is removed and replaced, never attached to.

Imports neither torch nor Ray.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from study.driver.service import CODE_CHECK_SECONDS, code_version  # noqa: F401  (the server reads both from here)
from study.errors import ClusterLost, RunAborted, UserError
from study.interrupts import protected
from study.protocol import BatchPayload, DeviceInfo, Event, PoolLost

DEFAULT_KEEP_WARM = 600.0  # seconds of idleness before the warm workers end
RUNTIME_FILE = "workers.json"
CONNECT_SECONDS = 10.0  # a set that does not finish the handshake in this long is taken for hung
ANSWER_SECONDS = 60.0  # nor answer a request (its pump may sit in Ray's health checks for seconds)
START_SECONDS = 60.0  # a new set must have written its runtime file by then


def state_dir() -> Path:
    return Path(os.environ.get("ADAMSCAPE_STATE_DIR") or Path.home() / ".local" / "state" / "adamscape")


def log_dir() -> Path:
    return Path(os.environ.get("ADAMSCAPE_LOG_DIR") or state_dir() / "logs")


def _runtime_dir() -> Path:
    folder = state_dir() / "warm"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def write_runtime(info: dict[str, Any]) -> None:
    """The runtime file, written whole (a reader never sees half of it), readable by this user only."""
    path = _runtime_dir() / RUNTIME_FILE
    temporary = path.with_name(f".{RUNTIME_FILE}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as f:
        json.dump(info, f)
    os.replace(temporary, path)


def read_runtime() -> dict[str, Any] | None:
    try:
        return json.loads((_runtime_dir() / RUNTIME_FILE).read_text())
    except (OSError, ValueError):
        return None


def remove_runtime(pid: int) -> None:
    """Remove the runtime file if it is still the one process ``pid`` wrote."""
    info = read_runtime()
    if info is not None and info.get("pid") == pid:
        (_runtime_dir() / RUNTIME_FILE).unlink(missing_ok=True)


def mismatch(have: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    """Why warm workers described by ``have`` cannot serve a command that wants ``wanted``, or None."""
    if have["code"] != wanted["code"]:
        return "adamscape's code changed on disk since they started"
    if wanted["workers"] is not None and have["workers"] != wanted["workers"]:
        return f"they are {have['workers']} workers and this run asks for {wanted['workers']} (--workers)"
    if have["gpus_per_trial"] != wanted["gpus_per_trial"]:
        return (f"they have a GPU share of {have['gpus_per_trial']:g} per worker and this run asks for "
                f"{wanted['gpus_per_trial']:g} (--gpus-per-trial)")
    return None


def wanted(workers: int | None, gpus_per_trial: float, keep_warm: float) -> dict[str, Any]:
    """What a command asks of the warm workers: one per CPU unless ``--workers`` says otherwise."""
    if workers is None and not gpus_per_trial:
        workers = cpu_count()
    return {"workers": workers, "gpus_per_trial": gpus_per_trial, "keep_warm": keep_warm, "code": code_version()}


# --- the connection ------------------------------------------------------------------------------------

class WarmPool:
    """A :class:`study.driver.runner.Pool` whose workers live in the background process: each call is one
    request over the connection (``dispatch`` is one way: the driver never waits on it)."""

    def __init__(self, conn, hello: dict[str, Any], stall_seconds: float):
        self.conn, self.hello, self.stall_seconds = conn, hello, stall_seconds
        self.size = hello["workers"]
        self.pid = hello["pid"]

    def _call(self, *request: Any) -> Any:
        try:
            with protected():  # a Ctrl-C waits for the answer: half a message read would garble the next
                self.conn.send(request)
                return self.conn.recv()
        except (EOFError, OSError) as exc:
            raise ClusterLost(f"the warm workers (pid {self.pid}) went away ({type(exc).__name__}); the next "
                              "command starts new ones") from None

    def free_slots(self) -> list[int]:
        return self._call("free")

    def started(self) -> int:
        return self._call("started")

    def devices(self, timeout: float) -> list[DeviceInfo]:
        return self._call("devices", timeout)

    def dispatch(self, slot: int, payload: BatchPayload) -> None:
        try:
            with protected():
                self.conn.send(("dispatch", slot, payload, self.stall_seconds))
        except OSError as exc:
            raise ClusterLost(f"the warm workers (pid {self.pid}) went away ({type(exc).__name__})") from None

    def events(self, timeout: float) -> list[Event]:
        found = self._call("events", timeout)
        if found and isinstance(found[0], PoolLost):
            raise ClusterLost(found[0].error)
        return found

    def cancel(self, key: Any) -> list[Any]:
        return self._call("cancel", key)

    def close(self) -> None:
        """Leave the warm workers (they stay up for the next command)."""
        with contextlib.suppress(Exception):
            self.conn.send(("bye",))
        with contextlib.suppress(Exception):
            self.conn.close()


def _connect(info: dict[str, Any]):
    """A connection to the set ``info`` describes, or None when it does not answer (in CONNECT_SECONDS)."""
    from multiprocessing.connection import Client

    result: list[Any] = []

    def attempt() -> None:
        try:
            result.append(Client(("127.0.0.1", info["port"]), authkey=bytes.fromhex(info["key"])))
        except Exception as exc:  # refused (gone), a wrong key (another set took the port)
            result.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(CONNECT_SECONDS)
    if not result or isinstance(result[0], Exception):
        return None
    return result[0]


def _request(conn, *request: Any, timeout: float = ANSWER_SECONDS) -> Any:
    conn.send(request)
    if not conn.poll(timeout):
        raise TimeoutError(f"no answer to {request[0]} in {timeout:g} s")
    return conn.recv()


def _is_ours(pid: int) -> bool:
    """Process ``pid`` is alive and is a warm-worker process (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: trust the pid
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return b"workers.pool.warm_server" in cmdline


def session_pids(session: int) -> list[int]:
    """The live processes of session ``session``: a warm set (started as a session leader) and everything
    it started (its Ray and Ray's workers, which have process groups of their own). Linux's /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if len(fields) > 3 and fields[0] != "Z" and int(fields[3]) == session:
                found.append(int(entry.name))
    return found


def _end(pid: int, conn=None, seconds: float = 20.0, ray_dir: str | None = None) -> None:
    """End warm set ``pid`` and everything it started: asked to (or SIGTERM), then SIGKILL to what is left of
    its session (only the set itself and Ray's processes: a recycled pid's session is never touched)."""
    asked = False
    if conn is not None:
        with contextlib.suppress(Exception):
            asked = bool(_request(conn, "shutdown"))
        with contextlib.suppress(Exception):
            conn.close()
    if not asked and _is_ours(pid):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    left = lambda: [p for p in session_pids(pid) if p == pid and _is_ours(p) or _is_ray(p)]  # noqa: E731
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and left():
        time.sleep(0.05)
    for process in left():  # what did not end when asked
        with contextlib.suppress(OSError):
            os.kill(process, signal.SIGKILL)
    if ray_dir and Path(ray_dir).name.startswith("adamscape-ray-"):
        shutil.rmtree(ray_dir, ignore_errors=True)
    remove_runtime(pid)


def _is_ray(pid: int) -> bool:
    try:
        return b"ray" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _spawn(want: dict[str, Any], stall_seconds: float) -> subprocess.Popen:
    folder = log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"warm-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    command = [sys.executable, "-m", "workers.pool.warm_server", "--gpus-per-trial", str(want["gpus_per_trial"]),
               "--keep-warm", str(want["keep_warm"]), "--stall-seconds", str(stall_seconds)]
    if want["workers"] is not None:
        command += ["--workers", str(want["workers"])]
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=_runtime_dir(), close_fds=True,
                                   env={**os.environ, "ADAMSCAPE_WARM_LOG": str(log)})
    process.log = log
    return process


def _wait_started(process: subprocess.Popen) -> dict[str, Any]:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        info = read_runtime()
        if info is not None and info.get("pid") == process.pid:
            return info
        if process.poll() is not None:
            break
        time.sleep(0.02)
    for left in session_pids(process.pid):
        with contextlib.suppress(OSError):
            os.kill(left, signal.SIGKILL)
    lines = []
    with contextlib.suppress(OSError):
        lines = [line for line in process.log.read_text(errors="replace").splitlines() if line.strip()]
    if lines and lines[-1].startswith("error: "):  # the user's to fix (a GPU share without GPUs)
        raise UserError(lines[-1].removeprefix("error: "))
    tail = f": {lines[-1][:200]}" if lines else ""
    raise RunAborted(f"the warm workers did not start{tail} (log: {process.log}); run with --keep-warm 0 to "
                     "use workers that end with the command")


class _Lock:
    """One command at a time looks for, replaces or starts this user's warm set."""

    def __enter__(self):
        from filelock import FileLock

        self.lock = FileLock(str(_runtime_dir() / "start.lock"))
        self.lock.acquire(timeout=START_SECONDS + 30)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.lock.release()


def _alive() -> tuple[dict[str, Any], Any] | None:
    """The current set and a connection to it; a dead, hung or foreign one is ended and forgotten."""
    info = read_runtime()
    if info is None:
        return None
    if not _is_ours(info["pid"]):  # killed: what it started may linger a moment, its folder for good
        _end(info["pid"], seconds=5, ray_dir=info.get("ray_dir"))
        (_runtime_dir() / RUNTIME_FILE).unlink(missing_ok=True)
        return None
    conn = _connect(info)
    if conn is None:
        _end(info["pid"], ray_dir=info.get("ray_dir"))
        return None
    return info, conn


_started_here: set[int] = set()  # the sets this command started (its first line says so)


def prestart(want: dict[str, Any], stall_seconds: float) -> None:
    """Start a warm set in the background now if this user has none, without waiting for its workers (a
    command does this first, so that Ray starts while it validates and writes its study)."""
    with _Lock():
        info = read_runtime()
        if info is None or not _is_ours(info["pid"]):
            _started_here.add(_wait_started(_spawn(want, stall_seconds))["pid"])


def attach(want: dict[str, Any], stall_seconds: float, say: Callable[[str], None]) -> WarmPool | None:
    """The warm workers for this command: this user's set if it serves ``want``; else a new one (replacing
    an idle set that does not), saying so in one line. None when the set is busy with another command and
    cannot serve this one: the caller runs on workers of its own."""
    with _Lock():
        found = _alive()
        if found is not None:
            info, conn = found
            try:
                hello = _request(conn, "hello", want)
            except (TimeoutError, EOFError, OSError):
                _end(info["pid"], ray_dir=info.get("ray_dir"))
                hello = None
            if hello is not None and hello["ok"]:
                if hello["pid"] in _started_here:
                    say(_starting(hello, want, info))
                else:
                    say(f"warm workers: {hello['workers']} (pid {hello['pid']}, up {_ago(hello['started'])}; "
                        "`adamscape shutdown` ends them)")
                return WarmPool(conn, hello, stall_seconds)
            if hello is not None and hello["others"]:
                conn.close()
                say(f"the warm workers are busy with another command and {hello['why']}: this study runs on "
                    "workers of its own, which end with it")
                return None
            if hello is not None:
                say(f"the warm workers (pid {info['pid']}) cannot serve this run: {hello['why']}; restarting them")
                _end(info["pid"], conn, ray_dir=info.get("ray_dir"))
        process = _spawn(want, stall_seconds)
        info = _wait_started(process)
        conn = _connect(info)
        hello = None if conn is None else _request(conn, "hello", want, timeout=START_SECONDS)
        if hello is None or not hello["ok"]:
            raise RunAborted(f"the warm workers just started (pid {info['pid']}) do not answer; see {info['log']}, "
                             "or run with --keep-warm 0")
        say(_starting(hello, want, info))
        return WarmPool(conn, hello, stall_seconds)


def _starting(hello: dict[str, Any], want: dict[str, Any], info: dict[str, Any]) -> str:
    return (f"starting {hello['workers']} warm workers in the background (pid {hello['pid']}), kept "
            f"{_duration(want['keep_warm'])} after the last study (`adamscape shutdown` ends them; log: {info['log']})")


def describe() -> dict[str, Any] | None:
    """What ``adamscape status`` shows of this user's warm set (None when there is none or it does not
    answer; only a command that needs workers replaces a set)."""
    info = read_runtime()
    conn = None if info is None or not _is_ours(info["pid"]) else _connect(info)
    if conn is None:
        return None
    try:
        return _request(conn, "status")
    except (TimeoutError, EOFError, OSError):
        return None
    finally:
        with contextlib.suppress(Exception):
            conn.send(("bye",))
            conn.close()


def shutdown() -> int | None:
    """End this user's warm set and everything it started; returns its pid (None when there was none)."""
    with _Lock():
        info = read_runtime()
        if info is None or not _is_ours(info["pid"]):
            if info is not None:
                (_runtime_dir() / RUNTIME_FILE).unlink(missing_ok=True)
            return None
        _end(info["pid"], _connect(info), ray_dir=info.get("ray_dir"))
        return info["pid"]


def parse_duration(text: str) -> float:
    """``--keep-warm``: seconds, or a number with s, m or h (``10m``, ``90s``, ``1h``, ``0``)."""
    value = text.strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600}.get(value[-1:], None)
    number = value[:-1] if scale else value
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        seconds = -1
    if not (0 <= seconds < float("inf")):
        raise ValueError(f"--keep-warm must be a duration such as 10m, 90s, 1h or 0 (got {text!r})")
    return seconds


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _ago(started: float) -> str:
    seconds = max(0, time.time() - started)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
