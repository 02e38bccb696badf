"""Population training against one-at-a-time training: every registered optimizer, every batchable task.

The reference is ``workers.training.train`` — the task's own module and the optimizer's ordinary
class, one configuration at a time — so a population must reproduce it within float32 rounding.
Optimizer kernels do not depend on the model, nor vmap on the optimizer: every optimizer runs on a
network (matrices and biases) and on a synthetic problem, every batchable task with Adam and SGDM.
Tolerance: a stacked convolution sums in another order, and Adam turns a rounding-level difference
in a near-zero gradient into an lr-sized step, so metrics agree to 1e-3 relative (most to 1e-6).
"""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch
from torch import nn

import optimizers
from study import plugins
from study.catalog import TASKS, TrainingProtocol
from study.protocol import BatchPayload, CellFailure, CellPayload, CellResult, EpochRecord, PopulationNote
from tests.support.paths import ROOT
from workers import data, models, population, tasks, training
from workers.population import batchable, train_cells, train_payload, train_population

BATCH_NORM_TASKS = {"cifar10-resnet34", "cifar10-densenet121", "cifar100-resnet34"}  # the ResNet-34 once
BATCHABLE = [name for name in TASKS if name != "cifar100-resnet34"]
USER_BN_TASK = "digits-bn-cnn"  # a user's own task with BatchNorm (registered by the fixture below)
# a few steps per epoch on each task (the image tasks read the 16-image files of conftest.py)
BATCH_SIZE = {"digits-mlp": 512, "digits-logreg": 512, "mnist1d-mlp": 1000, "mnist1d-cnn": 1000,
              "quadratic-deep": 400, "cifar10-3c3d": 40, USER_BN_TASK: 512}


def digits_bn_cnn(plan: TrainingProtocol, device: str) -> tasks.Problem:
    """A user's CNN with BatchNorm after both convolutions (bias-free, as BatchNorm makes a bias redundant) and
    BatchNorm1d before the classifier; the digits through it."""
    model = nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2), nn.ReLU(),
        nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 64, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))
    return tasks.Classification(model.to(device), data.digits().to(device), plan.batch_size)


@pytest.fixture(autouse=True)
def user_bn_task(monkeypatch):
    """The user's BatchNorm task, known to workers.tasks for each test and forgotten after it."""
    monkeypatch.setitem(tasks._PLUGINS, USER_BN_TASK, digits_bn_cnn)


def _protocol(name: str, data_root, epochs: int = 2, **options) -> TrainingProtocol:
    defaults = {key: option.default for key, option in TASKS[name].options.items()} if name in TASKS else {}
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


def _by_member(records) -> dict[int, list[EpochRecord | CellResult]]:
    found: dict[int, list[EpochRecord | CellResult]] = {}
    for member, record in records:
        found.setdefault(member, []).append(record)
    return found


def _without_time(records: list) -> list:
    """The records (untagged: their ``key`` None) without their wall time and the note of how their pass
    was chosen (``population``)."""
    return [dataclasses.replace(r, wall_seconds=None, population=None, key=None) if isinstance(r, CellResult)
            else dataclasses.replace(r, key=None) for r in records]


def _flat(record) -> dict:
    """A record's fields but its key, wall time and population note, its metrics (an epoch's, or a result's
    final ones) one level up as ``metrics.<name>`` / ``final.<name>``."""
    found = {}
    for name, value in vars(record).items():
        if name in ("key", "wall_seconds", "population"):
            continue
        found |= {f"{name}.{k}": v for k, v in value.items()} if isinstance(value, dict) else {name: value}
    return found


def _assert_close(ours: list, reference: list, what: str) -> None:
    assert len(ours) == len(reference), what
    for mine, theirs in zip(ours, reference):
        assert type(mine) is type(theirs), what
        a, b = _flat(mine), _flat(theirs)
        assert a.keys() == b.keys(), what
        for key in a:
            if isinstance(b[key], float) and math.isfinite(b[key]):
                assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-5), f"{what}: {key}"
            elif isinstance(b[key], float) and math.isnan(b[key]):
                assert math.isnan(a[key]), f"{what}: {key}"
            else:
                assert a[key] == b[key], f"{what}: {key}"


EVERY_OPTIMIZER = [(task, name) for task in ("digits-mlp", "rosenbrock", USER_BN_TASK, "pydoc-transformer")
                   for name in optimizers.names()]
