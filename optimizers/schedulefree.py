"""Schedule-Free AdamW (Defazio et al. 2024): an optimizer with a mode (``train()`` / ``eval()``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optimizers.base import KernelOptimizer
from optimizers.hparams import declaration
from optimizers.pieces import add_scaled_, ema_square_, foreach, in_slices, nonzero

_TINY = torch.finfo(torch.float64).tiny  # a weight sum of 0 (every lr so far 0) gives c = 0 / tiny = 0


class AdamWScheduleFree(KernelOptimizer):
    r"""Schedule-Free AdamW (Defazio et al., "The Road Less Scheduled", NeurIPS 2024), as the authors'
    ``schedulefree==1.4.1`` ``AdamWScheduleFree``.

    Three sequences: z (the base AdamW-like iterate), x (a weighted average of the z's: the point to
    evaluate) and y = (1-β1)·z + β1·x (the point where gradients are taken). The parameters hold y
    in train mode and x in eval mode; z is per-parameter state. At step t (1-based, per parameter):

    .. math::
        \gamma_t &= lr_t \cdot \min(1,\ t / T_{warmup}) \quad (1 \text{ when } T_{warmup} = 0;\
                    lr_t \text{ the scheduled lr}) \\
        v_t &= \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \qquad
              \hat v_t = v_t / (1-\beta_2^t) \quad (g_t \text{ taken at } y_t) \\
        u_t &= g_t / (\sqrt{\hat v_t} + \epsilon) + \lambda\, y_t
              \quad\text{(decoupled weight decay, evaluated at y, scaled by } \gamma_t\text{ below)} \\
        z_{t+1} &= z_t - \gamma_t u_t \\
        \gamma^{\max}_t &= \max_{s\le t} \gamma_s, \qquad
              w_t = t^{\,r}\,(\gamma^{\max}_t)^{p}, \qquad c_{t+1} = w_t \Big/ \textstyle\sum_{s\le t} w_s
              \quad (p = \text{weight\_lr\_power};\ c = 0 \text{ while every } w \text{ is } 0) \\
        x_{t+1} &= (1-c_{t+1})\,x_t + c_{t+1} z_{t+1} \\
        y_{t+1} &= (1-\beta_1) z_{t+1} + \beta_1 x_{t+1}
                 = (1-c_{t+1})\,y_t + c_{t+1} z_t + \gamma_t\big(\beta_1(1-c_{t+1}) - 1\big)\,u_t

    (the last form is what the kernel computes: y is updated in place and x never stored). z starts at
    the parameter (x_1 = y_1 = z_1). ``eval()`` sets the parameters to x = y + (1 - 1/β1)(z - y),
    ``train()`` back to y = x + (1-β1)(z - x); each is a no-op in the mode it names, and a parameter
    without state (no step yet) is left alone (there x = y = z). The round trip is exact up to
    rounding. β1 must be positive: at β1 = 0, y = z and x cannot be recovered.

    Where the package and the paper differ, this follows the package:

    * Bias correction: the package divides v by 1-β2^t (eps added to sqrt(v̂), as in Adam); Algorithm 1
      of the paper folds sqrt(1-β2^t) into the step size instead, γ_t = lr·min(1, t/T_warmup)·sqrt(1-β2^t)
      with denominator sqrt(v_t) + ε, so its early steps and averaging weights are smaller (the package's
      ``AdamWScheduleFreePaper`` keeps that form).
    * Averaging weights: the package weights iterate t by t^r·(max_{s≤t} γ_s)^weight_lr_power (both the
      running max of the scheduled lr and the power are its generalisations); the paper's Algorithm 1 uses
      γ_t² (r = 0, power 2). So with an lr scheduled to 0 the average keeps moving towards z (the weights
      use the running max) while z stands still: the gradients then no longer matter.

    Where this differs from the package (each only outside the package's ordinary use):

    * The step counter, the running max and the weight sum are per parameter (as every adamscape
      optimizer's step), not per parameter group: a parameter whose gradient is ``None`` for some steps
      starts its own average when it first gets one, as a fresh optimizer would (the package's group
      counter has it join at the group's step). With every gradient present they are the same.
    * Warmup is min(1, t/T_warmup), the paper's; the package's ``(k+1)/warmup_steps while k < warmup_steps``
      equals it for an integral T_warmup and overshoots 1 at t = ⌈T⌉ for a fractional one.
    * It starts in train mode (before the first step the modes coincide), so a loop that never calls
      ``train()`` works; the package starts in eval mode and refuses ``step()`` until ``train()``. Both
      refuse a step in eval mode. A group added with ``add_param_group`` takes the optimizer's mode.
    * ``.grad`` is left untouched (the package divides it in place by the denominator).

    Any hyperparameter may be a (K,) tensor (a population); the running max and the weight sum are then
    (K,) per parameter. They are float64 state (0-d or (K,)) on the parameter's device, kept float64 across
    ``load_state_dict`` (which would cast them to the parameter's dtype).
    """

    hyperparameters = declaration("adamw-schedulefree")

    buffers = ("z", "exp_avg_sq", "lr_max", "weight_sum")
    _WEIGHTS = ("lr", "warmup_steps", "r", "weight_lr_power")  # what the averaging weights depend on

    def __init__(self, params, lr=2.5e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, warmup_steps=0,
                 r=0.0, weight_lr_power=2.0):
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                                      warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power,
                                      train_mode=True))
        self.register_load_state_dict_pre_hook(_keep_float64_scalars)
        self.register_load_state_dict_post_hook(_restore_float64_scalars)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if self.param_groups and "train_mode" not in param_group:
            param_group = {**param_group, "train_mode": all(g["train_mode"] for g in self.param_groups)}
        super().add_param_group(param_group)

    def initial_buffer(self, name, param, group):
        if name == "z":
            return param.detach().clone(memory_format=torch.preserve_format)
        if name in ("lr_max", "weight_sum"):
            return torch.zeros(_weight_shape(group), dtype=torch.float64, device=param.device)
        return super().initial_buffer(name, param, group)

    @torch.no_grad()
    def step(self, closure=None):
        if not all(group["train_mode"] for group in self.param_groups):
            raise RuntimeError(f"{type(self).__name__}.step() in eval mode: call .train() before training "
                               "(the parameters hold the averaged point x, not the point y gradients are taken at)")
        return super().step(closure)

    @torch.no_grad()
    def eval(self) -> None:
        """Parameters to the averaged point x = y + (1 - 1/β1)(z - y), the point to evaluate (no-op in eval mode)."""
        self._switch(train_mode=False, weight=lambda beta1: 1 - 1 / beta1)

    @torch.no_grad()
    def train(self) -> None:
        """Parameters back to the training point y = x + (1-β1)(z - x) (no-op in train mode)."""
        self._switch(train_mode=True, weight=lambda beta1: 1 - beta1)

    def _switch(self, train_mode: bool, weight) -> None:
        for group in self.param_groups:
            if group["train_mode"] == train_mode:
                continue
            params = [p for p in group["params"] if "z" in self.state.get(p, {})]
            if params:
                anchors = [self.state[p]["z"] for p in params]
                foreach("lerp_", params, anchors, _each(weight(group["beta1"]), params))
            group["train_mode"] = train_mode

    @staticmethod
    def kernel(params, grads, buffers, step, group):
        lr, beta1, beta2 = group["lr"], group["beta1"], group["beta2"]
        lr = lr * _warmup(step, group["warmup_steps"])
        averaging = _averaging_weights_(buffers["lr_max"], buffers["weight_sum"], lr, step, group["r"],
                                        group["weight_lr_power"])
        shared = _shared_number(averaging)
        if shared is not None:  # every parameter's c_{t+1} is one CPU number: fused scalar ops, elementwise,
            for cut in in_slices([params, grads, buffers["z"], buffers["exp_avg_sq"]], group):  # so sliced
                _update_(*cut, lr, beta1, beta2, step, group, shared)
            return
        _update_(params, grads, buffers["z"], buffers["exp_avg_sq"], lr, beta1, beta2, step, group, averaging)


def _update_(params, grads, z, exp_avg_sq, lr, beta1, beta2, step, group, averaging) -> None:
    """v, then z and y (the parameters) moved; ``averaging`` is c_{t+1}: one number, or a tensor per parameter."""
    ema_square_(exp_avg_sq, grads, beta2)
    denom = foreach("div", exp_avg_sq, _each(1 - beta2**step, exp_avg_sq))
    foreach("sqrt_", denom)
    foreach("add_", denom, _each(group["eps"], denom))
    directions = foreach("div", grads, denom)  # .grad stays as it is
    if nonzero(group["weight_decay"]):
        add_scaled_(directions, params, group["weight_decay"])  # decay taken at y
    if not isinstance(averaging, (list, tuple)):
        foreach("lerp_", params, z, averaging)
        add_scaled_(params, directions, lr * (beta1 * (1 - averaging) - 1))
    else:
        foreach("lerp_", params, z, [_like(c, p) for c, p in zip(averaging, params)])
        scaled = foreach("mul", directions, [_like(lr * (beta1 * (1 - c) - 1), d)
                                             for c, d in zip(averaging, directions)])
        foreach("add_", params, scaled)
    add_scaled_(z, directions, -lr)


def _warmup(step: int, warmup_steps):
    """min(1, t/T_warmup), and 1 for T_warmup = 0 (t/0 = inf, clamped to 1 for a tensor)."""
    if isinstance(warmup_steps, Tensor):
        return (step / warmup_steps).clamp(max=1.0)
    return 1.0 if warmup_steps == 0 else min(step / warmup_steps, 1.0)


def _averaging_weights_(lr_max: list[Tensor], weight_sum: list[Tensor], lr, step: int, r, power) -> list[Tensor]:
    """Update each parameter's running max of the lr and its weight sum in place; return its c_{t+1}
    (float64, 0-d or (K,))."""
    if isinstance(lr, Tensor):
        foreach("maximum_", lr_max, [lr.to(m.device, torch.float64).expand_as(m) for m in lr_max])
    else:
        foreach("clamp_min_", lr_max, lr)
    powered = foreach("pow", lr_max, _each(power, lr_max, dtype=torch.float64))
    weights = foreach("mul", powered, _each(_float64(step) ** _float64(r), powered, dtype=torch.float64))
    foreach("add_", weight_sum, weights)
    return foreach("div", weights, foreach("clamp_min", weight_sum, _TINY))


def _float64(h):
    return h.to(torch.float64) if isinstance(h, Tensor) else float(h)


def _shared_number(values: list[Tensor]) -> float | None:
    """The one value of every c_{t+1} as a Python number where reading it syncs nothing (0-d CPU tensors, run
    eagerly) and they agree; None otherwise (CUDA, a population, tracing, or parameters whose lr histories
    differ), when each tensor takes its own."""
    if torch.compiler.is_compiling() or any(v.dim() or v.device.type != "cpu" for v in values):
        return None
    numbers = {v.item() for v in values}
    return numbers.pop() if len(numbers) == 1 else None


def _like(h, tensor: Tensor):
    """``h`` (a number, or a 0-d or (K,) tensor) as a foreach op pairs it with ``tensor``: on its device, in its
    dtype, shaped to broadcast along its leading config dimension."""
    if not isinstance(h, Tensor):
        return torch.tensor(h, dtype=tensor.dtype, device=tensor.device)
    return h.to(tensor.device, tensor.dtype).reshape(h.shape + (1,) * (tensor.dim() - h.dim()))


def _each(h, tensors: list[Tensor], dtype: torch.dtype | None = None):
    """``h`` for a foreach op over ``tensors``: the number itself, or one broadcastable copy per tensor
    (on its device, in ``dtype`` or the tensor's)."""
    if not isinstance(h, Tensor):
        return h
    return [h.to(t.device, dtype or t.dtype).reshape(h.shape + (1,) * (t.dim() - h.dim())) for t in tensors]


def _weight_shape(group) -> torch.Size:
    """The averaging state's shape: () when lr, warmup, r and the power are numbers, else their tensors'."""
    return torch.broadcast_shapes(*(group[k].shape for k in AdamWScheduleFree._WEIGHTS
                                    if isinstance(group[k], Tensor)))


def _keep_float64_scalars(optimizer: AdamWScheduleFree, state_dict: dict[str, Any]) -> None:
    """``load_state_dict`` pre-hook: note the saved float64 running maxima and weight sums (the load casts
    floating state to the parameter's dtype), by the saved parameter index."""
    optimizer._saved_scalars = (
        [list(g["params"]) for g in state_dict["param_groups"]],
        {index: {key: value.clone() for key, value in entry.items() if key in ("lr_max", "weight_sum")}
         for index, entry in state_dict["state"].items()})


def _restore_float64_scalars(optimizer: AdamWScheduleFree) -> None:
    """``load_state_dict`` post-hook: each parameter's running max and weight sum back as saved, in float64."""
    groups, saved = optimizer.__dict__.pop("_saved_scalars", ([], {}))
    for indices, group in zip(groups, optimizer.param_groups):
        for index, param in zip(indices, group["params"]):
            state = optimizer.state.get(param)
            for key, value in saved.get(index, {}).items():
                if state is not None and isinstance(value, Tensor):
                    state[key] = value.to(param.device, torch.float64)
