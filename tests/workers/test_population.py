"""Population training against one-at-a-time training: every registered optimizer, every batchable task.

The reference is ``workers.training.train`` — the task's own module and the optimizer's ordinary
class, one configuration at a time — so a population must reproduce it within float32 rounding.
Optimizer kernels do not depend on the model, nor vmap on the optimizer: every optimizer runs on a
network (matrices and biases) and on a synthetic problem, every batchable task with Adam and SGDM.
Tolerance: a stacked convolution sums in another order, and Adam turns a rounding-level difference
in a near-zero gradient into an lr-sized step, so metrics agree to 1e-3 relative (most to 1e-6).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import optimizers
from study.catalog import TASKS, TrainingProtocol
from workers import data, models, population, tasks, training
from workers.population import batchable, train_cells, train_payload, train_population

BATCH_NORM_TASKS = {"cifar10-resnet34", "cifar10-densenet121", "cifar100-resnet34"}
BATCHABLE = [name for name in TASKS if name not in BATCH_NORM_TASKS]
# a few steps per epoch on each task (the image tasks read the 16-image files of conftest.py)
BATCH_SIZE = {"digits-mlp": 512, "digits-logreg": 512, "mnist1d-mlp": 1000, "mnist1d-cnn": 1000,
              "quadratic-deep": 400, "cifar10-3c3d": 40}


def _protocol(name: str, data_root, epochs: int = 2, **options) -> TrainingProtocol:
    defaults = {key: option.default for key, option in TASKS[name].options.items()}
    defaults |= {"steps_per_epoch": 5} if "steps_per_epoch" in defaults else {}
    return TrainingProtocol(epochs=epochs, batch_size=BATCH_SIZE.get(name, 8), data_dir=str(data_root),
                            task_options=defaults | options)


def _members(optimizer: str, max_lr: float = math.inf) -> list[dict[str, float]]:
    """Three configs: the paper defaults (lr at most ``max_lr``), a smaller lr, and a larger lr with another
    momentum setting."""
    defaults = optimizers.spec(optimizer).defaults()
    defaults["lr"] = min(defaults["lr"], max_lr)
    other = {"beta1": 0.8} if "beta1" in defaults else {"momentum": 0.5} if "momentum" in defaults else {}
    return [defaults, defaults | {"lr": defaults["lr"] / 2}, defaults | {"lr": defaults["lr"] * 2} | other]


def _by_member(records) -> dict[int, list[dict]]:
    found: dict[int, list[dict]] = {}
    for member, record in records:
        found.setdefault(member, []).append(record)
    return found


def _without_time(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_seconds"} for r in records]


def _assert_close(ours: list[dict], reference: list[dict], what: str) -> None:
    assert len(ours) == len(reference), what
    for mine, theirs in zip(ours, reference):
        flat = lambda r: {**{k: v for k, v in r.items() if k not in ("final", "wall_seconds")},  # noqa: E731
                          **{f"final.{k}": v for k, v in r.get("final", {}).items()}}
        a, b = flat(mine), flat(theirs)
        assert a.keys() == b.keys(), what
        for key in a:
            if isinstance(b[key], float) and math.isfinite(b[key]):
                assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-5), f"{what}: {key}"
            elif isinstance(b[key], float) and math.isnan(b[key]):
                assert math.isnan(a[key]), f"{what}: {key}"
            else:
                assert a[key] == b[key], f"{what}: {key}"


EVERY_OPTIMIZER = [(task, name) for task in ("digits-mlp", "rosenbrock") for name in optimizers.names()]
EVERY_TASK = [(task, name) for task in BATCHABLE for name in ("adam", "sgdm") if task not in ("digits-mlp", "rosenbrock")]


@pytest.mark.parametrize("task,optimizer", EVERY_OPTIMIZER + EVERY_TASK)
def test_a_population_trains_each_config_as_it_trains_alone(task, optimizer, data_dir):
    plan = _protocol(task, data_dir[0], epochs=2 if (task, optimizer) in EVERY_OPTIMIZER else 1)
    members = _members(optimizer, max_lr=1e-3 if task == "rosenbrock" else math.inf)  # SGD's 0.1 diverges there
    together = _by_member(train_population(task, optimizer, members, seed=3, protocol=plan))
    for index, hparams in enumerate(members):
        alone = list(training.train(task, optimizer, hparams, seed=3, protocol=plan))
        _assert_close(together[index], alone, f"{task}/{optimizer} config {index}")


@pytest.mark.parametrize("task,optimizer,wild", [
    ("digits-mlp", "adam", {"lr": 10.0, "beta1": 0.0}),
    ("quadratic-deep", "adabound", {"lr": 50.0}),
    ("rosenbrock", "rmsprop", {"lr": 0.5}),
    ("mnist1d-cnn", "sgdm", {"lr": 1000.0}),
])
def test_a_config_that_diverges_is_frozen_and_leaves_the_others_as_without_it(task, optimizer, wild, data_dir):
    """Bit-identical for dense layers; a stacked convolution's rounding depends on the population's size
    (as torch's convolutions depend on the batch size), so there the others agree within rounding."""
    plan = _protocol(task, data_dir[0], epochs=3)
    defaults = optimizers.spec(optimizer).defaults()
    calm = [defaults | {"lr": defaults["lr"] / 4}, defaults | {"lr": defaults["lr"] / 2}]
    with_it = _by_member(train_population(task, optimizer, [calm[0], defaults | wild, calm[1]], 0, plan))
    without = _by_member(train_population(task, optimizer, calm, 0, plan))
    assert with_it[1][-1]["status"] == "diverged" and len(with_it[1]) < plan.epochs + 1  # frozen early
    if task == "mnist1d-cnn":
        _assert_close(with_it[0], without[0], "config 0")
        _assert_close(with_it[2], without[1], "config 2")
    else:
        assert _without_time(with_it[0]) == _without_time(without[0])
        assert _without_time(with_it[2]) == _without_time(without[1])


def test_a_batch_norm_model_trains_one_config_per_pass_and_says_so(monkeypatch, caplog):
    """A digits MLP with BatchNorm stands in for the ResNets (which take minutes on a CPU)."""
    def with_batch_norm(plan, device):
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
        return tasks.Classification(model.to(device), data.digits().to(device), plan.batch_size)

    monkeypatch.setitem(tasks.IMPLEMENTATIONS, "digits-mlp", with_batch_norm)
    plan = _protocol("digits-mlp", "data")
    torch.manual_seed(0)
    assert "BatchNorm" in batchable(tasks.build("digits-mlp", plan, "cpu").model)
    assert batchable(models.cifar_resnet34(10)) and not batchable(models.deepobs_3c3d())
    members = _members("adam")
    with caplog.at_level("WARNING", logger="adamscape"):
        records = _by_member(train_cells("digits-mlp", "adam", 0, members, plan))
    assert "one configuration per pass" in caplog.text
    for index, hparams in enumerate(members):
        alone = list(training.train("digits-mlp", "adam", hparams, 0, plan))
        assert _without_time(records[index]) == _without_time(alone)


def test_a_population_that_runs_out_of_memory_is_split_before_it_reports(monkeypatch, data_dir):
    """On CUDA an oversized population raises OutOfMemoryError in its first steps: it is retried in halves,
    and every member still gets exactly its one-at-a-time records."""
    plan = _protocol("rosenbrock", data_dir[0])
    real = population.train_population
    tried = []

    def limited(task, optimizer, members, seed, protocol, device="cpu"):
        tried.append(len(members))
        if len(members) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(task, optimizer, members, seed, protocol, device)

    monkeypatch.setattr(population, "train_population", limited)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    members = [optimizers.spec("adam").defaults() | {"lr": lr} for lr in (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2)]
    records = _by_member(train_cells("rosenbrock", "adam", 0, members, plan, population=5))
    assert tried == [5, 2, 2]  # then the last member trains alone
    for index, hparams in enumerate(members):
        _assert_close(records[index], list(training.train("rosenbrock", "adam", hparams, 0, plan)), str(index))


def test_a_retry_after_a_resource_fault_trains_in_smaller_populations(monkeypatch, data_dir, caplog):
    """Cells whose worker ran out of device memory come back with ``halvings`` (one per worker lost on them,
    ``study.runner.payload``): their populations are that many times halved, and they still train as alone."""
    plan = _protocol("rosenbrock", data_dir[0])
    real = population.train_population
    tried = []

    def recorded(task, optimizer, members, seed, protocol, device="cpu"):
        tried.append(len(members))
        return real(task, optimizer, members, seed, protocol, device)

    monkeypatch.setattr(population, "train_population", recorded)
    members = [optimizers.spec("adam").defaults() | {"lr": lr} for lr in (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2)]
    cells = [{"key": index, "optimizer": "adam", "seed": 0, "hparams": hparams} for index, hparams in enumerate(members)]
    batch = {"task": "rosenbrock", "protocol": plan, "population": 6, "cells": cells}
    first = list(train_payload(batch))
    assert tried == [6]
    tried.clear()
    retried = list(train_payload(batch | {"halvings": 1}))
    assert tried == [3, 3] and "populations of at most 3 this time" in caplog.text
    _assert_close(sorted(retried, key=lambda r: r["key"]), sorted(first, key=lambda r: r["key"]), "halved")


def test_auto_population_size_shrinks_with_the_model_and_grows_with_the_memory(monkeypatch, data_dir):
    plan = _protocol("mnist-mlp", data_dir[0])
    torch.manual_seed(0)
    small, large = tasks.build("digits-logreg", plan, "cpu"), tasks.build("mnist-mlp", plan, "cpu")
    monkeypatch.setattr(population, "_free_memory", lambda device: 1 << 30)
    sizes = [population.population_size(problem, "cpu") for problem in (small, large)]
    monkeypatch.setattr(population, "_free_memory", lambda device: 2 << 30)
    doubled = population.population_size(large, "cpu")
    assert sizes[0] > 1000 and 1 <= sizes[1] < 100  # 650 parameters vs 1.3 million
    assert doubled in (2 * sizes[1], 2 * sizes[1] + 1)


def test_a_workers_batch_trains_each_group_and_a_crash_ends_only_its_groups_cells():
    """What a worker actor runs: cells of two seeds and two optimizers, one group crashing (an lr the
    optimizer refuses) — its cells end as errors with the cause, the other groups' as trained alone."""
    plan = TrainingProtocol(epochs=2, batch_size=1, task_options={"steps_per_epoch": 5})
    adam = optimizers.spec("adam").defaults()
    cells = [{"key": f"a{seed}{i}", "optimizer": "adam", "seed": seed, "hparams": adam | {"lr": lr}}
             for seed in (0, 1) for i, lr in enumerate((1e-3, 1e-2))]
    cells += [{"key": "bad", "optimizer": "sgdm", "seed": 0, "hparams": {"lr": -1.0}},
              {"key": "bad2", "optimizer": "sgdm", "seed": 0, "hparams": {"lr": 0.01}}]
    payload = {"task": "rosenbrock", "protocol": plan.__dict__, "population": None, "cells": cells}
    by_key: dict[str, list[dict]] = {}
    for record in train_payload(payload):
        by_key.setdefault(record.pop("key"), []).append(record)
    assert set(by_key) == {c["key"] for c in cells}
    for cell in cells[:4]:
        alone = list(training.train("rosenbrock", "adam", cell["hparams"], cell["seed"], plan))
        _assert_close(by_key[cell["key"]], alone, cell["key"])
    assert [sorted(r) for r in by_key["bad"]] == [["device", "error"]] and "lr=-1" in by_key["bad"][0]["error"]
    assert by_key["bad"][0]["device"] == "cpu"  # a failed cell says what it failed on, too
    assert by_key["bad2"] == by_key["bad"]


KERNEL_PLUGIN = '''
from optimizers import Adam


class Adam2(Adam):
    """Adam, as a study file's own optimizer written on the batched kernel of optimizers.base."""
'''
PLAIN_PLUGIN = '''
import torch


class PlainSGD(torch.optim.SGD):
    """torch's SGD: no batched kernel."""
'''


def test_own_optimizers_train_in_populations_only_on_the_batched_kernel(tmp_path, data_dir, caplog):
    from study import plugins

    (tmp_path / "mine.py").write_text(KERNEL_PLUGIN + PLAIN_PLUGIN)
    records = {ref: plugins.describe_optimizer(plugins.locate(ref, "optimizer", tmp_path))
               for ref in ("./mine.py:Adam2", "./mine.py:PlainSGD")}
    plugins.install(records)
    assert records["./mine.py:Adam2"]["batched"] and not records["./mine.py:PlainSGD"]["batched"]
    plan = _protocol("digits-logreg", data_dir[0])
    calls = []
    original = population.train_population
    population.train_population = lambda *args, **kwargs: calls.append(len(args[2])) or original(*args, **kwargs)
    try:
        for name, base in (("./mine.py:Adam2", "adam"), ("./mine.py:PlainSGD", None)):
            members = [optimizers.spec(name).defaults() | {"lr": lr} for lr in (1e-3, 1e-2, 1e-1)]
            ours = _by_member(train_cells("digits-logreg", name, 0, members, plan))
            for index, member in enumerate(members):
                alone = list(training.train("digits-logreg", base or name, member, 0, plan))
                _assert_close(_without_time(ours[index]), _without_time(alone), f"{name} {member}")
    finally:
        population.train_population = original
    assert calls == [3]  # Adam2's three configs as one population; PlainSGD's one at a time
    assert "optimizer ./mine.py:PlainSGD trains one configuration per pass" in caplog.text
