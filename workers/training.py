"""Train one cell (task × optimizer × hyperparameters × seed), streaming per-epoch metrics."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch

import optimizers
from optimizers.base import evaluating, train_mode
from study.catalog import TrainingProtocol
from study.protocol import CellResult, EpochRecord
from workers import tasks


def lr_multiplier(schedule: dict[str, Any], step: int, steps_per_epoch: int, epochs: int) -> float:
    """The study's lr schedule at optimizer step ``step`` (0-based): constant, step (per epoch) or cosine."""
    kind = schedule["kind"]
    if kind == "step":
        epoch = step // steps_per_epoch
        return schedule["factor"] ** sum(epoch >= milestone for milestone in schedule["milestones"])
    if kind == "cosine":
        progress = min(step / (steps_per_epoch * epochs), 1.0)
        final = schedule["final_factor"]
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def train(task: str, optimizer: str, hparams: dict[str, float], seed: int, protocol: TrainingProtocol | dict,
          device: str = "cpu") -> Iterator[EpochRecord | CellResult]:
    """Yield an :class:`~study.protocol.EpochRecord` after each epoch, then one
    :class:`~study.protocol.CellResult` (its summary).

    Same arguments → same numbers (on CPU): the seed fixes the initial weights, the
    minibatch order and any augmentation or sampling. Test metrics are computed every
    ``eval_every`` epochs and at the last one, with an optimizer that has a mode in eval mode
    (``optimizers.base.evaluating``: Schedule-Free's averaged point). A non-finite epoch loss stops training as
    diverged; so does one above ``divergence_factor`` × the loss before training (when
    that is positive and the factor is not 0). The summary's ``final`` also holds ``initial_<name>`` for
    each metric at initialisation, before any step (:func:`initial_metrics`). The records' ``key`` is None
    (``workers.population.train_payload`` tags them with their cell's).
    """
    plan = plan_of(protocol)
    with reproducible(plan.deterministic):
        yield from _train(task, optimizer, hparams, seed, plan, device)


class SingleRun:
    """One config's training state, built as ``train`` builds it (seeded weights, its optimizer, the lr
    schedule, the data generator), and its step: the one loop body that ``train`` and the population's
    lone-config timing share. A :class:`Trainer` of one member (index 0)."""

    def __init__(self, task: str, optimizer: str, hparams: dict[str, float], seed: int, plan: TrainingProtocol,
                 device: str):
        torch.manual_seed(seed)
        self.problem = problem = tasks.build(task, plan, device)
        self.parameters = dict(problem.model.named_parameters())
        self.opt = optimizers.create(optimizer, self.parameters.values(), **hparams)
        train_mode(self.opt)  # an optimizer with a mode (optimizers.base) trains in train mode, evaluates in eval
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda step: schedule_factor(problem, plan, step))
        self.generator = torch.Generator().manual_seed(seed)
        self.autocast = autocast_for(plan, device, task)
        self.members = [0]

    def step(self, batch: Any) -> tuple[torch.Tensor, int]:
        """One optimizer step on ``batch``: its loss (on the device) and its size."""
        with self.autocast:
            loss, size = self.problem.loss(batch, self.generator)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.problem.after_step(self.parameters)
        self.schedule.step()
        return loss, size

    def train_step(self, batch: Any, step: int) -> tuple[torch.Tensor, int]:
        loss, size = self.step(batch)  # the schedule counts its own steps
        return loss.reshape(1), size

    def evaluate(self, row: int) -> dict[str, float]:
        return self.problem.evaluate()

    def drop(self, rows: list[int]) -> None:
        self.members = [m for r, m in enumerate(self.members) if r not in rows]


class Trainer(Protocol):
    """What :func:`run_epochs` trains: one config (:class:`SingleRun`) or K (``workers.population``).

    ``members``: the indices of the live members, row by row; ``train_step(batch, step)``: one optimizer
    step of every live member on ``batch``, returning their losses (shape ``(len(members),)``, on the
    device) and the batch's weight; ``evaluate(row)``: the task's metrics for the member in ``row``;
    ``drop(rows)``: remove members; ``problem``, ``generator``, ``opt``, ``autocast`` as their names say."""

    problem: tasks.Problem
    generator: torch.Generator
    opt: torch.optim.Optimizer
    autocast: Any
    members: list[int]

    def train_step(self, batch: Any, step: int) -> tuple[torch.Tensor, int]: ...

    def evaluate(self, row: int) -> dict[str, float]: ...

    def drop(self, rows: list[int]) -> None: ...


