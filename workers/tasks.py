"""Tasks: each builds a :class:`Problem` (parameters, batches, loss, evaluation) for one cell.

``IMPLEMENTATIONS`` is keyed by the names in ``study.catalog``; a test checks the two agree.
A study file's own task is a build function decorated with :func:`task` (README "Your own task").

Contract of a Problem (the public task contract), which ``workers.training`` and ``workers.population``
rely on:

* ``model`` holds the parameters to optimise; it is built after the caller seeded torch.
* ``batches(generator)`` yields one epoch of batches, drawing all randomness from ``generator``.
* ``prepare(batch, generator)`` turns a batch into the step's data and its weight (its size), drawing any
  randomness of the step (augmentation, sampling) from ``generator``; ``objective(data)`` is the mean
  training loss on that data, a pure function of ``model``'s parameters (so a population evaluates it
  under ``torch.func.vmap`` with stacked parameters; every config sees the same data).
* ``evaluate()`` returns the task's non-training metrics (``study.catalog`` names them).
* ``reference_loss()`` is the loss before training, the yardstick of the divergence rule.
* ``evaluate()`` runs on the model's current parameters and must not change them.
* ``after_step(parameters)`` projects the named parameter tensors in place after each optimizer step
  (each may carry a leading population dimension); ``lr_factor(step)`` scales the lr (a problem whose
  theory prescribes a decay).
"""

from __future__ import annotations

import functools
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from study.catalog import TASKS, TrainingProtocol
from workers import data, models

EVAL_CHUNK = 1024  # test examples per forward pass


class Problem(ABC):
    model: nn.Module
    steps_per_epoch: int

    @abstractmethod
    def batches(self, generator: torch.Generator) -> Iterator[Any]: ...

    @abstractmethod
    def prepare(self, batch: Any, generator: torch.Generator) -> tuple[Any, int]: ...

    @abstractmethod
    def objective(self, data: Any) -> Tensor: ...

    def loss(self, batch: Any, generator: torch.Generator) -> tuple[Tensor, int]:
        data, weight = self.prepare(batch, generator)
        return self.objective(data), weight

    @abstractmethod
    def evaluate(self) -> dict[str, float]: ...

    @abstractmethod
    def reference_loss(self) -> float: ...

    def after_step(self, parameters: dict[str, Tensor]) -> None:
        pass

    def lr_factor(self, step: int) -> float:
        return 1.0


class Classification(Problem):
    """Cross-entropy on an in-memory split; ``pipeline`` turns stored inputs into network inputs."""

    def __init__(self, model: nn.Module, split: data.Split, batch_size: int,
                 pipeline: Callable[[Tensor, torch.Generator | None], Tensor] | None = None):
        self.model, self.split, self.batch_size = model, split, batch_size
        self.pipeline = pipeline or (lambda x, generator: x)
        self.steps_per_epoch = math.ceil(len(split.train_y) / batch_size)

    def batches(self, generator):
        order = torch.randperm(len(self.split.train_y), generator=generator)
        return iter(order.to(self.split.train_y.device).split(self.batch_size))

    def prepare(self, batch, generator):
        return (self.pipeline(self.split.train_x[batch], generator), self.split.train_y[batch]), len(batch)

    def objective(self, data):
        inputs, targets = data
        return nn.functional.cross_entropy(self.model(inputs), targets)

    @torch.inference_mode()
    def _mean_loss_and_accuracy(self, x: Tensor, y: Tensor) -> tuple[float, float]:
        self.model.eval()
        sums = torch.zeros(2, dtype=torch.float64, device=y.device)  # loss, correct: summed on the device
        for start in range(0, len(y), EVAL_CHUNK):
            logits = self.model(self.pipeline(x[start:start + EVAL_CHUNK], None)).float()
            target = y[start:start + EVAL_CHUNK]
            sums[0] += nn.functional.cross_entropy(logits, target, reduction="sum")
            sums[1] += (logits.argmax(dim=1) == target).sum()
        self.model.train()
        total, correct = sums.tolist()  # the evaluation's one read from the device
        return total / len(y), correct / len(y)

    def evaluate(self):
        loss, accuracy = self._mean_loss_and_accuracy(self.split.test_x, self.split.test_y)
        return {"test_loss": loss, "test_accuracy": accuracy}

    def reference_loss(self):
        return self._mean_loss_and_accuracy(self.split.train_x[:4 * EVAL_CHUNK], self.split.train_y[:4 * EVAL_CHUNK])[0]


