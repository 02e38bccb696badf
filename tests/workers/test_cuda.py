"""The CUDA path, on a machine with a GPU (skipped elsewhere: the same code is checked on the CPU and the
``meta`` device by test_tasks, test_data, test_population and tests/optimizers).

A training step must never wait for the GPU: ``torch.cuda.set_sync_debug_mode("error")`` turns any
synchronising call (``.item()``, a device-to-host copy, ``nonzero``) inside it into an error.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import optimizers
from study.catalog import TrainingProtocol
from study.protocol import CellResult
from workers import population, tasks, training

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def _plan(data_root, amp: bool = False, **keys) -> TrainingProtocol:
    return TrainingProtocol(epochs=2, batch_size=8, data_dir=str(data_root), amp=amp, **keys)


@pytest.fixture
def no_syncs():
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("amp", [False, True])
@pytest.mark.parametrize("optimizer", ["adam", "nadam", "adabound", "radam"])
def test_a_training_step_never_synchronises(optimizer, amp, data_dir, no_syncs):
    plan = _plan(data_dir[0], amp)
    torch.manual_seed(0)
    with torch.cuda.device(0):
        problem = tasks.build("cifar10-3c3d", plan, "cuda")
    opt = optimizers.create(optimizer, problem.model.parameters())
    generator = torch.Generator().manual_seed(0)
    autocast = training.autocast_for(plan, "cuda", "cifar10-3c3d")
    total = torch.zeros((), device="cuda")
    for batch in problem.batches(generator):  # several steps: no .item(), no copy back, no wait
        with autocast:
            loss, size = problem.loss(batch, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach().float() * size
    torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(total).item()


def test_amp_trains_convolutions_channels_last_in_bfloat16(data_dir):
    plan = _plan(data_dir[0], amp=True)
    problem = tasks.build("cifar10-3c3d", plan, "cuda")
    convolutions = [m.weight for m in problem.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convolutions and all(w.is_contiguous(memory_format=torch.channels_last) for w in convolutions)
    batch = next(iter(problem.batches(torch.Generator().manual_seed(0))))
    with training.autocast_for(plan, "cuda", "cifar10-3c3d"):
        logits = problem.model(problem.prepare(batch, torch.Generator().manual_seed(0))[0][0])
    assert logits.dtype == torch.bfloat16
    plain = tasks.build("cifar10-3c3d", _plan(data_dir[0]), "cuda")
    assert not any(m.weight.is_contiguous(memory_format=torch.channels_last) and m.weight.shape[-1] > 1
                   for m in plain.model.modules() if isinstance(m, torch.nn.Conv2d))


def test_a_cell_records_its_gpu_and_peak_memory_and_its_evaluation_reads_once(monkeypatch):
    reads = []
    real = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: reads.append(self.device.type) or real(self))
    *epochs, summary = training.train("digits-mlp", "adam", {"lr": 3e-3}, 0,
                                      TrainingProtocol(epochs=2, batch_size=64), "cuda")
    assert summary.device == f"cuda ({torch.cuda.get_device_name()})"
    assert summary.peak_memory_mib > 0
    assert reads == ["cuda"] * 3  # one read per evaluation: the loss before training, then each epoch's
    assert summary.final["test_accuracy"] > 0.5


@pytest.mark.parametrize("name", sorted(optimizers.REGISTRY))
def test_a_population_on_the_gpu_trains_each_config_as_it_trains_alone(name):
    """(K,) hyperparameters made on the CPU drive a stacked population on the GPU."""
    plan = TrainingProtocol(epochs=2, batch_size=5, task_options={"steps_per_epoch": 20})
    defaults = optimizers.spec(name).defaults()
    members = [defaults | {"lr": defaults["lr"] * factor} for factor in (0.5, 1.0, 2.0)]
    together = {}
    for member, record in population.train_population("rosenbrock", name, members, 0, plan, "cuda"):
        together.setdefault(member, []).append(record)
    for index, hparams in enumerate(members):
        alone = list(training.train("rosenbrock", name, hparams, 0, plan, "cuda"))
        assert together[index][-1].status == alone[-1].status  # a large lr may diverge: alike
        assert together[index][-1].final["train_loss"] == pytest.approx(alone[-1].final["train_loss"],
                                                                        rel=1e-3, abs=1e-6, nan_ok=True)


def test_a_deterministic_study_repeats_bit_for_bit_on_the_gpu(data_dir):
    plan = _plan(data_dir[0], deterministic=True)
    runs = [[dataclasses.replace(r, wall_seconds=None, peak_memory_mib=None) if isinstance(r, CellResult) else r
             for r in training.train("cifar10-3c3d", "adam", {"lr": 1e-3}, 0, plan, "cuda")] for _ in range(2)]
    assert runs[0] == runs[1]