def run_epochs(trainer: Trainer, plan: TrainingProtocol, device: str, reference: float, initial: dict[str, float],
               started: float, lap: Callable[[int], None] | None = None
               ) -> Iterator[tuple[int, EpochRecord | CellResult]]:
    """The epoch loop, for one config and for K: yields ``(member, EpochRecord)`` after each epoch for every
    live member, then its summary (a ``CellResult``) when it diverged or finished; a member that diverged
    leaves the trainer at the end of that epoch. Test metrics every ``eval_every`` epochs, at the last, and
    when a member diverges, all of the epoch's evaluations in one ``eval()`` / ``train()`` round trip of an
    optimizer with a mode (``optimizers.base.evaluating``), under the autocast training uses. The epoch's
    losses are summed on the device (one read per epoch). ``lap(batch size)`` after each step and
    ``lap(None)`` when an epoch's steps are done, before anything of it is yielded (the population's step
    timer). A member's ``wall_seconds`` is its share of the elapsed time (elapsed / K)."""
    count = len(trainer.members)
    best_accuracy = {member: -math.inf for member in trainer.members}
    step = 0
    for epoch in range(1, plan.epochs + 1):
        total, weight = torch.zeros(len(trainer.members), device=device), 0
        for batch in trainer.problem.batches(trainer.generator):
            losses, size = trainer.train_step(batch, step)
            total += losses.detach().float() * size
            weight += size
            step += 1
            if lap is not None:
                lap(size)
        if lap is not None:
            lap(None)
        rows = []  # (row, member, metrics, diverged, evaluated now)
        for row, (member, summed) in enumerate(zip(trainer.members, total.tolist())):  # the epoch's one read
            train_loss = summed / weight
            diverged = is_diverged(train_loss, reference, plan)
            rows.append((row, member, {"train_loss": train_loss}, diverged,
                         diverged or epoch % plan.eval_every == 0 or epoch == plan.epochs))
        if any(due for *_, due in rows):
            # at the optimizer's point to evaluate (Schedule-Free's average), and as trained: in bfloat16
            # where the study's amp trains so
            with evaluating(trainer.opt), trainer.autocast:
                for row, _, metrics, _, due in rows:
                    if due:
                        metrics |= trainer.evaluate(row)
        finished = []
        for row, member, metrics, diverged, _ in rows:
            best_accuracy[member] = max(best_accuracy[member], metrics.get("test_accuracy", -math.inf))
            yield member, EpochRecord(epoch, dict(metrics))
            if diverged or epoch == plan.epochs:
                finished.append(row)
                yield member, summary(metrics, diverged, best_accuracy[member], (time.perf_counter() - started) / count,
                                      device, initial)
        if finished:
            trainer.drop(finished)
        if not trainer.members:
            return


def _train(task: str, optimizer: str, hparams: dict[str, float], seed: int, plan: TrainingProtocol,
           device: str) -> Iterator[EpochRecord | CellResult]:
    started = time.perf_counter()
    watch_memory(device)
    run = SingleRun(task, optimizer, hparams, seed, plan, device)
    reference = run.problem.reference_loss()
    initial = initial_metrics(task, seed, plan, device, run.problem, reference, run.autocast)
    for _, record in run_epochs(run, plan, device, reference, initial, started):
        yield record


_INITIAL: dict[tuple, tuple[Any, dict[str, float]]] = {}  # initial_metrics' key -> (task builder, metrics)


def initial_metrics(task: str, seed: int, plan: TrainingProtocol, device: str, problem: tasks.Problem,
                    reference: float, autocast: Any = None) -> dict[str, float]:
    """The metrics at initialisation, ℓ₀ of Wortsman et al.'s LR sensitivity: ``train_loss``, the problem's
    ``reference_loss()`` (the loss before training that the divergence rule measures against, which the
    training loop computes anyway, passed as ``reference``), and the task's ``evaluate()``, as the loop
    evaluates (under ``autocast``, the loop's bfloat16 where it trains so).

    ``problem`` is the cell's own problem, just built after ``torch.manual_seed(seed)`` and not yet
    stepped: its parameters are the ones training starts from, whatever the optimizer. They depend only on
    task, seed, protocol and device, so the metrics are computed once per worker process for each of those
    (the task's builder too: a study file's own task of the same name may differ) and kept; later cells
    of the key reuse them without evaluating. ``evaluate()`` does not change the parameters (the task
    contract) and runs inside ``torch.random.fork_rng``: training draws the same random numbers as
    without it, so its results are bit-identical.
    """
    builder = tasks._PLUGINS.get(task)
    key = (task, id(builder), seed, repr(plan), str(torch.device(device)))
    known = _INITIAL.get(key)
    if known is not None and known[0] is builder:
        return dict(known[1])
    where = torch.device(device)
    cuda = [where.index if where.index is not None else torch.cuda.current_device()] if where.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), autocast or contextlib.nullcontext():  # as the loop evaluates
        metrics = {"train_loss": float(reference), **problem.evaluate()}
    _INITIAL[key] = (builder, metrics)
    return dict(metrics)


