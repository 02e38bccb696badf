"""Train one cell (task × optimizer × hyperparameters × seed), streaming per-epoch metrics."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

import torch

import optimizers
from study.catalog import TrainingProtocol
from . import tasks


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
          device: str = "cpu") -> Iterator[dict[str, Any]]:
    """Yield ``{"epoch": e, **metrics}`` after each epoch, then one summary ``{"final": {...}, ...}``.

    Same arguments → same numbers (on CPU): the seed fixes the initial weights, the
    minibatch order and any augmentation or sampling. Test metrics are computed every
    ``eval_every`` epochs and at the last one. A non-finite epoch loss stops training as
    diverged; so does one above ``divergence_factor`` × the loss before training (when
    that is positive and the factor is not 0).
    """
    plan = plan_of(protocol)
    started = time.perf_counter()
    torch.manual_seed(seed)
    problem = tasks.build(task, plan, device)
    parameters = dict(problem.model.named_parameters())
    opt = optimizers.create(optimizer, parameters.values(), **hparams)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: schedule_factor(problem, plan, step))
    generator = torch.Generator().manual_seed(seed)
    reference = problem.reference_loss()
    autocast = autocast_for(plan, device, task)

    diverged, best_accuracy, metrics = False, -math.inf, {}
    for epoch in range(1, plan.epochs + 1):
        total, weight = torch.zeros((), device=device), 0
        for batch in problem.batches(generator):
            with autocast:
                loss, size = problem.loss(batch, generator)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            problem.after_step(parameters)
            schedule.step()
            total += loss.detach().float() * size  # summed on the device: no sync per step
            weight += size
        metrics = {"train_loss": total.item() / weight}
        diverged = is_diverged(metrics["train_loss"], reference, plan)
        if diverged or epoch % plan.eval_every == 0 or epoch == plan.epochs:
            metrics |= problem.evaluate()
        best_accuracy = max(best_accuracy, metrics.get("test_accuracy", -math.inf))
        yield {"epoch": epoch, **metrics}
        if diverged:
            break
    yield summary(metrics, diverged, best_accuracy, time.perf_counter() - started)


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


def summary(metrics: dict[str, float], diverged: bool, best_accuracy: float, wall_seconds: float) -> dict[str, Any]:
    """The last record of a cell: its final metrics, status, best test accuracy and wall time."""
    return {"final": metrics, "status": "diverged" if diverged else "complete",
            "best_test_accuracy": best_accuracy if math.isfinite(best_accuracy) else None,
            "wall_seconds": wall_seconds}


def plan_of(protocol: TrainingProtocol | dict) -> TrainingProtocol:
    return protocol if isinstance(protocol, TrainingProtocol) else TrainingProtocol(**protocol)


def schedule_factor(problem: tasks.Problem, plan: TrainingProtocol, step: int) -> float:
    """The lr multiplier at optimizer step ``step``: the problem's own decay times the study's schedule."""
    return problem.lr_factor(step) * lr_multiplier(plan.lr_schedule, step, problem.steps_per_epoch, plan.epochs)

