"""Hyperparameter names, domains, paper defaults and search ranges: no torch import.

Everything the study side needs to know about an optimizer (its name, summary
and hyperparameters) lives here, so that the CLI and the driver can validate
and expand study files without paying for ``import torch``. The optimizer class
itself is resolved lazily: ``spec("adam").cls`` imports ``optimizers.adam`` (and
so torch) on first use only.

One way to describe an optimizer: :func:`describe` reads any
``torch.optim.Optimizer`` subclass — its hyperparameters are the constructor's
keyword arguments with a numeric default, their domains come from the class's
optional ``hyperparameters`` declaration. The registered optimizers are described
exactly so (a test checks that each table entry below equals ``describe`` of its
class; the table only lets the CLI answer without importing torch), and a study
file's own optimizers (``study.plugins``) are added with :func:`register`.

Hyperparameters use canonical names (lr, beta1, beta2, eps, weight_decay,
final_lr, gamma, beta3, momentum) everywhere: study files, the results
database and the optimizer constructors.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

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

    def declaration(self) -> dict[str, Any]:
        """Its domain as a class's ``hyperparameters`` declaration gives it (everything but the default)."""
        return {"low": self.low, "high": self.high, "search": self.search, "log": self.log,
                "open_low": self.open_low, "closed_high": self.closed_high}

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


def _linear(default: float, search: tuple[float, float]) -> HParam:
    """A non-negative hyperparameter searched on a linear scale (a count of steps, a power)."""
    return HParam(default, 0.0, math.inf, search, log=False)


