from __future__ import annotations

import dataclasses

import pytest
import torch

from study.catalog import TrainingProtocol
from study.protocol import CellResult, EpochRecord
from tests.workers.conftest import FEW
from workers import training


def _run(epochs=2, batch_size=64, **kw):
    args = dict(task="digits-mlp", optimizer="adam", hparams={"lr": 1e-2}, seed=0) | kw
    return list(training.train(**args, protocol=TrainingProtocol(epochs=epochs, batch_size=batch_size)))


def _strip(records: list) -> list:
    """The records without the summary's wall time."""
    return [dataclasses.replace(r, wall_seconds=None) if isinstance(r, CellResult) else r for r in records]


def test_a_cell_streams_its_epochs_then_its_summary_untagged():
    records = _run(epochs=3)
    assert [type(r) for r in records] == [EpochRecord] * 3 + [CellResult]
    assert [r.epoch for r in records[:3]] == [1, 2, 3] and all(r.key is None for r in records)


def test_same_seed_same_numbers_other_seed_other_numbers():
    first, again, other = _run(seed=3), _run(seed=3), _run(seed=4)
    assert _strip(first) == _strip(again)
    assert _strip(first) != _strip(other)


def test_training_learns_digits():
    *_, summary = _run(epochs=5, hparams={"lr": 3e-3})
    assert summary.status == "complete"
    assert summary.final["test_accuracy"] > 0.9  # 10 classes: chance is 0.1


@pytest.mark.parametrize("optimizer,hparams", [("sgdm", {"lr": 1000.0}), ("adam", {"lr": 1e4, "beta1": 0.0})])
def test_exploding_runs_stop_early_as_diverged(optimizer, hparams):
    records = _run(optimizer=optimizer, hparams=hparams, epochs=5)
    *epochs, summary = records
    assert summary.status == "diverged"
    assert len(epochs) < 5


@pytest.mark.parametrize("schedule,reference", [
    ({"kind": "step", "milestones": [2, 3], "factor": 0.1},
     lambda opt, steps: torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2 * steps, 3 * steps], gamma=0.1)),
    ({"kind": "cosine", "final_factor": 0.05},
     lambda opt, steps: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5 * steps, eta_min=0.05)),
])
def test_lr_schedules_match_torchs_schedulers(schedule, reference):
    steps_per_epoch, epochs = 7, 5
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    torch_schedule = reference(opt, steps_per_epoch)
    for step in range(steps_per_epoch * epochs):
        ours = training.lr_multiplier(schedule, step, steps_per_epoch, epochs)
        assert ours == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-12), step
        opt.step()
        torch_schedule.step()


def test_test_metrics_every_eval_every_epochs_and_at_the_last():
    records = list(training.train("digits-mlp", "adam", {"lr": 1e-2}, 0,
                                  TrainingProtocol(epochs=3, batch_size=64, eval_every=2)))
    assert ["test_accuracy" in r.metrics for r in records[:3]] == [False, True, True]
    assert all("train_loss" in r.metrics for r in records[:3])


def test_amp_applies_to_convolutional_tasks_only():
    """`amp = true` never turns a quadratic's or an MLP's matmul into bf16 (the DeepOBS quadratic's gradient
    would be off by ~1e-3); on CUDA it autocasts the convolutional tasks and the user's own."""
    import contextlib
    import warnings

    from study.catalog import TASKS, TrainingProtocol
    from workers.training import autocast_for

    plan = TrainingProtocol(epochs=1, batch_size=8, amp=True)
    for name in ("quadratic-deep", "digits-mlp", "rosenbrock", "mnist-mlp"):
        assert isinstance(autocast_for(plan, "cuda", name), contextlib.nullcontext), name
        assert not TASKS[name].convolutional
    assert isinstance(autocast_for(plan, "cpu", "cifar10-3c3d"), contextlib.nullcontext)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a CPU-only machine warns that CUDA autocast is unavailable
        for name in ("cifar10-3c3d", "mnist1d-cnn", "./mine.py:build"):
            assert isinstance(autocast_for(plan, "cuda", name), torch.autocast), name
    plain = TrainingProtocol(epochs=1, batch_size=8)
    assert isinstance(autocast_for(plain, "cuda", "cifar10-3c3d"), contextlib.nullcontext)


def _settings():
    cudnn = torch.backends.cudnn
    return (torch.are_deterministic_algorithms_enabled(), cudnn.deterministic, cudnn.benchmark)


