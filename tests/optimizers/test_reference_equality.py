"""Each optimizer, step by step in float64, against an independent reference implementation."""

from __future__ import annotations

import inspect
import math
import warnings

import pytest
import torch

import optimizers
from tests.optimizers.parity import copies, problem, trajectory

warnings.filterwarnings("ignore", category=UserWarning)  # the reference packages use deprecated add_ signatures
# the reference packages are the test extra's (pyproject.toml): a missing one fails the suite, never skips it
import adabelief_pytorch  # noqa: E402
import adabound  # noqa: E402
import adam_mini  # noqa: E402
import adamod  # noqa: E402
import lion_pytorch  # noqa: E402
import pytorch_optimizer  # noqa: E402

# torch keeps NAdam's momentum product in the default dtype; float64 keeps the reference exact
pytestmark = pytest.mark.usefixtures("float64_by_default")


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


def _trajectory(make, hparams, seed):
    """The parameters after each step, two parameter groups."""
    return trajectory(seed, lambda params: make([{"params": params[:2]}, {"params": params[2:]}], **hparams),
                      lambda optimizer, params, step: copies(params))


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
    moved = max((a - b).abs().max().item() for a, b in zip(ours[-1], problem(3)[0]))
    assert moved > 1e-2, "the trajectory must actually move for the comparison to mean anything"


# --- the 2020–24 members. Reference per optimizer, the most faithful one there is:
# lion      lion-pytorch 0.2.5: the paper's update (its Program 1) as the authors' own PyTorch version in
#           google/automl writes it; independent of pytorch_optimizer.
# adam-mini adam-mini 1.1.1, the authors' package, on parameters named as a plain nn.Sequential names them
#           (``0.weight``, ``0.bias``, …: the partition its code uses for such a model, checked below).
# adopt     the authors' code (iShohei220/adopt, not on the registry) written out below in plain torch; and
#           pytorch_optimizer's ADOPT given the authors' clipping schedule: its own passes the 1-based step to
#           clip_lambda, one more than the authors' code does (t^¼ instead of (t-1)^¼), and it decays θ
#           decoupled at t = 1 as well, so it stands in only with L2 decay and the shifted schedule.
# ademamix  the authors' code (apple/ml-ademamix, not on the registry) written out below, warm-ups included;
#           pytorch_optimizer's AdEMAMix (weight_decouple=True: the authors' decay) without warm-up. Its β3
#           warm-up is the paper's formula, without the authors' 1e-8 in log(β + 1e-8): we follow the
#           authors' code, so it cannot stand in for the warm-up (≈1e-4 relative in β3's half-life).
# cadamw    no package implements Cautious AdamW (pytorch_optimizer 4.1.0 has cautious variants of other
#           optimizers only, lion-pytorch of Lion only): the paper's algorithm written out below, per tensor,
#           on torch.optim.AdamW's update (our choice: cadamw = adamw + the mask).
# laprop    the authors' code (Z-T-WANG/LaProp-Optimizer, not on the registry) written out below, with its
#           decay θ ← θ(1-λ) (our fixed_decay=True) and, for our default, that decay scaled by lr (as
#           pytorch_optimizer's default). pytorch_optimizer's LaProp itself cannot stand in: it takes
#           (sqrt(v + 1e-15) + eps)/sqrt(1-β2^t) for the authors' sqrt(v/(1-β2^t)) + eps, 9e-10 relative
#           apart here even at eps 1e-15 (where v is small); its foreach path also rounds step sizes to float32.
# The written-out references are plain per-tensor torch code, independent of our kernels and pieces.


class _PerTensorReference(torch.optim.Optimizer):
    """A reference written out as plain per-tensor torch code. A subclass gives ``update_tensor(p, state, *, …)``,
    whose keyword-only parameters are its hyperparameters (the constructor takes exactly those, with their
    defaults), and ``STATE``, each tensor's state before its first step (a callable value is applied to the
    tensor: ``torch.zeros_like``)."""

    STATE: dict = {}

    def __init__(self, params, **hparams):
        signature = inspect.signature(self.update_tensor)
        signature.bind(None, None, **hparams)  # a missing or unknown hyperparameter: TypeError
        self.hparam_names = [n for n, q in signature.parameters.items() if q.kind is q.KEYWORD_ONLY]
        defaults = {n: q.default for n, q in signature.parameters.items()
                    if q.kind is q.KEYWORD_ONLY and q.default is not q.empty}
        super().__init__(params, {**defaults, **hparams})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            hparams = {name: group[name] for name in self.hparam_names}
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    state.update({k: v(p) if callable(v) else v for k, v in self.STATE.items()})
                self.update_tensor(p, state, **hparams)


