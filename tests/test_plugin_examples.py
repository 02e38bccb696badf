"""The plugin examples in examples/plugins: Lion against the paper's formulas, and the housing task."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from pathlib import Path

import pytest
import torch

import optimizers
from study.catalog import TrainingProtocol
from study.protocol import CellResult
from workers import tasks, training
from workers.tasks import Problem, Regression, TaskDefinition

PLUGINS = Path(__file__).resolve().parent.parent / "examples" / "plugins"


def _load(filename: str):
    spec = importlib.util.spec_from_file_location(f"plugin_example_{Path(filename).stem}", PLUGINS / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def Lion():
    return _load("lion.py").Lion


@pytest.fixture(scope="module")
def housing():
    return _load("housing.py").housing


# --- Lion -----------------------------------------------------------------------------------------

def _reference_lion(theta0, grads, lr, beta1, beta2, weight_decay):
    """Chen et al. 2023, Algorithm 2, written out from the paper (float64): the trajectory of θ."""
    theta = theta0.clone()
    m = torch.zeros_like(theta)
    trajectory = []
    for g in grads:
        c = beta1 * m + (1 - beta1) * g
        theta = theta - lr * (torch.sign(c) + weight_decay * theta)
        m = beta2 * m + (1 - beta2) * g
        trajectory.append(theta.clone())
    return trajectory


@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
@pytest.mark.parametrize("betas", [(0.9, 0.99), (0.5, 0.8)])
def test_lion_matches_the_papers_update(Lion, weight_decay, betas):
    generator = torch.Generator().manual_seed(7)
    shapes = [(5, 3), (4,), ()]
    starts = [torch.randn(shape, generator=generator, dtype=torch.float64) for shape in shapes]
    grads = [[torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(20)] for shape in shapes]
    lr = 0.05
    params = [torch.nn.Parameter(start.clone()) for start in starts]
    opt = Lion(params, lr=lr, betas=betas, weight_decay=weight_decay)
    expected = [_reference_lion(start, g, lr, *betas, weight_decay) for start, g in zip(starts, grads)]
    for step in range(20):
        for p, g in zip(params, grads):
            p.grad = g[step].clone()
        opt.step()
        for p, trajectory in zip(params, expected):
            torch.testing.assert_close(p.detach(), trajectory[step], rtol=1e-6, atol=1e-12)
    # the parameters moved (20 sign steps of lr = 0.05), so agreement is not trivial
    assert max((p.detach() - s).abs().max().item() for p, s in zip(params, starts)) > 0.2
    assert set(opt.state[params[0]]) == {"exp_avg"}


def test_lion_weight_decay_is_decoupled(Lion):
    """With a zero gradient, sign(c) = 0: θ only shrinks by (1 − lr·λ) per step."""
    p = torch.nn.Parameter(torch.tensor([2.0, -3.0], dtype=torch.float64))
    opt = Lion([p], lr=0.1, weight_decay=0.5)
    for _ in range(3):
        p.grad = torch.zeros_like(p)
        opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([2.0, -3.0], dtype=torch.float64) * 0.95 ** 3)


def test_lion_closure_and_missing_gradients(Lion):
    used, unused = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = Lion([used, unused], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (used * torch.tensor([1.0, -1.0])).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 0.0
    torch.testing.assert_close(used.detach(), torch.tensor([0.9, 1.1]))
    torch.testing.assert_close(unused.detach(), torch.ones(2))
    with pytest.raises(ValueError):
        Lion([used], lr=-1.0)


def test_lion_is_described_from_its_signature(Lion):
    reference = "./lion.py:Lion"
    spec = optimizers.describe(Lion, reference, reference)
    assert spec.name == reference and spec.target == reference
    assert list(spec.hparams) == ["lr", "beta1", "beta2", "weight_decay"]
    assert spec.defaults() == {"lr": 1e-4, "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.0}
    assert spec.packed == {"betas": ("beta1", "beta2")}
    assert spec.batched is False
    assert spec.summary.startswith("Lion (Chen et al. 2023")
    lr, beta1, weight_decay = spec.hparams["lr"], spec.hparams["beta1"], spec.hparams["weight_decay"]
    assert (lr.low, lr.open_low, lr.log, lr.search) == (0.0, True, True, (1e-6, 1e-2))
    assert lr.check(0.0) is not None and lr.check(1e-3) is None
    assert (beta1.low, beta1.high) == (0.0, 1.0) and beta1.check(1.0) is not None and beta1.check(0.0) is None
    assert (weight_decay.low, weight_decay.high, weight_decay.search) == (0.0, math.inf, (1e-4, 1.0))
    assert weight_decay.check(0.0) is None and weight_decay.check(-1e-3) is not None
    arguments = spec.arguments({"lr": 1e-3, "beta1": 0.8, "beta2": 0.9, "weight_decay": 0.0})
    assert arguments == {"lr": 1e-3, "betas": (0.8, 0.9), "weight_decay": 0.0}
    opt = Lion([torch.nn.Parameter(torch.zeros(1))], **arguments)
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)


# --- the housing task -----------------------------------------------------------------------------

PROTOCOL = TrainingProtocol(epochs=2, batch_size=32, task_options={"hidden": 32})


def test_housing_is_a_task(housing):
    assert isinstance(housing, TaskDefinition)
    assert housing.metrics == {"test_loss": "minimize"} and housing.primary == "test_loss"
    assert (housing.epochs, housing.batch_size, housing.options) == (20, 32, {"hidden": 32})
    assert housing.description.startswith("House prices from housing.csv")


def test_housing_builds_a_standardized_regression(housing):
    torch.manual_seed(0)
    problem = housing.build(PROTOCOL, "cpu")
    assert isinstance(problem, Regression) and isinstance(problem, Problem)
    split = problem.split
    assert split.train_x.shape == (320, 4) and split.train_y.shape == (320, 1)
    assert split.test_x.shape == (80, 4) and split.test_y.shape == (80, 1)
    assert all(t.dtype == torch.float32 for t in (split.train_x, split.train_y, split.test_x, split.test_y))
    train = torch.cat([split.train_x, split.train_y], dim=1)
    torch.testing.assert_close(train.mean(dim=0), torch.zeros(5), atol=1e-5, rtol=0)  # train statistics
    torch.testing.assert_close(train.std(dim=0, unbiased=False), torch.ones(5), atol=1e-5, rtol=0)
    assert split.test_y.mean().abs() > 1e-3  # standardized with train statistics, not its own
    assert problem.steps_per_epoch == 10
    assert [m.out_features for m in problem.model if isinstance(m, torch.nn.Linear)] == [32, 1]
    wider = housing.build(TrainingProtocol(epochs=2, batch_size=32, task_options={"hidden": 8}), "cpu")
    assert wider.model[0].out_features == 8
    # the split does not depend on torch's seed: only the model's initialisation does
    torch.manual_seed(1)
    again = housing.build(PROTOCOL, "cpu")
    assert torch.equal(again.split.train_x, split.train_x) and torch.equal(again.split.test_y, split.test_y)
    assert not torch.equal(again.model[0].weight, problem.model[0].weight)


@pytest.fixture(scope="module")
def housing_task(housing):
    """The example task registered under a name of this module's, for its tests only (removed after)."""
    tasks.register("housing-test", housing.build)
    try:
        yield "housing-test"
    finally:
        tasks._PLUGINS.pop("housing-test", None)


