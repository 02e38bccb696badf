"""Optimizers with RAdam's variance rectification: RAdam and AdaBelief."""

from __future__ import annotations


from optimizers.adam import decay_or_penalty
from optimizers.base import KernelOptimizer
from optimizers.hparams import declaration
from optimizers.pieces import (adam_moments_, add_quotient_, add_scaled_, bias_corrections, decay_, ema_, ema_square_,
                               foreach, l2_penalty, per_tensor, rectification, running_max_, select, sqrt,
                               sqrt_plus_eps)


def _rectified_update_(params, exp_avg, denom, lr, beta1, beta2, step, rectified, r_t, early_weight):
    """θ -= lr/(1-β1^t)·m·sqrt(1-β2^t)·r_t/denom where ``rectified``,
    else θ -= early_weight·lr/(1-β1^t)·m (1: plain momentum SGD, 0: no step)."""
    bc1, bc2 = bias_corrections(beta1, beta2, step)
    add_quotient_(params, exp_avg, denom, -lr / bc1 * select(rectified, r_t * sqrt(bc2), 0.0))
    add_scaled_(params, exp_avg, -lr / bc1 * select(rectified, 0.0, early_weight))


class RAdam(KernelOptimizer):
    r"""RAdam (Liu et al., ICLR 2020), identical to ``torch.optim.RAdam``.

    .. math::
        m_t, v_t &\text{ as in Adam (L2, or decoupled θ ← θ(1 - lr·λ))} \\
        \rho_\infty &= \tfrac{2}{1-\beta_2} - 1, \quad
        \rho_t = \rho_\infty - \tfrac{2t\beta_2^t}{1-\beta_2^t}, \quad
        r_t = \sqrt{\tfrac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}} \\
        \theta_t &= \theta_{t-1} - \frac{lr}{1-\beta_1^t} m_t \cdot
            \begin{cases} r_t\,\sqrt{1-\beta_2^t}/(\sqrt{v_t} + \epsilon) & \rho_t > 5 \\ 1 & \text{otherwise} \end{cases}

    eps is added to sqrt of the *uncorrected* v.
    """

    hyperparameters = declaration("radam")
    elementwise = True

    buffers = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                 decoupled_weight_decay=False):
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                                      decoupled_weight_decay=decoupled_weight_decay))

    @staticmethod
    def kernel(params, grads, buffers, step, group):
        lr, beta1, beta2 = group["lr"], group["beta1"], group["beta2"]
        grads = decay_or_penalty(params, grads, group, lr * group["weight_decay"])
        adam_moments_(buffers, grads, beta1, beta2)
        denom = sqrt_plus_eps(buffers["exp_avg_sq"], group["eps"])
        rho_t, r_t = rectification(beta2, step)
        _rectified_update_(params, buffers["exp_avg"], denom, lr, beta1, beta2, step, rho_t > 5, r_t, 1.0)


class AdaBelief(KernelOptimizer):
    r"""AdaBelief (Zhuang et al., NeurIPS 2020), identical to the authors' ``adabelief-pytorch==0.2.1``.

    .. math::
        \theta &\leftarrow \theta(1 - lr\cdot\lambda) \text{ (default; } \theta(1-\lambda)
            \text{ with fixed\_decay; L2 } g \mathrel{+}= \lambda\theta \text{ without weight\_decouple)} \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        s_t &= \beta_2 s_{t-1} + (1-\beta_2)(g_t - m_t)^2 + \epsilon \\
        \theta_t &= \theta_{t-1} - \frac{lr}{1-\beta_1^t}\,\frac{m_t}{\sqrt{\hat s_t}/\sqrt{1-\beta_2^t} + \epsilon}
            \quad\text{(rectify=False; } \hat s_t = \max_{\tau\le t} s_\tau \text{ with amsgrad)}

    With ``rectify=True`` (the authors' default) the update is RAdam's: once
    ρ_t ≥ 5, θ -= lr/(1-β1^t)·r_t·sqrt(1-β2^t)·m_t/(sqrt(s_t) + ε); before that
    plain momentum SGD, θ -= lr/(1-β1^t)·m_t (``degenerated_to_sgd``, else no step).

    Exactly as in the authors' code: ε is added to s *in place*, so it
    accumulates into the state; ε also appears outside the square root;
    the default ε is 1e-16; and the rectified update uses s_t, not the
    AMSGrad maximum.
    """

    hyperparameters = declaration("adabelief")
    elementwise = True

    buffers = ("exp_avg", "exp_avg_var")

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-16, weight_decay=0.0, amsgrad=False,
                 weight_decouple=True, fixed_decay=False, rectify=True, degenerated_to_sgd=True):
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, weight_decouple=weight_decouple, fixed_decay=fixed_decay,
                                      rectify=rectify, degenerated_to_sgd=degenerated_to_sgd))

    def buffer_names(self, group):
        return self.buffers + (("max_exp_avg_var",) if group["amsgrad"] else ())

    @staticmethod
    def kernel(params, grads, buffers, step, group):
        lr, beta1, beta2, eps, wd = group["lr"], group["beta1"], group["beta2"], group["eps"], group["weight_decay"]
        if group["weight_decouple"]:
            decay_(params, wd if group["fixed_decay"] else lr * wd)
        else:
            grads = l2_penalty(grads, params, wd)
        exp_avg, exp_avg_var = buffers["exp_avg"], buffers["exp_avg_var"]
        ema_(exp_avg, grads, beta1)
        ema_square_(exp_avg_var, foreach("sub", grads, exp_avg), beta2)
        foreach("add_", exp_avg_var, per_tensor(eps, exp_avg_var))
        if group["rectify"]:
            denom = sqrt_plus_eps(exp_avg_var, eps)
            early = 1.0 if group["degenerated_to_sgd"] else 0.0
            rho_t, r_t = rectification(beta2, step)
            _rectified_update_(params, exp_avg, denom, lr, beta1, beta2, step, rho_t >= 5, r_t, early)
            if group["amsgrad"]:  # kept up to date, though the rectified update does not read it
                running_max_(buffers["max_exp_avg_var"], exp_avg_var)
            return
        second = running_max_(buffers["max_exp_avg_var"], exp_avg_var) if group["amsgrad"] else exp_avg_var
        bc1, bc2 = bias_corrections(beta1, beta2, step)
        denom = sqrt_plus_eps(second, eps, scale=sqrt(bc2))
        add_quotient_(params, exp_avg, denom, -lr / bc1)
