"""SGD with momentum, the baseline every adaptive method is compared with."""

from __future__ import annotations

import torch

from .base import KernelOptimizer
from .pieces import l2_penalty


class SGDM(KernelOptimizer):
    r"""SGD with (heavy-ball or Nesterov) momentum, identical to ``torch.optim.SGD`` (dampening 0).

    .. math::
        g_t &\leftarrow g_t + \lambda\theta_{t-1} \quad\text{(L2)} \\
        b_t &= \mu b_{t-1} + g_t \quad (b_0 = 0, \text{ so } b_1 = g_1 \text{ as torch's clone}) \\
        \theta_t &= \theta_{t-1} - lr\,(g_t + \mu b_t \text{ if nesterov else } b_t)
    """

    buffers = ("momentum_buffer",)

    def __init__(self, params, lr=0.1, momentum=0.9, weight_decay=0.0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov))

    @staticmethod
    def kernel(params, grads, buffers, step, group):
        grads = l2_penalty(grads, params, group["weight_decay"])
        momentum, buf = group["momentum"], buffers["momentum_buffer"]
        torch._foreach_mul_(buf, momentum)
        torch._foreach_add_(buf, grads)
        direction = torch._foreach_add(grads, buf, alpha=momentum) if group["nesterov"] else buf
        torch._foreach_add_(params, direction, alpha=-group["lr"])
