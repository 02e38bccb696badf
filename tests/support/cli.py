"""Study files, and the installed ``adamscape`` console script run for real (to completion or in the background)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
from pathlib import Path

from tests.support.paths import BIN


def study_file(tmp_path: Path, name: str = "tiny", body: str | None = None, **top) -> Path:
    """Write a small study file: adam over 3 lr × 2 seeds, sgdm over 2 lr (one far too large) × 2 seeds."""
    header = {"name": name, "task": "digits-mlp", "epochs": 2, "batch_size": 128, "seeds": [0, 1],
              "metric": "test_accuracy", **top}
    lines = [f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"' for k, v in header.items()]
    body = body if body is not None else textwrap.dedent("""
        [optimizers.adam]
        lr = { log = [1e-3, 1e-1], num = 3 }

        [optimizers.sgdm]
        lr = [0.1, 1000.0]
        momentum = 0.9
        """)
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n" + body)
    return path


def adamscape(*args: str, check: bool = True, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run the installed ``adamscape`` console script for real."""
    result = subprocess.run([str(BIN / "adamscape"), *map(str, args)], capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, "COLUMNS": "200", **kwargs.pop("env", {})}, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"adamscape {' '.join(map(str, args))} exited {result.returncode}\n"
                             f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def driver(*args: str, **env: str) -> subprocess.Popen:
    """``adamscape ARGS`` in the background, with SIGINT at its default (a real Ctrl-C works)."""
    return subprocess.Popen([str(BIN / "adamscape"), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200", **env},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def write_study(path: Path, name: str, body: str, epochs: int | None, seeds: str = "[0]", task: str = "rosenbrock",
                metric: str = "distance") -> Path:
    """Rosenbrock by default: a cell's length is set by its epochs (100 steps each), and its workers
    start in about a second (no scikit-learn or torchvision to import). ``epochs`` None: the file gives
    none, and the task's default applies."""
    epochs_line = f"epochs = {epochs}\n" if epochs is not None else ""
    path.write_text(f'name = "{name}"\ntask = "{task}"\n{epochs_line}seeds = {seeds}\n'
                    f'metric = "{metric}"\n\n{body}')
    return path


def write_files(folder: Path, files: dict[str, str]) -> None:
    """Each file name → its (dedented) text, in ``folder`` (made if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text))


def study_with(folder: Path, name: str, task: str, optimizers: str, **top) -> Path:
    """A study file of ``task`` over seeds 0 and 1 (``top``: more top-level keys, JSON-quoted) with the
    (dedented) ``optimizers`` tables."""
    header = "".join(f"{k} = {json.dumps(v)}\n" for k, v in {"name": name, "task": task, "seeds": [0, 1], **top}.items())
    path = folder / f"{name}.toml"
    path.write_text(header + textwrap.dedent(optimizers))
    return path


def results(db: str, name: str) -> list[dict]:
    """``adamscape results NAME --format json``: each cell as the command prints it."""
    return json.loads(adamscape("results", name, "--db", db, "--format", "json").stdout)
