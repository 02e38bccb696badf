"""Adam, AdamW and AMSGrad with torch.optim's exact semantics."""

from __future__ import annotations

import torch

from .base import KernelOptimizer
from .pieces import bias_corrections, decay_, ema_, ema_square_, l2_penalty, running_max_, sqrt_plus_eps


class Adam(KernelOptimizer):
    r"""Adam (Kingma & Ba, 2015, Algorithm 1), identical to ``torch.optim.Adam``.

    .. math::
        g_t &\leftarrow g_t + \lambda\theta_{t-1}                \quad\text{(L2, if weight\_decay)} \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        v_t &= \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        \hat v_t &= v_t \text{, or } \max(\hat v_{t-1}, v_t) \text{ with amsgrad (max over the raw } v) \\
        \theta_t &= \theta_{t-1} - \frac{lr}{1-\beta_1^t}\,
                    \frac{m_t}{\sqrt{\hat v_t}/\sqrt{1-\beta_2^t} + \epsilon}

    eps is added to the bias-corrected sqrt(v̂), not inside the square root.
    With ``decoupled=True`` the L2 term is replaced by AdamW's θ ← θ(1 - lr·λ)
    before the update (see :class:`AdamW`).
    """

    buffers = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                 amsgrad=False, decoupled=False):
        defaults = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, decoupled=decoupled)
        super().__init__(params, defaults)

    @staticmethod
    def kernel(params, grads, buffers, step, group):
        lr, beta1, beta2, wd = group["lr"], group["beta1"], group["beta2"], group["weight_decay"]
        if group["decoupled"]:
            decay_(params, lr * wd)
        else:
            grads = l2_penalty(grads, params, wd)
        ema_(buffers["exp_avg"], grads, beta1)
        ema_square_(buffers["exp_avg_sq"], grads, beta2)
        second = buffers["exp_avg_sq"]
        if group["amsgrad"]:
            second = running_max_(buffers["max_exp_avg_sq"], second)
        bc1, bc2 = bias_corrections(beta1, beta2, step)
        denom = sqrt_plus_eps(second, group["eps"], scale=bc2**0.5)
        torch._foreach_addcdiv_(params, buffers["exp_avg"], denom, value=-lr / bc1)

    def buffer_names(self, group):
        return self.buffers + (("max_exp_avg_sq",) if group["amsgrad"] else ())


class AdamW(Adam):
    r"""AdamW (Loshchilov & Hutter, 2019), identical to ``torch.optim.AdamW``.

    Adam without the L2 term; instead, before the Adam update,
    θ ← θ·(1 - lr·weight_decay). As in torch the decay is coupled to the
    *scheduled* lr (the paper scales it by the schedule multiplier only).
    Default weight_decay 1e-2 as in torch.
    """

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2,
                 amsgrad=False):
        super().__init__(params, lr, beta1, beta2, eps, weight_decay, amsgrad=amsgrad, decoupled=True)


class AMSGrad(Adam):
    r"""AMSGrad (Reddi, Kale & Kumar, 2018) as in ``torch.optim.Adam(amsgrad=True)``.

    The running maximum is taken over the *raw* second moment v, then bias
    corrected: denominator sqrt(max_s v_s)/sqrt(1-β2^t) + eps. (optax maxes
    the bias-corrected v̂ instead — a different algorithm.)
    """

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr, beta1, beta2, eps, weight_decay, amsgrad=True)
