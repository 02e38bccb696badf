"""``workers.pool.connect`` against real Ray processes: a head with token authentication started the
ordinary way (``ray start --head`` finding ~/.ray/auth_token), a head without it, and addresses where
something that is not Ray answers. ray.init runs once per process, so every connection is made in a
subprocess: a short script calling ``connect``, or the ``adamscape`` CLI itself."""

from __future__ import annotations

import http.server
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, RayNode, _free_port, study_file

# none of Ray's own log lines may reach the terminal: C++ ("[2026-… W pid tid] gcs_client.cc:…") or Python ones
RAY_LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [DIWEF] \d+ \d+\]"
                          r"|^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\t[A-Z]+ ")
CONNECT = """
import os, sys
from workers.pool import ClusterUnreachable, connect
try:
    resources = connect(sys.argv[1])
except ClusterUnreachable as exc:
    print(exc)
    sys.exit(2)
print("CPU", resources["CPU"], "RAY_AUTH_MODE", os.environ.get("RAY_AUTH_MODE"))
"""
TOKEN_HELP = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token", "ray get-auth-token")


def driver_env(home: Path, **extra: str) -> dict[str, str]:
    """The driver's environment: HOME=``home`` (where Ray looks for ~/.ray/auth_token), none of Ray's token
    variables (the tests' own RAY_AUTH_MODE=disabled included) but ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")}
    return {**env, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0", **extra}


def home_with(tmp_path: Path, token: str | None) -> Path:
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    if token is not None:
        (home / ".ray" / "auth_token").write_text(token + "\n")
    return home


def cli(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    """The ``adamscape`` console script with exactly ``env`` (tests.conftest.adamscape would add os.environ back,
    and with it the RAY_AUTH_MODE=disabled that the shared test heads' fixtures set)."""
    done = subprocess.run([str(BIN / "adamscape"), *map(str, args)], env={**env, "COLUMNS": "200"},
                          capture_output=True, text=True, timeout=180)
    if check:
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def connect_in_subprocess(address: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", CONNECT, address], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    return done, time.monotonic() - start


def assert_one_quiet_line(done: subprocess.CompletedProcess, text: str) -> str:
    """Exit 2, ``text`` on exactly one line, and nothing of Ray's on stderr."""
    lines = text.strip().splitlines()
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert len(lines) == 1, text
    assert text is done.stderr or not done.stderr.strip(), done.stderr
    assert not any(RAY_LOG_LINE.match(line) for line in done.stderr.splitlines()), done.stderr
    assert "InvalidAuthToken" not in done.stderr and "gcs_client" not in done.stderr, done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def token_head(tmp_path_factory):
    """A 1-CPU head with token authentication: ``ray start --head`` with RAY_AUTH_MODE unset finds the token
    in its HOME's .ray/auth_token. Yields (address, token)."""
    home = tmp_path_factory.mktemp("head-home")
    head = RayNode(head_port=_free_port(), num_cpus=1, auth_home=home)
    yield head.address, (home / ".ray" / "auth_token").read_text().strip()
    head.stop(timeout=5)


def tiny_study(tmp_path: Path, db: str, env: dict[str, str]) -> str:
    """One cell of a study that trains in a second (Rosenbrock, one epoch), submitted to ``db``."""
    path = study_file(tmp_path, "one", body='[optimizers.adam]\nlr = [0.01]\n', task="rosenbrock",
                      metric="distance", epochs=1, seeds=[0])
    cli("submit", path, "--db", db, env=env)
    return "one"


def test_with_the_token_in_its_home_the_cli_runs_a_study_on_a_token_auth_head(token_head, tmp_path):
    """The token where Ray looks by default (the driver's ~/.ray/auth_token), RAY_AUTH_MODE unset: ray.init
    would send no token to an address it is given; connect() has it sent since the head asks for one."""
    address, token = token_head
    db = f"sqlite:///{tmp_path / 'r.db'}"
    env = driver_env(home_with(tmp_path, token))
    name = tiny_study(tmp_path, db, env)
    done = cli("run", name, "--db", db, "--address", address, "--workers", "1", env=env)
    assert "InvalidAuthToken" not in done.stderr and not any(RAY_LOG_LINE.match(x) for x in done.stderr.splitlines())
    with sqlite3.connect(tmp_path / "r.db") as conn:
        assert conn.execute("SELECT status FROM sweep_cells").fetchall() == [("complete",)]


@pytest.mark.parametrize("source", ["RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE=token"])
def test_each_of_rays_token_sources_connects(token_head, tmp_path, source):
    address, token = token_head
    (tmp_path / "token").write_text(token)
    extra = {"RAY_AUTH_TOKEN": {"RAY_AUTH_TOKEN": token},
             "RAY_AUTH_TOKEN_PATH": {"RAY_AUTH_TOKEN_PATH": str(tmp_path / "token")},
             "RAY_AUTH_MODE=token": {"RAY_AUTH_MODE": "token"}}[source]  # the last: the token in ~/.ray/auth_token
    home = home_with(tmp_path, token if source == "RAY_AUTH_MODE=token" else None)
    done, _ = connect_in_subprocess(address, driver_env(home, **extra))
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert done.stdout.split()[:2] == ["CPU", "1.0"] and "RAY_AUTH_MODE token" in done.stdout
    assert "InvalidAuthToken" not in done.stderr


def test_without_a_token_the_cli_says_so_in_one_line_in_seconds(token_head, tmp_path):
    address, _ = token_head
    db = f"sqlite:///{tmp_path / 'r.db'}"
    env = driver_env(home_with(tmp_path, None))
    name = tiny_study(tmp_path, db, env)
    start = time.monotonic()
    done = cli("run", name, "--db", db, "--address", address, env=env, check=False)
    elapsed = time.monotonic() - start
    line = assert_one_quiet_line(done, done.stderr)
    assert line.startswith("error: ") and f"the Ray cluster at {address} requires an auth token" in line, line
    assert all(hint in line for hint in TOKEN_HELP), line
    assert elapsed < 15, elapsed  # the CLI's own start-up included; ray.init alone used to take 20 s to give up
    with sqlite3.connect(tmp_path / "r.db") as conn:
        assert conn.execute("SELECT status FROM sweep_cells").fetchall() == [("pending",)]


@pytest.mark.parametrize("where", ["RAY_AUTH_TOKEN", "~/.ray/auth_token"])
def test_a_wrong_token_is_one_line_naming_where_it_came_from(token_head, tmp_path, where):
    address, token = token_head
    wrong = "0" * len(token)
    if where == "RAY_AUTH_TOKEN":
        env = driver_env(home_with(tmp_path, token), RAY_AUTH_TOKEN=wrong)  # it wins over the right file
    else:
        env = driver_env(home_with(tmp_path, wrong))
    done, elapsed = connect_in_subprocess(address, env)
    line = assert_one_quiet_line(done, done.stdout)
    assert f"the Ray cluster at {address} rejected this driver's auth token, read from {where}" in line, line
    assert all(hint in line for hint in TOKEN_HELP) and wrong not in line, line
    assert elapsed < 10, elapsed


@pytest.mark.parametrize("setting", [{"RAY_AUTH_MODE": "disabled"},
                                     {"RAY_AUTH_TOKEN_PATH": "/nonexistent/auth_token"}])
def test_a_driver_set_up_not_to_send_the_token_is_told_why(token_head, tmp_path, setting):
    address, token = token_head
    done, elapsed = connect_in_subprocess(address, driver_env(home_with(tmp_path, token), **setting))
    line = assert_one_quiet_line(done, done.stdout)
    assert f"the Ray cluster at {address} requires an auth token" in line, line
    assert ("RAY_AUTH_MODE=disabled" if "RAY_AUTH_MODE" in setting else "/nonexistent/auth_token") in line, line
    assert elapsed < 10, elapsed


def test_a_head_without_token_auth_gets_no_token(ray_address, tmp_path):
    """A driver with a token at hand joins a head that asks for none without switching token mode on
    (its own Ray would then turn the cluster's unauthenticated calls away)."""
    done, _ = connect_in_subprocess(ray_address, driver_env(home_with(tmp_path, "f" * 64)))
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert done.stdout.split() == ["CPU", "2.0", "RAY_AUTH_MODE", "None"]


class Listener:
    """Something that accepts TCP connections on a loopback port and is not Ray: ``silent`` never says a
    word, ``closing`` hangs up at once, ``http`` is an HTTP/1 server (a dashboard's port, say)."""

    def __init__(self, kind: str):
        self.held: list[socket.socket] = []
        if kind == "http":
            self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
            self.port = self.server.server_address[1]
            threading.Thread(target=self.server.serve_forever, daemon=True).start()
            return
        self.server = None
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, args=(kind,), daemon=True).start()

    def _accept(self, kind: str) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if kind == "closing":
                conn.close()
            else:
                self.held.append(conn)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        else:
            self.sock.close()
            for conn in self.held:
                conn.close()


@pytest.mark.parametrize("kind", ["silent", "closing", "http"])
def test_an_address_where_something_else_answers_is_one_line_in_bounded_time(tmp_path, kind):
    listener = Listener(kind)
    try:
        address = f"127.0.0.1:{listener.port}"
        done, elapsed = connect_in_subprocess(address, driver_env(home_with(tmp_path, None)))
    finally:
        listener.close()
    line = assert_one_quiet_line(done, done.stdout)
    assert line.startswith(f"{address} is not a Ray cluster's address: ") and "GCS" in line, line
    assert elapsed < 10, elapsed


def test_the_cli_on_a_silent_listener_is_one_line_in_bounded_time(tmp_path):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    env = driver_env(home_with(tmp_path, None))
    name = tiny_study(tmp_path, db, env)
    listener = Listener("silent")
    try:
        start = time.monotonic()
        done = cli("run", name, "--db", db, "--address", f"127.0.0.1:{listener.port}", env=env, check=False)
        elapsed = time.monotonic() - start
    finally:
        listener.close()
    line = assert_one_quiet_line(done, done.stderr)
    assert line.startswith("error: ") and "is not a Ray cluster's address" in line, line
    assert elapsed < 15, elapsed


def test_nothing_listening_is_one_line_at_once(tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    done, elapsed = connect_in_subprocess(address, driver_env(home_with(tmp_path, None)))
    line = assert_one_quiet_line(done, done.stdout)
    assert line.startswith(f"cannot reach the Ray cluster at {address}: nothing answers there"), line
    assert elapsed < 10, elapsed


def test_a_gpu_share_without_a_usable_cuda_device_fails_the_run_at_start_in_one_line(tmp_path, sqlite_url):
    """A node that declares a GPU torch cannot use (here: none at all; on a cluster, a driver too old for the
    CUDA 13 wheels): `run --gpus-per-trial` stops before any cell is leased, instead of training every cell
    on one CPU thread while holding the GPU."""
    import torch

    from study import store
    from tests.conftest import RayNode, _free_port, adamscape, study_file

    if torch.cuda.is_available():
        pytest.skip("this machine has a usable GPU: the fault cannot be staged")
    adamscape("submit", study_file(tmp_path), "--db", sqlite_url)
    head = RayNode(head_port=_free_port(), num_cpus=2, num_gpus=1)
    try:
        result = adamscape("run", "tiny", "--db", sqlite_url, "--address", head.address, "--gpus-per-trial", "0.5",
                           check=False, env={"RAY_AUTH_MODE": "disabled"}, timeout=300)
    finally:
        head.stop()
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "finds no usable CUDA device" in result.stderr, result.stderr
    assert "drop --gpus-per-trial" in result.stderr and "Traceback" not in result.stderr
    engine = store.connect(sqlite_url, read_only=True)
    assert store.status_counts(engine, store.get_study(engine, "tiny")["id"]) == {"pending": 10}  # nothing leased
