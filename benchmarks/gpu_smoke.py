"""GPU smoke run: real CIFAR-10 studies through the real CLI on a GPU, one checked row per cell.

What a first session on a GPU machine should run before anything long (``make gpu-smoke``):

1. prints what the machine is: torch and its CUDA build, cuDNN, the NVIDIA driver (when nvidia-smi is
   there), and each GPU's name, compute capability and memory; without a usable CUDA device (and without
   ``--device cpu``) it stops there with one ``error:`` line, exit 2;
2. writes one study file per task and amp setting (``--tasks``, default cifar10-3c3d and cifar10-resnet34;
   ``--amp both``: amp = false and amp = true) into ``--out`` (default: a new temporary folder, kept):
   adam at lr 1e-3 and 3e-4, sgdm (momentum 0.9) at lr 0.03 and 0.01, seed 0, ``--epochs`` (2) epochs,
   the task's batch size, ``data_dir`` from ``--data-dir`` (default ``data``, made absolute) and
   ``download`` from ``--download``; study names carry this run's time stamp, so they never collide;
3. runs each with the real CLI, ``adamscape submit FILE --db sqlite:///OUT/smoke.db --run
   --gpus-per-trial 0.25`` (``--gpus-per-trial``; ``--device cpu`` runs with 0, i.e. on CPU), its output
   streamed through; a missing dataset is the CLI's own one-line error, and this script exits with the
   CLI's code (2) after it;
4. reads the database (the ``sweep_results`` view and the final attempt's ``sweep_curves``) and prints one
   row per cell: task, amp, optimizer, lr, status, device, images/s, peak memory (MiB), train loss of
   the first and of the last epoch and whether it fell, final test accuracy against chance (1 / the
   number of classes in the test split) and PASS or FAIL. Exit 0 when every cell passes, 1 otherwise;
5. then (``--population-sizes``, default 1,4,16 on CUDA, none on CPU) images/s of training as populations
   of K against one configuration at a time, on ``--population-task`` (default cifar10-resnet34, whose
   BatchNorm layers train per member): ``benchmarks/population_speed.py`` in a child process, 16 adam
   configs, 1 epoch; its figures printed and written to ``OUT/population_speed.json``.

images/s = epochs run × training images / the cell's ``wall_seconds`` (its share of its worker's time:
building the task, the test evaluation after each epoch included, so it understates pure training
throughput for 2-epoch runs). ``device`` and ``peak memory`` are the results' ``device`` and
``peak_memory_mib`` columns, printed ``-`` where the database has no such column or the value is NULL
(CPU cells have no peak memory).

    make gpu-smoke                                    # both CIFAR tasks, amp off and on, 0.25 GPU per worker
    make gpu-smoke SMOKE_ARGS="--data-dir /data --tasks cifar10-3c3d --amp off"
    .venv/bin/python benchmarks/gpu_smoke.py --device cpu --tasks digits-mlp --amp off   # anywhere, on CPU

The CIFAR-10 files must be under ``--data-dir`` (``cifar-10-batches-py``) or ``--download`` must be given
on a machine that reaches the internet.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

# adam's paper default and a third of it; sgdm (momentum 0.9) at rates that train both the BatchNorm-free
# 3c3d and ResNet-34 without diverging in the first epochs
OPTIMIZERS = {"adam": {"lr": [1e-3, 3e-4]}, "sgdm": {"lr": [0.03, 0.01], "momentum": 0.9}}
DEFAULT_TASKS = "cifar10-3c3d,cifar10-resnet34"
AMPS = {"off": [False], "on": [True], "both": [False, True]}


def _error(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gpu_smoke.py", description=__doc__.splitlines()[0],
        epilog="Every study runs with `adamscape submit FILE --db sqlite:///OUT/smoke.db --run --gpus-per-trial F`.")
    parser.add_argument("--tasks", default=DEFAULT_TASKS,
                        help=f"comma-separated classification tasks (default {DEFAULT_TASKS})")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per cell (default 2)")
    parser.add_argument("--amp", choices=sorted(AMPS), default="both",
                        help="amp = false, amp = true, or one study of each (default both); ignored on CPU "
                             "and for non-convolutional tasks")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cuda (default: stops at once without a usable CUDA device) or cpu (trains on CPU, "
                             "--gpus-per-trial 0)")
    parser.add_argument("--gpus-per-trial", type=float, default=None,
                        help="GPU share per worker (default 0.25: four workers per GPU; 0 with --device cpu)")
    parser.add_argument("--data-dir", default="data", help="where the datasets are (default data)")
    parser.add_argument("--download", action="store_true", help="let torchvision download missing datasets")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the study files and smoke.db (default: a new temporary folder, kept)")
    parser.add_argument("--address", default=None, help="a running Ray cluster (default: a local Ray per study)")
    parser.add_argument("--workers", type=int, default=None, help="worker actors (default: the CLI's)")
    parser.add_argument("--population-sizes", default=None,
                        help="population sizes K to time after the studies, e.g. 1,4,16 (default: 1,4,16 on CUDA, "
                             "none on CPU; '' skips)")
    parser.add_argument("--population-task", default="cifar10-resnet34", help="the task they train")
    args = parser.parse_args(argv)
    if args.population_sizes is None:
        args.population_sizes = "1,4,16" if args.device == "cuda" else ""
    try:
        args.population_sizes = [int(k) for k in args.population_sizes.split(",") if k.strip()]
    except ValueError:
        parser.error(f"--population-sizes: whole numbers separated by commas, not {args.population_sizes!r}")
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the check compares the first epoch's train loss with the last's)")
    if args.gpus_per_trial is None:
        args.gpus_per_trial = 0.25 if args.device == "cuda" else 0.0
    if args.device == "cpu" and args.gpus_per_trial != 0:
        _error(f"--device cpu trains on CPU, but --gpus-per-trial is {args.gpus_per_trial:g}; give 0 or drop it")
    if args.device == "cuda" and not args.gpus_per_trial > 0:
        _error("--gpus-per-trial must be above 0 on CUDA (0 trains on CPU: give --device cpu for that)")
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    from study.catalog import TASKS

    for task in args.tasks:
        info = TASKS.get(task)
        if info is None or not info.listed:
            known = ", ".join(name for name, t in TASKS.items() if t.listed and "test_accuracy" in t.metrics)
            _error(f"--tasks: unknown task {task!r}; classification tasks: {known}")
        if "test_accuracy" not in info.metrics:
            _error(f"--tasks: {task} reports no test accuracy; the smoke run checks classification tasks only")
    if not args.tasks:
        _error("--tasks: give at least one task")
    return args


# --- the machine --------------------------------------------------------------------------------------

# Run in a child process: this script stays alive while the workers train, and must hold no CUDA context
# (and no GPU memory) of its own on their GPU.
PROBE = """
import json, os, warnings
import torch
with warnings.catch_warnings(record=True) as caught:  # e.g. "the NVIDIA driver on your system is too old"
    warnings.simplefilter("always")
    usable = torch.cuda.is_available()
