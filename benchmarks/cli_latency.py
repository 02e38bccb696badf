"""Wall time of the everyday commands, against what a user would otherwise type, in one run.

Each command is the installed console script, started fresh (a new interpreter, as a user types it),
stdout piped (80 columns), on one SQLite results file holding the 112-cell quickstart study (registered
by ``adamscape submit`` first; nothing runs). Commands are interleaved round by round (R rounds, default
10) so that machine noise hits all of them alike; the table gives each one's median, fastest and slowest.

Side by side in the same rounds:
  python -c pass              the interpreter alone: the floor of any Python CLI
  optuna studies              Optuna's own CLI listing the studies of an (empty) Optuna storage on a
                              SQLite file: what a user of plain Optuna types instead of ``status``
  python -c "import torch"    what every command cost when the CLI imported torch (issue 11: ~5 s)

    .venv/bin/python benchmarks/cli_latency.py [--rounds 10]

Prints a table and writes ``benchmarks/results/cli_latency.json``. The goal (under 1 s for ``status``,
``results``, ``tasks``, ``optimizers``, ``--help``) is reported, not enforced.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GOAL_SECONDS = 1.0
UNDER_GOAL = ("--help", "status", "results", "tasks", "optimizers")


def commands(db: str, optuna_db: str) -> dict[str, list[str]]:
    adamscape = str(BIN / "adamscape")
    return {
        "--help": [adamscape, "--help"],
        "--version": [adamscape, "--version"],
        "status": [adamscape, "status", "--db", db],
        "status --format json": [adamscape, "status", "--db", db, "--format", "json"],
        "results": [adamscape, "results", "quickstart", "--db", db],
        "results --format csv": [adamscape, "results", "quickstart", "--db", db, "--format", "csv"],
        "tasks": [adamscape, "tasks"],
        "optimizers": [adamscape, "optimizers"],
        "(python -c pass)": [sys.executable, "-c", "pass"],
        "(optuna studies)": [str(BIN / "optuna"), "studies", "--storage", optuna_db],
        "(python -c 'import torch')": [sys.executable, "-c", "import torch"],
    }


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.decode()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    env = {**os.environ, "COLUMNS": "80"}
    with tempfile.TemporaryDirectory() as folder:
        db = f"sqlite:///{folder}/results.db"
        optuna_db = f"sqlite:///{folder}/optuna.db"
        subprocess.run([str(BIN / "adamscape"), "submit", str(ROOT / "examples" / "quickstart.toml"), "--db", db],
                       check=True, capture_output=True, env=env)
        subprocess.run([str(BIN / "optuna"), "create-study", "--storage", optuna_db, "--study-name", "quickstart"],
                       check=True, capture_output=True, env=env)
        runs = commands(db, optuna_db)
        for argv in runs.values():  # one untimed round: the page cache warm for everyone
            timed(argv, env)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, argv in runs.items():
                times[name].append(timed(argv, env))
    rows = {name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t), "runs_s": t}
            for name, t in times.items()}
    print(f"{'command':<28} {'median':>8} {'fastest':>8} {'slowest':>8}")
    for name, row in rows.items():
        print(f"{name:<28} {row['median_s']:>7.2f}s {row['min_s']:>7.2f}s {row['max_s']:>7.2f}s")
    missed = [name for name in UNDER_GOAL if rows[name]["median_s"] >= GOAL_SECONDS]
    print(f"goal: median under {GOAL_SECONDS:g} s for {', '.join(UNDER_GOAL)}: "
          + ("met" if not missed else f"missed by {', '.join(missed)}"))
    output = ROOT / "benchmarks" / "results" / "cli_latency.json"
    output.write_text(json.dumps({"rounds": args.rounds, "cpus": os.cpu_count(), "python": platform.python_version(),
                                  "machine": platform.machine(), "goal_s": GOAL_SECONDS, "missed": missed,
                                  "commands": rows}, indent=1) + "\n")
    print(f"wrote {output.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
