"""The Adam family as ``torch.optim.Optimizer`` classes over functional multi-tensor kernels."""

from .adam import Adam, AdamW, AMSGrad
from .bounded import AdaBound, AdaMod, AMSBound
from .registry import HPARAM_NAMES, REGISTRY, HParam, OptimizerSpec, create, names, spec
from .sgd import SGDM

__all__ = ["Adam", "AdamW", "AMSGrad", "AdaBound", "AMSBound", "AdaMod", "SGDM", "HPARAM_NAMES",
           "REGISTRY", "HParam", "OptimizerSpec", "create", "names", "spec"]
