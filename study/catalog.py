"""What each task is, as the study spec needs to know it (no torch import).

``workers.tasks`` implements every task named here; a test checks the two agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Direction = Literal["maximize", "minimize"]

# The largest whole number a study file may give (seeds, whole-number task options): what
# PostgreSQL's 32-bit integer column, SQLite and torch/numpy seeding all accept.
MAX_WHOLE = 2**31 - 1


@dataclass(frozen=True)
class Option:
    """A task-specific setting a study file may give under ``[task_options]``."""

    default: Any
    description: str
    choices: tuple = ()
    greater_than: float | None = None
    at_least: float | None = None

    def check(self, value: Any) -> str | None:
        """A sentence saying why ``value`` is invalid, or None.

        Numbers must be finite (TOML's ``inf`` and ``nan`` are refused) and whole-number
        options must lie from 0 (or just above ``greater_than``) to :data:`MAX_WHOLE`.
        """
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(map(repr, self.choices))}"
        if isinstance(self.default, (int, float)) and not isinstance(self.default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return "must be a number"
            if isinstance(self.default, int) and not isinstance(value, int):
                return "must be a whole number"
            if isinstance(value, float) and not math.isfinite(value):
                return "must be a finite number (inf and nan are not allowed)"
            if isinstance(value, int) and not isinstance(self.default, int) and not fits_a_float(value):
                return "is too large for a floating-point number"
            if self.greater_than is not None and not value > self.greater_than:
                return f"must be greater than {self.greater_than:g}"
            if self.at_least is not None and not value >= self.at_least:
                return f"must be at least {self.at_least:g}"
            if isinstance(self.default, int):
                low = 0 if self.greater_than is None else max(0, math.floor(self.greater_than) + 1)
                if not low <= value <= MAX_WHOLE:
                    return f"must be a whole number from {low} to {MAX_WHOLE}"
        return None


def fits_a_float(value: int | float) -> bool:
    """Whether ``float(value)`` works (Python integers can be beyond the float range)."""
    try:
        float(value)
    except OverflowError:
        return False
    return True


@dataclass(frozen=True)
class TaskInfo:
    name: str
    description: str
    metrics: dict[str, Direction]  # every per-epoch metric the task reports, with its direction
    default_epochs: int
    default_batch_size: int
    options: dict[str, Option] = field(default_factory=dict)
    dataset_files: tuple[str, ...] = ()  # under data_dir; empty for data generated in memory
    dataset: str = ""  # the torchvision dataset, for messages
    listed: bool = True  # False: accepted in study files but not shown by `adamscape tasks` (measuring tools)
    primary: str = ""  # the metric a study ranks by when its file names none ("": the first evaluation metric)
    convolutional: bool = False  # `amp = true` (bf16 autocast on CUDA) applies to convolutional tasks only

    def __post_init__(self) -> None:
        if not self.primary:
            evaluated = [name for name in self.metrics if name != "train_loss"]
            chosen = "test_accuracy" if "test_accuracy" in self.metrics else (evaluated or ["train_loss"])[0]
            object.__setattr__(self, "primary", chosen)

    def missing_dataset(self, data_dir: str) -> str | None:
        """Why the dataset is not usable from ``data_dir`` (None if it is there or needs none)."""
        missing = [f for f in self.dataset_files if not (Path(data_dir) / f).is_file()]
        if not missing:
            return None
        return (f"task {self.name} needs the {self.dataset} dataset, not found under data_dir "
                f"{str(Path(data_dir).resolve())!r} (missing {missing[0]}); put it there, point data_dir at it, "
                "or set download = true in the study file")


@dataclass(frozen=True)
class TrainingProtocol:
    """How a cell trains, beyond optimizer, hyperparameters and seed (the study file's training keys)."""

    epochs: int
    batch_size: int
    lr_schedule: dict[str, Any] = field(default_factory=lambda: {"kind": "constant"})
    eval_every: int = 1
    divergence_factor: float = 100.0  # train loss above this × the initial loss = diverged; 0: non-finite only
    data_dir: str = "data"
    download: bool = False
    amp: bool = False  # bfloat16 autocast and channels_last, CUDA and convolutional tasks only
    deterministic: bool = False  # torch's deterministic algorithms (workers.training.reproducible)
    task_options: dict[str, Any] = field(default_factory=dict)


_CLASSIFICATION = {"train_loss": "minimize", "test_loss": "minimize", "test_accuracy": "maximize"}
_STEPS_PER_EPOCH = Option(100, "optimizer steps per epoch (the problem has no data to pass over)", greater_than=0)
_CIFAR10 = ("cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch")
_CIFAR100 = ("cifar-100-python/train", "cifar-100-python/test")


def _mnist_files(folder: str) -> tuple[str, ...]:
    return tuple(f"{folder}/raw/{split}-{kind}-idx{n}-ubyte" for split in ("train", "t10k")
                 for kind, n in (("images", 3), ("labels", 1)))


def _image_task(name: str, description: str, epochs: int, dataset: str, files, convolutional: bool = True) -> TaskInfo:
    """A torchvision classification task of the papers (batches of 128, as DeepOBS and the AdaBound demo)."""
    return TaskInfo(name, description, _CLASSIFICATION, default_epochs=epochs, default_batch_size=128,
                    dataset_files=files, dataset=dataset, convolutional=convolutional)


TASKS: dict[str, TaskInfo] = {
    info.name: info
    for info in [
        TaskInfo("digits-mlp", "scikit-learn digits (8x8, 10 classes), 64-128-10 ReLU MLP, cross-entropy",
                 _CLASSIFICATION, default_epochs=5, default_batch_size=64),
        TaskInfo("digits-logreg", "scikit-learn digits, multinomial logistic regression (convex)",
                 _CLASSIFICATION, default_epochs=10, default_batch_size=64),
        TaskInfo("mnist1d-mlp", "MNIST-1D (generated locally, seed 42, 4000/1000), 40-100-100-10 ReLU MLP",
                 _CLASSIFICATION, default_epochs=20, default_batch_size=100),
        TaskInfo("mnist1d-cnn", "MNIST-1D, three 1-D conv layers (25 channels) + linear, the MNIST-1D paper's CNN",
                 _CLASSIFICATION, default_epochs=20, default_batch_size=100, convolutional=True),
        TaskInfo("quadratic-deep", "DeepOBS noisy quadratic: 100-D, Hessian eigenvalues 90×U(0,1) + 10×U(30,60)",
                 {"train_loss": "minimize", "test_loss": "minimize"}, default_epochs=100, default_batch_size=128),
        TaskInfo("rosenbrock", "2-D Rosenbrock valley from (-1.2, 1); distance to the optimum (1, 1)",
                 {"train_loss": "minimize", "distance": "minimize"}, default_epochs=50, default_batch_size=1,
                 options={"steps_per_epoch": _STEPS_PER_EPOCH}),
        TaskInfo("reddi", "AMSGrad counterexample (Reddi et al. 2018): x in [-1, 1], optimum -1; reports x",
                 {"train_loss": "minimize", "x": "minimize"}, default_epochs=30, default_batch_size=1,
                 options={"form": Option("online", "online: C·x once every 3 steps, -x otherwise (Theorem 1); "
                                         "stochastic: 1010·x with probability 0.01, -10·x otherwise (Section 5)",
                                         choices=("online", "stochastic")),
                          "C": Option(3.0, "the online form's C (> 2)", greater_than=2.0),
                          "steps_per_epoch": Option(1000, _STEPS_PER_EPOCH.description, greater_than=0)}),
        TaskInfo("noop", "does no training: each epoch waits `seconds` and reports a zero loss (measures the driver: "
                 "benchmarks/driver_overhead.py)", {"train_loss": "minimize"}, default_epochs=1, default_batch_size=1,
                 options={"seconds": Option(0.0, "how long each epoch takes (a stand-in for training)",
                                            at_least=0.0)}, listed=False),
        TaskInfo("pydoc-transformer", "byte-level decoder-only transformer LM (pre-LN, causal SDPA, untied head; "
                 "136,960 parameters at the defaults) on the Python docs' topic texts: pydoc_data.topics from the "
                 "standard library, no download (Python 3.11.7's: 466,273 bytes, sha256 "
                 "71f2ff5d99bdc1f9c48c5c2353ad138201c5ca1c377e0226857ef8fa89b8bcee), last 10% held out; "
                 "losses in nats per token",
                 _CLASSIFICATION, default_epochs=5, default_batch_size=32, primary="test_loss",
                 options={"layers": Option(2, "transformer blocks", greater_than=0),
                          "width": Option(64, "d_model: the embedding width (a multiple of heads; the MLP is 4x)",
                                          greater_than=0),
                          "heads": Option(4, "attention heads", greater_than=0),
                          "context": Option(64, "tokens (bytes) per training window: the attention's length",
                                            greater_than=0),
                          "steps_per_epoch": Option(100, "optimizer steps per epoch (batches of windows drawn "
                                                    "without replacement from the training text)", greater_than=0),
                          "test_tokens": Option(16384, "tokens of the held-out text that evaluations read (at most "
                                                "its 46,627)", greater_than=0)}),
        _image_task("mnist-mlp", "MNIST, DeepOBS mnist_mlp: 784-1000-500-100-10 ReLU MLP (torchvision MNIST files)",
                    100, "MNIST", _mnist_files("MNIST"), convolutional=False),
        _image_task("fmnist-2c2d", "Fashion-MNIST, DeepOBS 2c2d: two 5x5 conv + max-pool, fc 1024, fc 10",
                    100, "FashionMNIST", _mnist_files("FashionMNIST")),
        _image_task("cifar10-3c3d", "CIFAR-10, DeepOBS 3c3d: three conv + max-pool, fc 512, fc 256, fc 10",
                    100, "CIFAR10", _CIFAR10),
        _image_task("cifar10-resnet34", "CIFAR-10, ResNet-34 with a CIFAR stem (the AdaBound demo), crop+flip",
                    200, "CIFAR10", _CIFAR10),
        _image_task("cifar10-densenet121", "CIFAR-10, DenseNet-121 with a CIFAR stem (the AdaBound demo), crop+flip",
                    200, "CIFAR10", _CIFAR10),
        _image_task("cifar100-resnet34", "CIFAR-100, ResNet-34 with a CIFAR stem (the AdaMod demo), crop+flip",
                    300, "CIFAR100", _CIFAR100),
    ]
}