def _losses(task: str, seed: int, epochs: int) -> list:
    protocol = TrainingProtocol(epochs=epochs, batch_size=32, task_options={"hidden": 32})
    return list(training.train(task, "adam", {"lr": 1e-2}, seed, protocol))


def test_housing_trains_with_adam(housing, housing_task):
    torch.manual_seed(0)
    untrained = housing.build(PROTOCOL, "cpu").evaluate()["test_loss"]  # the model train() starts from
    records = _losses(housing_task, seed=0, epochs=20)
    epochs, final = records[:-1], records[-1]
    assert final.status == "complete" and len(epochs) == 20
    test_losses = [r.metrics["test_loss"] for r in epochs]
    assert all(math.isfinite(v) for v in test_losses)
    # standardized prices: predicting the train mean scores about 0.9 on the test set, a linear fit about
    # 0.16; the MLP reaches about 0.1
    assert untrained > 0.5
    assert untrained > test_losses[0] > test_losses[-1]
    assert test_losses[-1] < 0.15
    assert epochs[-1].metrics["train_loss"] < 0.5 * epochs[0].metrics["train_loss"]


def test_housing_same_seed_same_losses(housing_task):
    first, second = _losses(housing_task, seed=3, epochs=3), _losses(housing_task, seed=3, epochs=3)
    strip = lambda records: [dataclasses.replace(r, wall_seconds=None) if isinstance(r, CellResult) else r  # noqa: E731
                             for r in records]
    assert strip(first) == strip(second)
    other = _losses(housing_task, seed=4, epochs=3)
    assert [r.metrics["train_loss"] for r in other[:-1]] != [r.metrics["train_loss"] for r in first[:-1]]
