"""The non-Adam baselines every adaptive method is compared with: SGD with momentum, Adagrad, RMSprop."""

from __future__ import annotations


from optimizers.base import KernelOptimizer
from optimizers.hparams import declaration
from optimizers.pieces import (add_quotient_, add_scaled, add_scaled_, ema_, ema_square_, foreach, l2_penalty, nonzero,
                               per_tensor, scale_, sqrt_plus_eps)


class SGDM(KernelOptimizer):
    r"""SGD with (heavy-ball or Nesterov) momentum, identical to ``torch.optim.SGD`` (dampening 0).

    .. math::
        g_t &\leftarrow g_t + \lambda\theta_{t-1} \quad\text{(L2)} \\
        b_t &= \mu b_{t-1} + g_t \quad (b_0 = 0, \text{ so } b_1 = g_1 \text{ as torch's clone}) \\
        \theta_t &= \theta_{t-1} - lr\,(g_t + \mu b_t \text{ if nesterov else } b_t)
    """

    hyperparameters = declaration("sgdm")
    elementwise = True

    buffers = ("momentum_buffer",)

    def __init__(self, params, lr=0.1, momentum=0.9, weight_decay=0.0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov))

    @staticmethod
    def kernel(params, grads, buffers, step, group):
        grads = l2_penalty(grads, params, group["weight_decay"])
        momentum, buf = group["momentum"], buffers["momentum_buffer"]
        scale_(buf, momentum)
        foreach("add_", buf, grads)
        direction = add_scaled(grads, buf, momentum) if group["nesterov"] else buf
        add_scaled_(params, direction, -group["lr"])


class Adagrad(KernelOptimizer):
    r"""Adagrad (Duchi, Hazan & Singer, 2011), identical to ``torch.optim.Adagrad`` (dense gradients).

    .. math::
        g_t &\leftarrow g_t + \lambda\theta_{t-1} \quad\text{(L2)} \\
        s_t &= s_{t-1} + g_t^2, \qquad s_0 = \text{initial\_accumulator\_value} \\
        \theta_t &= \theta_{t-1} - \frac{lr}{1 + (t-1)\,\text{lr\_decay}}\,\frac{g_t}{\sqrt{s_t} + \epsilon}
    """

    hyperparameters = declaration("adagrad")
    elementwise = True

    buffers = ("sum",)

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps))

    def initial_buffer(self, name, param, group):
        total = super().initial_buffer(name, param, group)
        foreach("add_", [total], per_tensor(group["initial_accumulator_value"], [total]))
        return total

    @staticmethod
    def kernel(params, grads, buffers, step, group):
        grads = l2_penalty(grads, params, group["weight_decay"])
        foreach("addcmul_", buffers["sum"], grads, grads)
        denom = sqrt_plus_eps(buffers["sum"], group["eps"])
        add_quotient_(params, grads, denom, -group["lr"] / (1 + (step - 1) * group["lr_decay"]))


class RMSprop(KernelOptimizer):
    r"""RMSprop (Hinton, 2012), identical to ``torch.optim.RMSprop``.

    .. math::
        g_t &\leftarrow g_t + \lambda\theta_{t-1} \quad\text{(L2)} \\
        v_t &= \alpha v_{t-1} + (1-\alpha) g_t^2, \qquad
        \bar g_t = \alpha \bar g_{t-1} + (1-\alpha) g_t \text{ (centered only)} \\
        d_t &= \sqrt{v_t - \bar g_t^2} + \epsilon \text{ (centered) or } \sqrt{v_t} + \epsilon \\
        b_t &= \mu b_{t-1} + g_t/d_t, \qquad \theta_t = \theta_{t-1} - lr\,b_t
            \quad(\theta_t = \theta_{t-1} - lr\,g_t/d_t \text{ when } \mu = 0)

    eps is added outside the square root; v is not bias corrected.
    """

    hyperparameters = declaration("rmsprop")
    elementwise = True

    buffers = ("square_avg",)

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered))

    def buffer_names(self, group):
        return (self.buffers + (("momentum_buffer",) if nonzero(group["momentum"]) else ())
                + (("grad_avg",) if group["centered"] else ()))

    @staticmethod
    def kernel(params, grads, buffers, step, group):
        alpha = group["alpha"]
        grads = l2_penalty(grads, params, group["weight_decay"])
        square_avg = buffers["square_avg"]
        ema_square_(square_avg, grads, alpha)
        if group["centered"]:
            ema_(buffers["grad_avg"], grads, alpha)
            square_avg = foreach("addcmul", square_avg, buffers["grad_avg"], buffers["grad_avg"], value=-1)
        denom = sqrt_plus_eps(square_avg, group["eps"])
        if "momentum_buffer" not in buffers:  # momentum 0: torch's plain update
            add_quotient_(params, grads, denom, -group["lr"])
            return
        buf = buffers["momentum_buffer"]
        scale_(buf, group["momentum"])
        add_quotient_(buf, grads, denom, 1.0)
        add_scaled_(params, buf, -group["lr"])
