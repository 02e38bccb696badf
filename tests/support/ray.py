"""A real Ray node on this machine, started and stopped by the test that needs it."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import psutil

from tests.support.paths import BIN

# a loopback-only test cluster: no token needed by the drivers the tests start (the fixtures that start
# a shared head set this in the tests' environment for as long as the head runs, and restore it after)
NO_AUTH = {"RAY_AUTH_MODE": "disabled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayNode:
    """One Ray node started with ``ray start --block`` (head or worker) and stopped by the test alone:
    SIGTERM to its own ``ray start`` process, never ``ray stop``, which ends every Ray on the machine."""

    def __init__(self, head_port: int | None = None, address: str | None = None, num_cpus: int = 1,
                 cwd: Path | None = None, auth_home: Path | None = None, dashboard_port: int | None = None,
                 num_gpus: int = 0):
        """``auth_home``: a head with token authentication, started the ordinary way: ``ray start --head`` with
        RAY_AUTH_MODE unset and HOME=``auth_home``, whose ``.ray/auth_token`` (written here if missing) it finds.
        Without it, token authentication is off (RAY_AUTH_MODE=disabled). Each node runs in its own RAY_TMPDIR
        (a worker node keeps its files in its head's), removed when it stops: no test touches /tmp/ray, where
        a user's Ray keeps its sessions and the ray_current_cluster file. ``dashboard_port``: a head whose
        dashboard (and Jobs API) listens there, on loopback. ``num_gpus``: GPUs the node declares (Ray takes
        the number as given: on a machine without one, a GPU share no CUDA device backs)."""
        if auth_home is not None and not head_port:
            raise ValueError("auth_home: a head only")
        self.port = head_port
        self.temp_dir = tempfile.mkdtemp(prefix="rayt-")  # short: Ray's socket paths under it must stay < 108 bytes
        dashboard = ([f"--dashboard-port={dashboard_port}", "--dashboard-host=127.0.0.1"] if dashboard_port
                     else ["--include-dashboard=false"])  # the dashboard serves Ray's Jobs API
        # every node's agent binds a port (52365 by default): a free one, so that no two Rays on this
        # machine (another test's, a user's) collide; a head's Jobs API needs its agent's HTTP server
        agent = f"--dashboard-agent-listen-port={free_port()}"
        role = ["--head", f"--port={head_port}", *dashboard, agent] if head_port else [f"--address={address}", agent]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": self.temp_dir, "RAY_AUTH_MODE": "disabled"}
        if auth_home is not None:
            for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
                env.pop(name, None)
            env["HOME"] = str(auth_home)
            token = Path(auth_home) / ".ray" / "auth_token"
            if not token.exists():
                token.parent.mkdir(parents=True, exist_ok=True)
                token.write_text(secrets.token_hex(32))
        self.process = subprocess.Popen(
            [BIN / "ray", "start", "--block", *role, f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}",
             "--node-ip-address=127.0.0.1", "--disable-usage-stats"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, cwd=cwd)
        seen = []
        for line in self.process.stdout:  # --block prints this once every process of the node is up
            seen.append(line)
            if "Ray runtime started" in line:
                break
        else:
            self.stop()
            raise RuntimeError("ray start failed:\n" + "".join(seen[-20:]))
        threading.Thread(target=self.process.stdout.read, daemon=True).start()  # keep its pipe drained
        if auth_home is not None and not any("Token authentication is enabled" in line for line in seen):
            self.stop()
            raise RuntimeError("ray start --head did not turn token authentication on:\n" + "".join(seen[-20:]))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def processes(self, name: str) -> list[psutil.Process]:
        """This node's processes whose command line mentions ``name`` (raylet, gcs_server, DashboardAgent …)."""
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        found = []
        for child in children:
            try:
                if name in " ".join(child.cmdline()):
                    found.append(child)
            except psutil.Error:
                pass
        return found

    def kill(self, name: str = "raylet") -> None:
        """SIGKILL one of this node's processes: the raylet takes the whole node with it."""
        targets = self.processes(name)
        assert targets, f"no {name} process under this node"
        for proc in targets:
            proc.kill()

    def stop(self, timeout: float = 20) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # whatever of the node outlived its ray start
        except ProcessLookupError:
            pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)