_EPS = _positive(1e-8, (1e-10, 1e-2))
_WEIGHT_DECAY = _nonnegative(0.0, (1e-6, 1e-1))
_FINAL_LR = _positive(0.1, (1e-3, 1.0))
_GAMMA = _positive(1e-3, (1e-4, 1e-1))


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer's metadata; ``target`` names its class as ``"module:attribute"``.

    ``packed``: constructor arguments that take a tuple (torch's ``betas``), each with the
    hyperparameters it is made of (``beta1``, ``beta2``). ``batched``: the class implements the
    batched-kernel contract of :mod:`optimizers.base`, so a population trains in one pass.
    ``load``: how to get the class when ``target`` is not an importable module (a study's file).
    """

    name: str
    target: str
    summary: str
    hparams: dict[str, HParam]
    packed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    batched: bool = True
    load: Callable[[], type] | None = field(default=None, compare=False, repr=False)

    @property
    def cls(self) -> type[torch.optim.Optimizer]:
        """The optimizer class, imported on first use (this imports torch)."""
        if self.load is not None:
            return self.load()
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def defaults(self) -> dict[str, float]:
        return {name: hp.default for name, hp in self.hparams.items()}

    def arguments(self, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor keyword arguments for ``hparams`` (hyperparameter names): packed ones become tuples."""
        kwargs = dict(hparams)
        for argument, parts in self.packed.items():
            if any(part in kwargs for part in parts):
                kwargs[argument] = tuple(kwargs.pop(part, self.hparams[part].default) for part in parts)
        return kwargs


class OptimizerDeclarationError(ValueError):
    """A class that cannot be described as an optimizer (the message says why and what to change)."""


# Domains assumed for a hyperparameter its class does not declare, by name: what the name means in
# every optimizer paper. Any other undeclared hyperparameter may take any finite value.
_CONVENTIONS: list[tuple[str, Callable[[float], HParam]]] = [
    (r"lr|learning_rate|final_lr", lambda d: _positive(d, (d / 100, d * 10))),
    (r"eps|epsilon", lambda d: _positive(d, (d / 100, d * 100))),
    (r"weight_decay|lr_decay|initial_accumulator_value", lambda d: _nonnegative(d, (1e-6, 1e-1))),
    (r"beta\d*|momentum|alpha|rho|dampening", lambda d: _beta(d, (0.0, 0.999))),
]


def _conventional(name: str, default: float) -> HParam:
    for pattern, domain in _CONVENTIONS:
        if re.fullmatch(pattern, name):
            hp = domain(default)
            if hp.check(default) is None:
                return hp
    return HParam(default, -math.inf, math.inf, (default, default), log=False)


def _part_names(argument: str, count: int) -> tuple[str, ...]:
    stem = argument[:-1] if argument.endswith("s") else argument  # betas -> beta1, beta2
    return tuple(f"{stem}{i}" for i in range(1, count + 1))


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def describe(cls: type, name: str, target: str) -> OptimizerSpec:
    """Describe optimizer class ``cls`` (any ``torch.optim.Optimizer`` subclass) as study file ``name``.

    Its hyperparameters are the constructor's arguments after ``params`` whose default is a
    number (a tuple of numbers such as ``betas=(0.9, 0.999)`` gives ``beta1`` and ``beta2``);
    flags, strings and ``None`` keep their defaults. The class may declare domains in a class
    attribute ``hyperparameters = {"lr": {"low": 0, "open_low": True, "log": True, "search": (1e-5, 1e-1)}}``
    (keys: low, high, search, log, open_low, closed_high; any left out keep the convention for that name:
    lr and eps positive on a log scale, weight_decay non-negative, betas/momentum in [0, 1), anything
    else any finite number). Raises :class:`OptimizerDeclarationError` naming the problem.
    """
    try:
        signature = inspect.signature(cls.__init__)
    except (TypeError, ValueError) as exc:
        raise OptimizerDeclarationError(f"cannot read the constructor of {cls.__name__}: {exc}") from None
    arguments = [p for p in signature.parameters.values()
                 if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)][1:]  # self
    if not arguments or arguments[0].name != "params":
        raise OptimizerDeclarationError(f"{cls.__name__}'s constructor must take `params` first, as "
                                        "torch.optim.Optimizer subclasses do")
    declared = getattr(cls, "hyperparameters", None) or {}
    if not isinstance(declared, Mapping):
        raise OptimizerDeclarationError(f"{cls.__name__}.hyperparameters must be a dict of name -> "
                                        "{low, high, search, log, open_low, closed_high}")
    hparams: dict[str, HParam] = {}
    packed: dict[str, tuple[str, ...]] = {}
    for argument in arguments[1:]:
        default = argument.default
        if default is inspect.Parameter.empty:
            raise OptimizerDeclarationError(f"{cls.__name__}'s hyperparameter `{argument.name}` has no default; "
                                            "give it one in the constructor (a study file may leave it out)")
        if isinstance(default, tuple) and default and all(_is_real(v) for v in default):
            parts = _part_names(argument.name, len(default))
            packed[argument.name] = parts
            values = dict(zip(parts, default))
        elif _is_real(default):
            values = {argument.name: default}
        else:
            continue  # a flag or a choice: fixed at its default
        for key, value in values.items():
            hparams[key] = _declared(cls.__name__, key, float(value), declared.get(key))
    unknown = sorted(set(declared) - set(hparams))
    if unknown:
        raise OptimizerDeclarationError(f"{cls.__name__}.hyperparameters declares {', '.join(unknown)}, which its "
                                        f"constructor does not take (it takes {', '.join(hparams) or 'none'})")
    batched = any(base.__module__ == "optimizers.base" and base.__name__ == "KernelOptimizer" for base in cls.__mro__)
    summary = (inspect.getdoc(cls) or cls.__name__).strip().splitlines()[0]
    return OptimizerSpec(name, target, summary, hparams, packed, batched)


def _declared(owner: str, name: str, default: float, declaration: Any) -> HParam:
    base = _conventional(name, default)
    if declaration is None:
        return base
    if isinstance(declaration, HParam):
        declaration = declaration.declaration()
    if not isinstance(declaration, Mapping) or set(declaration) - set(base.declaration()):
        raise OptimizerDeclarationError(f"{owner}.hyperparameters[{name!r}] must be a dict with keys among "
                                        "low, high, search, log, open_low, closed_high")
    try:
        hp = replace(base, **{key: tuple(float(v) for v in value) if key == "search" else value
                              for key, value in declaration.items()})
        if "search" not in declaration and (hp.check(hp.search[0]) or hp.check(hp.search[1])):
            hp = replace(hp, search=(default, default))
    except (TypeError, ValueError):
        raise OptimizerDeclarationError(f"{owner}.hyperparameters[{name!r}]: search must be (low, high)") from None
    problem = hp.check(default)
    if problem:
        raise OptimizerDeclarationError(f"{owner}: the default {name}={default:g} {problem} as declared")
    return hp


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
    OptimizerSpec("adamw-schedulefree", "optimizers.schedulefree:AdamWScheduleFree",
                  "Schedule-Free AdamW (Defazio et al. 2024), evaluated at the average x (train()/eval())",
                  _adam_like(2.5e-3, beta1=HParam(0.9, 0.0, 1.0, (0.5, 0.99), log=False, open_low=True),
                             warmup_steps=_linear(0.0, (0.0, 2000.0)), r=_linear(0.0, (0.0, 4.0)),
                             weight_lr_power=_linear(2.0, (0.0, 4.0)))),
    OptimizerSpec("adopt", "optimizers.normalized:ADOPT",
                  "ADOPT (Taniguchi et al. 2024), momentum of clipped g/sqrt(v_{t-1})",
                  _adam_like(beta2=_beta(0.9999, (0.9, 0.99999)), eps=_positive(1e-6, (1e-10, 1e-2)))),
    OptimizerSpec("ademamix", "optimizers.moments:AdEMAMix",
                  "AdEMAMix (Pagliardini et al. 2024), a slow momentum mixed into Adam's",
                  _adam_like(beta3=_beta(0.9999, (0.99, 0.99999)),
                             alpha=HParam(5.0, 0.0, math.inf, (1.0, 20.0), log=True),
                             T_alpha_beta3=HParam(0.0, 0.0, math.inf, (1e2, 1e6), log=True))),
    OptimizerSpec("cadamw", "optimizers.sign:CautiousAdamW",
                  "Cautious AdamW (Liang et al. 2024), update masked where it disagrees with g",
                  _adam_like(weight_decay=_nonnegative(1e-2, (1e-5, 1.0)))),
    OptimizerSpec("adam-mini", "optimizers.moments:AdamMini",
                  "Adam-mini (Zhang et al. 2024), one v per weight tensor, per element for biases",
                  _adam_like(weight_decay=_nonnegative(0.0, (1e-5, 1.0)))),
    OptimizerSpec("lion", "optimizers.sign:Lion", "Lion (Chen et al. 2023), sign of an interpolated momentum",
                  {"lr": _positive(1e-4, (1e-6, 1e-2)), "beta1": _beta(0.9), "beta2": _beta(0.99, (0.9, 0.9999)),
                   "weight_decay": _nonnegative(0.0, (1e-4, 10.0))}),
    OptimizerSpec("laprop", "optimizers.normalized:LaProp",
                  "LaProp (Ziyin et al. 2020), momentum of g/sqrt(v), lr-averaged bias correction",
                  _adam_like(4e-4, eps=_positive(1e-15, (1e-16, 1e-6)))),
]
REGISTRY: dict[str, OptimizerSpec] = {spec.name: spec for spec in _SPECS}


class UnknownOptimizerError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def declaration(name: str) -> dict[str, dict[str, Any]]:
    """Registered optimizer ``name``'s domains as its class declares them (``hyperparameters``)."""
    return {key: hp.declaration() for key, hp in REGISTRY[name].hparams.items()}


def names() -> list[str]:
    return list(REGISTRY)


_PLUGINS: dict[str, OptimizerSpec] = {}  # a study file's own optimizers, by the name the file gives them


def register(plugin: OptimizerSpec) -> None:
    """Make ``plugin`` known to :func:`spec` (and so to ``create``) under ``plugin.name`` in this process."""
    if plugin.name in REGISTRY:
        raise ValueError(f"{plugin.name!r} is a registered optimizer's name")
    _PLUGINS[plugin.name] = plugin


def spec(name: str) -> OptimizerSpec:
    try:
        return REGISTRY.get(name) or _PLUGINS[name]
    except KeyError:
        raise UnknownOptimizerError(f"unknown optimizer {name!r}; known: {', '.join(REGISTRY)}, or your own class as "
                                    "\"package.module:Class\" or \"./file.py:Class\"") from None
