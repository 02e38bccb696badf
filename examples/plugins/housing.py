"""House prices, a study file's own task: ``task = "./housing.py:housing"`` in a study file.

The data is ``housing.csv`` beside this file (400 houses; columns rooms, age, distance, income, price),
so the task needs no download and adamscape ships it to Ray workers together with this file.
``python examples/plugins/housing.py`` regenerates the CSV (deterministic; see :func:`generate`).
"""

import csv
from pathlib import Path

import numpy as np
import torch
from torch import nn

from workers.data import Split
from workers.tasks import Regression, task

CSV = Path(__file__).parent / "housing.csv"
FEATURES = ("rooms", "age", "distance", "income")
TARGET = "price"
TRAIN_FRACTION = 0.8


def load(path: Path = CSV) -> tuple[np.ndarray, np.ndarray]:
    """The CSV's features (N, 4) and prices (N,) as float64 arrays, in file order."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    x = np.array([[float(row[name]) for name in FEATURES] for row in rows])
    y = np.array([float(row[TARGET]) for row in rows])
    return x, y


@task(metrics={"test_loss": "minimize"}, primary="test_loss", epochs=20, batch_size=32,
      options={"hidden": 32})
def housing(protocol, device):
    """House prices from housing.csv (shipped beside this file): standardized features, MLP regression."""
    x, y = load()
    n_train = int(len(y) * TRAIN_FRACTION)  # the first 80 % train, the rest test: no randomness
    mean_x, std_x = x[:n_train].mean(axis=0), x[:n_train].std(axis=0)
    mean_y, std_y = y[:n_train].mean(), y[:n_train].std()
    x, y = (x - mean_x) / std_x, (y - mean_y) / std_y  # train statistics only: the test set stays unseen

    def tensor(a):
        return torch.as_tensor(a, dtype=torch.float32)

    split = Split(tensor(x[:n_train]), tensor(y[:n_train, None]), tensor(x[n_train:]), tensor(y[n_train:, None]))
    hidden = int(protocol.task_options["hidden"])
    model = nn.Sequential(nn.Linear(len(FEATURES), hidden), nn.ReLU(), nn.Linear(hidden, 1))
    return Regression(model.to(device), split.to(device), protocol.batch_size)


def generate(path: Path = CSV, rows: int = 400, seed: int = 20230213) -> None:
    """Write the synthetic data set: price (k$) grows with rooms and income, falls with distance to the
    centre (steeply near it) and with age (except for old houses), times 8 % log-normal noise."""
    rng = np.random.default_rng(seed)
    rooms = rng.integers(2, 9, rows)
    age = rng.integers(0, 101, rows)
    distance = np.round(np.clip(rng.gamma(2.0, 4.0, rows), 0.5, 40.0), 1)
    income = np.round(np.clip(rng.lognormal(np.log(60.0), 0.4, rows), 15.0, 250.0), 1)
    price = (30 + 25 * rooms ** 0.9 + 2.2 * income * np.exp(-distance / 25) + 90 * np.exp(-distance / 6)
             - 0.9 * age + 0.007 * age ** 2) * rng.lognormal(0.0, 0.08, rows)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow([*FEATURES, TARGET])
        for row in zip(rooms, age, distance, income, np.round(price, 1)):
            writer.writerow([f"{row[0]:d}", f"{row[1]:d}", f"{row[2]:.1f}", f"{row[3]:.1f}", f"{row[4]:.1f}"])


if __name__ == "__main__":
    generate()
