"""Long-lived Ray actors that train cells and stream their metrics back to the driver.

The pool never touches the database: it takes cell payloads and returns events.
"""

from __future__ import annotations

import os
import socket
import traceback
from dataclasses import dataclass, field
from typing import Any, Literal

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError, WorkerCrashedError

ACTOR_LOST = (RayActorError, ActorDiedError, ActorUnavailableError, WorkerCrashedError)


@ray.remote
class CellWorker:
    """One training process; its imports and datasets stay warm across cells."""

    def __init__(self, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"

    def train(self, payload: dict[str, Any]):
        from .training import train

        try:
            yield from train(**payload, device=self.device)
        except Exception:  # a crashed trial is a result to record, not a reason to lose the worker
            yield {"error": traceback.format_exc(limit=8)}


@dataclass
class Event:
    key: Any  # what the driver dispatched the payload under
    kind: Literal["epoch", "done", "error", "lost"]
    data: dict[str, Any] = field(default_factory=dict)


class RayPool:
    """``size`` CellWorker actors, each training one cell at a time."""

    def __init__(self, size: int, gpus_per_trial: float = 0.0, cpus_per_trial: float = 1.0):
        self.size, self.gpus, self.cpus = size, gpus_per_trial, cpus_per_trial
        self.actors: list[Any] = [self._spawn() for _ in range(size)]
        self.running: dict[int, tuple[Any, Any]] = {}  # slot -> (key, streaming generator)

    def _spawn(self):
        return CellWorker.options(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0).remote(
            max(1, int(self.cpus)))

    def free_slots(self) -> list[int]:
        return [slot for slot in range(self.size) if slot not in self.running]

    def dispatch(self, slot: int, key: Any, payload: dict[str, Any]) -> None:
        stream = self.actors[slot].train.options(num_returns="streaming").remote(payload)
        self.running[slot] = (key, stream)

    def events(self, timeout: float) -> list[Event]:
        """Whatever the running cells reported within ``timeout`` seconds."""
        if not self.running:
            return []
        slot_of = {id(stream): slot for slot, (_, stream) in self.running.items()}
        ready, _ = ray.wait([stream for _, stream in self.running.values()], num_returns=len(self.running),
                            timeout=timeout)
        return [self._next_event(slot_of[id(stream)]) for stream in ready]

    def _next_event(self, slot: int) -> Event:
        key, stream = self.running[slot]
        try:
            item = ray.get(next(stream))
        except StopIteration:
            del self.running[slot]
            return Event(key, "lost", {"error": "worker stream ended without a result"})
        except ACTOR_LOST as exc:
            del self.running[slot]
            self.actors[slot] = self._spawn()
            return Event(key, "lost", {"error": f"worker died: {type(exc).__name__}: {str(exc).splitlines()[0]}"})
        except RayTaskError as exc:
            del self.running[slot]
            return Event(key, "error", {"error": str(exc)})
        if "epoch" in item:
            return Event(key, "epoch", item)
        del self.running[slot]
        return Event(key, "error" if "error" in item else "done", item)

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)


def _check_reachable(address: str) -> None:
    """Fail fast on a host:port nobody answers at (ray.init would retry for minutes)."""
    host, _, port = address.rpartition(":")
    if "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {address} ({exc.strerror or exc})") from None


def connect(address: str | None) -> dict[str, float]:
    """Join the Ray cluster at ``address`` (or RAY_ADDRESS, or start a local one); return its resources."""
    if address:
        _check_reachable(address)
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs: dict[str, Any] = {"address": address} if address else {"include_dashboard": False}
        ray.init(logging_level="ERROR", log_to_driver=False, configure_logging=True, **kwargs)
    return ray.cluster_resources()
