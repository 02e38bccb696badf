"""The user's own optimizer and task, through the CLI, on a real two-node Ray cluster whose worker node
runs from another directory (the code must travel), with SQLite."""

from __future__ import annotations

import json

import pytest

from tests.support.cli import adamscape, results as _results, study_with as _study, write_files as _write
from tests.support.db import query
from tests.support.invariants import assert_exactly_once
from tests.support.ray import RayNode, free_port

# A sign-descent optimizer (not a KernelOptimizer: trains one configuration per pass).
SIGN_SGD = '''
import torch


class SignSGD(torch.optim.Optimizer):
    """theta <- theta (1 - lr wd) - lr sign(g)."""

    hyperparameters = {"lr": {"low": 0.0, "open_low": True, "log": True, "search": (1e-4, 1e-1)}}

    def __init__(self, params, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.0, nesterov=False):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.mul_(1 - group["lr"] * group["weight_decay"]).add_(p.grad.sign(), alpha=-group["lr"])
'''

# A regression on tensors drawn from a fixed generator; "shipped" says where the worker found this file.
LINE_TASK = '''
import torch
from torch import nn

from workers.data import Split
from workers.tasks import Regression, task


class Line(Regression):
    def evaluate(self):
        return {**super().evaluate(), "shipped": float("runtime_resources" in __file__)}


@task(metrics={"test_loss": "minimize", "shipped": "maximize"}, primary="test_loss", epochs=3, batch_size=16,
      options={"noise": 0.1})
def line(protocol, device):
    """y = 3x - 1 + noise."""
    g = torch.Generator().manual_seed(7)
    x = torch.rand(200, 1, generator=g)
    y = 3 * x - 1 + protocol.task_options["noise"] * torch.randn(200, 1, generator=g)
    split = Split(x[:160], y[:160], x[160:], y[160:])
    return Line(nn.Linear(1, 1).to(device), split.to(device), protocol.batch_size)
'''


@pytest.fixture(scope="module")
def two_nodes(ray_test_env, tmp_path_factory):
    """A head with no CPUs (the driver attaches there) and one 1-CPU worker node started from an empty
    directory with a bare environment: it finds the plugins only if Ray ships them."""
    elsewhere = tmp_path_factory.mktemp("worker-node-cwd")
    head = RayNode(head_port=free_port(), num_cpus=0)
    worker = RayNode(address=head.address, num_cpus=1, cwd=elsewhere)
    yield head.address
    worker.stop(timeout=5)
    head.stop(timeout=5)


def test_own_optimizer_and_task_by_file_path_run_beside_adam_on_a_cluster(two_nodes, tmp_path):
    plugins = tmp_path / "mine"
    _write(plugins, {"signsgd.py": SIGN_SGD, "line.py": LINE_TASK})
    study = _study(plugins, "own", "./line.py:line", """
        [optimizers.adam]
        lr = [1e-2, 1e-1]

        [optimizers."./signsgd.py:SignSGD"]
        lr = [1e-2, 1e-1]
        beta2 = [0.9, 0.99]
        """, epochs=3)
    checked = adamscape("check", study).stdout
    assert "hyperparameters: lr=0.01, beta1=0.9, beta2=0.99, weight_decay=0" in checked
    assert "test_loss (minimize, primary)" in checked and "shipped (maximize)" in checked
    assert "populations: no, the optimizer does not implement the batched kernel" in checked

    db = f"sqlite:///{tmp_path / 'r.db'}"
    adamscape("submit", study, "--db", db)
    ran = adamscape("run", "own", "--db", db, "--address", two_nodes, cwd=tmp_path)  # another cwd than the files'
    assert "12 complete" in ran.stdout, ran.stdout
    rows = _results(db, "own")
    assert len(rows) == 12 and {r["status"] for r in rows} == {"complete"}
    assert all(r["final_shipped"] == 1.0 for r in rows)  # the worker ran Ray's copy
    mine = [r for r in rows if r["optimizer"] == "./signsgd.py:SignSGD"]
    assert sorted((r["lr"], r["beta2"]) for r in mine if r["seed"] == 0) == [(1e-2, 0.9), (1e-2, 0.99),
                                                                            (1e-1, 0.9), (1e-1, 0.99)]
    assert_exactly_once(db, "own")  # one Optuna trial per cell in each optimizer's study, curves complete
    # the numbers are the plugin's: one cell trained here, in this process, gives the same loss
    from study import plugins as plugin_code, spec
    from workers.training import train

    loaded = spec.load(study)
    plugin_code.install(loaded.plugins)
    cell = next(r for r in mine if r["seed"] == 1 and r["lr"] == 1e-1 and r["beta2"] == 0.9)
    hparams = {"lr": 1e-1, "beta1": 0.9, "beta2": 0.9, "weight_decay": 0.0}
    *_, summary = train("./line.py:line", "./signsgd.py:SignSGD", hparams, 1, loaded.protocol())
    assert summary.final["train_loss"] == pytest.approx(cell["final_train_loss"], rel=1e-5)
    assert summary.final["shipped"] == 0.0  # here it is the original file