found = {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
         "usable": usable, "warnings": [str(w.message).splitlines()[0] for w in caught if str(w.message)],
         "cpus": os.cpu_count(), "gpus": []}
for index in range(torch.cuda.device_count() if usable else 0):
    p = torch.cuda.get_device_properties(index)
    found["gpus"].append({"name": p.name, "major": p.major, "minor": p.minor, "memory": p.total_memory,
                          "sms": p.multi_processor_count})
print(json.dumps(found))
"""


def machine(device: str) -> list[str]:
    """Lines saying what this machine is; exits 2 with one line when CUDA is asked for and unusable."""
    probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        _error(f"cannot read this machine's torch and CUDA ({last}); `make install-test` reinstalls the environment")
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    build = f"torch {found['torch']}, CUDA {found['cuda'] or 'none (a CPU-only build)'}"
    if device == "cuda" and not found["usable"]:
        why = "; ".join(found["warnings"]) or "torch.cuda.is_available() is False"
        _error(f"no usable CUDA device here ({build}; {why}); make gpu-smoke needs a GPU machine "
               '(SMOKE_ARGS="--device cpu" runs it on CPU)')
    lines = [f"{build}, cuDNN {found['cudnn'] or '-'}, {found['cpus']} CPU cores"]
    driver = _nvidia_driver()
    if driver:
        lines.append(f"NVIDIA driver {driver}")
    for index, gpu in enumerate(found["gpus"]):
        lines.append(f"GPU {index}: {gpu['name']}, compute capability {gpu['major']}.{gpu['minor']} "
                     f"(sm_{gpu['major']}{gpu['minor']}), {gpu['memory'] / 2**30:.1f} GiB, {gpu['sms']} SMs")
    if not found["usable"]:
        lines.append("no usable CUDA device" + (f" ({'; '.join(found['warnings'])})" if found["warnings"] else ""))
    if device == "cpu":
        lines.append("--device cpu: the cells train on CPU (amp is ignored there)")
    return lines


def _nvidia_driver() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        found = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    versions = sorted(set(found.stdout.split())) if found.returncode == 0 else []
    return ", ".join(versions) or None


# --- the studies ----------------------------------------------------------------------------------------

def study_text(name: str, task: str, amp: bool, epochs: int, data_dir: str, download: bool) -> str:
    lines = [f"# gpu_smoke.py: {task}, amp {'on' if amp else 'off'}, {epochs} epochs",
             f'name = "{name}"', f'task = "{task}"', f"epochs = {epochs}", "seeds = [0]",
             'metric = "test_accuracy"', f"data_dir = {_toml_string(data_dir)}",
             f"download = {str(download).lower()}", f"amp = {str(amp).lower()}"]
    for optimizer, hparams in OPTIMIZERS.items():
        lines += ["", f"[optimizers.{optimizer}]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in hparams.items()]
    return "\n".join(lines) + "\n"


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_value(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml_value, value)) + "]"
    return repr(float(value))


def cli() -> list[str]:
    """The ``adamscape`` console script beside this interpreter (``[project.scripts]``), or the same
    entry point through this interpreter."""
    script = Path(sys.executable).parent / "adamscape"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from study.cli import console; console()"]


def run_study(path: Path, db: str, args: argparse.Namespace) -> int:
    command = [*cli(), "submit", str(path), "--db", db, "--run", "--gpus-per-trial", f"{args.gpus_per_trial:g}"]
    if args.address:
        command += ["--address", args.address]
    if args.workers is not None:
        command += ["--workers", str(args.workers)]
    print("$ adamscape " + " ".join(command[len(cli()):]), flush=True)
    sys.stderr.flush()
    return subprocess.run(command, stdin=subprocess.DEVNULL).returncode  # its output goes straight through


# --- the results -----------------------------------------------------------------------------------------

def read_cells(db: str, name: str) -> list[dict]:
    """The study's ``sweep_results`` rows, each with ``losses``: the final attempt's per-epoch train loss."""
    import sqlalchemy as sa

    engine = sa.create_engine(db)
    try:
        with engine.connect() as conn:
            result = conn.execute(sa.text("SELECT * FROM sweep_results WHERE study = :name ORDER BY cell"),
                                  {"name": name})
            rows = [dict(row._mapping) for row in result]
            curves = conn.execute(sa.text(
                "SELECT c.cell_index, k.epoch, k.train_loss FROM sweep_curves k "
                "JOIN sweep_cells c ON c.id = k.cell_id AND k.attempt = c.attempts "
                "JOIN sweep_studies s ON s.id = c.study_id WHERE s.name = :name ORDER BY c.cell_index, k.epoch"),
                {"name": name}).all()
    finally:
        engine.dispose()
    losses: dict[int, list[float | None]] = {}
    for cell, _, loss in curves:
        losses.setdefault(cell, []).append(loss)
    for row in rows:
        row["losses"] = losses.get(row["cell"], [])
    return rows


def dataset_facts(task: str, data_dir: str) -> tuple[int | None, int | None]:
    """(training images, classes in the test split) of a task, from the task's own data; (None, None)
    where they cannot be read."""
    try:
        from study.catalog import TASKS, TrainingProtocol
        from workers import data, tasks

        info = TASKS[task]
        if info.dataset:  # a torchvision dataset: read it, no model built
            split = data.torchvision_images(info.dataset, data_dir, False)
        else:
            plan = TrainingProtocol(epochs=1, batch_size=info.default_batch_size, data_dir=data_dir)
            split = getattr(tasks.build(task, plan, "cpu"), "split", None)
        if split is None:
            return None, None
        return len(split.train_y), int(split.test_y.unique().numel())
    except Exception as exc:  # noqa: BLE001 - the table says "-" and the check fails, with the reason
        print(f"note: cannot read {task}'s dataset for images/s and chance: {exc}", file=sys.stderr)
        return None, None


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def judge(row: dict, train_size: int | None, classes: int | None) -> dict:
    """One table row (strings) and the reasons the cell fails, if any."""
    losses = [_number(v) for v in row["losses"]]
    first, last = (losses[0], losses[-1]) if losses else (None, None)
    falls = first is not None and last is not None and len(losses) >= 2 and last < first
    accuracy = _number(row.get("final_test_accuracy"))
    chance = 1.0 / classes if classes else None
    above = accuracy is not None and chance is not None and accuracy > chance
    wall = _number(row.get("wall_seconds"))
    images = len(losses) * train_size / wall if train_size and wall else None
    device = row.get("device")
    memory = _number(row.get("peak_memory_mib"))
    reasons = []
    if row["status"] != "complete":
        reasons.append(f"status {row['status']}" + (f" ({str(row['error']).strip().splitlines()[-1]})"
                                                    if row.get("error") else ""))
    if not falls:
        reasons.append("train loss did not fall" if len(losses) >= 2 else f"{len(losses)} epoch(s) recorded")
    if not above:
        reasons.append("test accuracy not above chance" if chance else "chance unknown (no dataset)")
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    return {"cells": {
        "optimizer": row["optimizer"], "lr": fmt(_number(row.get("lr")), "g"), "status": row["status"],
        "device": str(device) if device else "-", "images/s": fmt(images, ",.0f"), "peak MiB": fmt(memory, ",.0f"),
        "train loss 1st -> last": f"{fmt(first, '.4f')} -> {fmt(last, '.4f')}", "falls": "yes" if falls else "NO",
        "test acc": fmt(accuracy, ".4f"), "chance": fmt(chance, ".3f"), "above": "yes" if above else "NO",
        "result": "FAIL" if reasons else "PASS"}, "reasons": reasons}


RIGHT = {"lr", "images/s", "peak MiB", "test acc", "chance"}


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """Plain aligned text, two spaces between columns, nothing cut (wider than the terminal: printed whole)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.rjust(w) if h in RIGHT else c.ljust(w)  # noqa: E731
                                   for c, w, h in zip(cells, widths, headers)).rstrip()
    return [line(headers), line(["-" * w for w in widths]), *map(line, rows)]


