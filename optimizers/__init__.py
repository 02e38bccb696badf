"""The Adam family as ``torch.optim.Optimizer`` classes over functional multi-tensor kernels."""

from .adam import Adam, Adamax, AdamW, AMSGrad, NAdam
from .baselines import SGDM, Adagrad, RMSprop
from .bounded import AdaBound, AdaMod, AMSBound
from .rectified import AdaBelief, RAdam
from .registry import HPARAM_NAMES, REGISTRY, HParam, OptimizerSpec, create, names, spec

__all__ = ["Adam", "AdamW", "AMSGrad", "Adamax", "NAdam", "RAdam", "AdaBelief", "AdaBound", "AMSBound", "AdaMod",
           "SGDM", "Adagrad", "RMSprop", "HPARAM_NAMES", "REGISTRY", "HParam", "OptimizerSpec", "create", "names",
           "spec"]
