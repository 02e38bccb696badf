"""Long-lived Ray actors that train cells and stream their metrics back to the driver.

The pool never touches the database: it takes cell payloads and returns events.
Nothing waits forever: a worker or a node that dies, or a cell that reports
nothing for ``stall_seconds``, becomes a ``lost`` event (the cell is retried on a
fresh actor, placed by Ray on a surviving node); a cluster that is gone (its head
or the driver's own node) raises :class:`ClusterLost` within seconds.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import ray
from ray.exceptions import (ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError,
                            WorkerCrashedError)

ACTOR_LOST = (RayActorError, ActorDiedError, ActorUnavailableError, WorkerCrashedError)
log = logging.getLogger("adamscape")


from study.errors import ClusterLost  # noqa: E402  (the driver catches it without importing Ray)


@ray.remote
class CellWorker:
    """One training process; its imports and datasets stay warm across cells."""

    def __init__(self, threads: int, warm: dict[str, Any] | None = None, gpu_share: float = 0.0):
        """``warm``: the study's ``task`` and ``protocol``, built once here (imports, dataset), while the
        driver is still setting up, so the first cells do not pay for it; or a whole payload (``cells``),
        trained once and discarded (a service, which has no study yet). ``gpu_share``: the fraction of a
        GPU Ray gave this worker (``--gpus-per-trial``); below 1 it also caps the worker's GPU memory, so
        the workers sharing a GPU cannot starve each other."""
        import torch

        from study import plugins
        from . import population, tasks, training

        # before CUDA starts (cuBLAS reads it then): the workspace a `deterministic = true` study needs;
        # no smaller than torch's default cuBLAS workspace, so the other studies lose nothing
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", training.CUBLAS_DETERMINISTIC)
        torch.set_num_threads(threads)
        self.device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        if self.device == "cuda":
            torch.backends.cudnn.benchmark = True  # every batch of a task has one shape: pick the fastest kernels
            if 0 < gpu_share < 1:
                torch.cuda.set_per_process_memory_fraction(gpu_share)
        if warm:
            try:
                plugins.install(warm.get("plugins"))
                if warm.get("cells"):  # a service's workers: one tiny pass warms the training code itself
                    for _ in population.train_payload(warm, self.device):
                        pass
                else:
                    tasks.build(warm["task"], population.plan_of(warm["protocol"]), self.device)
                    self._first_calls()
            except Exception:  # a missing dataset, say: the cells report it, one by one, as their error
                pass

    def _first_calls(self) -> None:
        """What a process's first population step pays whatever the task, paid while the worker starts:
        the first vmapped cross-entropy (its decomposition imports torch.fx's symbolic shapes and sympy,
        ~0.3 s, 3/4 of what a first digits cell cost more than the second), the first matmul and backward
        on the device, the batched optimizer kernel. Zeros only: no random number is drawn."""
        import torch
        from torch.func import vmap

        import optimizers

        weight = torch.zeros(2, 3, 4, device=self.device, requires_grad=True)  # 2 configs of a 3→4 linear
        inputs = torch.zeros(1, 3, device=self.device)
        targets = torch.zeros(1, dtype=torch.long, device=self.device)
        losses = vmap(lambda w: torch.nn.functional.cross_entropy(inputs @ w, targets))(weight)
        opt = optimizers.create("adam", [weight], lr=torch.tensor([1e-3, 1e-2], device=self.device))
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()

    def node(self) -> str:
        """The Ray node this actor runs on (answered once it is up)."""
        return ray.get_runtime_context().get_node_id()

    def describe(self) -> dict[str, Any]:
        """What this worker trains on: its device, and for a GPU share the GPU's name, compute capability,
        memory, torch and CUDA versions; ``problem``: why a GPU share cannot be used here (None if it can)."""
        import torch

        found: dict[str, Any] = {"device": self.device, "torch": torch.__version__, "cuda": torch.version.cuda,
                                 "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "problem": None}
        if not found["gpu_ids"]:
            return found
        if self.device != "cuda":
            found["problem"] = (f"Ray gave this worker a GPU share but torch {torch.__version__} (CUDA "
                                f"{torch.version.cuda}) finds no usable CUDA device (an NVIDIA driver too old "
                                "for this CUDA, or none)")
            return found
        major, minor = torch.cuda.get_device_capability()
        name = torch.cuda.get_device_name()
        found.update(gpu=name, capability=f"sm_{major}{minor}",
                     memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
                     memory_fraction=torch.cuda.get_per_process_memory_fraction())
        if found["capability"] not in torch.cuda.get_arch_list():
            found["problem"] = (f"{name} ({found['capability']}) is not among the architectures this torch "
                                f"build has kernels for ({', '.join(torch.cuda.get_arch_list())})")
        return found

    def train(self, payload: dict[str, Any]):
        from .population import train_payload

        yield from train_payload(payload, self.device)


@dataclass
class Event:
    key: Any  # what the driver dispatched the payload under
    kind: Literal["epoch", "done", "error", "lost"]
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Slot:
    actor: Any
    starting: Any  # the actor's node() call until it answers, then None
    spawned: float
    node: str | None = None
    keys: list = field(default_factory=list)  # the dispatched cells that have not ended yet
    stream: Any = None
    last_progress: float = 0.0
    stall_seconds: float | None = None  # this batch's own limit (a warm pool serves commands with their own)

    @property
    def busy(self) -> bool:
        return bool(self.keys)


class RayPool:
    """``size`` CellWorker actors, each training one batch of cells at a time (a population, or one by one).

    ``stall_seconds``: a running cell that reports nothing for this long is treated as a lost
    worker. ``start_seconds``: if no actor at all has come up for this long, the cluster
    cannot hold a worker and :class:`ClusterLost` is raised.
    """

    def __init__(self, size: int, gpus_per_trial: float = 0.0, cpus_per_trial: float = 1.0,
                 stall_seconds: float = 3600.0, start_seconds: float = 300.0, health_seconds: float = 1.0,
                 unreachable_seconds: float = 10.0, warm: dict[str, Any] | None = None):
        self.size, self.gpus, self.cpus, self.warm = size, gpus_per_trial, cpus_per_trial, warm
        self.stall_seconds, self.start_seconds = stall_seconds, start_seconds
        self.health_seconds, self.unreachable_seconds = health_seconds, unreachable_seconds
        context = ray.get_runtime_context()
        self.own_node, self.gcs_address = context.get_node_id(), context.gcs_address
        self.slots = [self._spawn() for _ in range(size)]
        self.last_health = self.last_answer = self.last_ready = time.monotonic()
        self.start_failures = 0
        self.probe = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ray-health")

    def _spawn(self) -> _Slot:
        actor = CellWorker.options(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0).remote(
            max(1, int(self.cpus)), self.warm, self.gpus)
        return _Slot(actor, actor.node.remote(), time.monotonic())

    def _respawn(self, index: int) -> None:
        try:
            ray.kill(self.slots[index].actor, no_restart=True)
        except Exception:  # already gone with its node
            pass
        self.slots[index] = self._spawn()

    # --- what the driver calls ---------------------------------------------------------------------

    def free_slots(self) -> list[int]:
        self._poll_starting()
        return [i for i, slot in enumerate(self.slots) if slot.starting is None and not slot.busy]

    def devices(self, timeout: float) -> list[dict[str, Any]]:
        """Every worker's :meth:`CellWorker.describe`, once each is up (at most ``timeout`` seconds)."""
        return ray.get([slot.actor.describe.remote() for slot in self.slots], timeout=timeout)

    def started(self) -> int:
        """How many workers are up (and warm: an actor answers once its warm-up is done)."""
        self._poll_starting()
        return sum(1 for slot in self.slots if slot.starting is None)

    def dispatch(self, index: int, payload: dict[str, Any], stall_seconds: float | None = None) -> None:
        """Start ``payload["cells"]`` on worker ``index``; their events come back under each cell's ``key``.
        ``stall_seconds``: this batch's limit, instead of the pool's."""
        slot = self.slots[index]
        slot.keys, slot.last_progress = [cell["key"] for cell in payload["cells"]], time.monotonic()
        slot.stall_seconds = stall_seconds
        slot.stream = slot.actor.train.options(num_returns="streaming").remote(payload)

    def cancel(self, key: Any) -> list[Any]:
        """Stop the cell ``key`` (its lease went to another driver): its actor is replaced. Returns the
        other unfinished cells that actor was training, stopped with it (the caller hands them back)."""
        for index, slot in enumerate(self.slots):
            if key in slot.keys:
                others = [k for k in slot.keys if k != key]
                self._respawn(index)
                return others
        return []

    def events(self, timeout: float) -> list[Event]:
        """Everything the running cells have reported, waiting up to ``timeout`` seconds for the first."""
        found: list[Event] = []
        running = self._running()
        if running:
            ready = ray.wait(list(running.values()), num_returns=1, timeout=timeout)[0]
            while ready and len(found) < 10_000:  # drain: every stream that has something, all it has
                index_of = {id(stream): index for index, stream in running.items()}
                for stream in ready:
                    found.extend(self._next_events(index_of[id(stream)]))
                running = self._running()
                streams = list(running.values())
                ready = ray.wait(streams, num_returns=len(streams), timeout=0)[0] if streams else []
        elif timeout:
            time.sleep(timeout)
        return found + self._check_health()

    def _running(self) -> dict[int, Any]:
        return {index: slot.stream for index, slot in enumerate(self.slots) if slot.busy}

    def close(self) -> None:
        self.probe.shutdown(wait=False, cancel_futures=True)
        for slot in self.slots:
            try:
                ray.kill(slot.actor)
            except Exception:
                pass

    # --- internals ---------------------------------------------------------------------------------

    def _next_events(self, index: int) -> list[Event]:
        """The stream's next record as an event; every unfinished cell of the worker when it failed."""
        slot = self.slots[index]
        slot.last_progress = time.monotonic()
        try:
            item = ray.get(next(slot.stream))
        except StopIteration:
            return self._end(index, "lost", "worker stream ended without a result")
        except ACTOR_LOST as exc:
            return self._end(index, "lost", f"worker died: {type(exc).__name__}: {_first_line(exc)}")
        except RayTaskError as exc:
            return self._end(index, "error", str(exc))
        key = item.pop("key")
        if "fault" in item:  # out of device memory, a CUDA error: its cells run again, on a fresh worker
            return self._end(index, "lost", f"resource fault on the worker: {item['fault']}")
        if "epoch" in item:
            return [Event(key, "epoch", item)]
        slot.keys.remove(key)
        if not slot.keys:
            slot.stream = None
        return [Event(key, "error" if "error" in item else "done", item)]

    def _end(self, index: int, kind: Literal["lost", "error"], error: str) -> list[Event]:
        """Every unfinished cell of worker ``index`` ends as ``kind``; a lost worker is replaced."""
        keys = self.slots[index].keys
        if kind == "lost":
            self._respawn(index)
        else:
            self.slots[index].keys, self.slots[index].stream = [], None
        return [Event(key, kind, {"error": error}) for key in keys]

    def _poll_starting(self) -> None:
        starting = {id(slot.starting): i for i, slot in enumerate(self.slots) if slot.starting is not None}
        if not starting:
            return
        refs = [self.slots[i].starting for i in starting.values()]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in ready:
            index = starting[id(ref)]
            try:
                self.slots[index].node = ray.get(ref)
                self.slots[index].starting = None
                self.last_ready = time.monotonic()
            except ACTOR_LOST + (RayTaskError,) as exc:
                self.start_failures += 1
                if self.start_failures > 3 * self.size:
                    raise ClusterLost(f"worker actors keep failing to start: {_first_line(exc)}") from None
                self._respawn(index)

    def _check_health(self) -> list[Event]:
        """Every ``health_seconds``: is the cluster there, which nodes are alive, which cells stalled."""
        now = time.monotonic()
        if now - self.last_health < self.health_seconds:
            return []
        self.last_health = now
        alive = self._alive_nodes()
        if alive is None:
            if now - self.last_answer > self.unreachable_seconds:
                raise ClusterLost(f"the Ray cluster at {self.gcs_address} stopped answering for "
                                  f"{self.unreachable_seconds:g} s (its head is gone)")
            return []
        self.last_answer = now
        if self.own_node not in alive:
            raise ClusterLost("the Ray node this driver runs on died (its raylet is gone)")
        lost = []
        for index, slot in enumerate(self.slots):
            if slot.node is not None and slot.node not in alive:
                lost += self._end(index, "lost", f"worker node {slot.node[:12]} died")
            elif slot.busy and now - slot.last_progress > (slot.stall_seconds or self.stall_seconds):
                stall = slot.stall_seconds or self.stall_seconds
                lost += self._end(index, "lost", f"no progress for {stall:g} s: worker presumed lost")
        if any(slot.starting is None for slot in self.slots):
            self.last_ready = now
        elif now - self.last_ready > self.start_seconds:
            raise ClusterLost(f"no worker could start in {self.start_seconds:g} s: the cluster has no room for an "
                              f"actor with num_cpus={self.cpus:g}, num_gpus={self.gpus:g}")
        return lost

    def _alive_nodes(self) -> set[str] | None:
        """Ids of the alive nodes, or None when the cluster does not answer (checked without
        blocking the driver: a dead head makes Ray's own calls hang)."""
        if _unreachable(self.gcs_address, timeout=2.0):
            return None
        future = self.probe.submit(lambda: {n["NodeID"] for n in ray.nodes() if n["Alive"]})
        try:
            return future.result(timeout=5)
        except (concurrent.futures.TimeoutError, Exception):
            return None