def test_entry_point_plugins_travel_as_installed_packages(two_nodes, tmp_path):
    site = tmp_path / "site"
    _write(site / "myplugins", {"__init__.py": SIGN_SGD + LINE_TASK.replace("from torch import nn", "from torch import nn  # noqa")})
    _write(site / "myplugins-0.1.dist-info", {
        "METADATA": "Metadata-Version: 2.1\nName: myplugins\nVersion: 0.1\n",
        "top_level.txt": "myplugins\n",
        "entry_points.txt": "[adamscape.optimizers]\nsignsgd = myplugins:SignSGD\n\n"
                            "[adamscape.tasks]\nline = myplugins:line\n"})
    study = _study(tmp_path, "installed", "line", """
        [optimizers.signsgd]
        lr = [1e-2, 1e-1]
        """, epochs=2)
    env = {"PYTHONPATH": str(site)}  # "installed" for the driver only: the worker node has none of it
    assert "installed (adamscape.tasks): line = myplugins:line" in adamscape("tasks", env=env).stdout
    assert "installed (adamscape.optimizers): signsgd = myplugins:SignSGD" in adamscape("optimizers", env=env).stdout
    db = f"sqlite:///{tmp_path / 'r.db'}"
    adamscape("submit", study, "--db", db, env=env)
    (spec,), = query(db, "SELECT spec FROM sweep_studies")
    record = json.loads(spec)["plugins"]["signsgd"]
    assert record["version"] == "0.1" and record["entry_point"] == "adamscape.optimizers:signsgd"
    ran = adamscape("run", "installed", "--db", db, "--address", two_nodes, env=env)
    assert "4 complete" in ran.stdout, ran.stdout + ran.stderr
    rows = _results(db, "installed")
    assert all(r["final_shipped"] == 1.0 for r in rows)
    assert_exactly_once(db, "installed")


BROKEN = {
    "missing file": ({}, "./nowhere.py:X", "nowhere.py not found"),
    "syntax error": ({"o.py": "import torch\n\nclass X(torch.optim.Optimizer):\n    x = = 1\n"}, "./o.py:X",
                     "SyntaxError at line 4"),
    "import error": ({"o.py": "import torch\nimport not_a_module_anywhere\n"}, "./o.py:X",
                     "ModuleNotFoundError: No module named 'not_a_module_anywhere' (line 2)"),
    "no such class": ({"o.py": "import torch\n"}, "./o.py:X", "defines no 'X'"),
    "not an optimizer": ({"o.py": "class X:\n    pass\n"}, "./o.py:X", "not a torch.optim.Optimizer subclass"),
    "no default": ({"o.py": "import torch\nclass X(torch.optim.Optimizer):\n"
                            "    def __init__(self, params, lr):\n        super().__init__(params, {})\n"},
                   "./o.py:X", "hyperparameter `lr` has no default"),
    "step raises": ({"o.py": SIGN_SGD.replace("p.mul_(", "1 / 0\n                    p.mul_(")}, "./o.py:SignSGD",
                    "ZeroDivisionError: division by zero (line 18)"),
}
BROKEN_TASKS = {
    "not decorated": ("def t(protocol, device):\n    pass\n", "is not a task; decorate"),
    "missing method": (LINE_TASK.replace("return Line(", "return object() or Line("),
                       "build returned a 'object', which lacks batches(), prepare(), objective(), evaluate()"),
    "nan before training": (LINE_TASK.replace("3 * x - 1", "float('nan') * x"), "loss before training is nan"),
    "undeclared metric": (LINE_TASK.replace('"shipped": float(', '"other": float('),
                          "evaluate() returned ['other', 'test_loss'] but the task declares ['shipped', 'test_loss']"),
    "nondeterministic": ("import random\n" + LINE_TASK.replace("manual_seed(7)", "manual_seed(random.randrange(10**6))"),
                         "the same seed gave different losses"),
}


