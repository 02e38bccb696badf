"""Composable multi-tensor pieces the optimizer kernels are built from.

Each piece works on lists of tensors with ``torch._foreach_*`` ops (one kernel
launch per list on CUDA, a tight loop on CPU). In-place pieces end in ``_``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def l2_penalty(grads: list[Tensor], params: list[Tensor], weight_decay: float) -> list[Tensor]:
    """Coupled (L2) weight decay: g + wd·θ, out of place so ``.grad`` is untouched."""
    return torch._foreach_add(grads, params, alpha=weight_decay) if weight_decay else grads


def decay_(params: list[Tensor], shrink: float) -> None:
    """Decoupled weight decay: θ ← θ·(1 - shrink), applied before the update."""
    if shrink:
        torch._foreach_mul_(params, 1.0 - shrink)


def ema_(averages: list[Tensor], values: list[Tensor], beta: float) -> None:
    """Exponential moving average: a ← β·a + (1-β)·x."""
    torch._foreach_lerp_(averages, values, 1.0 - beta)


def ema_square_(averages: list[Tensor], values: list[Tensor], beta: float) -> None:
    """Second moment: v ← β·v + (1-β)·x²."""
    torch._foreach_mul_(averages, beta)
    torch._foreach_addcmul_(averages, values, values, value=1.0 - beta)


def running_max_(maxima: list[Tensor], values: list[Tensor]) -> list[Tensor]:
    """AMSGrad's running maximum over the raw (uncorrected) second moment."""
    torch._foreach_maximum_(maxima, values)
    return maxima


def bias_corrections(beta1: float, beta2: float, step: int) -> tuple[float, float]:
    """(1 - β1^t, 1 - β2^t)."""
    return 1.0 - beta1**step, 1.0 - beta2**step


def sqrt_plus_eps(second_moments: list[Tensor], eps: float, scale: float = 1.0) -> list[Tensor]:
    """Denominator sqrt(v)/scale + eps (scale = sqrt(1-β2^t) gives Adam's sqrt(v̂) + eps)."""
    denom = torch._foreach_sqrt(second_moments)
    if scale != 1.0:
        torch._foreach_div_(denom, scale)
    torch._foreach_add_(denom, eps)
    return denom


def elementwise_rates(denominators: list[Tensor], step_size: float) -> list[Tensor]:
    """Per-element learning rates η = step_size / denominator (AdaBound, AdaMod)."""
    rates = torch._foreach_reciprocal(denominators)
    torch._foreach_mul_(rates, step_size)
    return rates


def adam_step_size(lr: float, beta1: float, beta2: float, step: int) -> float:
    """lr·sqrt(1-β2^t)/(1-β1^t): the bias corrections folded into one scalar."""
    bc1, bc2 = bias_corrections(beta1, beta2, step)
    return lr * math.sqrt(bc2) / bc1