class _AuthorsADOPT(_PerTensorReference):
    """ADOPT as the authors' code runs it (per tensor, 0-based step s: s = 0 only stores g², then clips at s^¼)."""

    STATE = dict(step=0, m=torch.zeros_like, v=torch.zeros_like)

    @staticmethod
    def update_tensor(p, state, *, lr, beta1, beta2, eps, weight_decay, decouple=False):
        g = p.grad if decouple else p.grad + weight_decay * p
        if state["step"] == 0:
            state["v"] += g * g
        else:
            if decouple:
                p -= lr * weight_decay * p
            clip = state["step"] ** 0.25
            normed = (g / torch.clamp(state["v"].sqrt(), min=eps)).clamp(-clip, clip)
            state["m"] = beta1 * state["m"] + (1 - beta1) * normed
            p -= lr * state["m"]
            state["v"] = beta2 * state["v"] + (1 - beta2) * g * g
        state["step"] += 1


class _AuthorsAdEMAMix(_PerTensorReference):
    """AdEMAMix as the authors' code runs it, with one warm-up length T for α and β3 (0: none)."""

    STATE = dict(step=0, fast=torch.zeros_like, slow=torch.zeros_like, v=torch.zeros_like)

    @staticmethod
    def update_tensor(p, state, *, lr, beta1, beta2, beta3, alpha, eps, weight_decay, T_alpha_beta3):
        half_life = lambda beta: math.log(0.5) / math.log(beta + 1e-8) - 1  # noqa: E731
        warmup = T_alpha_beta3
        state["step"] += 1
        t = state["step"]
        alpha_t, beta3_t = alpha, beta3
        if t < warmup:
            a = t / warmup
            alpha_t = a * alpha
            beta3_t = 0.5 ** (1 / ((1 - a) * half_life(beta1) + a * half_life(beta3) + 1))
        g = p.grad
        state["fast"] = beta1 * state["fast"] + (1 - beta1) * g
        state["slow"] = beta3_t * state["slow"] + (1 - beta3_t) * g
        state["v"] = beta2 * state["v"] + (1 - beta2) * g * g
        denom = state["v"].sqrt() / math.sqrt(1 - beta2**t) + eps
        update = (state["fast"] / (1 - beta1**t) + alpha_t * state["slow"]) / denom + weight_decay * p
        p -= lr * update


class _PaperCautiousAdamW(_PerTensorReference):
    """Cautious AdamW as the paper writes it (Liang et al. 2024, C-AdamW), on torch.optim.AdamW's update."""

    STATE = dict(step=0, m=torch.zeros_like, v=torch.zeros_like)

    @staticmethod
    def update_tensor(p, state, *, lr, beta1, beta2, eps, weight_decay):
        state["step"] += 1
        t, g = state["step"], p.grad
        p *= 1 - lr * weight_decay
        state["m"] = beta1 * state["m"] + (1 - beta1) * g
        state["v"] = beta2 * state["v"] + (1 - beta2) * g * g
        u = (state["m"] / (1 - beta1**t)) / ((state["v"] / (1 - beta2**t)).sqrt() + eps)
        mask = (u * g > 0).to(u.dtype)
        p -= lr * u.numel() / (mask.sum() + 1) * u * mask


class _AuthorsLaProp(_PerTensorReference):
    """LaProp as the authors' code runs it: weight decay θ ← θ - λθ, not scaled by lr, unless ``lr_decay``."""

    STATE = dict(m=torch.zeros_like, v=torch.zeros_like, lr_avg=0.0, one_avg=0.0)

    @staticmethod
    def update_tensor(p, state, *, lr, beta1, beta2, eps, weight_decay, lr_decay=False):
        g = p.grad
        state["v"] = beta2 * state["v"] + (1 - beta2) * g * g
        state["lr_avg"] = beta1 * state["lr_avg"] + (1 - beta1) * lr
        state["one_avg"] = beta2 * state["one_avg"] + (1 - beta2)  # = 1 - β2^t
        denom = (state["v"] / state["one_avg"]).sqrt() + eps
        state["m"] = beta1 * state["m"] + (1 - beta1) * lr * g / denom
        p -= lr / state["lr_avg"] * state["m"]
        p -= weight_decay * (lr if lr_decay else 1.0) * p


def _adam_mini(groups, lr, beta1, beta2, eps, weight_decay):
    """The authors' Adam_mini over our parameters, named as nn.Sequential names a plain model's (a matrix or
    larger ``<i>.weight``, a vector ``<i>.bias``). It exempts ``bias`` names from weight decay, a rule by name
    that a nameless optimizer cannot have: its per-parameter groups get the decay back."""
    params = [p for group in groups for p in group["params"]]
    named = [(f"{i}.weight" if p.dim() >= 2 else f"{i}.bias", p) for i, p in enumerate(params)]
    optimizer = adam_mini.Adam_mini(named, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
                                    verbose=False)
    for group in optimizer.param_groups:
        group["weight_decay"] = weight_decay
    return optimizer


