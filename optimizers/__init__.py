"""The Adam family as ``torch.optim.Optimizer`` classes over functional multi-tensor kernels.

``import optimizers`` is torch-free: the hyperparameter metadata below is
imported eagerly, while ``create`` and the optimizer classes are imported on
first access (PEP 562), so the CLI and the driver never pay for ``import torch``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from optimizers.hparams import (HPARAM_NAMES, REGISTRY, HParam, OptimizerDeclarationError, OptimizerSpec,
                                UnknownOptimizerError, describe, names, register, spec)

if TYPE_CHECKING:
    from optimizers.adam import Adam, Adamax, AdamW, AMSGrad, NAdam
    from optimizers.base import KernelOptimizer
    from optimizers.baselines import SGDM, Adagrad, RMSprop
    from optimizers.bounded import AdaBound, AdaMod, AMSBound
    from optimizers.moments import AdamMini, AdEMAMix
    from optimizers.normalized import ADOPT, LaProp
    from optimizers.rectified import AdaBelief, RAdam
    from optimizers.schedulefree import AdamWScheduleFree
    from optimizers.sign import CautiousAdamW, Lion
    from optimizers.registry import create

# Attribute → submodule that defines it; importing any of these imports torch.
_LAZY = {
    **dict.fromkeys(("Adam", "AdamW", "AMSGrad", "Adamax", "NAdam"), "adam"),
    **dict.fromkeys(("SGDM", "Adagrad", "RMSprop"), "baselines"),
    **dict.fromkeys(("AdaBound", "AMSBound", "AdaMod"), "bounded"),
    **dict.fromkeys(("RAdam", "AdaBelief"), "rectified"),
    **dict.fromkeys(("ADOPT", "LaProp"), "normalized"),
    **dict.fromkeys(("AdEMAMix", "AdamMini"), "moments"),
    **dict.fromkeys(("Lion", "CautiousAdamW"), "sign"),
    "AdamWScheduleFree": "schedulefree",
    "KernelOptimizer": "base",
    "create": "registry",
}

__all__ = ["Adam", "AdamW", "AMSGrad", "Adamax", "NAdam", "RAdam", "AdaBelief", "AdaBound", "AMSBound", "AdaMod",
           "SGDM", "Adagrad", "RMSprop", "AdamWScheduleFree",
           "ADOPT", "AdEMAMix", "CautiousAdamW", "AdamMini", "Lion", "LaProp",
           "HPARAM_NAMES", "REGISTRY", "HParam", "OptimizerDeclarationError", "OptimizerSpec", "UnknownOptimizerError",
           "describe", "register",
           "create", "names", "spec"]


def __getattr__(name: str) -> Any:
    submodule = _LAZY.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{submodule}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