class ClusterUnreachable(ConnectionError):
    """The Ray cluster at an address cannot be joined: nothing answers there, what answers is not Ray, or it
    wants an auth token this driver lacks or has wrong. ``str()`` is the whole one-line message for the user."""


# Where Ray's driver reads its auth token from (Ray's AuthenticationTokenLoader, first found wins), and how to
# print it on the head. Ray sends it only when RAY_AUTH_MODE=token; _check_reachable switches that on when needed.
_TOKEN_HELP = ("set RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH to a file holding it, or put it in ~/.ray/auth_token "
               "(`ray get-auth-token` on the head prints it)")
_PROBE_SECONDS = 10.0  # a Ray GCS answers the probe in well under a second once Python has imported Ray
# Ray's own log lines: C++ ("[2026-01-02 03:04:05,678 W 123 456] file.cc:12: …"), Python ("2026-01-02 …,678\tINFO …")
_RAY_LOG_LINE = r"^(\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [DIWEF] \d+ \d+\]|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\t[A-Z]+ )"
# Runs in a subprocess (its stderr kept from the terminal, killed after _PROBE_SECONDS): Ray's own GCS client asks
# the GCS for its cluster id once, with the token Ray finds when RAY_AUTH_MODE=token; it prints ok, auth or error.
_PROBE = """\
import sys
try:
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError
    GcsClient(address=sys.argv[1])
except AuthenticationError:
    print("auth")
except Exception as exc:
    print("error", (str(exc).strip().splitlines() or [type(exc).__name__])[0])
else:
    print("ok")
"""


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)  # [::1]:6379 as well


