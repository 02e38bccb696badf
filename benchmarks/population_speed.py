"""Training time of a grid's cells as populations against one configuration at a time, side by side.

The same cells (one optimizer and seed, ``--cells`` configurations: lr log-spaced × beta1) train through
``workers.population.train_cells``, the function a worker runs, in each mode:

  one        ``--population 1``: one configuration per pass
  auto       ``--population auto``: what the worker measures faster (its reason is printed)
  K          ``--population K`` for each K in ``--sizes``: populations of at most K

Modes run round-robin (``--rounds``, median counts), torch at one thread as in a worker. Times are the
thread's CPU seconds on a CPU (other processes on a busy machine cannot lengthen them) and the wall clock
on CUDA; the task is built and its data cached once before the first round, so what differs is training.

Tasks (``--tasks``, comma-separated):

  digits-bn-cnn   a user's task, as a study file would declare it: the scikit-learn digits (8×8) through
                  conv 3×3 (``--width`` channels, no bias) + BatchNorm + ReLU, conv 3×3 (2×width) +
                  BatchNorm + ReLU, global average pooling, linear to 10 classes; batch 64
  any built-in    e.g. ``pydoc-transformer``, ``digits-mlp``, ``cifar10-resnet34`` (on CUDA)

    .venv/bin/python benchmarks/population_speed.py                       # both CPU tasks, 24 cells
    .venv/bin/python benchmarks/population_speed.py --tasks pydoc-transformer --option width=16 --option context=16
    .venv/bin/python benchmarks/population_speed.py --device cuda --tasks cifar10-resnet34 --sizes 4,16 --images

``--images`` prints images (or sequences) per second of training for each mode. Results are written to
``benchmarks/results/population_speed-<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from study.catalog import TASKS, TrainingProtocol
from study.protocol import CellResult
from workers import data, population, tasks

RESULTS = Path(__file__).parent / "results"
USER_TASK = "digits-bn-cnn"


def digits_bn_cnn(width: int):
    """The user's BatchNorm CNN on digits (registered as a study file's own task would be)."""
    def build(plan: TrainingProtocol, device: str) -> tasks.Problem:
        model = nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)),
            nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 10))
        return tasks.Classification(model.to(device), data.digits().to(device), plan.batch_size)
    return build


def members(cells: int) -> list[dict[str, float]]:
    betas = (0.5, 0.9, 0.99) if cells >= 6 else (0.9,)
    rates = math.ceil(cells / len(betas))
    grid = [{"lr": 10 ** (-4 + 3 * i / max(rates - 1, 1)), "beta1": b} for i in range(rates) for b in betas]
    return grid[:cells]


def protocol(task: str, epochs: int, batch_size: int | None, data_dir: str,
             given: dict[str, int | float | str] | None = None) -> TrainingProtocol:
    info = TASKS.get(task)
    options = {key: option.default for key, option in info.options.items()} if info else {}
    options |= given or {}
    size = batch_size or (info.default_batch_size if info else 64)
    return TrainingProtocol(epochs=epochs, batch_size=size, data_dir=data_dir, task_options=options)


def timed(task: str, cells: list[dict[str, float]], plan: TrainingProtocol, device: str,
          size: int | None) -> tuple[float, str]:
    """Seconds to train every cell (thread CPU time on a CPU, wall on CUDA) and how the passes were chosen."""
    cuda = device.startswith("cuda")
    clock = time.perf_counter if cuda else time.thread_time
    why = set()
    started = clock()
    for _, record in population.train_cells(task, "adam", 0, cells, plan, device, size):
        if isinstance(record, CellResult):
            why.add(record.population.why)
    if cuda:
        torch.cuda.synchronize()
    return clock() - started, "; ".join(sorted(why))


def run_task(task: str, args: argparse.Namespace) -> dict:
    if task == USER_TASK:
        tasks.register(USER_TASK, digits_bn_cnn(args.width))
    plan = protocol(task, args.epochs, args.batch_size, args.data_dir, dict(args.option))
    cells = members(args.cells)
    torch.manual_seed(0)
    problem = tasks.build(task, plan, args.device)  # data generated and cached before any timing
    examples = plan.epochs * problem.steps_per_epoch * plan.batch_size * len(cells)
    parameters = sum(p.numel() for p in problem.model.parameters())
    del problem
    modes = {"one": 1, "auto": None} | {str(k): k for k in args.sizes}
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    notes: dict[str, str] = {}
    for _ in range(args.rounds):
        for mode, size in modes.items():
            spent, notes[mode] = timed(task, cells, plan, args.device, size)
            seconds[mode].append(spent)
    median = {mode: statistics.median(values) for mode, values in seconds.items()}
    rows = {mode: {"seconds": median[mode], "rounds": seconds[mode], "speedup": median["one"] / median[mode],
                   "examples_per_second": examples / median[mode], "how": notes[mode]} for mode in modes}
    return {"task": task, "options": dict(args.option), "parameters": parameters, "cells": len(cells), "epochs": plan.epochs,
            "batch_size": plan.batch_size, "modes": rows}


def _option(text: str) -> tuple[str, int | float | str]:
    key, _, value = text.partition("=")
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            pass
    return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=f"{USER_TASK},pydoc-transformer")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cells", type=int, default=24)
    parser.add_argument("--sizes", type=lambda text: [int(k) for k in text.split(",") if k], default=[24])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the task's")
    parser.add_argument("--width", type=int, default=8, help=f"{USER_TASK}'s first convolution's channels")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--images", action="store_true", help="also print examples per second")
    parser.add_argument("--option", action="append", type=_option, default=[], metavar="KEY=VALUE",
                        help="a task option, e.g. --option width=16 (repeatable)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    found = []
    for task in [t for t in args.tasks.split(",") if t]:
        result = run_task(task, args)
        found.append(result)
        options = "".join(f", {k}={v}" for k, v in result["options"].items())
        print(f"{task}{options}: {result['parameters']:,} parameters, {result['cells']} cells × {result['epochs']} epochs, "
              f"batch {result['batch_size']}")
        for mode, row in result["modes"].items():
            extra = f", {row['examples_per_second']:,.0f} examples/s" if args.images else ""
            print(f"  {mode:>5}: {row['seconds']:7.2f} s  ({row['speedup']:.2f}x one at a time{extra})  {row['how']}")
    out = args.out or RESULTS / f"population_speed-{torch.device(args.device).type}.json"
    out.write_text(json.dumps({"torch": torch.__version__, "machine": platform.machine(),
                               "processor": platform.processor(), "device": args.device,
                               "threads": torch.get_num_threads(), "tasks": found}, indent=2) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
