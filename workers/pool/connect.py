"""Connecting to Ray: a local Ray of our own, or a cluster's address checked first (reachable, really Ray,
its token when it asks for one), every failure one readable line."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import ray


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


def unreachable(address: str, timeout: float) -> str | None:
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


def first_line(exc: BaseException) -> str:
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
    reason = unreachable(address, timeout=5)
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
            message = f"cannot reach the Ray cluster at {address}: {first_line(exc)}"
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
