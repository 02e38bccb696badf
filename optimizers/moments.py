"""Adam with other moment estimates: AdEMAMix (a second, slow first moment mixed in) and Adam-mini (one second
moment per block of parameters)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from optimizers.base import KernelOptimizer
from optimizers.hparams import declaration
from optimizers.pieces import (Hyper, add_quotient_, add_scaled_, bias_corrections, config_dims, decay_, ema_,
                               ema_square_, foreach, per_tensor, scale_, select, sqrt, sqrt_plus_eps)


def _log(x: Hyper) -> Hyper:
    return x.log() if isinstance(x, Tensor) else math.log(x)


def _half_life(beta: Hyper) -> Hyper:
    """The authors' f(β) = ln(0.5)/ln(β + 1e-8) - 1 (the 1e-8 keeps β = 0 finite)."""
    return math.log(0.5) / _log(beta + 1e-8) - 1


def ademamix_schedules(alpha: Hyper, beta1: Hyper, beta3: Hyper, warmup: Hyper, step: int) -> tuple[Hyper, Hyper]:
    """(α_t, β3_t) of AdEMAMix: α_t = α·t/T and β3_t = f⁻¹((1 - t/T)·f(β1) + (t/T)·f(β3)) while t < T, with
    f⁻¹(x) = 0.5^{1/(x+1)} (the half-life grows linearly from β1's to β3's); α and β3 from t = T on, and
    always when T = 0. T may be a population's (K,) tensor (0 in some of its configs)."""
    if not isinstance(warmup, Tensor) and not step < warmup:
        return alpha, beta3
    share = step / warmup  # inf where a tensor T is 0: those configs take the final values below
    warm_alpha = share * alpha
    warm_beta3 = 0.5 ** (1 / ((1 - share) * _half_life(beta1) + share * _half_life(beta3) + 1))
    if not isinstance(warmup, Tensor):
        return warm_alpha, warm_beta3
    warming = step < warmup
    return select(warming, warm_alpha, alpha), select(warming, warm_beta3, beta3)


class AdEMAMix(KernelOptimizer):
    r"""AdEMAMix (Pagliardini, Ablin & Grangier 2024, "The AdEMAMix Optimizer: Better, Faster, Older"), identical
    to the authors' code (apple/ml-ademamix, ``pytorch/ademamix.py``) with T_alpha_beta3 as both warm-ups.

    .. math::
        \theta &\leftarrow \theta\,(1 - lr\cdot\lambda) \quad\text{(decoupled weight decay, with lr)} \\
        m_{1,t} &= \beta_1 m_{1,t-1} + (1-\beta_1) g_t, \quad
        m_{2,t} = \beta_{3,t} m_{2,t-1} + (1-\beta_{3,t}) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        \theta_t &= \theta - lr\cdot
            \frac{m_{1,t}/(1-\beta_1^t) + \alpha_t\, m_{2,t}}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}

    The slow momentum m₂ is not bias corrected. Warm-ups over T = T_alpha_beta3 steps (T = 0: none, the
    default, since the paper sets T to the run's length, which the optimizer does not know):
    α_t = α·t/T and β_{3,t} = f⁻¹((1 - t/T) f(β1) + (t/T) f(β3)) for t < T, α and β3 from then on, with
    f(β) = ln 0.5 / ln(β + 10⁻⁸) - 1 (the half-life in steps) and f⁻¹(x) = 0.5^{1/(x+1)}: the half-life
    grows linearly. This is the authors' code, which takes separate alpha_warmup and beta3_warmup; the
    paper (and ``pytorch_optimizer.AdEMAMix``, which takes one t_alpha_beta3 as here) write β_{3,t} without
    the 10⁻⁸, a relative difference of about 10⁻⁴ in the half-life near β3 = 0.9999. Defaults: lr 1e-3,
    β = (0.9, 0.999, 0.9999), eps 1e-8, λ = 0 (the authors'); α = 5 (``pytorch_optimizer``'s and
    bitsandbytes'; the authors' code says 2, the paper's runs use 5–10).
    """

    hyperparameters = declaration("ademamix")
    elementwise = True

    buffers = ("exp_avg", "exp_avg_slow", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, beta3=0.9999, alpha=5.0, eps=1e-8,
                 weight_decay=0.0, T_alpha_beta3=0.0):
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, beta3=beta3, alpha=alpha, eps=eps,
                                      weight_decay=weight_decay, T_alpha_beta3=T_alpha_beta3))

    @staticmethod
    def kernel(params, grads, buffers, step, group):
        beta1, beta2, lr = group["beta1"], group["beta2"], group["lr"]
        alpha, beta3 = ademamix_schedules(group["alpha"], beta1, group["beta3"], group["T_alpha_beta3"], step)
        decay_(params, lr * group["weight_decay"])
        fast, slow = buffers["exp_avg"], buffers["exp_avg_slow"]
        ema_(fast, grads, beta1)
        ema_(slow, grads, beta3)
        ema_square_(buffers["exp_avg_sq"], grads, beta2)
        bc1, bc2 = bias_corrections(beta1, beta2, step)
        denom = sqrt_plus_eps(buffers["exp_avg_sq"], group["eps"], sqrt(bc2))
        mixed = foreach("div", fast, per_tensor(bc1, fast))
        add_scaled_(mixed, slow, alpha)
        add_quotient_(params, mixed, denom, -lr)


