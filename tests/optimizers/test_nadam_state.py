"""NAdam's μ-product: float64 state updated once per step (the same work at any t), restored exactly by
``load_state_dict``."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

import optimizers

SHAPES = [(50, 40), (40,), (3, 4, 5)]
K = 3
BETA1 = torch.tensor([0.9, 0.8, 0.95], dtype=torch.float64)


def _params(population: bool) -> list[torch.Tensor]:
    """float32 parameters (the load would cast a float64 product to float32); a population's carry K copies."""
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen) for s in SHAPES]
    if population:
        params = [torch.stack([p] * K) for p in params]
    return [p.requires_grad_(True) for p in params]


def _twin(params):
    return [p.detach().clone().requires_grad_(True) for p in params]


def _nadam(params, population: bool):
    """beta2 = 0.9999: at t = 100,000 the bias correction 1 - β2^t still differs from 1 (with 0.999 it rounds to
    1 and the step skips a division, which would be a different op list for a reason unrelated to Π_t)."""
    return optimizers.create("nadam", params, lr=1e-2, beta2=0.9999,
                             **({"beta1": BETA1.clone()} if population else {}))


def _set_grads(params, step):
    """A quadratic bowl's gradient plus a step-dependent tilt."""
    for i, p in enumerate(params):
        tilt = torch.cos(torch.arange(p.numel(), dtype=torch.float32) * (step + 1) + i).reshape(p.shape)
        p.grad = 2 * p.detach() + 0.3 * tilt


def _train(optimizer, params, steps, first_step=0):
    for step in range(first_step, first_step + steps):
        _set_grads(params, step)
        optimizer.step()


@pytest.mark.parametrize("population", [False, True], ids=["scalar", "population"])
@pytest.mark.parametrize("saved_without_product", [False, True], ids=["saved", "older-state-dict"])
def test_a_state_dict_round_trip_continues_exactly_with_a_float64_product(population, saved_without_product):
    params = _params(population)
    optimizer = _nadam(params, population)
    _train(optimizer, params, 5)
    saved, twin = copy.deepcopy(optimizer.state_dict()), _twin(params)
    if saved_without_product:  # a state dict from before mu_product was state
        for state in saved["state"].values():
            del state["mu_product"]
    _train(optimizer, params, 5, first_step=5)

    restored = _nadam(twin, population)
    restored.load_state_dict(saved)
    for param in twin:
        product = restored.state[param]["mu_product"]
        assert product.dtype == torch.float64 and product.shape == ((K,) if population else ())
    _train(restored, twin, 5, first_step=5)
    for a, b in zip(params, twin):
        assert torch.equal(a, b)
    for a, b in zip(params, twin):
        assert torch.equal(optimizer.state[a]["mu_product"], restored.state[b]["mu_product"])


class _OpRecorder(TorchDispatchMode):
    """Every aten op run under it, as (name, numels of the tensors it returns)."""

    def __init__(self):
        super().__init__()
        self.ops: list[tuple[str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.append((func.name(), tuple(t.numel() for t in pytree.tree_leaves(out)
                                             if isinstance(t, torch.Tensor))))
        return out


def _ops_of_step(population: bool, step: int) -> tuple[list, set[int]]:
    """The ops of the NAdam step number ``step``, its state (made by one real step) loaded at ``step - 1``."""
    params = _params(population)
    optimizer = _nadam(params, population)
    _train(optimizer, params, 1)
    saved = optimizer.state_dict()
    for state in saved["state"].values():
        state["step"] = step - 1
    resumed = _nadam(params, population)
    resumed.load_state_dict(saved)
    _set_grads(params, step)
    with _OpRecorder() as recorder:
        resumed.step()
    assert all(resumed.state[p]["step"] == step for p in params)
    return recorder.ops, {p.numel() for p in params}


@pytest.mark.parametrize("population", [False, True], ids=["scalar", "population"])
def test_a_step_does_the_same_work_at_step_100000_as_at_step_1(population):
    first, sizes = _ops_of_step(population, 1)
    late, _ = _ops_of_step(population, 100_000)
    assert late == first
    large = [(name, numels) for name, numels in late if any(n >= 1000 and n not in sizes for n in numels)]
    assert not large, f"ops whose output grows with t: {large}"


def test_off_the_cpu_the_product_is_never_read_on_the_host():
    """``meta`` stands in for CUDA: reading a value there raises (on CUDA it would wait for the device), so a
    scalar group's steps that complete kept Π_t a tensor on the parameters' device."""
    params = [torch.zeros(s, device="meta", requires_grad=True) for s in SHAPES]
    optimizer = optimizers.create("nadam", params)
    for _ in range(2):
        for p in params:
            p.grad = torch.zeros_like(p)
        optimizer.step()
    assert all(optimizer.state[p]["mu_product"].device.type == "meta" for p in params)