# the transformer at a size that keeps 20 optimizers' runs to seconds: one block, width 16 (attention, LayerNorm
# and the causal mask as at its default size)
SMALL = {"pydoc-transformer": {"layers": 1, "width": 16, "heads": 2, "context": 16, "test_tokens": 512}}
EVERY_TASK = [(task, name) for task in BATCHABLE for name in ("adam", "sgdm")
              if task not in ("digits-mlp", "rosenbrock", *SMALL, *BATCH_NORM_TASKS)]  # the CIFAR BatchNorm nets: below


@pytest.mark.parametrize("task,optimizer", EVERY_OPTIMIZER + EVERY_TASK)
def test_a_population_trains_each_config_as_it_trains_alone(task, optimizer, data_dir):
    epochs = 2 if (task, optimizer) in EVERY_OPTIMIZER and task not in (USER_BN_TASK, *SMALL) else 1
    plan = _protocol(task, data_dir[0], epochs=epochs, **SMALL.get(task, {}))
    members = _members(optimizer, max_lr=1e-3 if task == "rosenbrock" else math.inf)  # SGD's 0.1 diverges there
    together = _by_member(train_population(task, optimizer, members, seed=3, protocol=plan))
    for index, hparams in enumerate(members):
        alone = list(training.train(task, optimizer, hparams, seed=3, protocol=plan))
        _assert_close(together[index], alone, f"{task}/{optimizer} config {index}")


@pytest.mark.parametrize("optimizer", ["adam-mini", "cadamw"])
def test_members_that_share_every_value_still_reduce_per_config(optimizer, data_dir):
    """Adam-mini's blocks and the cautious mask's rescaling reduce over each config's slice: with every
    hyperparameter one number (identical members), the kernel knows the configs from the group's flag."""
    plan = _protocol("digits-mlp", data_dir[0], epochs=2)
    defaults = optimizers.spec(optimizer).defaults()
    together = _by_member(train_population("digits-mlp", optimizer, [defaults, defaults], seed=3, protocol=plan))
    alone = list(training.train("digits-mlp", optimizer, defaults, seed=3, protocol=plan))
    for index in (0, 1):
        _assert_close(together[index], alone, f"{optimizer} member {index}")
        assert together[index][-1].final["train_loss"] == pytest.approx(alone[-1].final["train_loss"], rel=1e-6)


@pytest.mark.parametrize("task,optimizer,wild", [
    ("digits-mlp", "adam", {"lr": 10.0, "beta1": 0.0}),
    ("quadratic-deep", "adabound", {"lr": 50.0}),
    ("rosenbrock", "rmsprop", {"lr": 0.5}),
    ("mnist1d-cnn", "sgdm", {"lr": 1000.0}),
    ("digits-mlp", "adamw-schedulefree", {"lr": 10.0}),  # evaluated in eval mode with the others: bit-identical too
])
def test_a_config_that_diverges_is_frozen_and_leaves_the_others_as_without_it(task, optimizer, wild, data_dir):
    """Bit-identical for dense layers; a stacked convolution's rounding depends on the population's size
    (as torch's convolutions depend on the batch size), so there the others agree within rounding."""
    plan = _protocol(task, data_dir[0], epochs=3)
    defaults = optimizers.spec(optimizer).defaults()
    calm = [defaults | {"lr": defaults["lr"] / 4}, defaults | {"lr": defaults["lr"] / 2}]
    with_it = _by_member(train_population(task, optimizer, [calm[0], defaults | wild, calm[1]], 0, plan))
    without = _by_member(train_population(task, optimizer, calm, 0, plan))
    assert with_it[1][-1].status == "diverged" and len(with_it[1]) < plan.epochs + 1  # frozen early
    if task == "mnist1d-cnn":
        _assert_close(with_it[0], without[0], "config 0")
        _assert_close(with_it[2], without[1], "config 2")
    else:
        assert _without_time(with_it[0]) == _without_time(without[0])
        assert _without_time(with_it[2]) == _without_time(without[1])