def _unreachable(address: str, timeout: float) -> str | None:
    """Why nothing accepts a TCP connection at host:port ``address``, or None when something does."""
    try:
        socket.create_connection(_host_port(address), timeout=timeout).close()
    except OSError as exc:
        return str(exc.strerror or exc)
    return None


def _not_grpc(address: str, timeout: float) -> str | None:
    """Why what accepts connections at ``address`` is not a gRPC server (as Ray's GCS is), or None when it is:
    it must answer the HTTP/2 client preface with a SETTINGS frame. Bounded by about ``timeout`` seconds."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")  # + an empty SETTINGS frame
    deadline = time.monotonic() + timeout
    head = b""
    try:
        with socket.create_connection(_host_port(address), timeout=timeout) as sock:
            sock.sendall(preface)
            while len(head) < 9:  # one frame header: length (3 bytes), type (1), flags (1), stream (4)
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except socket.timeout:
        if not head:
            return f"it accepts connections but sent nothing in {timeout:g} s"
    except OSError as exc:
        if not head:
            return f"it accepts connections but dropped this one ({exc.strerror or exc})"
    if len(head) == 9 and head[3] == 0x04:
        return None
    if not head:
        return "it accepts connections but closed this one without a word"
    kind = "an HTTP/1 server" if head.startswith(b"HTTP/") or head.lstrip().startswith(b"<") else "not a gRPC server"
    return f"it answered as {kind} (a dashboard's port, say), not as Ray's GCS"


def _probe_gcs(address: str, env: dict[str, str]) -> tuple[str, str]:
    """Ask the GCS at ``address`` for its cluster id with Ray's own client, in a subprocess run with ``env``:
    ("ok" | "auth" | "error" | "timeout", detail). Its stderr (Ray's warnings) never reaches the terminal."""
    import subprocess
    import sys

    try:
        done = subprocess.run([sys.executable, "-P", "-c", _PROBE, address], env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=_PROBE_SECONDS)
    except subprocess.TimeoutExpired:
        return "timeout", f"no answer to Ray's GCS client in {_PROBE_SECONDS:g} s"
    answer, _, detail = done.stdout.strip().partition(" ")
    if answer in ("ok", "auth", "error"):
        return answer, detail
    return "error", f"Ray's GCS client exited with status {done.returncode}"


def _token_source(env: dict[str, str]) -> tuple[str | None, str | None]:
    """Where Ray would read this driver's auth token from, looked up the way Ray does (RAY_AUTH_TOKEN, else the
    file named by RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token; the first line of a file, stripped):
    (where, None); (None, what is wrong) when RAY_AUTH_TOKEN_PATH names no usable file; (None, None): no token."""
    if env.get("RAY_AUTH_TOKEN", "").strip():
        return "RAY_AUTH_TOKEN", None

    def first_line(path: str) -> str:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.readline().strip()
        except OSError:
            return ""

    if env.get("RAY_AUTH_TOKEN_PATH"):
        path = env["RAY_AUTH_TOKEN_PATH"]
        if first_line(path):
            return f"RAY_AUTH_TOKEN_PATH ({path})", None
        return None, f"RAY_AUTH_TOKEN_PATH names {path}, which cannot be read or is empty"
    default = os.path.join(env.get("HOME") or ".", ".ray", "auth_token")  # Ray's C++ loader reads $HOME
    return (f"~/.ray/auth_token ({default})", None) if first_line(default) else (None, None)


def _enable_token_auth() -> None:
    """Have this process's Ray send its auth token from now on, as ray.init does itself for a local cluster
    it finds (authentication_token_setup._enable_token_auth): RAY_AUTH_MODE=token, Ray's config read again."""
    from ray._raylet import Config

    os.environ["RAY_AUTH_MODE"] = "token"
    Config.initialize("")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_reachable(address: str) -> None:
    """Raise :class:`ClusterUnreachable`, in seconds and one line, when ``address`` (host:port) is no Ray cluster
    this driver can join: nothing answers there (ray.init would retry for minutes), what answers is not Ray's GCS
    (ray.init would print warnings for 40 s), or the GCS wants an auth token that this driver lacks or has wrong
    (ray.init would print 20 InvalidAuthToken warnings over 20 s). Ray's client runs only in a probe subprocess.

    Ray sends a token only when RAY_AUTH_MODE=token, and ray.init switches that on by itself only for a local
    cluster it finds (``auto``), never for an address it is given. Here, when RAY_AUTH_MODE is unset, the GCS
    turns a driver without a token away, and Ray finds one (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
    ~/.ray/auth_token) that the GCS accepts, token mode is switched on for this process's ray.init."""
    if "://" in address or not address.rpartition(":")[2].isdigit():
        return
    cluster = f"the Ray cluster at {address}"
    reason = _unreachable(address, timeout=5)
    if reason:
        raise ClusterUnreachable(f"cannot reach {cluster}: nothing answers there ({reason}); start it "
                                 "(`ray start --head`) or check the address")
    if os.environ.get("RAY_USE_TLS", "0").lower() not in ("1", "true"):  # with TLS the preface would be encrypted
        reason = _not_grpc(address, timeout=3)
        if reason:
            raise ClusterUnreachable(f"{address} is not a Ray cluster's address: {reason}; give the head's GCS "
                                     "address (port 6379 unless `ray start --head --port` chose another)")
    env = dict(os.environ)
    mode = env.get("RAY_AUTH_MODE")
    where, problem = _token_source(env)
    if mode == "token" and where is None:  # ray.init would refuse too, before asking the cluster anything
        raise ClusterUnreachable(f"RAY_AUTH_MODE=token but this driver has no auth token for {cluster}"
                                 f"{f' ({problem})' if problem else ''}; {_TOKEN_HELP}")
    answer, detail = _probe_gcs(address, env)
    if answer == "auth" and mode is None and where is not None:  # turned away without a token: offer Ray's
        answer, detail = _probe_gcs(address, {**env, "RAY_AUTH_MODE": "token"})
        if answer == "ok":
            _enable_token_auth()
        elif answer == "auth":
            mode = "token"
    if answer == "ok":
        return
    if answer != "auth":
        raise ClusterUnreachable(f"cannot reach {cluster}: its GCS does not answer as Ray's does ({detail})")
    if mode == "token":
        raise ClusterUnreachable(f"{cluster} rejected this driver's auth token, read from {where}; give it the "
                                 f"head's token: {_TOKEN_HELP}")
    if mode is not None:
        raise ClusterUnreachable(f"{cluster} requires an auth token, but RAY_AUTH_MODE={mode} here keeps Ray from "
                                 f"sending one: unset it or set RAY_AUTH_MODE=token; {_TOKEN_HELP}")
    raise ClusterUnreachable(f"{cluster} requires an auth token and this driver has none"
                             f"{f' ({problem})' if problem else ''}; {_TOKEN_HELP}")


def _ray_init_quietly(address: str, **kwargs: Any) -> None:
    """ray.init(address=...) with file descriptor 2 sent to a temporary file while it runs, so that Ray's C++
    warnings (a GCS that goes away between the probe and now, say) never reach the terminal; once joined,
    what else was written there meanwhile is passed on. A failure to join becomes :class:`ClusterUnreachable`."""
    import re
    import sys
    import tempfile

    from ray.exceptions import AuthenticationError

    kept, joined = "", False
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep quiet
        saved = None
    try:
        with tempfile.TemporaryFile() as spool:
            if saved is not None:
                sys.stderr.flush()
                os.dup2(spool.fileno(), 2)
            try:
                ray.init(address=address, **kwargs)
                joined = True
            finally:
                if saved is not None:
                    sys.stderr.flush()
                    os.dup2(saved, 2)
                    os.close(saved)
                    spool.seek(0)
                    kept = spool.read().decode("utf-8", "replace")
    except (ConnectionError, RuntimeError, AuthenticationError) as exc:
        if "InvalidAuthToken" in kept or isinstance(exc, AuthenticationError):
            message = (f"the Ray cluster at {address} turned this driver's auth token away (or it has none): "
                       f"{_TOKEN_HELP}")
        else:
            message = f"cannot reach the Ray cluster at {address}: {_first_line(exc)}"
        raise ClusterUnreachable(message) from None
    finally:  # once joined, what others wrote meanwhile (a Python warning, say); a failure is its one line
        others = [line for line in kept.splitlines(keepends=True) if not re.match(_RAY_LOG_LINE, line)]
        if joined and others:
            sys.stderr.write("".join(others))
            sys.stderr.flush()


def connect(address: str | None, runtime_env: dict[str, Any] | None = None) -> dict[str, float]:
    """Join the Ray cluster at ``address`` (or RAY_ADDRESS, or start a local one); return its resources.
    ``runtime_env``: this job's (Ray uploads local ``py_modules`` folders only for a whole job).
    A cluster this driver cannot join raises :class:`ClusterUnreachable` within seconds, with one line."""
    if address:
        _check_reachable(address)
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False, "configure_logging": True}
        if runtime_env:
            kwargs["runtime_env"] = runtime_env
        if address:
            _ray_init_quietly(address, **kwargs)
        else:  # "local": a new Ray of our own, never the cluster Ray's ray_current_cluster file names (it may be dead)
            ray.init(address="local", include_dashboard=False, **kwargs)
    return ray.cluster_resources()
