"""Optimizers that normalise the gradient before the momentum averages it: ADOPT and LaProp."""

from __future__ import annotations

import torch

from optimizers.base import KernelOptimizer
from optimizers.hparams import declaration
from optimizers.pieces import (add_quotient_, add_scaled_, decay_, ema_, ema_square_, foreach, l2_penalty, per_tensor,
                               scale_, sqrt, sqrt_plus_eps)


class ADOPT(KernelOptimizer):
    r"""ADOPT (Taniguchi et al., NeurIPS 2024, "ADOPT: Modified Adam Can Converge with Any β2 with the Optimal
    Rate"), identical to the authors' code (iShohei220/adopt, ``src/adopt/adopt.py``) with its default clipping.

    .. math::
        g_t &\leftarrow g_t + \lambda\theta_{t-1}
              \quad\text{(L2; decouple=True: } \theta \leftarrow \theta(1 - lr\cdot\lambda)
              \text{ from } t = 2\text{)} \\
        t = 1:&\quad v_1 = g_1^2 \quad\text{(nothing else: } \theta \text{ does not move)} \\
        t \ge 2:&\quad n_t = \operatorname{clip}\!\Big(\frac{g_t}{\max(\sqrt{v_{t-1}},\, \epsilon)},\; c_t\Big),
                  \qquad c_t = (t-1)^{1/4} \\
        &\quad m_t = \beta_1 m_{t-1} + (1-\beta_1)\, n_t \quad (m_1 = 0), \qquad
              \theta_t = \theta_{t-1} - lr\cdot m_t \\
        &\quad v_t = \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2

    clip(x, c) = min(max(x, -c), c) elementwise; the second moment enters *before* it sees g_t, and eps
    bounds √v from below (it is not added). c_t = (t-1)^{1/4}: the authors' ``clip_lambda = step**0.25``
    of their 0-based step, i.e. of the updates so far (the first update clips at 1).
    ``pytorch_optimizer.ADOPT`` (4.1.0) passes the 1-based step (c_t = t^{1/4}) and also decays θ at t = 1.
    Defaults are the authors': lr 1e-3, β = (0.9, 0.9999), eps 1e-6, L2 weight decay 0.
    """

    hyperparameters = declaration("adopt")
    elementwise = True

    buffers = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.9999, eps=1e-6, weight_decay=0.0, decouple=False):
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                                      decouple=decouple))

    @staticmethod
    def kernel(params, grads, buffers, step, group):
        lr, weight_decay = group["lr"], group["weight_decay"]
        if not group["decouple"]:
            grads = l2_penalty(grads, params, weight_decay)
        second = buffers["exp_avg_sq"]
        if step == 1:
            foreach("addcmul_", second, grads, grads)
            return
        if group["decouple"]:
            decay_(params, lr * weight_decay)
        denom = foreach("sqrt", second)
        foreach("clamp_min_", denom, per_tensor(group["eps"], denom))
        normed = foreach("div", grads, denom)
        clip = (step - 1) ** 0.25
        foreach("clamp_min_", normed, -clip)
        foreach("clamp_max_", normed, clip)
        ema_(buffers["exp_avg"], normed, group["beta1"])
        add_scaled_(params, buffers["exp_avg"], -lr)
        ema_square_(second, grads, group["beta2"])


class LaProp(KernelOptimizer):
    r"""LaProp (Ziyin, Wang & Ueda 2020, "LaProp: Separating Momentum and Adaptivity in Adam"), identical to the
    authors' code (Z-T-WANG/LaProp-Optimizer, ``laprop.py``) but for the two points below.

    .. math::
        v_t &= \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2 \\
        \ell_t &= \beta_1 \ell_{t-1} + (1-\beta_1)\, lr_t \qquad (\ell_0 = 0\text{: the learning rates' average}) \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, lr_t\, \frac{g_t}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon} \\
        \theta_t &= \theta_{t-1} - \frac{lr_t}{\ell_t}\, m_t
              \quad\Big(\text{a constant lr: } \frac{m_t/lr}{1-\beta_1^t}\text{, Adam's bias correction}\Big) \\
        \theta_t &\leftarrow \theta_t\,(1 - lr_t\cdot\lambda)
              \quad\text{(after the update; fixed\_decay: } \theta_t(1-\lambda)\text{)}

    The momentum averages lr-scaled normalised gradients and its bias correction follows the lr's history,
    so a schedule acts on each step as it is taken. ℓ is kept per parameter (a (K,…) tensor in a
    population). Where the authors' code differs: (1) its weight decay is θ ← θ(1 - λ), not scaled by lr
    (``fixed_decay=True`` gives it; the default scales it, as ``pytorch_optimizer.LaProp``'s default and
    AdamW do, so that an lr scheduled to 0 stops every update); (2) at lr_t = 0 its guard sets the step size
    to 1, so θ keeps moving by m_t; here lr_t/ℓ_t = 0 stops it (and 0 while ℓ_t = 0, when m_t = 0 too).
    Defaults are the authors': lr 4e-4, β = (0.9, 0.999), eps 1e-15, λ = 0.
    """

    hyperparameters = declaration("laprop")

    buffers = ("exp_avg", "exp_avg_sq", "exp_avg_lr")

    def __init__(self, params, lr=4e-4, beta1=0.9, beta2=0.999, eps=1e-15, weight_decay=0.0, fixed_decay=False):
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                                      fixed_decay=fixed_decay))

    def initial_buffer(self, name, param, group):
        if name != "exp_avg_lr":
            return super().initial_buffer(name, param, group)
        # one average per config: () for numbers, (K, 1, …) against a population's (K, …) parameter
        configs = torch.broadcast_shapes(*(h.shape for h in (group["lr"], group["beta1"])
                                           if isinstance(h, torch.Tensor)))
        shape = configs + (1,) * (param.dim() - len(configs)) if configs else ()
        return torch.zeros(shape, dtype=param.dtype, device=param.device)

    @staticmethod
    def kernel(params, grads, buffers, step, group):
        beta1, beta2, lr = group["beta1"], group["beta2"], group["lr"]
        second, momentum, lr_avg = buffers["exp_avg_sq"], buffers["exp_avg"], buffers["exp_avg_lr"]
        ema_square_(second, grads, beta2)
        scale_(lr_avg, beta1)
        foreach("add_", lr_avg, per_tensor((1 - beta1) * lr, lr_avg))
        denom = sqrt_plus_eps(second, group["eps"], sqrt(1 - beta2**step))
        scale_(momentum, beta1)
        add_quotient_(momentum, grads, denom, (1 - beta1) * lr)
        rates = per_tensor(lr, lr_avg)
        rates = rates if isinstance(rates, list) else [rates] * len(lr_avg)
        sizes = [torch.where(avg > 0, rate / avg, 0.0) for avg, rate in zip(lr_avg, rates)]  # lr_t / ℓ_t
        foreach("sub_", params, foreach("mul", momentum, sizes))
        decay_(params, group["weight_decay"] if group["fixed_decay"] else lr * group["weight_decay"])
