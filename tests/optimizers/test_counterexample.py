"""Reddi, Kale & Kumar (ICLR 2018), Theorem 1: Adam converges to the worst point of a convex problem.

x ∈ [-1, 1] (projected after every step), f_t(x) = C·x when t mod 3 = 1 else -x, C = 3:
the optimum is x = -1. β1 = 0, β2 = 1/(1 + C²), α_t = 0.1/√t as in the theorem.
"""

import math

import pytest
import torch

import optimizers

C = 3.0


def _final_x(name: str, steps: int) -> float:
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = optimizers.create(name, [x], lr=0.1, beta1=0.0, beta2=1 / (1 + C**2))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1 / math.sqrt(t + 1))
    for t in range(1, steps + 1):
        x.grad = torch.full_like(x, C if t % 3 == 1 else -1.0)
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            x.clamp_(-1.0, 1.0)
    return x.item()


def test_adam_goes_to_the_wrong_end():
    assert _final_x("adam", 3000) > 0.9


@pytest.mark.parametrize("name", ["amsgrad", "amsbound"])
def test_the_running_max_fixes_it(name):
    assert _final_x(name, 3000) < -0.99


def test_what_adabound_and_adamod_do():
    """Recorded behaviour: AdaBound's bounds pull it to the optimum once they tighten (x = 0.65 after
    3,000 steps, -0.9989 after 30,000); AdaMod's capped rates keep Adam's failure (x = +1)."""
    assert _final_x("adabound", 30_000) < -0.99
    assert _final_x("adamod", 30_000) > 0.99
