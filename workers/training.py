"""Train one cell (task × optimizer × hyperparameters × seed), streaming per-epoch metrics."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import torch

import optimizers
from . import tasks

DIVERGENCE_FACTOR = 100.0  # an epoch's mean train loss above this × the initial loss counts as diverged


def train(task: str, optimizer: str, hparams: dict[str, float], seed: int, epochs: int, batch_size: int,
          device: str = "cpu") -> Iterator[dict[str, Any]]:
    """Yield ``{"epoch": e, **metrics}`` after each epoch, then one summary ``{"final": {...}, ...}``.

    Same arguments → same numbers (on CPU): the seed fixes the initial weights
    and the minibatch order. A non-finite loss stops training at once; so does
    an epoch whose mean loss exceeds DIVERGENCE_FACTOR × the initial loss.
    """
    started = time.perf_counter()
    problem = tasks.get(task)
    data = problem.load().to(device)
    torch.manual_seed(seed)
    model = problem.make_model().to(device)
    opt = optimizers.create(optimizer, model.parameters(), **hparams)
    order = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        initial_loss = problem.loss(model(data.train_x), data.train_y).item()

    diverged, best_accuracy, metrics = False, -math.inf, {}
    count = len(data.train_y)
    for epoch in range(1, epochs + 1):
        total, seen = 0.0, 0
        for batch in torch.randperm(count, generator=order).to(device).split(batch_size):
            loss = problem.loss(model(data.train_x[batch]), data.train_y[batch])
            if not torch.isfinite(loss):
                diverged, total, seen = True, math.nan, 1
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
            seen += len(batch)
        metrics = {"train_loss": total / seen, **problem.evaluate(model, data)}
        best_accuracy = max(best_accuracy, metrics.get("test_accuracy", -math.inf))
        yield {"epoch": epoch, **metrics}
        diverged = diverged or not metrics["train_loss"] <= DIVERGENCE_FACTOR * initial_loss
        if diverged:
            break
    yield {"final": metrics, "status": "diverged" if diverged else "complete",
           "best_test_accuracy": best_accuracy if math.isfinite(best_accuracy) else None,
           "wall_seconds": time.perf_counter() - started}
