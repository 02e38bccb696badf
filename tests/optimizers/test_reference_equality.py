"""Each optimizer, step by step in float64, against an independent reference implementation."""

from __future__ import annotations

import warnings

import pytest
import torch

import optimizers

warnings.filterwarnings("ignore", category=UserWarning)  # the reference packages use deprecated add_ signatures
adabound = pytest.importorskip("adabound")
adamod = pytest.importorskip("adamod")
adabelief_pytorch = pytest.importorskip("adabelief_pytorch")

STEPS = 200
SHAPES = [(7, 5), (5,), (3, 4, 2), (1,)]


def _betas(reference):
    """A reference constructor taking (beta1, beta2) as the usual ``betas`` tuple."""
    return lambda p, beta1, beta2, **h: reference(p, betas=(beta1, beta2), **h)


_torch = {name: _betas(lambda p, _cls=getattr(torch.optim, name), **h: _cls(p, foreach=False, **h))
          for name in ("Adam", "AdamW", "Adamax", "NAdam", "RAdam")}
_adabound = _betas(adabound.AdaBound)
_adamod = _betas(adamod.AdaMod)
_adabelief = _betas(lambda p, **h: adabelief_pytorch.AdaBelief(p, print_change_log=False, **h))
ADAM = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8)
BOUND = dict(ADAM, final_lr=0.1, gamma=1e-3)

# (our name, our hyperparameters, our class options, reference constructor taking the same hyperparameters)
CASES = [
    ("adam", dict(ADAM, weight_decay=0.0), {}, _torch["Adam"]),
    ("adam", dict(lr=3e-3, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=1e-2), {}, _torch["Adam"]),
    ("amsgrad", dict(ADAM, weight_decay=1e-3), {}, lambda p, **h: _torch["Adam"](p, amsgrad=True, **h)),
    ("adamw", dict(ADAM, weight_decay=1e-1), {}, _torch["AdamW"]),
    ("adamax", dict(ADAM, weight_decay=0.0), {}, _torch["Adamax"]),
    ("adamax", dict(lr=2e-2, beta1=0.8, beta2=0.99, eps=1e-3, weight_decay=1e-2), {}, _torch["Adamax"]),
    ("nadam", dict(ADAM, weight_decay=0.0, momentum_decay=4e-3), {}, _torch["NAdam"]),
    ("nadam", dict(ADAM, weight_decay=1e-2, momentum_decay=1e-2), {"decoupled_weight_decay": True},
     lambda p, **h: _torch["NAdam"](p, decoupled_weight_decay=True, **h)),
    ("radam", dict(ADAM, weight_decay=0.0), {}, _torch["RAdam"]),
    ("radam", dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=1e-2), {"decoupled_weight_decay": True},
     lambda p, **h: _torch["RAdam"](p, decoupled_weight_decay=True, **h)),
    ("adabelief", dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-16, weight_decay=0.0), {}, _adabelief),
    ("adabelief", dict(lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-12, weight_decay=1e-2), {}, _adabelief),
    ("adabelief", dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-3),
     dict(rectify=False, weight_decouple=False, amsgrad=True),
     lambda p, **h: _adabelief(p, rectify=False, weight_decouple=False, amsgrad=True, **h)),
    ("adabelief", dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-16, weight_decay=1e-2),
     dict(fixed_decay=True, degenerated_to_sgd=False),
     lambda p, **h: _adabelief(p, fixed_decay=True, degenerated_to_sgd=False, **h)),
    ("sgdm", dict(lr=5e-2, momentum=0.9, weight_decay=0.0), {},
     lambda p, **h: torch.optim.SGD(p, **h, foreach=False)),
    ("sgdm", dict(lr=5e-2, momentum=0.5, weight_decay=1e-2), {"nesterov": True},
     lambda p, **h: torch.optim.SGD(p, **h, nesterov=True, foreach=False)),
    ("adagrad", dict(lr=5e-2, eps=1e-10, weight_decay=0.0, lr_decay=0.0, initial_accumulator_value=0.0), {},
     lambda p, **h: torch.optim.Adagrad(p, **h, foreach=False)),
    ("adagrad", dict(lr=5e-2, eps=1e-6, weight_decay=1e-2, lr_decay=1e-2, initial_accumulator_value=0.1), {},
     lambda p, **h: torch.optim.Adagrad(p, **h, foreach=False)),
    ("rmsprop", dict(lr=1e-3, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0), {},
     lambda p, **h: torch.optim.RMSprop(p, **h, foreach=False)),
    ("rmsprop", dict(lr=1e-3, alpha=0.9, eps=1e-6, weight_decay=1e-2, momentum=0.9), {"centered": True},
     lambda p, **h: torch.optim.RMSprop(p, **h, centered=True, foreach=False)),
    ("adabound", dict(BOUND, weight_decay=0.0), {}, _adabound),
    ("adabound", dict(ADAM, weight_decay=5e-4, final_lr=0.05, gamma=1e-2), {}, _adabound),
    ("amsbound", dict(BOUND, weight_decay=5e-4), {}, lambda p, **h: _adabound(p, amsbound=True, **h)),
    ("adamod", dict(ADAM, beta3=0.999, weight_decay=0.0), {}, _adamod),
    ("adamod", dict(lr=1e-2, beta1=0.9, beta2=0.99, beta3=0.99, eps=1e-8, weight_decay=1e-2), {}, _adamod),
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


@pytest.fixture(autouse=True)
def _float64_by_default():
    """torch keeps NAdam's momentum product in the default dtype; float64 keeps the reference exact."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _ours(name, options):
    """Our optimizer through the registry (paper defaults, validation), with class options when given."""
    if not options:
        return lambda p, **h: optimizers.create(name, p, **h)
    opt = optimizers.spec(name)
    return lambda p, **h: opt.cls(p, **{**opt.defaults(), **h, **options})


@pytest.mark.parametrize("name,hparams,options,reference", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_matches_reference_every_step(name, hparams, options, reference):
    ours = _trajectory(_ours(name, options), hparams, seed=3)
    theirs = _trajectory(reference, hparams, seed=3)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12, msg=lambda m: f"step {step}: {m}")
    moved = max((a - b).abs().max().item() for a, b in zip(ours[-1], _problem(3)[0]))
    assert moved > 1e-2, "the trajectory must actually move for the comparison to mean anything"