def test_each_member_keeps_and_is_evaluated_with_its_own_batch_norm_statistics(data_dir):
    """After training, member k's running statistics are those of config k trained alone (not another
    member's, not a shared set), and its test metrics are computed with them: members differ, each like alone."""
    plan = _protocol(USER_BN_TASK, data_dir[0], epochs=1)
    members = _members("adam")
    torch.manual_seed(0)
    stacked = population._Population(tasks.build(USER_BN_TASK, plan, "cpu"), "adam", members, "cpu")
    runs = [training.SingleRun(USER_BN_TASK, "adam", hparams, 0, plan, "cpu") for hparams in members]
    generator = torch.Generator().manual_seed(0)
    for batch in stacked.problem.batches(generator):
        step_data, _ = stacked.problem.prepare(batch, generator)
        stacked.step(stacked.losses(step_data))
    for run in runs:
        for batch in run.problem.batches(run.generator):
            run.step(batch)
    names = dict(zip(stacked.buffer_names, stacked.buffers))
    for index, run in enumerate(runs):
        for name, buffer in run.problem.model.named_buffers():
            assert torch.allclose(names[name][index], buffer, rtol=1e-4, atol=1e-6), (index, name)
    assert not torch.allclose(names["2.running_mean"][0], names["2.running_mean"][2])  # the members differ
    metrics = [stacked.evaluate(index) for index in range(len(members))]
    for index, run in enumerate(runs):
        assert metrics[index]["test_loss"] == pytest.approx(run.problem.evaluate()["test_loss"], rel=1e-4)
    assert len({round(m["test_loss"], 6) for m in metrics}) == len(members)


@pytest.mark.parametrize("task", ["cifar10-resnet34", "cifar10-densenet121"])
def test_the_cifar_batch_norm_networks_train_as_populations_as_alone(task, data_dir):
    """ResNet-34 and DenseNet-121 (BatchNorm after every convolution): two steps of a population of two
    against each config alone — the same losses, running statistics and test metrics within float32
    rounding. Two steps, not epochs: a step takes seconds on a CPU. SGD with momentum, whose steps are
    proportional to the gradient: Adam's first steps are ±lr for every weight whatever the gradient's size,
    so rounding-level differences in the near-zero gradients of a deep net's BatchNorm biases become lr-sized
    (the step-by-step equality of every optimizer is checked on the user's BatchNorm CNN above)."""
    plan = dataclasses.replace(_protocol(task, data_dir[0], epochs=1), batch_size=4)
    members = [{"lr": 0.01, "momentum": 0.9}, {"lr": 0.03, "momentum": 0.9}]
    torch.manual_seed(3)
    stacked = population._Population(tasks.build(task, plan, "cpu"), "sgdm", members, "cpu")
    generator = torch.Generator().manual_seed(3)
    together = []
    for batch in list(stacked.problem.batches(generator))[:2]:
        step_data, _ = stacked.problem.prepare(batch, generator)
        losses = stacked.losses(step_data)
        stacked.step(losses)
        together.append(losses.tolist())
    names = dict(zip(stacked.buffer_names, stacked.buffers))
    metrics = [stacked.evaluate(index) for index in range(2)]
    alone_buffers = []
    for index, hparams in enumerate(members):
        run = training.SingleRun(task, "sgdm", hparams, 3, plan, "cpu")
        alone = [run.step(batch)[0].item() for batch in list(run.problem.batches(run.generator))[:2]]
        assert [step[index] for step in together] == pytest.approx(alone, rel=1e-3)  # BatchNorm over 4 examples
        assert metrics[index]["test_loss"] == pytest.approx(run.problem.evaluate()["test_loss"], rel=5e-3)
        alone_buffers.append({n: b for n, b in run.problem.model.named_buffers() if b.is_floating_point()})

    def apart(member: int, run: int) -> float:
        """The largest difference of a running statistic, relative to that statistic's scale."""
        return max((names[n][member].double() - b.double()).abs().max().item() / b.double().abs().max().item()
                   for n, b in alone_buffers[run].items())
    # each member's statistics are its own config's: within rounding of them, far from the other config's
    assert apart(0, 0) < 1e-2 and apart(1, 1) < 1e-2
    assert apart(1, 0) > 10 * max(apart(0, 0), apart(1, 1))