@pytest.mark.parametrize("task,batch_size", [("digits-mlp", 64), ("mnist1d-cnn", 500), ("cifar10-3c3d", FEW)])
def test_a_deterministic_study_trains_under_deterministic_algorithms_and_leaves_the_process_as_it_was(
        task, batch_size, few_images, monkeypatch):
    """`deterministic = true`: every op of a cell runs under torch's deterministic algorithms (one without
    a deterministic kernel would raise here); the worker's own settings come back afterwards, even when
    the cell is stopped midway, since the same worker trains other studies' cells."""
    from workers import tasks

    seen = []
    real_build = tasks.build

    def build(*args, **kwargs):  # what the cell trains under, seen from inside it
        seen.append(_settings())
        return real_build(*args, **kwargs)

    monkeypatch.setattr(tasks, "build", build)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)  # as a GPU worker has it (reset after the test)
    before = _settings()
    plan = lambda deterministic: TrainingProtocol(epochs=2, batch_size=batch_size,  # noqa: E731
                                                  data_dir=str(few_images[0]), deterministic=deterministic)
    strict = list(training.train(task, "adam", {"lr": 1e-3}, 0, plan(True)))
    assert seen == [(True, True, False)] and _settings() == before
    plain = list(training.train(task, "adam", {"lr": 1e-3}, 0, plan(False)))
    assert _strip(strict) == _strip(plain)  # a CPU is deterministic anyway
    stopped = training.train(task, "adam", {"lr": 1e-3}, 0, plan(True))
    next(stopped)
    assert _settings() == (True, True, False)
    stopped.close()
    assert _settings() == before


# Ops without a deterministic CUDA kernel (torch.use_deterministic_algorithms' documentation: they raise when
# it is on): a built-in task that used one could not train in a `deterministic = true` study on a GPU.
NO_DETERMINISTIC_CUDA_KERNEL = {
    "avg_pool3d_backward", "_adaptive_avg_pool2d_backward", "_adaptive_avg_pool3d_backward",
    "adaptive_max_pool2d_backward", "fractional_max_pool2d_backward", "fractional_max_pool3d_backward",
    "max_unpool2d", "max_unpool3d", "upsample_linear1d_backward", "upsample_bilinear2d_backward",
    "upsample_bicubic2d_backward", "upsample_trilinear3d_backward", "reflection_pad1d_backward",
    "reflection_pad2d_backward", "reflection_pad3d_backward", "nll_loss2d_forward", "_ctc_loss_backward",
    "_embedding_bag_backward", "put_", "histc", "bincount", "median", "grid_sampler_2d_backward",
    "grid_sampler_3d_backward"}


@pytest.mark.parametrize("task", ["cifar10-resnet34", "cifar10-densenet121", "cifar10-3c3d", "fmnist-2c2d",
                                  "mnist1d-cnn", "digits-mlp", "quadratic-deep"])
def test_a_training_step_of_every_builtin_network_has_a_deterministic_cuda_kernel(task, few_images):
    """Seen on the CPU with a dispatch mode: every op of a training step (forward, loss, backward), so a
    GPU never meets one that `deterministic = true` forbids. (The networks' global average pooling is
    adaptive pooling to 1×1, which ATen computes as a mean on every device: allowed.)"""
    from torch.utils._python_dispatch import TorchDispatchMode

    from study.catalog import TASKS
    from workers import tasks

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.add(func._schema.name.split("::")[-1])
            return func(*args, **(kwargs or {}))

    plan = TrainingProtocol(epochs=1, batch_size=FEW, data_dir=str(few_images[0]),  # one step: which ops, not how many
                            task_options={key: option.default for key, option in TASKS[task].options.items()})
    torch.manual_seed(0)
    problem = tasks.build(task, plan, "cpu")
    generator = torch.Generator().manual_seed(0)
    batch = next(iter(problem.batches(generator)))
    with Ops() as ops:
        loss, _ = problem.loss(batch, generator)
        loss.backward()
    assert "convolution" in ops.names or "mm" in ops.names or "addmm" in ops.names  # the mode saw the network
    assert not ops.names & NO_DETERMINISTIC_CUDA_KERNEL


# --- the metrics at initialisation (ℓ₀ of the LR sensitivity, study.analysis) -------------------------------

def _fresh_digits_mlp(seed: int) -> torch.nn.Module:
    """digits-mlp's network written out in plain torch (64-128-10, ReLU), seeded as a cell seeds it."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


def _by_hand(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on (x, y), one plain forward pass."""
    with torch.no_grad():
        logits = model(x)
    return torch.nn.functional.cross_entropy(logits, y).item(), (logits.argmax(1) == y).sum().item() / len(y)


def _initial(summary: CellResult) -> dict:
    return {k: v for k, v in summary.final.items() if k.startswith("initial_")}


def _without_initial(records: list) -> list:
    return [dataclasses.replace(r, wall_seconds=None, final={n: v for n, v in r.final.items()
                                                             if not n.startswith("initial_")})
            if isinstance(r, CellResult) else r for r in records]