CUBLAS_DETERMINISTIC = ":4096:8"  # the workspace setting cuBLAS needs for reproducible matmuls (CUDA >= 10.2)


@contextlib.contextmanager
def reproducible(deterministic: bool) -> Iterator[None]:
    """While training a study with ``deterministic = true``: torch's deterministic algorithms (an op without
    one raises, naming itself), cuDNN's deterministic kernels and no benchmark-picked ones, and cuBLAS's
    fixed workspace (CUBLAS_WORKSPACE_CONFIG, read when CUDA starts: GPU workers set it at start). The
    process's settings are restored afterwards: a worker trains other studies too."""
    if not deterministic:
        yield
        return
    cudnn = torch.backends.cudnn
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             cudnn.deterministic, cudnn.benchmark)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)
    torch.use_deterministic_algorithms(True)
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        cudnn.deterministic, cudnn.benchmark = saved[2], saved[3]


def autocast_for(plan: TrainingProtocol, device: str, task: str):
    """bfloat16 autocast where the study asks for it, the device is CUDA and the task is convolutional (a
    built-in task's ``TaskInfo.convolutional``; the user's own tasks decide for themselves); nothing
    otherwise: a quadratic's or an MLP's matmuls stay in float32."""
    from study.catalog import TASKS

    info = TASKS.get(task)
    if plan.amp and device.startswith("cuda") and (info is None or info.convolutional):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def is_diverged(train_loss: float, reference: float, plan: TrainingProtocol) -> bool:
    """The divergence rule: a non-finite epoch loss, or one above ``divergence_factor`` × the loss before
    training (when that is positive and the factor is not 0)."""
    return not math.isfinite(train_loss) or (
        plan.divergence_factor > 0 and reference > 0 and train_loss > plan.divergence_factor * reference)


def summary(metrics: dict[str, float], diverged: bool, best_accuracy: float, wall_seconds: float,
            device: str, initial: dict[str, float] | None = None) -> CellResult:
    """The last record of a cell: its final metrics (and ``initial_<name>`` for each of ``initial``, the
    metrics at initialisation: :func:`initial_metrics`), status, best test accuracy, wall time, and what it
    trained on (``device_label``) with the peak memory of its pass (CUDA only)."""
    final = {**metrics, **{f"initial_{name}": value for name, value in (initial or {}).items()}}
    return CellResult(status="diverged" if diverged else "complete", final=final,
                      best_test_accuracy=best_accuracy if math.isfinite(best_accuracy) else None,
                      wall_seconds=wall_seconds, device=device_label(device), peak_memory_mib=peak_memory_mib(device))


def device_label(device: str) -> str:
    """``cpu``, or ``cuda (GPU name)``: what a result was computed on, as the results record it."""
    if torch.device(device).type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(torch.device(device))})"
    return torch.device(device).type


def watch_memory(device: str) -> None:
    """Start measuring the peak memory of a training pass (CUDA's allocator counts it; a CPU does not)."""
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(torch.device(device))


def peak_memory_mib(device: str) -> float | None:
    """The peak memory allocated on ``device`` since :func:`watch_memory`, in MiB; None on a CPU. Read from
    the allocator's counters: no device synchronisation."""
    if torch.device(device).type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(torch.device(device)) / 2**20, 1)


def plan_of(protocol: TrainingProtocol | dict) -> TrainingProtocol:
    return protocol if isinstance(protocol, TrainingProtocol) else TrainingProtocol(**protocol)


def schedule_factor(problem: tasks.Problem, plan: TrainingProtocol, step: int) -> float:
    """The lr multiplier at optimizer step ``step``: the problem's own decay times the study's schedule."""
    return problem.lr_factor(step) * lr_multiplier(plan.lr_schedule, step, problem.steps_per_epoch, plan.epochs)