def test_only_recurrent_layers_keep_a_model_out_of_populations(caplog, data_dir):
    """BatchNorm networks batch (the CIFAR ResNet-34 and DenseNet-121 included); a recurrent layer, which
    vmap cannot batch, trains one configuration per pass and says so once, equal to one-at-a-time."""
    assert batchable(models.cifar_resnet34(10)) is None and batchable(models.cifar_densenet121(10)) is None
    assert "LSTM" in batchable(nn.Sequential(nn.Linear(4, 4), nn.LSTM(4, 4)))

    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.head = nn.LSTM(8, 16, batch_first=True), nn.Linear(16, 10)

        def forward(self, x):
            return self.head(self.lstm(x.view(-1, 8, 8))[0][:, -1])

    tasks._PLUGINS[USER_BN_TASK] = lambda plan, device: tasks.Classification(Recurrent().to(device),
                                                                            data.digits().to(device), plan.batch_size)
    plan = _protocol(USER_BN_TASK, data_dir[0], epochs=1)
    members = _members("adam")[:2]
    with caplog.at_level("WARNING", logger="adamscape"):
        records = _by_member(train_cells(USER_BN_TASK, "adam", 0, members, plan))
    assert caplog.text.count("one configuration per pass: it has a recurrent layer (lstm: LSTM)") == 1
    assert {r.population.size for rs in records.values() for r in rs if isinstance(r, CellResult)} == {1}
    for index, hparams in enumerate(members):
        assert _without_time(records[index]) == _without_time(list(training.train(USER_BN_TASK, "adam", hparams, 0, plan)))


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
    ``study.driver.runner.payload``): their populations are that many times halved, and they still train as alone."""
    plan = _protocol("rosenbrock", data_dir[0])
    real = population.train_population
    tried = []

    def recorded(task, optimizer, members, seed, protocol, device="cpu"):
        tried.append(len(members))
        return real(task, optimizer, members, seed, protocol, device)

    monkeypatch.setattr(population, "train_population", recorded)
    members = [optimizers.spec("adam").defaults() | {"lr": lr} for lr in (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2)]
    cells = tuple(CellPayload(index, "adam", 0, hparams) for index, hparams in enumerate(members))
    batch = BatchPayload("rosenbrock", plan, cells, population=6)
    first = list(train_payload(batch))
    assert tried == [6]
    tried.clear()
    retried = list(train_payload(dataclasses.replace(batch, halvings=1)))
    assert tried == [3, 3] and "populations of at most 3 this time" in caplog.text
    _assert_close(sorted(retried, key=lambda r: r.key), sorted(first, key=lambda r: r.key), "halved")


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


def test_the_memory_plan_counts_what_backward_keeps_and_leaves_batch_norm_statistics_as_they_were(data_dir):
    """The activations one step keeps for backward, measured on a BatchNorm CNN: what autograd saves, worked out
    from the shapes; twice as much for twice the batch; the running statistics untouched."""
    sizes = {}
    for batch in (64, 128):
        torch.manual_seed(0)
        problem = tasks.build(USER_BN_TASK, TrainingProtocol(epochs=1, batch_size=batch), "cpu")
        before = [b.clone() for b in problem.model.buffers()]
        sizes[batch] = population._activation_bytes(problem)
        assert all(torch.equal(a, b) for a, b in zip(before, problem.model.buffers()))
    # per example, float32: the input (64) for the first convolution; each BatchNorm keeps its input (the
    # convolution's or linear layer's output: 2·64, 4·64, 16) and each ReLU its output, which the next layer
    # keeps too (one storage; the flatten is a view); the loss its log-probabilities (10) and the int64 targets;
    # plus each BatchNorm's per-channel mean and 1/std
    kept = 64 + 2 * (2 * 64 + 4 * 64 + 16) + 10
    assert 64 * (kept * 4 + 8) <= sizes[64] <= 64 * (kept * 4 + 8) + 2 * 4 * (2 + 4 + 16) + 512
    assert sizes[128] / sizes[64] == pytest.approx(2, rel=0.1)


def test_a_workers_batch_trains_each_group_and_a_crash_fails_only_the_cell_that_crashes():
    """What a worker actor runs: cells of two seeds and two optimizers, one cell crashing (an lr the
    optimizer refuses) — it ends as an error with the cause; its group-mate and the other groups train as
    they train alone."""
    plan = TrainingProtocol(epochs=2, batch_size=1, task_options={"steps_per_epoch": 5})
    adam = optimizers.spec("adam").defaults()
    cells = [CellPayload(f"a{seed}{i}", "adam", seed, adam | {"lr": lr})
             for seed in (0, 1) for i, lr in enumerate((1e-3, 1e-2))]
    cells += [CellPayload("bad", "sgdm", 0, {"lr": -1.0}), CellPayload("bad2", "sgdm", 0, {"lr": 0.01})]
    payload = BatchPayload("rosenbrock", plan, tuple(cells), population=None)
    by_key: dict[str, list] = {}
    for record in train_payload(payload):
        by_key.setdefault(record.key, []).append(record)
    assert set(by_key) == {c.key for c in cells}
    for cell in cells[:4]:
        alone = list(training.train("rosenbrock", "adam", cell.hparams, cell.seed, plan))
        _assert_close(by_key[cell.key], alone, cell.key)
    (bad,) = by_key["bad"]
    assert isinstance(bad, CellFailure) and "lr=-1" in bad.error
    assert bad.device == "cpu"  # a failed cell says what it failed on, too
    alone = list(training.train("rosenbrock", "sgdm", cells[5].hparams, 0, plan))
    _assert_close(by_key["bad2"], alone, "bad2")  # not failed with it: trained, as alone


class Crashy(torch.optim.SGD):
    """A user's SGD (no batched kernel: one config per pass) that crashes in the second epoch at lr 2e-4."""

    def __init__(self, params, lr=1e-2):
        super().__init__(params, lr=lr)
        self.steps = 0

    def step(self, closure=None):
        self.steps += 1
        if self.param_groups[0]["lr"] == 2e-4 and self.steps > 5:
            raise FloatingPointError("crashed mid-run")
        return super().step(closure)


