"""``adamscape check`` on a user's own task (workers/check.py), through the real console script: a BatchNorm
network trains as a population, a recurrent one is named as what still cannot batch."""

from __future__ import annotations

import pytest

from tests.support.cli import adamscape, study_with, write_files

TASK = '''
import torch
from torch import nn

from workers.data import Split
from workers.tasks import Classification, task


@task(metrics={{"test_accuracy": "maximize", "test_loss": "minimize"}}, primary="test_accuracy", epochs=1,
      batch_size=32)
def {name}(protocol, device):
    """Random sequences of 4 steps of 3 features, labelled by the sign of their first feature's sum."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(128, 4, 3, generator=g)
    y = (x[:, :, 0].sum(1) > 0).long()
    return Classification({model}.to(device), Split(x[:96], y[:96], x[96:], y[96:]).to(device), protocol.batch_size)


class Last(nn.Module):
    def forward(self, output):
        return output[0][:, -1]
'''

MODELS = {
    "batchnorm": "nn.Sequential(nn.Flatten(), nn.Linear(12, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), "
                 "nn.Linear(8, 2))",
    "recurrent": "nn.Sequential(nn.GRU(3, 8, batch_first=True), Last(), nn.Linear(8, 2))",
}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_check_says_whether_a_users_task_trains_as_a_population(kind, tmp_path):
    write_files(tmp_path, {"mine.py": TASK.format(name=kind, model=MODELS[kind])})
    study = study_with(tmp_path, kind, f"./mine.py:{kind}", """
        [optimizers.adam]
        lr = [1e-2, 1e-1]
        """, epochs=1)
    checked = adamscape("check", study).stdout
    if kind == "batchnorm":
        assert "populations: yes" in checked, checked
    else:
        assert "populations: no, it has a recurrent layer (0: GRU)" in checked, checked
        assert "torch.func.vmap cannot batch" in checked


# An optimizer with a mode (as Schedule-Free's): SGD that must be in train mode to step, whose eval() breaks.
MODED = '''
import torch


class Moded(torch.optim.SGD):
    def __init__(self, params, lr=1e-2):
        super().__init__(params, lr=lr)
        self.training = True

    def train(self):
        self.training = True

    def eval(self):
        self.training = False
        raise RuntimeError("no eval point kept")

    def step(self, closure=None):
        assert self.training, "stepped in eval mode"
        return super().step(closure)
'''


def test_check_switches_an_optimizer_with_a_mode_as_a_cell_does_and_names_it_when_a_switch_fails(tmp_path):
    write_files(tmp_path, {"moded.py": MODED})
    study = study_with(tmp_path, "moded", "digits-mlp", """
        [optimizers."./moded.py:Moded"]
        lr = [1e-2]
        """, epochs=1)
    checked = adamscape("check", study, check=False)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert "Traceback" not in checked.stderr
    error = checked.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ") and "moded.py:Moded" in error[0], checked.stderr
    assert "no eval point kept" in error[0]  # its steps ran in train mode; the eval() switch failed, and says so
