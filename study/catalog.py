"""What each task is, as the study spec needs to know it (no torch import).

``workers.tasks`` implements every task named here; a test checks the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Direction = Literal["maximize", "minimize"]


@dataclass(frozen=True)
class TaskInfo:
    name: str
    description: str
    metrics: dict[str, Direction]  # every per-epoch metric the task reports, with its direction
    default_epochs: int
    default_batch_size: int


_CLASSIFICATION = {"train_loss": "minimize", "test_loss": "minimize", "test_accuracy": "maximize"}

TASKS: dict[str, TaskInfo] = {
    info.name: info
    for info in [
        TaskInfo("digits-mlp", "scikit-learn digits (8x8, 10 classes), 64-128-10 ReLU MLP, cross-entropy",
                 _CLASSIFICATION, default_epochs=5, default_batch_size=64),
    ]
}