def _block_dims(dims: int, leading: int) -> tuple[int, ...]:
    """The dimensions one block of a parameter with ``dims`` dimensions spans (after ``leading`` config
    dimensions): all of its own for a matrix or larger, none (one block per element) for at most one."""
    return tuple(range(leading, dims)) if dims - leading >= 2 else ()


class AdamMini(KernelOptimizer):
    r"""Adam-mini (Zhang et al. 2024, "Adam-mini: Use Fewer Learning Rates To Gain More"), identical to the
    authors' ``adam-mini==1.1.1`` on a model whose parameter names carry none of its keywords (a plain
    ``nn.Sequential``: ``0.weight``, ``0.bias``, …).

    Blocks, for a model whose names say nothing: every parameter with two or more dimensions (a weight
    matrix, a convolution kernel) is **one block**, the whole tensor (the package's default partition, for
    names without embed/q/k/v/attn/mlp/linear/… keywords); a parameter of at most one dimension (a bias,
    a norm's scale) has **one block per element**, i.e. Adam's v (the package's treatment of ``bias``
    names). The package partitions Transformers by name instead (per head for queries and keys, per output
    row for values, projections and MLPs, per token for embeddings), which a nameless optimizer cannot.

    .. math::
        \theta &\leftarrow \theta\,(1 - lr\cdot\lambda) \quad\text{(decoupled weight decay, with lr)} \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        v_{b,t} &= \beta_2 v_{b,t-1} + (1-\beta_2)\,\tfrac{1}{|b|}\textstyle\sum_{i\in b} g_{t,i}^2
            \quad\text{(one number per block } b\text{)} \\
        \theta_{t,i} &= \theta_i - \frac{lr}{1-\beta_1^t}\,\frac{m_{t,i}}{\sqrt{v_{b(i),t}/(1-\beta_2^t)} + \epsilon}

    Where the package differs: it exempts parameters whose names contain ``bias``, ``norm`` or ``ln`` from
    weight decay (here a parameter group's weight_decay applies to all of its parameters, as in torch; put
    them in a group of their own), and a 1-D parameter without ``bias`` in its name (a LayerNorm scale
    named ``1.weight``) is one block there, one per element here. Defaults are the package's: lr 1e-3,
    β = (0.9, 0.999), eps 1e-8, λ = 0. In a population each config's slice of a parameter is its own
    block (the (K,) hyperparameters tell the kernel the first dimension indexes configs).
    """

    hyperparameters = declaration("adam-mini")

    buffers = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay))

    def initial_buffer(self, name, param, group):
        if name != "exp_avg_sq":
            return super().initial_buffer(name, param, group)
        shape = list(param.shape)
        for dim in _block_dims(param.dim(), config_dims(group)):
            shape[dim] = 1
        return torch.zeros(shape, dtype=param.dtype, device=param.device)

    @staticmethod
    def kernel(params, grads, buffers, step, group):
        beta1, beta2, lr = group["beta1"], group["beta2"], group["lr"]
        leading = config_dims(group)
        decay_(params, lr * group["weight_decay"])
        ema_(buffers["exp_avg"], grads, beta1)
        squares = foreach("mul", grads, grads)
        means = [square.mean(dim=dims, keepdim=True) if dims else square
                 for square, dims in ((s, _block_dims(s.dim(), leading)) for s in squares)]
        second = buffers["exp_avg_sq"]
        scale_(second, beta2)
        add_scaled_(second, means, 1 - beta2)
        bc1, bc2 = bias_corrections(beta1, beta2, step)
        denom = sqrt_plus_eps(second, group["eps"], sqrt(bc2))
        add_quotient_(params, buffers["exp_avg"], denom, -lr / bc1)
