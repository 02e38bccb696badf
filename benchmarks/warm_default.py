"""The everyday command, warm by default, against plain Optuna: launch to exit, side by side in one run.

A user with no warm workers yet runs ``adamscape submit FILE --db sqlite:///… --run`` (the first study of the
day: cold, it starts the warm workers in the background), then more studies into other database files
(warm: the same workers), and we compare each with what they would otherwise write: plain Optuna with one
process per worker on a JournalStorage, cold as a user runs it (python start, imports, study creation,
enqueueing the cells, training). Same cells, same training function (``workers.training.train``, digits-mlp,
3 epochs, batch 64; grids of ``benchmarks/grid_throughput.py``), 2 workers, this machine. Also timed: the
same study with ``--keep-warm 0`` (the behaviour before warm workers: a Ray of its own, ended with it).

Rounds interleave the systems; each round starts from no warm workers (its own state folder), so every
"cold" is a real cold start. Every study's final test accuracies are checked cell by cell against plain
Optuna's (population training: within 1e-3), and after ``adamscape shutdown`` no process of the run's
state folder may be left.

    .venv/bin/python benchmarks/warm_default.py [--rounds 2] [--warm-repeats 3] [--workers 2]

Prints a table and writes ``benchmarks/results/warm_default.json``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import grid_throughput as gt  # noqa: E402

EXE = str(gt.VENV_BIN / "adamscape")
TOLERANCE = gt.POPULATION_FLAG_TOLERANCE


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def adamscape_study(tmp: Path, grid: str, name: str, env: dict, *extra: str) -> dict:
    """``adamscape submit FILE --db sqlite:///… --run`` timed from launch to exit, then its results."""
    spec = tmp / f"{name}.toml"
    spec.write_text(gt.study_toml(grid, name))
    db = f"sqlite:///{tmp / (name + '.db')}"
    started = time.perf_counter()
    done = subprocess.run([EXE, "submit", str(spec), "--db", db, "--run", *extra], capture_output=True, text=True,
                          env=env, cwd=gt.ROOT)
    wall = time.perf_counter() - started
    if done.returncode:
        return {"ok": False, "wall_s": wall, "error": done.stderr.strip()[-600:]}
    rows = subprocess.run([EXE, "results", name, "--db", db, "--format", "csv"], capture_output=True, text=True,
                          env=env).stdout
    records = {int(r["cell"]): gt._csv_float(r.get("final_test_accuracy")) for r in csv.DictReader(io.StringIO(rows))}
    return {"ok": True, "wall_s": round(wall, 3), "records": records,
            "warm_line": next((line for line in done.stderr.splitlines() if "warm workers" in line), None)}


def optuna_study(tmp: Path, grid: str, name: str, workers: int) -> dict:
    folder = tmp / name  # a journal of its own
    folder.mkdir()
    spec = folder / f"{name}.toml"
    spec.write_text(gt.study_toml(grid, name))
    args = argparse.Namespace(workers=workers)
    result = gt.run_child("optuna-journal", folder, spec, args, gt.EXPECTED_CELLS[grid])
    records = {r["cell"]: r["test_accuracy"] for r in result.get("records", [])}
    return {"ok": result["ok"], "wall_s": round(result["wall_seconds"], 3), "records": records,
            "error": result.get("error")}


def parity(mine: dict, reference: dict) -> float:
    """The largest final test-accuracy difference, cell by cell (inf when a cell is missing)."""
    if set(mine) != set(reference):
        return float("inf")
    diffs = [0.0 if a is None and b is None else abs(a - b) if None not in (a, b) else float("inf")
             for a, b in ((mine[c], reference[c]) for c in reference)]
    return max(diffs, default=0.0)


def leftovers(state: Path) -> list[int]:
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get("ADAMSCAPE_STATE_DIR") == str(state):
                found.append(proc.pid)
        except psutil.Error:
            pass
    return found


