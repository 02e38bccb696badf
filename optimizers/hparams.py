"""Hyperparameter names, domains, paper defaults and search ranges: no torch import.

Everything the study side needs to know about an optimizer (its name, summary
and hyperparameters) lives here, so that the CLI and the driver can validate
and expand study files without paying for ``import torch``. The optimizer class
itself is resolved lazily: ``spec("adam").cls`` imports ``optimizers.adam`` (and
so torch) on first use only.

Hyperparameters use canonical names (lr, beta1, beta2, eps, weight_decay,
final_lr, gamma, beta3, momentum) everywhere: study files, the results
database and the optimizer constructors.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

HPARAM_NAMES = ("lr", "beta1", "beta2", "eps", "weight_decay", "final_lr", "gamma", "beta3", "momentum",
                "momentum_decay", "alpha", "lr_decay", "initial_accumulator_value")


@dataclass(frozen=True)
class HParam:
    """One hyperparameter: its paper default, its valid domain and a sensible search range."""

    default: float
    low: float  # smallest valid value (inclusive unless open_low)
    high: float  # largest valid value (exclusive unless closed_high)
    search: tuple[float, float]
    log: bool
    open_low: bool = False
    closed_high: bool = False

    def check(self, value: float) -> str | None:
        """A sentence saying why ``value`` is invalid, or None when it is fine."""
        if not math.isfinite(value):
            return "must be a finite number"
        below = value <= self.low if self.open_low else value < self.low
        above = value > self.high if self.closed_high else value >= self.high
        if below or above:
            left = "(" if self.open_low else "["
            right = "]" if self.closed_high else ")"
            return f"must lie in {left}{self.low:g}, {self.high:g}{right}"
        return None


def _positive(default: float, search: tuple[float, float]) -> HParam:
    return HParam(default, 0.0, math.inf, search, log=True, open_low=True)


def _beta(default: float, search: tuple[float, float] = (0.0, 0.999)) -> HParam:
    return HParam(default, 0.0, 1.0, search, log=False)


def _nonnegative(default: float, search: tuple[float, float]) -> HParam:
    return HParam(default, 0.0, math.inf, search, log=True)


_EPS = _positive(1e-8, (1e-10, 1e-2))
_WEIGHT_DECAY = _nonnegative(0.0, (1e-6, 1e-1))
_FINAL_LR = _positive(0.1, (1e-3, 1.0))
_GAMMA = _positive(1e-3, (1e-4, 1e-1))


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer's metadata; ``target`` names its class as ``"module:attribute"``."""

    name: str
    target: str
    summary: str
    hparams: dict[str, HParam]

    @property
    def cls(self) -> type[torch.optim.Optimizer]:
        """The optimizer class, imported on first use (this imports torch)."""
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def defaults(self) -> dict[str, float]:
        return {name: hp.default for name, hp in self.hparams.items()}


def _adam_like(lr: float = 1e-3, **extra: HParam) -> dict[str, HParam]:
    return {"lr": _positive(lr, (1e-5, 1e-1)), "beta1": _beta(0.9), "beta2": _beta(0.999, (0.9, 0.9999)),
            "eps": _EPS, "weight_decay": _WEIGHT_DECAY, **extra}


_SPECS = [
    OptimizerSpec("adam", "optimizers.adam:Adam", "Adam (Kingma & Ba 2015), L2 weight decay", _adam_like()),
    OptimizerSpec("adamw", "optimizers.adam:AdamW", "AdamW (Loshchilov & Hutter 2019), decoupled weight decay",
                  _adam_like(weight_decay=_nonnegative(1e-2, (1e-5, 1.0)))),
    OptimizerSpec("amsgrad", "optimizers.adam:AMSGrad", "AMSGrad (Reddi et al. 2018), max over raw v", _adam_like()),
    OptimizerSpec("adamax", "optimizers.adam:Adamax", "Adamax (Kingma & Ba 2015), infinity-norm second moment",
                  _adam_like(2e-3)),
    OptimizerSpec("nadam", "optimizers.adam:NAdam", "NAdam (Dozat 2016), Nesterov momentum in Adam (torch.optim.NAdam)",
                  _adam_like(2e-3, momentum_decay=_nonnegative(4e-3, (1e-4, 1e-1)))),
    OptimizerSpec("radam", "optimizers.rectified:RAdam",
                  "RAdam (Liu et al. 2020), variance-rectified Adam (torch.optim.RAdam)", _adam_like()),
    OptimizerSpec("adabelief", "optimizers.rectified:AdaBelief",
                  "AdaBelief (Zhuang et al. 2020), belief in the gradient; rectified, decoupled decay",
                  _adam_like(eps=_positive(1e-16, (1e-16, 1e-6)))),
    OptimizerSpec("adabound", "optimizers.bounded:AdaBound",
                  "AdaBound (Luo et al. 2019), lr clipped into converging bounds",
                  _adam_like(final_lr=_FINAL_LR, gamma=_GAMMA)),
    OptimizerSpec("amsbound", "optimizers.bounded:AMSBound", "AMSBound (Luo et al. 2019), AdaBound with AMSGrad's max",
                  _adam_like(final_lr=_FINAL_LR, gamma=_GAMMA)),
    OptimizerSpec("adamod", "optimizers.bounded:AdaMod",
                  "AdaMod (Ding et al. 2019), lr capped by its own running average",
                  _adam_like(beta3=_beta(0.999, (0.9, 0.9999)))),
    OptimizerSpec("sgdm", "optimizers.baselines:SGDM", "SGD with heavy-ball momentum (torch.optim.SGD)",
                  {"lr": _positive(0.1, (1e-3, 1.0)), "momentum": _beta(0.9, (0.0, 0.99)),
                   "weight_decay": _WEIGHT_DECAY}),
    OptimizerSpec("adagrad", "optimizers.baselines:Adagrad",
                  "Adagrad (Duchi et al. 2011), accumulated squared gradients",
                  {"lr": _positive(1e-2, (1e-4, 1.0)), "eps": _positive(1e-10, (1e-10, 1e-2)),
                   "weight_decay": _WEIGHT_DECAY,
                   "lr_decay": _nonnegative(0.0, (1e-6, 1e-2)),
                   "initial_accumulator_value": _nonnegative(0.0, (1e-3, 1.0))}),
    OptimizerSpec("rmsprop", "optimizers.baselines:RMSprop", "RMSprop (Hinton 2012), torch.optim.RMSprop",
                  {"lr": _positive(1e-2, (1e-5, 1e-1)), "alpha": _beta(0.99, (0.9, 0.9999)), "eps": _EPS,
                   "weight_decay": _WEIGHT_DECAY, "momentum": _beta(0.0, (0.0, 0.99))}),
]
REGISTRY: dict[str, OptimizerSpec] = {spec.name: spec for spec in _SPECS}


class UnknownOptimizerError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def names() -> list[str]:
    return list(REGISTRY)


def spec(name: str) -> OptimizerSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownOptimizerError(f"unknown optimizer {name!r}; known: {', '.join(REGISTRY)}") from None