class Regression(Problem):
    """Mean squared error on in-memory tensors (``split.train_y`` float, shaped like the model's output);
    reports the test set's mean squared error as ``test_loss``."""

    def __init__(self, model: nn.Module, split: data.Split, batch_size: int):
        self.model, self.split, self.batch_size = model, split, batch_size
        self.steps_per_epoch = math.ceil(len(split.train_y) / batch_size)

    def batches(self, generator):
        order = torch.randperm(len(self.split.train_y), generator=generator)
        return iter(order.to(self.split.train_y.device).split(self.batch_size))

    def prepare(self, batch, generator):
        return (self.split.train_x[batch], self.split.train_y[batch]), len(batch)

    def objective(self, data):
        inputs, targets = data
        return nn.functional.mse_loss(self.model(inputs), targets)

    @torch.inference_mode()
    def _mean_loss(self, x: Tensor, y: Tensor) -> float:
        total = torch.zeros((), dtype=torch.float64, device=y.device)  # summed on the device, read once
        for start in range(0, len(y), EVAL_CHUNK):
            prediction = self.model(x[start:start + EVAL_CHUNK]).float()
            total += nn.functional.mse_loss(prediction, y[start:start + EVAL_CHUNK], reduction="sum")
        return total.item() / y[:1].numel() / len(y)

    def evaluate(self):
        return {"test_loss": self._mean_loss(self.split.test_x, self.split.test_y)}

    def reference_loss(self):
        return self._mean_loss(self.split.train_x[:4 * EVAL_CHUNK], self.split.train_y[:4 * EVAL_CHUNK])


def tensors(dataset: torch.utils.data.Dataset) -> tuple[Tensor, Tensor]:
    """A map-style ``torch.utils.data.Dataset`` of ``(input, target)`` pairs as two stacked tensors, for
    :class:`Classification` / :class:`Regression` (which keep their data in memory, on the device)."""
    inputs, targets = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack([torch.as_tensor(x) for x in inputs]), torch.stack([torch.as_tensor(y) for y in targets])


Direction = str  # "minimize" | "maximize"


@dataclass(frozen=True)
class TaskDefinition:
    """A study file's own task: ``build(protocol, device) -> Problem`` and what the study side must know."""

    build: Callable[[TrainingProtocol, str], Problem]
    metrics: dict[str, Direction]  # what evaluate() reports, each with its direction (train_loss is added)
    primary: str  # the metric a study ranks by when its file names none
    epochs: int = 10
    batch_size: int = 64
    options: dict[str, Any] = field(default_factory=dict)  # [task_options] it reads, with their defaults
    description: str = ""

    def __call__(self, protocol: TrainingProtocol, device: str) -> Problem:
        return self.build(protocol, device)


def task(*, metrics: dict[str, Direction], primary: str | None = None, epochs: int = 10, batch_size: int = 64,
         options: dict[str, Any] | None = None, description: str | None = None
         ) -> Callable[[Callable[[TrainingProtocol, str], Problem]], TaskDefinition]:
    """Declare ``build(protocol, device) -> Problem`` as a task a study file can name (README "Your own task").

    ``metrics``: the names ``Problem.evaluate()`` returns, each "minimize" or "maximize"; ``primary``
    (default: the first) is the study's metric when its file names none. ``epochs`` and ``batch_size``
    are the defaults a study file may override; ``options`` the ``[task_options]`` it accepts, with
    defaults (``protocol.task_options`` holds them, the file's values filled in).
    """
    for name, direction in metrics.items():
        if direction not in ("minimize", "maximize"):
            raise ValueError(f"metric {name!r}: direction must be 'minimize' or 'maximize', not {direction!r}")
    if not metrics and primary is None:
        primary = "train_loss"
    chosen = primary or next(iter(metrics))
    if chosen not in {"train_loss", *metrics}:
        raise ValueError(f"primary metric {chosen!r} is not among the metrics {', '.join(metrics)}")

    def decorate(build: Callable[[TrainingProtocol, str], Problem]) -> TaskDefinition:
        text = description if description is not None else (build.__doc__ or build.__name__).strip().splitlines()[0]
        return TaskDefinition(build, dict(metrics), chosen, epochs, batch_size, dict(options or {}), text)
    return decorate


