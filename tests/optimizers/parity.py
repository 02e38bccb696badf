"""The parity suites' problem: random float64 parameters and a fixed random quartic-plus-quadratic loss
with per-step jitter, the same for our optimizer and its reference (``test_reference_*.py``), and the run
of STEPS steps over it."""

from __future__ import annotations

import torch

STEPS = 200
SHAPES = [(7, 5), (5,), (3, 4, 2), (1,)]


def problem(seed: int):
    """Initial parameters (one tensor per shape of ``SHAPES``) and ``loss_fn(params, step)``."""
    gen = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]
    targets = [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]
    scales = [torch.rand(s, generator=gen, dtype=torch.float64) * 10 for s in SHAPES]

    def loss_fn(params, step):
        noise = torch.Generator().manual_seed(seed * 1000 + step)
        total = 0.0
        for p, t, c in zip(params, targets, scales):
            jitter = torch.randn(p.shape, generator=noise, dtype=torch.float64) * 0.1
            total = total + (c * (p - t) ** 2).sum() + 0.01 * ((p - t) ** 4).sum() + (jitter * p).sum()
        return total

    return init, loss_fn


def copies(params) -> list:
    """Detached copies of the parameters, as they are now."""
    return [p.detach().clone() for p in params]


def trajectory(seed: int, build, record) -> list:
    """The parity run: STEPS steps on ``problem(seed)``'s loss, from fresh copies of its initial
    parameters, by the optimizer ``build(params)`` returns, under StepLR(step_size=70, gamma=0.3);
    after each step, ``record(optimizer, params, step)``. The list of what ``record`` returned."""
    init, loss_fn = problem(seed)
    params = [p.clone().requires_grad_(True) for p in init]
    optimizer = build(params)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=70, gamma=0.3)
    history = []
    for step in range(STEPS):
        optimizer.zero_grad()
        loss_fn(params, step).backward()
        optimizer.step()
        scheduler.step()
        history.append(record(optimizer, params, step))
    return history