def one_round(index: int, args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"warm-bench-{index}-"))
    state = tmp / "state"
    env = {**gt.base_env(args.workers), "ADAMSCAPE_STATE_DIR": str(state), "ADAMSCAPE_LOG_DIR": str(tmp / "logs"),
           "ADAMSCAPE_KEEP_WARM": "10m"}
    workers = ["--workers", str(args.workers)]
    found: dict = {}
    found["optuna_64"] = optuna_study(tmp, "64", "optuna64", args.workers)
    say(f"[round {index}] plain Optuna, 64 cells: {found['optuna_64']['wall_s']:.2f} s")
    found["keep_warm_0_64"] = adamscape_study(tmp, "64", "nowarm", {**env, "ADAMSCAPE_KEEP_WARM": "0"}, *workers)
    say(f"[round {index}] adamscape --keep-warm 0, 64 cells: {found['keep_warm_0_64']['wall_s']:.2f} s")
    found["cold_64"] = adamscape_study(tmp, "64", "first", env, *workers)
    say(f"[round {index}] adamscape, first study (cold), 64 cells: {found['cold_64']['wall_s']:.2f} s")
    for repeat in range(args.warm_repeats):
        found[f"warm_64_{repeat}"] = adamscape_study(tmp, "64", f"second{repeat}", env, *workers)
        say(f"[round {index}] adamscape, warm, 64 cells: {found[f'warm_64_{repeat}']['wall_s']:.2f} s")
        found[f"warm_4_{repeat}"] = adamscape_study(tmp, "4", f"small{repeat}", env, *workers)
        say(f"[round {index}] adamscape, warm, 4 cells: {found[f'warm_4_{repeat}']['wall_s']:.2f} s")
    found["optuna_4"] = optuna_study(tmp, "4", "optuna4", args.workers)
    say(f"[round {index}] plain Optuna, 4 cells: {found['optuna_4']['wall_s']:.2f} s")
    subprocess.run([EXE, "shutdown"], env=env, capture_output=True)
    deadline = time.monotonic() + 30
    while leftovers(state) and time.monotonic() < deadline:
        time.sleep(0.2)
    found["left_behind"] = leftovers(state)
    reference = {"64": found["optuna_64"]["records"], "4": found["optuna_4"]["records"]}
    for key, result in found.items():
        if isinstance(result, dict) and result.get("records") is not None and not key.startswith("optuna"):
            result["max_abs_diff_vs_optuna"] = parity(result["records"], reference["4" if "_4" in key else "64"])
    return found


def summary(rounds: list[dict]) -> dict:
    def median(prefix: str) -> float | None:
        values = [r[k]["wall_s"] for r in rounds for k in r if k.startswith(prefix) and r[k].get("ok")]
        return round(statistics.median(values), 3) if values else None

    walls = {key: median(key) for key in ("optuna_64", "optuna_4", "keep_warm_0_64", "cold_64", "warm_64", "warm_4")}
    ratio = lambda key, ref: round(walls[ref] / walls[key], 2) if walls[key] and walls[ref] else None  # noqa: E731
    return {"median_wall_s": walls,
            "speed_vs_optuna": {"warm_64": ratio("warm_64", "optuna_64"), "cold_64": ratio("cold_64", "optuna_64"),
                                "keep_warm_0_64": ratio("keep_warm_0_64", "optuna_64"),
                                "warm_4": ratio("warm_4", "optuna_4")},
            "goals": {"warm_64_at_least_8x": (ratio("warm_64", "optuna_64") or 0) >= 8,
                      "cold_64_at_least_1.5x": (ratio("cold_64", "optuna_64") or 0) >= 1.5,
                      "warm_4_under_3_s": (walls["warm_4"] or 99) < 3},
            "parity_ok": all(r[k].get("max_abs_diff_vs_optuna", 0) <= TOLERANCE for r in rounds for k in r
                             if isinstance(r[k], dict)),
            "nothing_left_behind": all(not r["left_behind"] for r in rounds)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warm-repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rounds = [one_round(index, args) for index in range(args.rounds)]
    result = summary(rounds)
    print(f"{'launch to exit, median':<44} {'wall s':>8} {'× Optuna':>9}")
    labels = {"optuna_64": "plain Optuna, 2 processes, 64 cells", "keep_warm_0_64": "adamscape --keep-warm 0, 64 cells",
              "cold_64": "adamscape, first study (cold), 64 cells", "warm_64": "adamscape, later study (warm), 64 cells",
              "optuna_4": "plain Optuna, 2 processes, 4 cells", "warm_4": "adamscape, later study (warm), 4 cells"}
    for key, label in labels.items():
        wall = result["median_wall_s"][key]
        speed = result["speed_vs_optuna"].get(key)
        print(f"{label:<44} {wall if wall is not None else '-':>8} {speed if speed is not None else '':>9}")
    print(f"goals: {result['goals']}; parity with Optuna: {'ok' if result['parity_ok'] else 'NOT ok'}; "
          f"processes left behind: {'none' if result['nothing_left_behind'] else 'SOME'}")
    out = gt.RESULTS / "warm_default.json"
    out.parent.mkdir(exist_ok=True)
    for r in rounds:  # the per-cell records made the checks above; the file keeps the figures
        for value in r.values():
            if isinstance(value, dict):
                value.pop("records", None)
    out.write_text(json.dumps({"summary": result, "rounds": rounds, "args": vars(args)}, indent=1))
    return 0 if result["parity_ok"] and result["nothing_left_behind"] else 1


if __name__ == "__main__":
    sys.exit(main())