def test_a_crash_in_one_config_trained_one_at_a_time_leaves_the_others_of_its_pass_to_train():
    """Cells trained one per pass in one group: the one that crashes mid-run fails with its cause after the
    epoch it reported; the cell after it in the same pass still trains."""
    reference = f"{__name__}:Crashy"
    record = plugins.describe_optimizer(plugins.locate(reference, "optimizer", ROOT))
    plan = TrainingProtocol(epochs=2, batch_size=1, task_options={"steps_per_epoch": 5})
    cells = tuple(CellPayload(i, reference, 0, {"lr": lr}) for i, lr in enumerate((1e-4, 2e-4, 3e-4)))
    records = list(train_payload(BatchPayload("rosenbrock", plan, cells, population=None,
                                              plugins={reference: record})))
    by_key = {key: [r for r in records if r.key == key] for key in (0, 1, 2)}
    assert [type(r) for r in by_key[1]] == [EpochRecord, CellFailure] and "crashed mid-run" in by_key[1][-1].error
    for key in (0, 2):
        assert [type(r) for r in by_key[key]] == [EpochRecord, EpochRecord, CellResult], by_key[key]
        assert by_key[key][-1].status == "complete" and by_key[key][-1].population.size == 1


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
    assert records["./mine.py:Adam2"].batched and not records["./mine.py:PlainSGD"].batched
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


# --- auto: a population only where this worker measured it faster than one config at a time ------------

def test_auto_picks_what_the_measured_cost_per_config_favours_and_states_the_numbers():
    assert population.choose(16, lone=2.5e-3, together=16 * 0.8e-3) == (
        16, "16 configs per pass: 3.1x faster per cell than one at a time (measured 0.8 ms vs 2.5 ms per config and step)")
    assert population.choose(2, lone=0.4e-3, together=1.3e-3) == (
        1, "1 config per pass: a population of 2 measured 1.6x slower per cell than one at a time "
           "(0.65 ms vs 0.4 ms per config and step)")
    assert population.choose(4, lone=1e-3, together=4e-3)[0] == 1  # no faster: one at a time


def test_the_step_timer_leaves_out_the_first_steps_and_an_epochs_short_last_batch():
    timer = population._StepTimer("cpu", min_seconds=0.05)
    now = [0.0]
    timer.tick, timer.clock = (lambda: now[0]), [0.0]
    durations = [(0.9, 64), (0.5, 64)] + [(0.01, 64)] * 3 + [(0.04, 64)] + [(0.01, 64)] * 3 + [(0.001, 29)]
    said = []
    for seconds, size in durations:
        now[0] += seconds
        said.append(timer.lap(size))
    assert said.index(True) == 2 + population.MIN_STEPS - 1  # 8 steps timed after the first 2, and 0.05 s
    assert timer.seconds_per_step() == pytest.approx(0.01)  # not the first two, the delayed one, nor the short batch


