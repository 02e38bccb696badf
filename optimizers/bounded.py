"""Optimizers that bound Adam's per-element learning rates: AdaBound, AMSBound, AdaMod."""

from __future__ import annotations

import torch

from optimizers.base import KernelOptimizer
from optimizers.hparams import declaration
from optimizers.pieces import (adam_moments_, adam_step_size, decay_, ema_, elementwise_rates, foreach, l2_penalty,
                               per_tensor, running_max_, sqrt_plus_eps)


def _rates_and_momentum(params, grads, buffers, step, group):
    """Shared front half: moments, optional AMS max, and η = lr·sqrt(bc2)/bc1 / (sqrt(v) + eps)."""
    beta1, beta2 = group["beta1"], group["beta2"]
    adam_moments_(buffers, grads, beta1, beta2)
    second = buffers["exp_avg_sq"]
    if group.get("amsbound"):
        second = running_max_(buffers["max_exp_avg_sq"], second)
    denom = sqrt_plus_eps(second, group["eps"])
    return elementwise_rates(denom, adam_step_size(group["lr"], beta1, beta2, step))


def _apply_(params, rates, exp_avg):
    """θ ← θ - η ⊙ m (m not bias corrected; the correction lives in η)."""
    foreach("mul_", rates, exp_avg)
    foreach("sub_", params, rates)


class AdaBound(KernelOptimizer):
    r"""AdaBound (Luo et al., ICLR 2019), identical to the authors' ``adabound==0.0.5``.

    .. math::
        g_t &\leftarrow g_t + \lambda\theta_{t-1}  \quad\text{(L2; decoupled: } \theta \leftarrow \theta(1-\lambda)\text{)}\\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        \eta_t &= \frac{lr\,\sqrt{1-\beta_2^t}/(1-\beta_1^t)}{\sqrt{v_t} + \epsilon}
                  \quad (v_t \to \max_{s\le t} v_s \text{ for AMSBound}) \\
        \alpha^*_t &= final\_lr \cdot lr_t / base\_lr \\
        \theta_t &= \theta_{t-1} - \operatorname{clip}\Big(\eta_t,\;
                    \alpha^*_t\big(1-\tfrac{1}{\gamma t+1}\big),\;
                    \alpha^*_t\big(1+\tfrac{1}{\gamma t}\big)\Big)\, m_t

    eps is added to sqrt of the *uncorrected* v. ``base_lr`` is each group's lr
    when the group was added (also for groups added later with
    ``add_param_group``, where the reference forgets it) and is saved in
    ``state_dict``, so an lr scheduler scales the bounds as the author intended.

    ``decoupled_weight_decay=True`` (opt-in, the AdaBoundW of the authors'
    PR #14) replaces the L2 term by θ ← θ - λθ (not multiplied by lr).
    """

    hyperparameters = declaration("adabound")
    elementwise = True

    buffers = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, final_lr=0.1, gamma=1e-3, eps=1e-8,
                 weight_decay=0.0, amsbound=False, decoupled_weight_decay=False):
        defaults = dict(lr=lr, beta1=beta1, beta2=beta2, final_lr=final_lr, gamma=gamma, eps=eps,
                        weight_decay=weight_decay, amsbound=amsbound,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        lr = self.param_groups[-1]["lr"]  # a tensor lr is updated in place by schedulers: keep a copy
        self.param_groups[-1].setdefault("base_lr", lr.clone() if isinstance(lr, torch.Tensor) else lr)

    @staticmethod
    def kernel(params, grads, buffers, step, group):
        if group["decoupled_weight_decay"]:
            decay_(params, group["weight_decay"])
        else:
            grads = l2_penalty(grads, params, group["weight_decay"])
        rates = _rates_and_momentum(params, grads, buffers, step, group)
        final_lr = group["final_lr"] * group["lr"] / group["base_lr"]
        lower = final_lr * (1 - 1 / (group["gamma"] * step + 1))
        upper = final_lr * (1 + 1 / (group["gamma"] * step))
        foreach("clamp_min_", rates, per_tensor(lower, rates))
        foreach("clamp_max_", rates, per_tensor(upper, rates))
        _apply_(params, rates, buffers["exp_avg"])

    def buffer_names(self, group):
        return self.buffers + (("max_exp_avg_sq",) if group["amsbound"] else ())


class AMSBound(AdaBound):
    """AMSBound: :class:`AdaBound` with AMSGrad's running max of the raw v (``adabound.AdaBound(amsbound=True)``)."""

    hyperparameters = declaration("amsbound")

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, final_lr=0.1, gamma=1e-3, eps=1e-8,
                 weight_decay=0.0, decoupled_weight_decay=False):
        super().__init__(params, lr, beta1, beta2, final_lr, gamma, eps, weight_decay, amsbound=True,
                         decoupled_weight_decay=decoupled_weight_decay)


class AdaMod(KernelOptimizer):
    r"""AdaMod (Ding, Ren, Luo & Sun, 2019), identical to the authors' ``adamod==0.0.3``.

    .. math::
        \theta &\leftarrow \theta(1 - lr\cdot\lambda) \quad\text{(decoupled weight decay, with lr)} \\
        m_t, v_t &\text{ as in Adam (zero-initialised, uncorrected)} \\
        \eta_t &= \frac{lr\,\sqrt{1-\beta_2^t}/(1-\beta_1^t)}{\sqrt{v_t} + \epsilon} \\
        s_t &= \beta_3 s_{t-1} + (1-\beta_3)\,\eta_t, \qquad s_0 = 0 \\
        \theta_t &= \theta_{t-1} - \min(\eta_t, s_t)\, m_t

    s is zero-initialised and not bias corrected, an implicit warm-up over
    roughly 1/(1-β3) steps. β3 defaults to 0.999 as in the authors' code (their
    docstring says 0.9999).
    """

    hyperparameters = declaration("adamod")
    elementwise = True

    buffers = ("exp_avg", "exp_avg_sq", "exp_avg_lr")

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, beta3=0.999, eps=1e-8, weight_decay=0.0):
        defaults = dict(lr=lr, beta1=beta1, beta2=beta2, beta3=beta3, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    @staticmethod
    def kernel(params, grads, buffers, step, group):
        decay_(params, group["lr"] * group["weight_decay"])
        rates = _rates_and_momentum(params, grads, buffers, step, group)
        ema_(buffers["exp_avg_lr"], rates, group["beta3"])
        foreach("minimum_", rates, buffers["exp_avg_lr"])
        _apply_(params, rates, buffers["exp_avg"])
