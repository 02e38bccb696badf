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
    plan = protocol if isinstance(protocol, TrainingProtocol) else TrainingProtocol(**protocol)
    started = time.perf_counter()
    torch.manual_seed(seed)
    problem = tasks.build(task, plan, device)
    opt = optimizers.create(optimizer, problem.model.parameters(), **hparams)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: problem.lr_factor(step) * lr_multiplier(
        plan.lr_schedule, step, problem.steps_per_epoch, plan.epochs))
    generator = torch.Generator().manual_seed(seed)
    reference = problem.reference_loss()
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if plan.amp and device.startswith("cuda")
                else contextlib.nullcontext())

    diverged, best_accuracy, metrics = False, -math.inf, {}
    for epoch in range(1, plan.epochs + 1):
        total, weight = torch.zeros((), device=device), 0
        for batch in problem.batches(generator):
            with autocast:
                loss, size = problem.loss(batch, generator)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            problem.after_step()
            schedule.step()
            total += loss.detach().float() * size  # summed on the device: no sync per step
            weight += size
        metrics = {"train_loss": total.item() / weight}
        diverged = not math.isfinite(metrics["train_loss"]) or (
            plan.divergence_factor > 0 and reference > 0 and metrics["train_loss"] > plan.divergence_factor * reference)
        if diverged or epoch % plan.eval_every == 0 or epoch == plan.epochs:
            metrics |= problem.evaluate()
        best_accuracy = max(best_accuracy, metrics.get("test_accuracy", -math.inf))
        yield {"epoch": epoch, **metrics}
        if diverged:
            break
    yield {"final": metrics, "status": "diverged" if diverged else "complete",
           "best_test_accuracy": best_accuracy if math.isfinite(best_accuracy) else None,
           "wall_seconds": time.perf_counter() - started}

