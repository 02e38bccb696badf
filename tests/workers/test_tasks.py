"""Every task trains on CPU; the torchvision tasks read small files this module writes in the real formats."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from study.catalog import TASKS, TrainingProtocol
from study.protocol import CellResult
from tests.workers.conftest import FEW, IMAGES
from workers import data, tasks, training


def _protocol(name, data_root):
    """One short epoch of batches of 8, the task's options at their defaults (5 steps where there is no data)."""
    options = {key: option.default for key, option in TASKS[name].options.items()}
    options |= {"steps_per_epoch": 5} if "steps_per_epoch" in options else {}
    return TrainingProtocol(epochs=1, batch_size=8, data_dir=str(data_root), task_options=options)


# the tasks that read torchvision's files from data_dir (the others make their data in memory)
FROM_FILES = {"mnist-mlp", "fmnist-2c2d", "cifar10-3c3d", "cifar10-resnet34", "cifar10-densenet121",
              "cifar100-resnet34"}


def _few_steps(name, data_root):
    """One epoch of a few steps: file-backed tasks on ``few_images`` (FEW per file) in batches of FEW; tasks
    with a ``steps_per_epoch`` option, 5 steps of 8; the in-memory datasets in the task's default batch (a
    digits or MNIST-1D epoch in batches of 8 is some 200–500 steps)."""
    plan = _protocol(name, data_root)
    info = TASKS[name]
    if name in FROM_FILES:
        batch_size = FEW
    elif "steps_per_epoch" in info.options or info.default_batch_size <= 8:
        batch_size = 8
    else:
        batch_size = info.default_batch_size
    return dataclasses.replace(plan, batch_size=batch_size)


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_trains_a_few_steps_and_reports_its_metrics(name, few_images):
    assert set(tasks.IMPLEMENTATIONS) == set(TASKS) and FROM_FILES <= set(TASKS)
    *epochs, summary = training.train(name, "adam", {"lr": 1e-3}, seed=0, protocol=_few_steps(name, few_images[0]))
    assert set(epochs[0].metrics) == set(TASKS[name].metrics)
    assert summary.status == "complete" and math.isfinite(epochs[0].metrics["train_loss"])


def test_cifar_images_arrive_in_channel_first_layout_with_their_labels(data_dir):
    root, written = data_dir
    split = data.torchvision_images("CIFAR10", str(root), False)
    pixels, labels = written["data_batch_1"]
    assert torch.equal(split.train_x[:IMAGES], torch.as_tensor(pixels).reshape(IMAGES, 3, 32, 32))
    assert split.train_y[:IMAGES].tolist() == labels
    assert len(split.train_y) == 5 * IMAGES and len(split.test_y) == IMAGES


def test_batch_augmentation_equals_torchvision_crop_and_flip():
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    ours = data.CIFAR10(images, torch.Generator().manual_seed(5))
    draws = torch.Generator().manual_seed(5)  # the same draws, in the pipeline's order: rows, columns, flips
    dy, dx = (torch.randint(0, 9, (6,), generator=draws) for _ in range(2))
    flips = torch.rand(6, generator=draws) < 0.5
    for i, image in enumerate(images.float() / 255):
        expected = TF.crop(TF.pad(image, [4]), int(dy[i]), int(dx[i]), 32, 32)
        expected = TF.hflip(expected) if flips[i] else expected
        expected = TF.normalize(expected, data.CIFAR10.mean, data.CIFAR10.std)
        torch.testing.assert_close(ours[i], expected)
    assert flips.any() and not flips.all() and (dy != 4).any()


def test_a_missing_dataset_names_data_dir_and_the_download_flag(tmp_path):
    with pytest.raises(data.DatasetMissingError, match=r"data_dir .*download = true"):
        tasks.build("cifar10-resnet34", _protocol("cifar10-resnet34", tmp_path), "cpu")


@pytest.mark.parametrize("name,batch_size,options", [
    ("cifar10-3c3d", FEW, {}), ("mnist1d-cnn", 500, {}),
    ("reddi", 1, {"form": "stochastic", "C": 3.0, "steps_per_epoch": 50})])
def test_same_seed_same_curve_on_cpu(name, batch_size, options, few_images):
    """(CIFAR-10 from ``few_images``: five steps an epoch, each augmented with the seed's draws.)"""
    plan = TrainingProtocol(epochs=2, batch_size=batch_size, data_dir=str(few_images[0]), task_options=options)
    run = lambda seed: [dataclasses.replace(r, wall_seconds=None) if isinstance(r, CellResult) else r  # noqa: E731
                        for r in training.train(name, "adam", {"lr": 1e-2}, seed, plan)]
    first, again, other = run(1), run(1), run(2)
    assert first == again
    assert first != other


def test_the_quadratic_is_deepobs_construction():
    hessian, train, test = tasks.deepobs_quadratic()
    rng = np.random.RandomState(42)
    drawn = np.sort(np.concatenate((rng.uniform(0.0, 1.0, 90), rng.uniform(30.0, 60.0, 10))))
    np.testing.assert_allclose(np.linalg.eigvalsh(hessian.double().numpy()), drawn, atol=1e-4)
    assert not np.allclose(hessian.numpy(), np.diag(np.diag(hessian.numpy())), atol=1e-3), "must be rotated"
    np.testing.assert_allclose(train.numpy(), np.random.RandomState(42).normal(0.0, 0.6, (1000, 100)), rtol=1e-6)
    np.testing.assert_allclose(test.numpy(), np.random.RandomState(43).normal(0.0, 0.6, (1000, 100)), rtol=1e-6)


@pytest.mark.parametrize("name", ["digits-mlp", "mnist1d-cnn"])
def test_an_evaluation_sums_on_the_device_and_reads_it_once(name, monkeypatch):
    """However many chunks the test set takes, an evaluation reads one value from the device (each
    ``.item()`` per chunk would stall the host on a GPU), and its numbers are the whole set's."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Reads(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count += func is torch.ops.aten._local_scalar_dense.default  # what .item() dispatches
            return func(*args, **(kwargs or {}))

    monkeypatch.setattr(tasks, "EVAL_CHUNK", 64)
    torch.manual_seed(0)
    problem = tasks.build(name, _protocol(name, "unused"), "cpu")
    split = problem.split
    assert len(split.test_y) > 4 * tasks.EVAL_CHUNK  # several chunks
    with Reads() as reads:
        metrics = problem.evaluate()
    assert reads.count <= 1
    with torch.no_grad():
        logits = problem.model.eval()(problem.pipeline(split.test_x, None))
    assert metrics["test_loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, split.test_y).item(), rel=1e-5)
    assert metrics["test_accuracy"] == (logits.argmax(1) == split.test_y).double().mean().item()
