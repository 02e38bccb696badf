"""Updates steered by signs: Lion (the sign of an interpolated momentum) and Cautious AdamW (AdamW's update kept
only where its sign agrees with the gradient's)."""

from __future__ import annotations

from optimizers.base import KernelOptimizer
from optimizers.hparams import declaration
from optimizers.pieces import (adam_moments_, add_scaled_, bias_corrections, cautious_, config_dims, decay_, foreach,
                               per_tensor, scale_, sqrt, sqrt_plus_eps)


class Lion(KernelOptimizer):
    r"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), identical to ``lion-pytorch==0.2.5``.

    .. math::
        \theta &\leftarrow \theta\,(1 - lr\cdot\lambda) \quad\text{(decoupled weight decay, with lr)} \\
        c_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t \\
        \theta_t &= \theta - lr\cdot\operatorname{sign}(c_t) \\
        m_t &= \beta_2 m_{t-1} + (1-\beta_2)\, g_t, \qquad m_0 = 0

    sign(0) = 0 (an element whose c_t is exactly zero does not move). No bias correction and no eps: every
    element moves by exactly lr (plus the decay), so lr is typically 3–10× smaller than AdamW's and λ as
    much larger (the paper's advice); the paper's defaults are lr 1e-4, β = (0.9, 0.99), λ = 0.
    """

    hyperparameters = declaration("lion")
    elementwise = True

    buffers = ("exp_avg",)

    def __init__(self, params, lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay))

    @staticmethod
    def kernel(params, grads, buffers, step, group):
        beta1, beta2, lr = group["beta1"], group["beta2"], group["lr"]
        decay_(params, lr * group["weight_decay"])
        momentum = buffers["exp_avg"]
        direction = foreach("mul", momentum, per_tensor(beta1, momentum))  # β1·m + (1-β1)·g, as lion-pytorch
        add_scaled_(direction, grads, 1 - beta1)
        foreach("sign_", direction)
        add_scaled_(params, direction, -lr)
        scale_(momentum, beta2)
        add_scaled_(momentum, grads, 1 - beta2)


class CautiousAdamW(KernelOptimizer):
    r"""Cautious AdamW (Liang, Chen, Liu & Liu 2024, "Cautious Optimizers: Improving Training with One Line of
    Code"): :class:`~optimizers.adam.AdamW` whose update is masked where its sign disagrees with the gradient.

    .. math::
        \theta &\leftarrow \theta\,(1 - lr\cdot\lambda) \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        u_t &= \frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}, \qquad
        \phi_t = \mathbb{1}[u_t \odot g_t > 0] \\
        \theta_t &= \theta - lr\cdot\frac{d}{\lVert\phi_t\rVert_0 + 1}\; u_t \odot \phi_t

    d and ‖φ_t‖₀ (the elements of the parameter tensor, and those its mask keeps) are counted per tensor:
    the rescaling keeps the update's average size when the mask drops elements. This is the paper's
    algorithm and the rescaling of the authors' original code (kyleliang919/C-Optim; their current code
    divides by max(mean φ, 1e-3) instead, a later change it credits to timm). Everything else is torch's
    AdamW, defaults included (eps 1e-8, λ = 1e-2), so ``cadamw`` differs from ``adamw`` by the mask alone;
    the authors' code builds on Hugging Face's AdamW (eps added to √v before the bias correction, eps 1e-6,
    λ = 0).
    """

    hyperparameters = declaration("cadamw")

    buffers = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2):
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay))

    @staticmethod
    def kernel(params, grads, buffers, step, group):
        beta1, beta2, lr = group["beta1"], group["beta2"], group["lr"]
        decay_(params, lr * group["weight_decay"])
        adam_moments_(buffers, grads, beta1, beta2)
        bc1, bc2 = bias_corrections(beta1, beta2, step)
        denom = sqrt_plus_eps(buffers["exp_avg_sq"], group["eps"], sqrt(bc2))
        updates = foreach("div", buffers["exp_avg"], denom)  # u_t·(1-β1^t): the sign is u_t's
        cautious_(updates, grads, config_dims(group))
        add_scaled_(params, updates, -lr / bc1)