@pytest.mark.parametrize("case", list(BROKEN) + [f"task: {name}" for name in BROKEN_TASKS])
def test_a_broken_plugin_is_one_line_exit_2_and_nothing_written(case, tmp_path):
    if case.startswith("task: "):
        text, expected = BROKEN_TASKS[case.removeprefix("task: ")]
        _write(tmp_path, {"t.py": text})
        study = _study(tmp_path, "broken", "./t.py:" + ("t" if "not decorated" in case else "line"),
                       "[optimizers.adam]\nlr = 1e-2\n")
    else:
        files, reference, expected = BROKEN[case]
        _write(tmp_path, files)
        study = _study(tmp_path, "broken", "digits-mlp", f'[optimizers."{reference}"]\nlr = 1e-2\n')
    db = tmp_path / "r.db"
    result = adamscape("submit", study, "--db", f"sqlite:///{db}", check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert str(study) in result.stderr and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not db.exists()  # nothing written


def test_a_changed_plugin_is_refused_until_the_study_is_replaced(ray_address, tmp_path):
    _write(tmp_path / "code", {"signsgd.py": SIGN_SGD})
    study = _study(tmp_path, "changing", "digits-mlp", '[optimizers."./code/signsgd.py:SignSGD"]\nlr = [1e-2, 1e-1]\n',
                   epochs=1)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    adamscape("submit", study, "--db", db)
    assert adamscape("submit", study, "--db", db).stdout.count("unchanged") == 1
    # any cwd (on the session's Ray head: where the cells run is not what this test is about)
    assert adamscape("run", "changing", "--db", db, "--address", ray_address, cwd=tmp_path / "code").returncode == 0
    assert adamscape("submit", study, "--db", db, "--replace").stdout.count("already registered") == 1
    (tmp_path / "code" / "signsgd.py").write_text(SIGN_SGD.replace("theta <-", "θ ←"))
    refused = adamscape("run", "changing", "--db", db, check=False)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "./code/signsgd.py:SignSGD' changed since the study was submitted" in refused.stderr
    assert str(tmp_path / "code" / "signsgd.py") in refused.stderr and "--replace" in refused.stderr
    assert "different study" in adamscape("submit", study, "--db", db, check=False).stderr
    assert "replaced" in adamscape("submit", study, "--db", db, "--replace").stdout
    assert query(db, "SELECT COUNT(*) FROM sweep_cells WHERE status = 'pending'")[0][0] == 4  # results discarded


def test_out_of_device_memory_is_a_resource_fault_its_cell_runs_again_on_a_fresh_worker(two_nodes, tmp_path):
    """A cell whose step raises torch.OutOfMemoryError (a neighbour on a shared GPU took the memory) is not
    failed as the configuration's fault: its worker is replaced and the cell runs again, once."""
    plugins = tmp_path / "mine"
    armed = tmp_path / "armed"
    flaky = SIGN_SGD.replace("        for group in self.param_groups:", f"""        import os
        if os.path.exists({str(armed)!r}):  # once: the first step after the test arms it
            os.remove({str(armed)!r})
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        for group in self.param_groups:""", 1)
    _write(plugins, {"flaky.py": flaky, "line.py": LINE_TASK})
    study = _study(plugins, "oom", "./line.py:line", """
        [optimizers."./flaky.py:SignSGD"]
        lr = [1e-2, 1e-1]
        """, epochs=3, seeds=[0])
    db = f"sqlite:///{tmp_path / 'r.db'}"
    adamscape("submit", study, "--db", db)  # its checks train a few steps: armed only afterwards
    armed.write_text("")
    ran = adamscape("run", "oom", "--db", db, "--address", two_nodes, "--population", "1")
    assert "2 complete, 0 diverged, 0 failed" in ran.stdout, ran.stdout + ran.stderr
    assert not armed.exists()
    cells = query(db, "SELECT losses, attempts FROM sweep_cells ORDER BY cell_index")
    assert sorted((c.losses, c.attempts) for c in cells) == [(0, 1), (1, 2)]  # the hit cell, once more
    assert_exactly_once(db, "oom")
