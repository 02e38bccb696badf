"""Adam and its direct variants with torch.optim's exact semantics: Adam, AdamW, AMSGrad, Adamax, NAdam."""

from __future__ import annotations

import torch
from torch import Tensor

from optimizers.base import KernelOptimizer
from optimizers.hparams import declaration
from optimizers.pieces import (adam_moments_, add_quotient_, bias_corrections, decay_, ema_, foreach, in_slices,
                               l2_penalty, per_tensor, running_max_, scale_, sqrt, sqrt_plus_eps)


def decay_or_penalty(params, grads, group, shrink):
    """Weight decay the way the group asks: decoupled (θ ← θ(1 - shrink)) or L2 (g + λθ, returned)."""
    if group["decoupled_weight_decay"]:
        decay_(params, shrink)
        return grads
    return l2_penalty(grads, params, group["weight_decay"])


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
    With ``decoupled_weight_decay=True`` the L2 term is replaced by AdamW's
    θ ← θ(1 - lr·λ) before the update (see :class:`AdamW`).
    """

    hyperparameters = declaration("adam")
    elementwise = True

    buffers = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                 amsgrad=False, decoupled_weight_decay=False):
        defaults = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    @staticmethod
    def kernel(params, grads, buffers, step, group):
        lr, beta1, beta2 = group["lr"], group["beta1"], group["beta2"]
        grads = decay_or_penalty(params, grads, group, lr * group["weight_decay"])
        adam_moments_(buffers, grads, beta1, beta2)
        second = buffers["exp_avg_sq"]
        if group["amsgrad"]:
            second = running_max_(buffers["max_exp_avg_sq"], second)
        bc1, bc2 = bias_corrections(beta1, beta2, step)
        denom = sqrt_plus_eps(second, group["eps"], scale=sqrt(bc2))
        add_quotient_(params, buffers["exp_avg"], denom, -lr / bc1)

    def buffer_names(self, group):
        return self.buffers + (("max_exp_avg_sq",) if group["amsgrad"] else ())


class AdamW(Adam):
    r"""AdamW (Loshchilov & Hutter, 2019), identical to ``torch.optim.AdamW``.

    Adam without the L2 term; instead, before the Adam update,
    θ ← θ·(1 - lr·weight_decay). As in torch the decay is coupled to the
    *scheduled* lr (the paper scales it by the schedule multiplier only).
    Default weight_decay 1e-2 as in torch.
    """

    hyperparameters = declaration("adamw")

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2,
                 amsgrad=False):
        super().__init__(params, lr, beta1, beta2, eps, weight_decay, amsgrad=amsgrad,
                         decoupled_weight_decay=True)


class AMSGrad(Adam):
    r"""AMSGrad (Reddi, Kale & Kumar, 2018) as in ``torch.optim.Adam(amsgrad=True)``.

    The running maximum is taken over the *raw* second moment v, then bias
    corrected: denominator sqrt(max_s v_s)/sqrt(1-β2^t) + eps. (optax maxes
    the bias-corrected v̂ instead — a different algorithm.)
    """

    hyperparameters = declaration("amsgrad")

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr, beta1, beta2, eps, weight_decay, amsgrad=True)


class Adamax(KernelOptimizer):
    r"""Adamax (Kingma & Ba, 2015, Algorithm 2), identical to ``torch.optim.Adamax``.

    .. math::
        g_t &\leftarrow g_t + \lambda\theta_{t-1} \quad\text{(L2)} \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        u_t &= \max(\beta_2 u_{t-1},\; |g_t| + \epsilon) \\
        \theta_t &= \theta_{t-1} - \frac{lr}{1-\beta_1^t}\,\frac{m_t}{u_t}

    eps is added to |g| inside the max (torch), not to the denominator.
    """

    hyperparameters = declaration("adamax")
    elementwise = True

    buffers = ("exp_avg", "exp_inf")

    def __init__(self, params, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay))

    @staticmethod
    def kernel(params, grads, buffers, step, group):
        grads = l2_penalty(grads, params, group["weight_decay"])
        ema_(buffers["exp_avg"], grads, group["beta1"])
        exp_inf = buffers["exp_inf"]
        scale_(exp_inf, group["beta2"])
        magnitudes = foreach("abs", grads)
        foreach("add_", magnitudes, per_tensor(group["eps"], magnitudes))
        running_max_(exp_inf, magnitudes)
        add_quotient_(params, buffers["exp_avg"], exp_inf, -group["lr"] / (1 - group["beta1"] ** step))


class NAdam(KernelOptimizer):
    r"""NAdam (Dozat, 2016), identical to ``torch.optim.NAdam``.

    .. math::
        \mu_t &= \beta_1\big(1 - \tfrac12\, 0.96^{t\psi}\big), \qquad
        \Pi_t = \textstyle\prod_{s\le t}\mu_s \quad(\psi = \text{momentum\_decay}) \\
        m_t, v_t &\text{ as in Adam (L2, or decoupled θ ← θ(1 - lr·λ))} \\
        \theta_t &= \theta_{t-1} - lr\Big(\frac{1-\mu_t}{1-\Pi_t} g_t
                    + \frac{\mu_{t+1}}{1-\Pi_t\mu_{t+1}} m_t\Big) \Big/ \Big(\sqrt{v_t/(1-\beta_2^t)} + \epsilon\Big)

    Π_t is per-parameter state, ``mu_product``, as in torch, but always float64 (torch keeps it in the
    default float dtype): a 0-d tensor, or one value per configuration when β1 or ψ is a (K,) tensor,
    on the parameter's device. Each step multiplies it by μ_t (μ_t from β1 and ψ in float64), so a step
    costs the same at any t. The eager kernel on a CPU 0-d product reads it as a Python number (the
    fused update and torch's rounding); elsewhere it stays a tensor, so CUDA pays no host sync.

    ``load_state_dict`` casts floating state to the parameter's dtype; a post-hook then recomputes each
    ``mu_product`` in float64 from its ``step`` and the group's β1 and ψ by the same sequential
    multiplication, with the same μ_s (bit-identical to the eager kernel's product; the compiled
    kernel computes μ_t from its 0-d hyperparameter tensors, so its product agrees to their rounding).
    A state saved without ``mu_product`` gets one the same way.
    """

    hyperparameters = declaration("nadam")

    buffers = ("exp_avg", "exp_avg_sq", "mu_product")

    def __init__(self, params, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                 momentum_decay=4e-3, decoupled_weight_decay=False):
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay,
                                      decoupled_weight_decay=decoupled_weight_decay))
        self.register_load_state_dict_post_hook(_restore_mu_products)

    def initial_buffer(self, name, param, group):
        if name != "mu_product":
            return super().initial_buffer(name, param, group)
        return torch.ones(_mu_shape(group), dtype=torch.float64, device=param.device)

    @staticmethod
    def kernel(params, grads, buffers, step, group):
        lr, beta2 = group["lr"], group["beta2"]
        beta1, psi = _float64(group["beta1"]), _float64(group["momentum_decay"])
        mu, mu_next = _nadam_mu(beta1, psi, step), _nadam_mu(beta1, psi, step + 1)
        products = buffers["mu_product"]
        foreach("mul_", products, per_tensor(mu, products))
        mu_product = _number_if_free(products[0])  # a bucket's parameters share the step, hence Π_t
        # the rest is elementwise: on a CPU, slice by slice (optimizers.base)
        for cut_params, cut_grads, exp_avg, exp_avg_sq in in_slices(
                [params, grads, buffers["exp_avg"], buffers["exp_avg_sq"]], group):
            cut_grads = decay_or_penalty(cut_params, cut_grads, group, lr * group["weight_decay"])
            adam_moments_({"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}, cut_grads, group["beta1"], beta2)
            denom = sqrt_plus_eps(exp_avg_sq, group["eps"], scale=sqrt(1 - beta2**step))
            add_quotient_(cut_params, cut_grads, denom, -lr * (1 - mu) / (1 - mu_product))
            add_quotient_(cut_params, exp_avg, denom, -lr * mu_next / (1 - mu_product * mu_next))


def _nadam_mu(beta1, psi, step):
    return beta1 * (1 - 0.5 * 0.96 ** (step * psi))


def _float64(h):
    """A tensor hyperparameter in float64 (a compiled kernel's 0-d float32 ones included); a number as is."""
    return h.to(torch.float64) if isinstance(h, Tensor) else h


def _mu_shape(group) -> torch.Size:
    """Π_t's shape: () when β1 and ψ are numbers, else their tensors' (a population's (K,))."""
    return torch.broadcast_shapes(*(h.shape for h in (group["beta1"], group["momentum_decay"])
                                    if isinstance(h, Tensor)))


def _number_if_free(product: Tensor):
    """Π_t as a Python number where reading it syncs nothing (a 0-d CPU tensor, run eagerly), so the update
    takes the fused scalar path with torch's rounding; otherwise the tensor (CUDA, populations, tracing)."""
    if product.dim() == 0 and product.device.type == "cpu" and not torch.compiler.is_compiling():
        return product.item()
    return product


def _restore_mu_products(optimizer: NAdam) -> None:
    """``load_state_dict`` post-hook: every state's ``mu_product`` recomputed in float64 from its step
    (the load cast it to the parameter's dtype, or an older state dict lacks it). Parameters of a group
    at the same step on the same device share one computation; each gets its own copy."""
    for group in optimizer.param_groups:
        computed: dict[tuple, Tensor] = {}
        for param in group["params"]:
            state = optimizer.state.get(param)
            if not state:
                continue
            key = (int(state["step"]), param.device)
            if key not in computed:
                computed[key] = _mu_product(group, *key)
            state["mu_product"] = computed[key].clone()


def _mu_product(group, step: int, device: torch.device) -> Tensor:
    """Π_step in float64 on ``device``, multiplied up one μ_s at a time from the same μ_s the kernel computes
    (same hyperparameter tensors on the same device, same ops), so it equals the incremental product bit for
    bit. Numbers multiply in Python floats (IEEE double, as the tensor's ``mul_``): t steps cost O(t) once."""
    beta1, psi = (_float64(h.to(device)) if isinstance(h, Tensor) else h
                  for h in (group["beta1"], group["momentum_decay"]))
    if not isinstance(beta1, Tensor) and not isinstance(psi, Tensor):
        value = 1.0
        for s in range(1, step + 1):
            value *= _nadam_mu(beta1, psi, s)
        return torch.tensor(value, dtype=torch.float64, device=device)
    product = torch.ones(_mu_shape(group), dtype=torch.float64, device=device)
    for s in range(1, step + 1):
        product.mul_(_nadam_mu(beta1, psi, s))
    return product