class _Parameters(nn.Module):
    """A bare parameter vector as a model (the synthetic problems)."""

    def __init__(self, values: list[float]):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(values, dtype=torch.float32))


def _haar_rotation(dim: int, rng: np.random.RandomState) -> np.ndarray:
    """A rotation drawn from the Haar measure on SO(dim) by Diaconis & Shahshahani's subgroup algorithm,
    consuming ``rng`` in the order DeepOBS does, so the quadratic is DeepOBS's."""
    angle = 2 * np.pi * rng.uniform()
    rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    for d in range(2, dim):
        v = rng.normal(size=(d + 1, 1))
        v /= np.sqrt(v.T @ v)
        e = np.zeros((d + 1, 1))
        e[0] = 1.0
        x = (e - v) / np.sqrt((e - v).T @ (e - v))  # the Householder reflection taking v to e
        embedded = np.eye(d + 1)
        embedded[1:, 1:] = rotation
        rotation = embedded - 2 * x @ (x.T @ embedded)
    return -rotation


@functools.cache
def deepobs_quadratic() -> tuple[Tensor, Tensor, Tensor]:
    """DeepOBS quadratic_deep: Hessian Q = Rᵀ diag(λ) R (RandomState(42): 90 λ ~ U(0,1), 10 ~ U(30,60), then R),
    train and test data x ~ N(0, 0.6²) in 100 dims, 1000 each (seeds 42 and 43)."""
    rng = np.random.RandomState(42)
    eigenvalues = np.concatenate((rng.uniform(0.0, 1.0, 90), rng.uniform(30.0, 60.0, 10)))
    rotation = _haar_rotation(100, rng)
    hessian = rotation.T @ np.diag(eigenvalues) @ rotation
    train, test = (np.random.RandomState(seed).normal(0.0, 0.6, (1000, 100)) for seed in (42, 43))
    return tuple(torch.as_tensor(a, dtype=torch.float32) for a in (hessian, train, test))


class NoisyQuadratic(Problem):
    """0.5·(θ - x)ᵀQ(θ - x) averaged over a batch of x; θ starts at 1 (DeepOBS drops the last partial batch)."""

    def __init__(self, batch_size: int, device: str):
        hessian, self.train_x, self.test_x = (t.to(device) for t in deepobs_quadratic())
        self.hessian, self.batch_size = hessian, min(batch_size, len(self.train_x))
        self.model = _Parameters([1.0] * 100).to(device)
        self.steps_per_epoch = len(self.train_x) // self.batch_size

    def _loss(self, x: Tensor) -> Tensor:
        q = self.model.theta - x
        return 0.5 * ((q @ self.hessian) * q).sum(dim=1).mean()

    def batches(self, generator):
        order = torch.randperm(len(self.train_x), generator=generator)[:self.steps_per_epoch * self.batch_size]
        return iter(order.to(self.train_x.device).split(self.batch_size))

    def prepare(self, batch, generator):
        return self.train_x[batch], len(batch)

    def objective(self, data):
        return self._loss(data)

    @torch.no_grad()
    def evaluate(self):
        return {"test_loss": self._loss(self.test_x).item()}

    @torch.no_grad()
    def reference_loss(self):
        return self._loss(self.train_x).item()


class Rosenbrock(Problem):
    """f(x, y) = (1 - x)² + 100·(y - x²)² from (-1.2, 1); the minimum is f(1, 1) = 0."""

    def __init__(self, steps_per_epoch: int, device: str):
        self.model = _Parameters([-1.2, 1.0]).to(device)
        self.steps_per_epoch = steps_per_epoch

    def _value(self) -> Tensor:
        x, y = self.model.theta.unbind(-1)
        return (1 - x) ** 2 + 100 * (y - x**2) ** 2

    def batches(self, generator):
        return iter(range(self.steps_per_epoch))

    def prepare(self, batch, generator):
        return None, 1

    def objective(self, data):
        return self._value()

    @torch.no_grad()
    def evaluate(self):
        return {"distance": torch.linalg.vector_norm(self.model.theta - 1.0).item()}

    @torch.no_grad()
    def reference_loss(self):
        return self._value().item()