MODERN = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8)
ADEMAMIX = dict(MODERN, beta3=0.9999, alpha=5.0)
MODERN_CASES = [
    ("lion", dict(lr=1e-3, beta1=0.9, beta2=0.99, weight_decay=0.0), {}, _betas(lion_pytorch.Lion)),
    ("lion", dict(lr=3e-3, beta1=0.95, beta2=0.98, weight_decay=1e-1), {}, _betas(lion_pytorch.Lion)),
    ("adam-mini", dict(MODERN, weight_decay=0.0), {}, _adam_mini),
    ("adam-mini", dict(lr=3e-3, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=1e-1), {}, _adam_mini),
    ("adopt", dict(lr=1e-2, beta1=0.9, beta2=0.9999, eps=1e-6, weight_decay=0.0), {}, _AuthorsADOPT),
    ("adopt", dict(lr=1e-2, beta1=0.8, beta2=0.99, eps=1e-3, weight_decay=1e-2), {}, _AuthorsADOPT),
    ("adopt", dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=1e-1), {"decouple": True},
     lambda p, **h: _AuthorsADOPT(p, decouple=True, **h)),
    ("adopt", dict(lr=1e-2, beta1=0.8, beta2=0.99, eps=1e-3, weight_decay=1e-2), {},
     _betas(lambda p, **h: pytorch_optimizer.ADOPT(p, clip_lambda=lambda step: (step - 1) ** 0.25,
                                                   foreach=False, **h))),
    ("ademamix", dict(ADEMAMIX, weight_decay=0.0, T_alpha_beta3=0.0), {}, _AuthorsAdEMAMix),
    ("ademamix", dict(ADEMAMIX, weight_decay=1e-1, T_alpha_beta3=150.0), {}, _AuthorsAdEMAMix),
    ("ademamix", dict(lr=3e-3, beta1=0.0, beta2=0.99, beta3=0.999, alpha=8.0, eps=1e-6, weight_decay=1e-2,
                      T_alpha_beta3=1000.0), {}, _AuthorsAdEMAMix),
    ("ademamix", dict(ADEMAMIX, weight_decay=1e-1, T_alpha_beta3=0.0), {},
     lambda p, beta1, beta2, beta3, T_alpha_beta3, **h: pytorch_optimizer.AdEMAMix(
         p, betas=(beta1, beta2, beta3), weight_decouple=True, foreach=False, **h)),
    ("cadamw", dict(MODERN, weight_decay=0.0), {}, _PaperCautiousAdamW),
    ("cadamw", dict(lr=3e-3, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=1e-1), {}, _PaperCautiousAdamW),
    ("laprop", dict(MODERN, eps=1e-15, weight_decay=0.0), {}, _AuthorsLaProp),
    ("laprop", dict(lr=3e-3, beta1=0.8, beta2=0.99, eps=1e-8, weight_decay=1e-3), {"fixed_decay": True},
     _AuthorsLaProp),
    ("laprop", dict(MODERN, eps=1e-15, weight_decay=1e-1), {}, lambda p, **h: _AuthorsLaProp(p, lr_decay=True, **h)),
]


@pytest.mark.parametrize("name,hparams,options,reference", MODERN_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(MODERN_CASES)])
def test_a_modern_member_matches_its_reference_every_step(name, hparams, options, reference):
    test_matches_reference_every_step(name, hparams, options, reference)


def test_adam_mini_partitions_a_plain_model_as_the_authors_package_does():
    """What adam-mini 1.1.1 does with a plain nn.Sequential (names ``0.weight``, ``0.bias``, …): one second
    moment for each weight matrix, one per element of each bias — the blocks our Adam-mini forms."""
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    twin = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    theirs = adam_mini.Adam_mini(model.named_parameters(), verbose=False)
    ours = optimizers.create("adam-mini", twin)
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    model(x).square().sum().backward()
    for p, q in zip(model.parameters(), twin):
        q.grad = p.grad.clone()
    theirs.step()
    ours.step()
    for p, q in zip(model.parameters(), twin):
        own = ours.state[q]["exp_avg_sq"]
        if p.dim() >= 2:
            assert theirs.state[p]["vmean"].numel() == 1 and own.shape == (1, 1)
            torch.testing.assert_close(own.reshape(()), theirs.state[p]["vmean"].reshape(()), rtol=1e-12, atol=0)
        else:
            assert theirs.state[p]["v"].shape == p.shape == own.shape
        torch.testing.assert_close(q, p, rtol=1e-12, atol=1e-15)
