"""The warm workers: one background process per user that keeps a local Ray and its worker actors up between
studies, so that ``adamscape run`` and ``submit --run`` on this machine skip the cold start.

Started by :mod:`study.driver.warm` (``python -m workers.pool.warm_server``) in a session of its own. It listens on a
loopback port guarded by a secret (``multiprocessing.connection``'s HMAC handshake) that only the runtime
file in the user's state folder holds (mode 0600), so another user's command can never join it. Each
connected command is a driver of its own study and database, exactly as with a pool of its own: this
process owns no database and writes nothing but its runtime file. What crosses the connection is the
driver's :class:`study.driver.runner.Pool` calls, as ``(verb, *arguments)`` tuples whose arguments and answers
are :mod:`study.protocol` objects (batches, events, device descriptions; :class:`~study.protocol.PoolLost`
once the pool is gone) or plain values, pickled by ``multiprocessing.connection``; cells are keyed by
(client, cell id) in here, so two commands on two databases share the workers without their cell ids meeting.
A command that goes away (Ctrl-C, killed) has its running cells stopped (their workers replaced); the others
go on.

It ends by itself after ``keep_warm`` seconds without a command, restarts itself (a fresh process, fresh
workers) once idle when the project's code changed on disk, and ends when its Ray does (the runtime file
is removed first, so the next command starts a fresh set).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, Listener
from typing import Any

from study.driver import warm
from study.protocol import BatchPayload, DeviceInfo, Event, PoolLost

log = logging.getLogger("adamscape.warm")
PUMP_WAIT = 0.01  # seconds the event pump waits on Ray per pass while cells run (other calls wait at most this)


@dataclass
class _Client:
    id: int
    events: queue.Queue = field(default_factory=queue.Queue)
    lost: str | None = None  # why the pool is gone: its next events() call says so


class Server:
    def __init__(self, workers: int | None, gpus_per_trial: float, keep_warm: float, stall_seconds: float):
        self.workers, self.gpus, self.keep_warm, self.stall = workers, gpus_per_trial, keep_warm, stall_seconds
        self.code = warm.code_version()
        self.lock = threading.RLock()
        self.clients: dict[int, _Client] = {}
        self.next_client = 0
        self.owner: dict[int, int] = {}  # busy slot -> client id
        self.waiting: deque[tuple[int, BatchPayload, float | None]] = deque()  # (client, payload, stall)
        self.pool = None
        self.started = time.time()
        self.idle_since = time.monotonic()
        self.cells_done = 0
        self.stopping = threading.Event()
        self.restart = False
        self.ray_dir = tempfile.mkdtemp(prefix="adamscape-ray-")  # named in the runtime file: removed if we are killed

    # --- lifecycle -----------------------------------------------------------------------------------

    def serve(self) -> None:
        key = os.urandom(32)
        listener = Listener(("127.0.0.1", 0), authkey=key)
        if self.workers is None:  # a GPU share: as many workers as the GPUs hold (Ray counts them)
            import ray

            self._init_ray()
            self.workers = int(ray.cluster_resources().get("GPU", 0) / self.gpus)
            if self.workers < 1:
                print("error: --gpus-per-trial was given but this machine has no GPUs (Ray finds none); drop "
                      "the option to train on CPU", flush=True)
                self._close_pool()
                return
        warm.write_runtime({"pid": os.getpid(), "port": listener.address[1], "key": key.hex(),
                            "workers": self.workers, "gpus_per_trial": self.gpus, "code": self.code,
                            "started": self.started, "log": os.environ.get("ADAMSCAPE_WARM_LOG"),
                            "ray_dir": self.ray_dir})
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name="accept").start()
        try:
            self._start_pool()
            self._pump()
        except Exception as exc:  # Ray gone, actors that cannot start: every command hears it, then we end
            log.exception("the warm workers stop")
            self._lose(f"the warm workers stopped ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]})"
                       if str(exc).strip() else f"the warm workers stopped ({type(exc).__name__})")
        finally:
            warm.remove_runtime(os.getpid())
            listener.close()
            self._close_pool()
        if self.restart:
            log.warning("adamscape's code changed on disk: restarting the warm workers with it")
            os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])

    def _init_ray(self) -> None:
        import ray

        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            # a temporary folder of its own: Ray's ray_current_cluster file in the default one would make the
            # user's own `ray.init()` join this background Ray (whose CPUs our workers hold) for as long as it
            # stays up. Short, as Ray's socket paths under it must stay under 108 bytes.
            os.environ["RAY_TMPDIR"] = self.ray_dir
            ray.init(address="local", include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                     num_cpus=max(self.workers or 1, warm.cpu_count()))

    def _start_pool(self) -> None:
        from study.driver.service import warm_up
        from workers.pool import RayPool

        self._init_ray()
        pool = RayPool(self.workers, gpus_per_trial=self.gpus, stall_seconds=self.stall, warm=warm_up())
        with self.lock:
            self.pool = pool

    def _close_pool(self) -> None:
        import ray

        if self.pool is not None:
            self.pool.close()
        stopper = threading.Thread(target=ray.shutdown, daemon=True)
        stopper.start()
        stopper.join(timeout=10)
        shutil.rmtree(self.ray_dir, ignore_errors=True)

    def _lose(self, message: str) -> None:
        with self.lock:
            for client in self.clients.values():
                client.lost = message
                client.events.put(None)

    def stop(self, *_: Any) -> None:
        self.stopping.set()

    # --- the event pump: routes each finished epoch or cell to the command that sent it ---------------

    def _pump(self) -> None:
        checked = time.monotonic()
        while not self.stopping.is_set():
            with self.lock:
                busy = bool(self.owner)
                events = self.pool.events(timeout=PUMP_WAIT) if busy else self.pool.events(timeout=0)
                for event in events:
                    client_id, key = event.key
                    client = self.clients.get(client_id)
                    if event.kind in ("result", "failure"):
                        self.cells_done += 1
                    if client is not None:
                        client.events.put(dataclasses.replace(event, key=key))
                self._free_finished()
            if not busy:
                time.sleep(0.05)
            now = time.monotonic()
            if not self.clients and not self.owner:
                if now - self.idle_since > self.keep_warm:
                    log.warning("idle for %g s: the warm workers end", self.keep_warm)
                    return
                if now - checked > warm.CODE_CHECK_SECONDS:
                    checked = now
                    if warm.code_version() != self.code:
                        self.restart = True
                        return

    def _free_finished(self) -> None:
        """Slots whose batch ended go back to the free list; waiting dispatches take them first."""
        for slot in [s for s in self.owner if not self.pool.slots[s].busy]:
            del self.owner[slot]
        while self.waiting:
            free = self._free()
            if not free:
                break
            client_id, payload, stall = self.waiting.popleft()
            if client_id in self.clients:
                self._start(free[0], client_id, payload, stall)

    def _free(self) -> list[int]:
        return [s for s in self.pool.free_slots() if s not in self.owner]

    def _start(self, slot: int, client_id: int, payload: BatchPayload, stall: float | None) -> None:
        self.pool.dispatch(slot, payload, stall_seconds=stall)
        self.owner[slot] = client_id

    # --- one connected command -------------------------------------------------------------------------

    def _accept(self, listener: Listener) -> None:
        while not self.stopping.is_set():
            try:
                conn = listener.accept()
            except Exception:  # a wrong key (not this user), a port scan, the listener closed
                if self.stopping.is_set():
                    return
                continue
            threading.Thread(target=self._converse, args=(conn,), daemon=True).start()

    def _converse(self, conn: Connection) -> None:
        with self.lock:
            self.next_client += 1
            client = _Client(self.next_client)  # one of self.clients once it says hello (status asks only)
        try:
            while True:
                request = conn.recv()
                verb, args = request[0], request[1:]
                if verb == "bye":
                    break
                answer = getattr(self, f"_on_{verb}")(client, *args)
                if verb != "dispatch":  # one way: the driver never waits on it
                    conn.send(answer)
        except (EOFError, OSError):
            pass  # the command ended (Ctrl-C, killed): its cells are stopped below
        finally:
            self._forget(client)
            conn.close()

    def _forget(self, client: _Client) -> None:
        with self.lock:
            if self.clients.pop(client.id, None) is None:
                return
            log.warning("command %d left", client.id)
            self.waiting = deque(item for item in self.waiting if item[0] != client.id)
            if self.pool is not None:
                for slot in [s for s, owner in self.owner.items() if owner == client.id]:
                    keys = list(self.pool.slots[slot].keys)
                    if keys:
                        self.pool.cancel(keys[0])  # its worker is replaced: nothing of it runs on
                    self.owner.pop(slot, None)
            if not self.clients:
                self.idle_since = time.monotonic()

    def _on_hello(self, client: _Client, wanted: dict[str, Any]) -> dict[str, Any]:
        """Whether this set serves ``wanted`` (its code, workers and GPU share); the command's keep-warm
        becomes the set's."""
        mismatch = warm.mismatch(self.description(), wanted)
        with self.lock:
            others = len(self.clients)
            if mismatch is None:
                self.keep_warm = wanted["keep_warm"]
                self.clients[client.id] = client
        return {"ok": mismatch is None, "why": mismatch, "others": others, **self.description()}

    def description(self) -> dict[str, Any]:
        with self.lock:
            return {"pid": os.getpid(), "workers": self.workers, "gpus_per_trial": self.gpus, "code": self.code,
                    "started": self.started, "keep_warm": self.keep_warm, "commands": len(self.clients),
                    "busy": len(self.owner), "cells_done": self.cells_done,
                    "ready": 0 if self.pool is None else self.pool.started(),
                    "idle_seconds": None if self.clients or self.owner else time.monotonic() - self.idle_since}

    def _on_status(self, client: _Client) -> dict[str, Any]:
        return self.description()

    def _on_shutdown(self, client: _Client) -> bool:
        self.stop()
        return True

    def _on_free(self, client: _Client) -> list[int]:
        with self.lock:
            return [] if self.pool is None or self.waiting else self._free()

    def _on_started(self, client: _Client) -> int:
        with self.lock:
            return 0 if self.pool is None else self.pool.started()

    def _on_dispatch(self, client: _Client, slot: int, payload: BatchPayload, stall: float | None) -> None:
        payload = payload.keyed(lambda key: (client.id, key))
        with self.lock:
            free = self._free()
            if slot in free:
                self._start(slot, client.id, payload, stall)
            elif free:  # another command took it since this one asked
                self._start(free[0], client.id, payload, stall)
            else:
                self.waiting.append((client.id, payload, stall))

    def _on_events(self, client: _Client, timeout: float) -> list[Event] | list[PoolLost]:
        found = []
        try:
            found.append(client.events.get(timeout=timeout) if timeout else client.events.get_nowait())
            while True:
                found.append(client.events.get_nowait())
        except queue.Empty:
            pass
        if client.lost:
            return [PoolLost(client.lost)]
        return [event for event in found if event is not None]

    def _on_cancel(self, client: _Client, key: Any) -> list[Any]:
        wrapped = (client.id, key)
        with self.lock:
            before = len(self.waiting)
            self.waiting = deque(item for item in self.waiting
                                 if not (item[0] == client.id and any(c.key == wrapped for c in item[1].cells)))
            if len(self.waiting) != before:
                return []
            others = self.pool.cancel(wrapped)
            for slot in [s for s in self.owner if not self.pool.slots[s].busy]:
                del self.owner[slot]
            return [k for _, k in others]

    def _on_devices(self, client: _Client, timeout: float) -> list[DeviceInfo]:
        deadline = time.monotonic() + timeout
        while self.pool is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.pool.devices(timeout=max(1.0, deadline - time.monotonic()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--gpus-per-trial", type=float, default=0.0)
    parser.add_argument("--keep-warm", type=float, default=warm.DEFAULT_KEEP_WARM)
    parser.add_argument("--stall-seconds", type=float, default=3600.0)
    args = parser.parse_args()
    import faulthandler

    faulthandler.enable()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.warning("warm workers started (pid %d, code %s)", os.getpid(), warm.code_version())
    server = Server(args.workers, args.gpus_per_trial, args.keep_warm, args.stall_seconds)
    signal.signal(signal.SIGTERM, server.stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the command in front, never this
    server.serve()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