@pytest.mark.parametrize("seed", [0, 5])
def test_the_summary_records_the_metrics_at_initialisation_of_the_seeded_model(seed, monkeypatch):
    """``initial_<metric>``: a freshly seeded digits-mlp evaluated by hand on the test set (and on the train
    set, as small as the reference loss's 4096 examples: all of it) — whatever the optimizer."""
    from workers import data

    monkeypatch.setattr(training, "_INITIAL", {})  # evaluated here, not remembered from an earlier test
    split = data.digits()
    model = _fresh_digits_mlp(seed)
    test_loss, test_accuracy = _by_hand(model, split.test_x, split.test_y)
    train_loss, _ = _by_hand(model, split.train_x, split.train_y)
    summaries = [_run(seed=seed, optimizer=o, hparams=h, epochs=1)[-1]
                 for o, h in (("adam", {"lr": 1e-2}), ("sgdm", {"lr": 1000.0}))]  # the second diverges
    assert [s.status for s in summaries] == ["complete", "diverged"]
    for summary in summaries:
        assert _initial(summary).keys() == {"initial_train_loss", "initial_test_loss", "initial_test_accuracy"}
        assert summary.final["initial_test_loss"] == pytest.approx(test_loss, rel=1e-6)
        assert summary.final["initial_test_accuracy"] == pytest.approx(test_accuracy, abs=1e-9)
        assert summary.final["initial_train_loss"] == pytest.approx(train_loss, rel=1e-6)
    assert _initial(summaries[0]) == _initial(summaries[1])  # the same numbers, bit for bit
    assert summaries[0].final["test_loss"] != summaries[0].final["initial_test_loss"]  # the final value stays


def test_the_initial_metrics_of_a_synthetic_problem_are_its_starting_point():
    """Rosenbrock from (-1.2, 1): f = (1 + 1.2)² + 100·(1 − 1.44)² = 4.84 + 19.36 = 24.2; distance to (1, 1) =
    √(2.2² + 0²) = 2.2."""
    plan = TrainingProtocol(epochs=1, batch_size=1, task_options={"steps_per_epoch": 3})
    *_, summary = training.train("rosenbrock", "adam", {"lr": 1e-3}, 0, plan)
    assert summary.final["initial_train_loss"] == pytest.approx(24.2, rel=1e-6)
    assert summary.final["initial_distance"] == pytest.approx(2.2, rel=1e-6)


def test_the_initial_metrics_are_computed_once_per_task_seed_protocol_and_device(monkeypatch):
    from workers import tasks

    monkeypatch.setattr(training, "_INITIAL", {})
    calls = []
    real = tasks.Classification.evaluate
    monkeypatch.setattr(tasks.Classification, "evaluate", lambda self: calls.append(1) or real(self))
    _run(seed=1, epochs=1, optimizer="adam")
    _run(seed=1, epochs=1, optimizer="sgdm", hparams={"lr": 0.1})  # another optimizer: remembered
    assert len(calls) == 1 + 1 + 1  # ℓ₀ once, then each cell's evaluation after its epoch
    _run(seed=2, epochs=1)  # another seed: evaluated again
    assert len(calls) == 3 + 1 + 1


def test_recording_the_initial_metrics_leaves_training_bit_identical_to_a_hand_written_loop(monkeypatch):
    """Adam on digits-mlp, two epochs, trained by hand (the same seed, weights, minibatch order and steps
    as a cell) and by ``train`` while it evaluates the initial metrics: the same losses, bit for bit, and the
    same records as ``train`` with the initial evaluation switched off."""
    from workers import data

    monkeypatch.setattr(training, "_INITIAL", {})  # the initial evaluation runs within this training
    records = _run(seed=4, epochs=2, batch_size=64)
    split = data.digits()
    model = _fresh_digits_mlp(4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(4)
    for epoch in range(2):
        total, weight = torch.zeros(()), 0
        for batch in torch.randperm(len(split.train_y), generator=generator).split(64):
            loss = torch.nn.functional.cross_entropy(model(split.train_x[batch]), split.train_y[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach().float() * len(batch)
            weight += len(batch)
        assert records[epoch].metrics["train_loss"] == total.item() / weight, epoch
    test_loss, test_accuracy = _by_hand(model, split.test_x, split.test_y)
    assert records[-1].final["test_loss"] == pytest.approx(test_loss, rel=1e-6)
    assert records[-1].final["test_accuracy"] == pytest.approx(test_accuracy, abs=1e-9)

    monkeypatch.setattr(training, "initial_metrics", lambda *args, **kwargs: {})
    assert _without_initial(records) == _without_initial(_run(seed=4, epochs=2, batch_size=64))