class Reddi(Problem):
    """Reddi, Kale & Kumar (2018): linear losses on x ∈ [-1, 1] whose optimum is x = -1.

    online (Theorem 1): f_t(x) = C·x when t mod 3 = 1, else -x. stochastic (Section 5):
    f_t(x) = 1010·x with probability 0.01, else -10·x. x starts at 0, is projected onto
    [-1, 1] after every step, and the lr decays as α/√t, as in the theorem.
    """

    def __init__(self, form: str, C: float, steps_per_epoch: int, device: str):
        self.form, self.C, self.steps_per_epoch = form, C, steps_per_epoch
        self.model = _Parameters([0.0]).to(device)
        self.t = 0

    def batches(self, generator):
        return iter(range(self.steps_per_epoch))

    def _slope(self, generator: torch.Generator) -> float:
        self.t += 1
        if self.form == "online":
            return self.C if self.t % 3 == 1 else -1.0
        return 1010.0 if torch.rand((), generator=generator).item() < 0.01 else -10.0

    def prepare(self, batch, generator):
        return self._slope(generator), 1

    def objective(self, data):
        return data * self.model.theta.sum()

    @torch.no_grad()
    def after_step(self, parameters):
        parameters["theta"].clamp_(-1.0, 1.0)

    def lr_factor(self, step):
        return 1.0 / math.sqrt(step + 1)

    def evaluate(self):
        return {"x": self.model.theta.item()}

    def reference_loss(self):
        return 0.0  # f_t(0) = 0: the growth rule does not apply; non-finite losses still count


class Noop(Problem):
    """No training: each epoch is one step of a zero loss after ``seconds`` of waiting (measures the driver)."""

    def __init__(self, seconds: float, device: str):
        self.model = _Parameters([0.0]).to(device)
        self.seconds, self.steps_per_epoch = seconds, 1

    def batches(self, generator):
        if self.seconds:
            time.sleep(self.seconds)
        return iter(range(1))

    def prepare(self, batch, generator):
        return None, 1

    def objective(self, data):
        return 0.0 * self.model.theta.sum()

    def evaluate(self):
        return {}

    def reference_loss(self):
        return 0.0