def _note_numbers(why: str) -> tuple[str, str]:
    together, lone = re.search(r"([\d.e+-]+) ms vs ([\d.e+-]+) ms per config and step\)$", why).groups()
    return together, lone


@pytest.mark.parametrize("lone_seconds,expected", [(1e-7, 1), (1e3, 3)])
def test_auto_abandons_a_population_measured_slower_and_remembers_what_it_measured(monkeypatch, data_dir,
                                                                                  lone_seconds, expected):
    """One config alone is made to measure (almost) free, then (almost) endless: the population, timed in its
    first steps, is abandoned before it reports anything (its cells train alone, exactly as alone), or kept.
    A second batch of the same size decides from the first one's measurements: nothing is timed again."""
    monkeypatch.setattr(population, "_LONE_STEP", {})
    monkeypatch.setattr(population, "_TOGETHER_STEP", {})
    probes, passes = [], []
    monkeypatch.setattr(population, "_lone_seconds_per_step", lambda *args: probes.append(args) or lone_seconds)
    real = population.train_population

    def spied(*args, **kwargs):
        passes.append(("judge" in kwargs, len(args[2])))
        return real(*args, **kwargs)

    monkeypatch.setattr(population, "train_population", spied)
    plan = _protocol("digits-mlp", data_dir[0])
    members = _members("adam")
    for attempt in range(2):
        records = _by_member(train_cells("digits-mlp", "adam", 0, members, plan))
        notes = [records[index][-1].population for index in range(3)]
        assert all(note == notes[0] for note in notes) and notes[0].size == expected
        for index, hparams in enumerate(members):
            alone = list(training.train("digits-mlp", "adam", hparams, 0, plan))
            if expected == 1:
                assert _without_time(records[index]) == _without_time(alone)
            else:
                _assert_close(records[index], alone, f"config {index}")
    (together,) = population._TOGETHER_STEP.values()
    assert len(probes) == 1 and list(population._LONE_STEP.values()) == [lone_seconds]
    assert passes == ([(True, 3)] if expected == 1 else [(True, 3), (False, 3)])  # measured once, then decided
    why = notes[0].why
    assert why.startswith("1 config per pass: a population of 3 measured" if expected == 1
                          else "3 configs per pass: ")
    assert _note_numbers(why) == (population._ms(together / 3), population._ms(lone_seconds))


def test_a_workers_batch_on_auto_says_why_and_trains_as_one_at_a_time(monkeypatch, data_dir):
    """Real measurements on a real task: every finished cell of an auto batch carries the note of its pass,
    with the numbers this worker measured, and its results are those of ``--population 1``'s batch."""
    monkeypatch.setattr(population, "_LONE_STEP", {})
    monkeypatch.setattr(population, "_TOGETHER_STEP", {})
    plan = _protocol("digits-mlp", data_dir[0])
    cells = tuple(CellPayload(f"{name}{i}", name, 0, hparams)
                  for name in ("adam", "adabound") for i, hparams in enumerate(_members(name) + _members(name)[:1]))
    batch = BatchPayload("digits-mlp", plan, cells)
    auto = list(train_payload(dataclasses.replace(batch, population=None)))
    one = list(train_payload(dataclasses.replace(batch, population=1)))
    finished = {r.key: r for r in auto if not isinstance(r, EpochRecord)}
    assert set(finished) == {c.key for c in cells} and all(isinstance(r, CellResult) for r in finished.values())
    for name in ("adam", "adabound"):
        key = population._cost_key("digits-mlp", name, "cpu", plan)
        lone, together = population._LONE_STEP[key], population._TOGETHER_STEP[key + (4,)]
        notes = [finished[c.key].population for c in cells if c.optimizer == name]
        assert all(note == notes[0] for note in notes)
        assert notes[0] == PopulationNote(*population.choose(4, lone, together))
        assert _note_numbers(notes[0].why) == (population._ms(together / 4), population._ms(lone))
    assert ({r.population.why for r in one if isinstance(r, CellResult)}
            == {"1 config per pass, as asked (--population 1)"})
    by_key = lambda records: {k: [r for r in records if r.key == k] for k in finished}  # noqa: E731
    for key, records in by_key(auto).items():
        _assert_close(records, by_key(one)[key], key)


