"""Each optimizer, step by step in float64, against an independent reference implementation."""

from __future__ import annotations

import warnings

import pytest
import torch

import optimizers

warnings.filterwarnings("ignore", category=UserWarning)  # the reference packages use deprecated add_ signatures
adabound = pytest.importorskip("adabound")
adamod = pytest.importorskip("adamod")

STEPS = 200
SHAPES = [(7, 5), (5,), (3, 4, 2), (1,)]


def _torch_adam(params, lr, beta1, beta2, eps, weight_decay, **kw):
    return torch.optim.Adam(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, **kw)


# (our name, our hyperparameters, reference constructor taking the same hyperparameters)
CASES = [
    ("adam", dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0),
     lambda p, **h: _torch_adam(p, **h, foreach=False)),
    ("adam", dict(lr=3e-3, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=1e-2),
     lambda p, **h: _torch_adam(p, **h, foreach=False)),
    ("amsgrad", dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-3),
     lambda p, **h: _torch_adam(p, **h, amsgrad=True, foreach=False)),
    ("adamw", dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-1),
     lambda p, lr, beta1, beta2, eps, weight_decay: torch.optim.AdamW(
         p, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, foreach=False)),
    ("sgdm", dict(lr=5e-2, momentum=0.9, weight_decay=0.0),
     lambda p, **h: torch.optim.SGD(p, **h, foreach=False)),
    ("sgdm", dict(lr=5e-2, momentum=0.5, weight_decay=1e-2),
     lambda p, **h: torch.optim.SGD(p, **h, foreach=False)),
    ("adabound", dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, final_lr=0.1, gamma=1e-3),
     lambda p, lr, beta1, beta2, **h: adabound.AdaBound(p, lr=lr, betas=(beta1, beta2), **h)),
    ("adabound", dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=5e-4, final_lr=0.05, gamma=1e-2),
     lambda p, lr, beta1, beta2, **h: adabound.AdaBound(p, lr=lr, betas=(beta1, beta2), **h)),
    ("amsbound", dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=5e-4, final_lr=0.1, gamma=1e-3),
     lambda p, lr, beta1, beta2, **h: adabound.AdaBound(p, lr=lr, betas=(beta1, beta2), amsbound=True, **h)),
    ("adamod", dict(lr=1e-2, beta1=0.9, beta2=0.999, beta3=0.999, eps=1e-8, weight_decay=0.0),
     lambda p, lr, beta1, beta2, **h: adamod.AdaMod(p, lr=lr, betas=(beta1, beta2), **h)),
    ("adamod", dict(lr=1e-2, beta1=0.9, beta2=0.99, beta3=0.99, eps=1e-8, weight_decay=1e-2),
     lambda p, lr, beta1, beta2, **h: adamod.AdaMod(p, lr=lr, betas=(beta1, beta2), **h)),
]


def _problem(seed: int):
    """Random parameters in two param groups and a fixed random quartic-plus-quadratic loss."""
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


def _trajectory(make, hparams, seed):
    init, loss_fn = _problem(seed)
    params = [p.clone().requires_grad_(True) for p in init]
    groups = [{"params": params[:2]}, {"params": params[2:]}]
    optimizer = make(groups, **hparams)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=70, gamma=0.3)
    history = []
    for step in range(STEPS):
        optimizer.zero_grad()
        loss_fn(params, step).backward()
        optimizer.step()
        scheduler.step()
        history.append([p.detach().clone() for p in params])
    return history


@pytest.mark.parametrize("name,hparams,reference", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_matches_reference_every_step(name, hparams, reference):
    ours = _trajectory(lambda p, **h: optimizers.create(name, p, **h), hparams, seed=3)
    theirs = _trajectory(reference, hparams, seed=3)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12, msg=lambda m: f"step {step}: {m}")
    moved = max((a - b).abs().max().item() for a, b in zip(ours[-1], _problem(3)[0]))
    assert moved > 1e-2, "the trajectory must actually move for the comparison to mean anything"