class LanguageModel(Problem):
    """Next-token prediction on windows of a token sequence (``data.token_windows``): the mean cross-entropy
    per token, in nats. An epoch is ``steps_per_epoch`` batches of training windows, drawn without replacement
    in an order the generator shuffles (once through them, then a fresh order). Reports ``test_loss`` (nats
    per token) and ``test_accuracy`` (the share of test tokens whose next token is the most likely one)."""

    EVAL_TOKENS = 16384  # tokens per evaluation pass; the reference loss is that of the first this many training tokens

    def __init__(self, model: nn.Module, train: Tensor, test: Tensor, batch_size: int, steps_per_epoch: int):
        self.model, self.train, self.test = model, train, test
        self.batch_size, self.steps_per_epoch = batch_size, steps_per_epoch
        self.eval_windows = max(1, self.EVAL_TOKENS // (train.shape[1] - 1))  # windows per forward pass

    def batches(self, generator):
        needed, windows = self.steps_per_epoch * self.batch_size, len(self.train)
        order = torch.cat([torch.randperm(windows, generator=generator) for _ in range(-(-needed // windows))])
        return iter(order[:needed].to(self.train.device).split(self.batch_size))

    def prepare(self, batch, generator):
        return self.train[batch], len(batch)

    def objective(self, data):
        logits = self.model(data[:, :-1])
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), data[:, 1:].reshape(-1))

    @torch.inference_mode()
    def _mean_loss_and_accuracy(self, windows: Tensor) -> tuple[float, float]:
        self.model.eval()
        sums = torch.zeros(2, dtype=torch.float64, device=windows.device)  # loss, correct: summed on the device
        for start in range(0, len(windows), self.eval_windows):
            chunk = windows[start:start + self.eval_windows]
            logits, target = self.model(chunk[:, :-1]).float().flatten(0, 1), chunk[:, 1:].flatten()
            sums[0] += nn.functional.cross_entropy(logits, target, reduction="sum")
            sums[1] += (logits.argmax(dim=1) == target).sum()
        self.model.train()
        total, correct = sums.tolist()  # the evaluation's one read from the device
        tokens = windows[:, 1:].numel()
        return total / tokens, correct / tokens

    def evaluate(self):
        loss, accuracy = self._mean_loss_and_accuracy(self.test)
        return {"test_loss": loss, "test_accuracy": accuracy}

    def reference_loss(self):
        return self._mean_loss_and_accuracy(self.train[:self.eval_windows])[0]


def _pydoc_transformer(plan: TrainingProtocol, device: str) -> Problem:
    options = plan.task_options
    train, test = data.token_windows(data.pydoc_corpus().tokens, options["context"], options["test_tokens"])
    model = models.transformer_lm(256, options["context"], options["width"], options["layers"], options["heads"])
    return LanguageModel(model.to(device), train.to(device), test.to(device), plan.batch_size,
                         options["steps_per_epoch"])


Builder = Callable[[TrainingProtocol, str], Problem]


def _classifier(make_model: Callable[[], nn.Module], load: Callable[[TrainingProtocol], data.Split],
                pipeline: data.ImagePipeline | None = None) -> Builder:
    def build(plan: TrainingProtocol, device: str) -> Problem:
        return Classification(make_model().to(device), load(plan).to(device), plan.batch_size, pipeline)
    return build


def _images(dataset: str) -> Callable[[TrainingProtocol], data.Split]:
    return lambda plan: data.torchvision_images(dataset, plan.data_dir, plan.download)


IMPLEMENTATIONS: dict[str, Builder] = {
    "digits-mlp": _classifier(lambda: models.mlp(64, 128, 10), lambda plan: data.digits()),
    "digits-logreg": _classifier(lambda: models.mlp(64, 10), lambda plan: data.digits()),
    "mnist1d-mlp": _classifier(lambda: models.mlp(40, 100, 100, 10), lambda plan: data.mnist1d()),
    "mnist1d-cnn": _classifier(models.mnist1d_cnn, lambda plan: data.mnist1d()),
    "quadratic-deep": lambda plan, device: NoisyQuadratic(plan.batch_size, device),
    "rosenbrock": lambda plan, device: Rosenbrock(plan.task_options["steps_per_epoch"], device),
    "reddi": lambda plan, device: Reddi(plan.task_options["form"], float(plan.task_options["C"]),
                                        plan.task_options["steps_per_epoch"], device),
    "noop": lambda plan, device: Noop(float(plan.task_options["seconds"]), device),
    "mnist-mlp": _classifier(lambda: models.mlp(784, 1000, 500, 100, 10), _images("MNIST"), data.UNIT),
    "fmnist-2c2d": _classifier(models.deepobs_2c2d, _images("FashionMNIST"), data.UNIT),
    "cifar10-3c3d": _classifier(models.deepobs_3c3d, _images("CIFAR10"), data.CIFAR10),
    "cifar10-resnet34": _classifier(lambda: models.cifar_resnet34(10), _images("CIFAR10"), data.CIFAR10),
    "cifar10-densenet121": _classifier(lambda: models.cifar_densenet121(10), _images("CIFAR10"), data.CIFAR10),
    "cifar100-resnet34": _classifier(lambda: models.cifar_resnet34(100), _images("CIFAR100"), data.CIFAR100),
    "pydoc-transformer": _pydoc_transformer,
}


_PLUGINS: dict[str, Builder] = {}  # a study file's own tasks, by the name the file gives them
def register(name: str, builder: Builder) -> None:
    """Make a study's own task known to :func:`build` in this process (``study.plugins.install``)."""
    _PLUGINS[name] = builder


def build(name: str, plan: TrainingProtocol, device: str) -> Problem:
    """The problem for task ``name``; a missing dataset raises :class:`data.DatasetMissingError`."""
    if name in _PLUGINS:
        return _PLUGINS[name](plan, device)
    info = TASKS[name]
    if info.dataset_files and not plan.download:
        problem = info.missing_dataset(plan.data_dir)
        if problem:
            raise data.DatasetMissingError(problem)
    problem = IMPLEMENTATIONS[name](plan, device)
    if plan.amp and info.convolutional and torch.device(device).type == "cuda":
        # with bf16 autocast, cuDNN's tensor-core convolutions want channels-last (NHWC) weights; a
        # convolution takes that layout when its weight has it, so the inputs need no conversion
        problem.model.to(memory_format=torch.channels_last)
    return problem