def test_the_driver_announces_each_optimizers_first_population_note_once():
    from types import SimpleNamespace

    from study.driver.runner import Driver, RunOptions

    lines = []
    driver = Driver(None, None, RunOptions(), announce=lines.append)
    study = SimpleNamespace(id=7, row={"name": "grid"})
    driver.inflight = {key: ({"id": key, "optimizer": name}, study) for key, name in
                       enumerate(["adam", "adam", "adabound", "adabound"])}
    note = lambda key, size, why: CellResult("complete", {}, population=PopulationNote(size, why), key=key)  # noqa: E731
    events = [EpochRecord(1, {"train_loss": 1.0}, key=0),
              CellFailure(2, "boom"),
              note(0, 16, "16 configs per pass: faster"),
              note(1, 1, "1 config per pass: the cell left over"),
              note(3, 1, "1 config per pass: slower")]
    driver._say_populations(events[:3])
    driver._say_populations(events[3:])
    assert lines == ["study grid, adam: 16 configs per pass: faster", "study grid, adabound: 1 config per pass: slower"]


def test_every_member_records_the_metrics_at_initialisation_of_the_shared_seeded_model(monkeypatch, data_dir):
    """ℓ₀ does not depend on the optimizer's hyperparameters: each member of a population (one of them
    diverging) carries the same ``initial_<metric>`` as a cell trained alone, and they are a freshly seeded
    digits-mlp evaluated by hand on the test set (plain torch: one forward pass)."""
    monkeypatch.setattr(training, "_INITIAL", {})  # evaluated by the population, not remembered from elsewhere
    plan = _protocol("digits-mlp", data_dir[0], epochs=2)
    members = [{"lr": 1e-3, "beta1": 0.9}, {"lr": 10.0, "beta1": 0.0}, {"lr": 3e-3, "beta1": 0.9}]
    summaries = {member: records[-1] for member, records in
                 _by_member(train_population("digits-mlp", "adam", members, seed=2, protocol=plan)).items()}
    assert summaries[1].status == "diverged" and summaries[0].status == summaries[2].status == "complete"
    initial = [{k: v for k, v in s.final.items() if k.startswith("initial_")} for s in summaries.values()]
    assert initial[0].keys() == {"initial_train_loss", "initial_test_loss", "initial_test_accuracy"}
    assert initial[0] == initial[1] == initial[2]
    monkeypatch.setattr(training, "_INITIAL", {})  # and one config alone computes the same numbers afresh
    *_, alone = training.train("digits-mlp", "sgdm", {"lr": 0.1}, 2, plan)
    assert {k: v for k, v in alone.final.items() if k.startswith("initial_")} == initial[0]

    split = data.digits()
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    with torch.no_grad():
        logits = model(split.test_x)
    assert initial[0]["initial_test_loss"] == pytest.approx(nn.functional.cross_entropy(logits, split.test_y).item(),
                                                            rel=1e-6)
    assert initial[0]["initial_test_accuracy"] == (logits.argmax(1) == split.test_y).sum().item() / len(split.test_y)
    assert summaries[0].final["test_loss"] != initial[0]["initial_test_loss"]  # the final value is the final one


def test_a_task_that_check_found_cannot_batch_trains_one_config_per_pass_as_its_record_says():
    """The reason ``adamscape check`` stored in a task's plugin record travels in the batch itself
    (``BatchPayload.plugins``): the worker trains that task one configuration per pass and says why; the same
    batch without the reason trains as the worker measures best."""
    reference = "./housing.py:housing"
    described = plugins.describe_task(plugins.locate(reference, "task", ROOT / "examples" / "plugins"))
    plan = TrainingProtocol(epochs=1, batch_size=64, task_options={"hidden": 8})
    cells = tuple(CellPayload(i, "adam", 0, {**optimizers.spec("adam").defaults(), "lr": lr})
                  for i, lr in enumerate((1e-3, 1e-2, 1e-1)))
    reason = "its objective draws random numbers"
    blocked = BatchPayload(reference, plan, cells, population=3,
                           plugins={reference: dataclasses.replace(described, populations=reason)})
    notes = {r.population for r in train_payload(blocked) if isinstance(r, CellResult)}
    assert notes == {PopulationNote(1, f"1 config per pass: task {reference} cannot train as a population: {reason}")}
    free = dataclasses.replace(blocked, plugins={reference: described})
    assert {r.population.size for r in train_payload(free) if isinstance(r, CellResult)} == {3}
