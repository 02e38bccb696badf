"""Tasks: data + model + loss + metrics, keyed by the names in ``study.catalog``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from study.catalog import TASKS, TaskInfo


@dataclass(frozen=True)
class Split:
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor

    def to(self, device: torch.device | str) -> Split:
        return Split(*(t.to(device) for t in (self.train_x, self.train_y, self.test_x, self.test_y)))


@dataclass(frozen=True)
class ClassificationTask:
    """A supervised classification problem held in memory, trained with cross-entropy."""

    info: TaskInfo
    load: Callable[[], Split]
    make_model: Callable[[], nn.Module]

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return nn.functional.cross_entropy(logits, targets)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: Split) -> dict[str, float]:
        model.eval()
        logits = model(data.test_x)
        model.train()
        return {"test_loss": self.loss(logits, data.test_y).item(),
                "test_accuracy": (logits.argmax(dim=1) == data.test_y).float().mean().item()}


@functools.cache
def _digits() -> Split:
    """scikit-learn's bundled digits: a fixed stratified 75/25 split, features scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    train_x, test_x, train_y, test_y = train_test_split(x / 16.0, y, test_size=0.25, stratify=y, random_state=0)
    as_x = functools.partial(torch.tensor, dtype=torch.float32)
    as_y = functools.partial(torch.tensor, dtype=torch.long)
    return Split(as_x(train_x), as_y(train_y), as_x(test_x), as_y(test_y))


def _mlp(*widths: int) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        return nn.Sequential(*layers[:-1])

    return make


IMPLEMENTATIONS: dict[str, ClassificationTask] = {
    "digits-mlp": ClassificationTask(TASKS["digits-mlp"], _digits, _mlp(64, 128, 10)),
}


def get(name: str) -> ClassificationTask:
    return IMPLEMENTATIONS[name]