# --- main -------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    lines = machine(args.device)  # exits 2 here without a usable CUDA device
    print("gpu-smoke: " + lines[0])
    for line in lines[1:]:
        print("  " + line)

    out = args.out.resolve() if args.out else Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    out.mkdir(parents=True, exist_ok=True)
    db = f"sqlite:///{out / 'smoke.db'}"
    data_dir = str(Path(args.data_dir).expanduser().resolve())
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    studies = []  # (task, amp, name, study file)
    for task in args.tasks:
        for amp in AMPS[args.amp]:
            name = f"smoke-{task}-amp-{'on' if amp else 'off'}-{stamp}"
            path = out / f"{name}.toml"
            path.write_text(study_text(name, task, amp, args.epochs, data_dir, args.download))
            studies.append((task, amp, name, path))
    cells = len(studies) * sum(len(h["lr"]) for h in OPTIMIZERS.values())
    print(f"  {len(studies)} stud{'y' if len(studies) == 1 else 'ies'}, {cells} cells ({' and '.join(OPTIMIZERS)} "
          f"x 2 lr, seed 0, {args.epochs} epochs), --gpus-per-trial {args.gpus_per_trial:g}; files and results in "
          f"{out}", flush=True)

    seconds = {}
    for task, amp, name, path in studies:
        print(f"\n== {task}, amp {'on' if amp else 'off'}: study {name}", flush=True)
        started = time.perf_counter()
        code = run_study(path, db, args)
        seconds[name] = time.perf_counter() - started
        if code != 0:  # the CLI said why, in its own words (a missing dataset: one error line, code 2)
            from study.catalog import TASKS

            missing = not args.download and TASKS[task].missing_dataset(data_dir)
            hint = (f"; here: --data-dir DIR (now {data_dir}) or --download, e.g. make gpu-smoke "
                    'SMOKE_ARGS="--data-dir /path/to/datasets"') if missing else ""
            print(f"gpu-smoke: stopped: `adamscape submit {path.name} --run` exited {code} after "
                  f"{seconds[name]:.0f} s{hint}", file=sys.stderr, flush=True)
            return code

    facts = {task: dataset_facts(task, data_dir) for task in args.tasks}
    headers = ["task", "amp", "optimizer", "lr", "status", "device", "images/s", "peak MiB",
               "train loss 1st -> last", "falls", "test acc", "chance", "above", "result"]
    rows, failures = [], []
    for task, amp, name, _ in studies:
        for row in read_cells(db, name):
            judged = judge(row, *facts[task])
            cells_of = {"task": task, "amp": "on" if amp else "off", **judged["cells"]}
            rows.append([cells_of[h] for h in headers])
            if judged["reasons"]:
                failures.append(f"{task} amp {cells_of['amp']} {row['optimizer']} lr {cells_of['lr']}: "
                                + "; ".join(judged["reasons"]))
    print("\n" + "\n".join(table(headers, rows)))
    print("\nwall per study: " + ", ".join(f"{n} {s:.0f} s" for n, s in seconds.items()))
    print(f"results: {db} (`adamscape results NAME --db {db}`)")
    if len(rows) != cells:
        failures.append(f"{len(rows)} cells in the database, {cells} expected")
    for failure in failures:
        print(f"FAIL {failure}")
    print(f"gpu-smoke: {len(rows) - sum(r[-1] == 'FAIL' for r in rows)} of {cells} cells passed"
          + ("" if failures else " (loss falling, accuracy above chance)"), flush=True)
    if args.population_sizes and population_figures(args, data_dir, out) != 0:
        failures.append("the population timing failed")
    return 1 if failures else 0


def population_figures(args: argparse.Namespace, data_dir: str, out: Path) -> int:
    """Images/s as populations of each K against one at a time (benchmarks/population_speed.py, in a child:
    this script holds no CUDA context of its own)."""
    sizes = [k for k in args.population_sizes if k > 1]
    print(f"\n== populations: {args.population_task}, K = 1 (one at a time), {', '.join(map(str, sizes))}", flush=True)
    command = [sys.executable, str(Path(__file__).parent / "population_speed.py"), "--device", args.device,
               "--tasks", args.population_task, "--sizes", ",".join(map(str, sizes)), "--cells", "16",
               "--epochs", "1", "--rounds", "1", "--images", "--data-dir", data_dir,
               "--out", str(out / "population_speed.json")]
    return subprocess.run(command).returncode


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the CLI hands its cells back on the same Ctrl-C
        sys.exit(130)
