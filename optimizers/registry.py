"""Build an optimizer by name (imports torch); the metadata lives in :mod:`optimizers.hparams`.

Hyperparameters use canonical names (lr, beta1, beta2, eps, weight_decay,
final_lr, gamma, beta3, momentum) everywhere: study files, the results
database and the optimizer constructors.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from optimizers.hparams import HPARAM_NAMES, REGISTRY, HParam, OptimizerSpec, UnknownOptimizerError, names, spec

__all__ = ["HPARAM_NAMES", "REGISTRY", "HParam", "OptimizerSpec", "UnknownOptimizerError", "create", "names", "spec"]


def create(name: str, params: Iterable, **hparams: float) -> torch.optim.Optimizer:
    """Build optimizer ``name`` over ``params``; unnamed hyperparameters take the paper default.

    A hyperparameter may be a tensor of shape (K,): K configurations trained at
    once on parameters that carry a leading dimension of size K.
    """
    opt = spec(name)
    unknown = sorted(set(hparams) - set(opt.hparams))
    if unknown:
        raise ValueError(f"{name} has no hyperparameter {', '.join(unknown)}; it takes {', '.join(opt.hparams)}")
    for key, value in hparams.items():  # a tensor holds one value per config
        for number in torch.as_tensor(value).flatten().tolist():
            problem = opt.hparams[key].check(float(number))
            if problem:
                raise ValueError(f"{name}: {key}={number:g} {problem}")
    return opt.cls(params, **opt.arguments({**opt.defaults(), **hparams}))
