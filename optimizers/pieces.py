"""Composable multi-tensor pieces the optimizer kernels are built from.

Each piece works on lists of tensors through :func:`foreach`: ``torch._foreach_*``
ops when run eagerly (one kernel launch per list on CUDA, a tight loop on CPU),
plain per-tensor ops while ``torch.compile`` traces (so each tensor's whole
update fuses into one loop). In-place pieces end in ``_``.

A hyperparameter (:data:`Hyper`) is a Python number or a tensor. A tensor of
shape ``(K,)`` holds K configurations: every parameter then carries a leading
dimension of size K and the hyperparameter broadcasts along it, so one kernel
call trains K configurations at once. Scalar arithmetic on hyperparameters
(``1 - beta**step``) is written so that it works for both.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

Hyper = float | Tensor

_PLAIN_IN_PLACE = {"maximum_": torch.maximum, "minimum_": torch.minimum}  # ops without an in-place method


def foreach(name: str, tensors: list[Tensor], *args, **kwargs):
    """``torch._foreach_<name>(tensors, *args, **kwargs)``; while ``torch.compile`` traces, the same op
    applied tensor by tensor, since inductor fuses a tensor's plain ops into one loop but emits one pass
    over memory per foreach op. List arguments pair up with ``tensors``; others are shared."""
    if not torch.compiler.is_compiling():
        return getattr(torch, f"_foreach_{name}")(tensors, *args, **kwargs)
    results = []
    for i, tensor in enumerate(tensors):
        own = [a[i] if isinstance(a, list) else a for a in args]
        if name in _PLAIN_IN_PLACE:
            tensor.copy_(_PLAIN_IN_PLACE[name](tensor, *own))
        else:
            results.append(getattr(tensor, name)(*own, **kwargs))
    return None if name.endswith("_") else results


def per_tensor(h: Hyper, tensors: list[Tensor]) -> float | list[Tensor]:
    """``h`` as a foreach op takes it: the number itself, or one broadcastable copy per tensor in its dtype
    (foreach lerp insists on it; the arithmetic before this point stays in the hyperparameter's dtype)."""
    if isinstance(h, Tensor):
        return [h.to(t.dtype).reshape(h.shape + (1,) * (t.dim() - h.dim())) for t in tensors]
    return h


def nonzero(h: Hyper) -> bool:
    """False only for a number equal to 0 (a tensor may hold several values, so it counts as nonzero)."""
    return isinstance(h, Tensor) or h != 0


def sqrt(x: Hyper) -> Hyper:
    return x.sqrt() if isinstance(x, Tensor) else math.sqrt(x)


def select(condition: bool | Tensor, if_true: Hyper, if_false: Hyper) -> Hyper:
    """``if_true if condition else if_false``, elementwise when the condition is a tensor."""
    if isinstance(condition, Tensor):
        return torch.where(condition, if_true, if_false)
    return if_true if condition else if_false


# --- y ← y + a·f(x): numbers use the fused foreach overloads, tensors broadcast through a temporary.

def scale_(tensors: list[Tensor], factor: Hyper) -> None:
    foreach("mul_", tensors, per_tensor(factor, tensors))


def add_scaled(ys: list[Tensor], xs: list[Tensor], a: Hyper) -> list[Tensor]:
    """y + a·x, out of place."""
    if isinstance(a, Tensor):
        return foreach("add", ys, foreach("mul", xs, per_tensor(a, xs)))
    return foreach("add", ys, xs, alpha=a)


def add_scaled_(ys: list[Tensor], xs: list[Tensor], a: Hyper) -> None:
    """y ← y + a·x (nothing to do when a is the number 0)."""
    if isinstance(a, Tensor):
        foreach("add_", ys, foreach("mul", xs, per_tensor(a, xs)))
    elif a:
        foreach("add_", ys, xs, alpha=a)


def add_product_(ys: list[Tensor], x1: list[Tensor], x2: list[Tensor], a: Hyper) -> None:
    """y ← y + a·x1·x2."""
    _add_combined_(ys, x1, x2, a, "mul")


def add_quotient_(ys: list[Tensor], x1: list[Tensor], x2: list[Tensor], a: Hyper) -> None:
    """y ← y + a·x1/x2."""
    _add_combined_(ys, x1, x2, a, "div")


_FUSED = {"mul": "addcmul_", "div": "addcdiv_"}


def _add_combined_(ys, x1, x2, a: Hyper, combine: str) -> None:
    """y ← y + a·(x1 combine x2): the fused foreach op for a number, a scaled temporary for a tensor."""
    if isinstance(a, Tensor):
        combined = foreach(combine, x1, x2)
        scale_(combined, a)
        foreach("add_", ys, combined)
    elif a:
        foreach(_FUSED[combine], ys, x1, x2, value=a)


# --- the pieces optimizers are made of.

def l2_penalty(grads: list[Tensor], params: list[Tensor], weight_decay: Hyper) -> list[Tensor]:
    """Coupled (L2) weight decay: g + wd·θ, out of place so ``.grad`` is untouched."""
    return add_scaled(grads, params, weight_decay) if nonzero(weight_decay) else grads


def decay_(params: list[Tensor], shrink: Hyper) -> None:
    """Decoupled weight decay: θ ← θ·(1 - shrink), applied before the update."""
    if nonzero(shrink):
        scale_(params, 1 - shrink)


def ema_(averages: list[Tensor], values: list[Tensor], beta: Hyper) -> None:
    """Exponential moving average: a ← β·a + (1-β)·x."""
    foreach("lerp_", averages, values, per_tensor(1 - beta, averages))


def ema_square_(averages: list[Tensor], values: list[Tensor], beta: Hyper) -> None:
    """Second moment: v ← β·v + (1-β)·x²."""
    scale_(averages, beta)
    add_product_(averages, values, values, 1 - beta)


def adam_moments_(buffers: dict[str, list[Tensor]], grads: list[Tensor], beta1: Hyper, beta2: Hyper) -> None:
    """Adam's first and second moments, ``exp_avg`` and ``exp_avg_sq``, updated with ``grads``."""
    ema_(buffers["exp_avg"], grads, beta1)
    ema_square_(buffers["exp_avg_sq"], grads, beta2)


def running_max_(maxima: list[Tensor], values: list[Tensor]) -> list[Tensor]:
    """AMSGrad's running maximum, taken over the values given (raw v in torch's AMSGrad)."""
    foreach("maximum_", maxima, values)
    return maxima


def bias_corrections(beta1: Hyper, beta2: Hyper, step: int) -> tuple[Hyper, Hyper]:
    """(1 - β1^t, 1 - β2^t)."""
    return 1 - beta1**step, 1 - beta2**step


def sqrt_plus_eps(second_moments: list[Tensor], eps: Hyper, scale: Hyper = 1.0) -> list[Tensor]:
    """Denominator sqrt(v)/scale + eps (scale = sqrt(1-β2^t) gives Adam's sqrt(v̂) + eps)."""
    denom = foreach("sqrt", second_moments)
    if isinstance(scale, Tensor) or scale != 1.0:
        foreach("div_", denom, per_tensor(scale, denom))
    foreach("add_", denom, per_tensor(eps, denom))
    return denom


def elementwise_rates(denominators: list[Tensor], step_size: Hyper) -> list[Tensor]:
    """Per-element learning rates η = step_size / denominator (AdaBound, AdaMod)."""
    rates = foreach("reciprocal", denominators)
    scale_(rates, step_size)
    return rates


def adam_step_size(lr: Hyper, beta1: Hyper, beta2: Hyper, step: int) -> Hyper:
    """lr·sqrt(1-β2^t)/(1-β1^t): the bias corrections folded into one scalar."""
    bc1, bc2 = bias_corrections(beta1, beta2, step)
    return lr * sqrt(bc2) / bc1


def rectification(beta2: Hyper, step: int) -> tuple[Hyper, Hyper]:
    """RAdam's variance rectification: (ρ_t, r_t) with ρ∞ = 2/(1-β2) - 1,
    ρ_t = ρ∞ - 2tβ2^t/(1-β2^t) and r_t = sqrt((ρ_t-4)(ρ_t-2)ρ∞ / ((ρ∞-4)(ρ∞-2)ρ_t)).

    r_t is only meaningful once ρ_t exceeds 4–5; callers ``select`` on ρ_t.
    """
    rho_inf = 2 / (1 - beta2) - 1
    beta2_t = beta2**step
    rho_t = rho_inf - 2 * step * beta2_t / (1 - beta2_t)
    ratio = (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
    return rho_t, sqrt(ratio.clamp(min=0) if isinstance(ratio, Tensor) else max(ratio, 0.0))


# --- pieces that reduce over a tensor: per config when a population stacks K of them.

def config_dims(group) -> int:
    """How many leading dimensions of every parameter index configurations: 1 when some hyperparameter of
    ``group`` is a (K,) tensor (a population, see the module docstring), else 0. A piece that reduces over
    a parameter (a block's second moment, a per-tensor rescaling) reduces over the dimensions after these,
    so that each config gets exactly what it would get alone. A population whose members share every value
    (each hyperparameter a number) says so with ``group["population"] = True``."""
    if group.get("population"):
        return 1
    return int(any(isinstance(value, Tensor) and value.dim() > 0 for key, value in group.items() if key != "params"))


def cautious_(updates: list[Tensor], grads: list[Tensor], leading: int = 0) -> None:
    """The cautious mask (Liang et al. 2024): u ← u·φ·d/(Σφ + 1) with φ = 1[u·g > 0], where d and Σφ count
    the elements of each tensor (of each config's slice: the dimensions after the first ``leading``)."""
    for update, grad in zip(updates, grads):
        mask = (update * grad > 0).to(update.dtype)
        dims = tuple(range(leading, update.dim()))
        kept = mask.sum(dim=dims, keepdim=True) if dims else mask.clone()
        size = math.prod(update.shape[leading:])
        mask.mul_(size / (kept + 1))
        update.mul_(mask)


# --- cache-sized slices (see optimizers/base.py): an elementwise kernel over lists too large for the cache.

SLICE_BYTES = 1 << 20
"""Bytes of each tensor list one eager call of an elementwise kernel sees on a CPU: a kernel reading four
lists and writing two temporaries keeps its slice within a core's L2 cache (1–4 MB on current x86)."""


def cache_sized_slices(lists: list[list[Tensor]], slice_bytes: int | None = None) -> list[list[list[Tensor]]]:
    """Parallel tensor lists (same length, the i-th tensors of all lists of one shape) cut into slices of
    about ``slice_bytes`` per list: small tensors whole, packed together; a larger one as flat views of
    its storage (contiguous tensors only; one that is not stays whole), cut at multiples of 64 elements.
    Each slice is a list of lists, parallel as the input."""
    slice_bytes = SLICE_BYTES if slice_bytes is None else slice_bytes
    slices: list[list[list[Tensor]]] = []
    current: list[list[Tensor]] = [[] for _ in lists]
    room = budget = 0
    for tensors in zip(*lists):
        first = tensors[0]
        if not budget:
            budget = room = max(64, slice_bytes // first.element_size() // 64 * 64)
        size = first.numel()
        if size <= room or not all(t.is_contiguous() and t.numel() == size for t in tensors):
            for kept, tensor in zip(current, tensors):
                kept.append(tensor)
            room -= size
            if room < 64:
                slices.append(current)
                current, room = [[] for _ in lists], budget
            continue
        sizes = [room // 64 * 64] if room >= 64 else []  # the first piece fills the slice begun
        while (cut := sum(sizes)) < size:
            sizes.append(min(budget, size - cut))
        pieces = [t.detach().view(-1).split(sizes) for t in tensors]
        for index, length in enumerate(sizes):
            for kept, cut in zip(current, pieces):
                kept.append(cut[index])
            room -= length
            if room < 64 or index < len(sizes) - 1:
                slices.append(current)
                current, room = [[] for _ in lists], budget
    if current[0]:
        slices.append(current)
    return slices


def slices_pay(params: list[Tensor], group) -> bool:
    """Whether an elementwise kernel over ``params`` should run slice by slice: eager (not tracing), on a CPU,
    no population (config_dims 0) and more than one slice's worth of parameters."""
    return (bool(params) and params[0].device.type == "cpu" and not torch.compiler.is_compiling()
            and not config_dims(group) and sum(p.numel() * p.element_size() for p in params) > SLICE_BYTES)


def in_slices(lists: list[list[Tensor]], group) -> list[list[list[Tensor]]]:
    """``lists`` as :func:`cache_sized_slices` cuts them where :func:`slices_pay`, else ``[lists]`` (one call
    over the whole lists: CUDA, a population, tracing, or small lists)."""
    return cache_sized_slices(lists) if slices_pay(lists[0], group) else [lists]
