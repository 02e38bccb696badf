"""The CLI end to end: real console script, real Ray head, real SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import subprocess

import optuna
import pandas as pd
import pytest
import sqlalchemy as sa

from study import store
from study.catalog import TrainingProtocol
from tests.conftest import BIN, adamscape, study_file
from tests.support.cli import study_with, write_files
from tests.support.invariants import cells
from workers import training


def _direct_run(row):
    """Train the cell in this process, independently of Ray and the database."""
    hparams = {n: row[n] for n in ("lr", "beta1", "beta2", "eps", "weight_decay", "momentum") if pd.notna(row[n])}
    *_, summary = training.train("digits-mlp", row["optimizer"], hparams, int(row["seed"]),
                                 TrainingProtocol(epochs=2, batch_size=128))
    return summary


def test_submit_run_results_end_to_end(db_url, ray_address, tmp_path):
    path = study_file(tmp_path)
    first = adamscape("submit", path, "--db", db_url)
    assert "10 cells" in first.stdout
    assert "unchanged" in adamscape("submit", path, "--db", db_url).stdout
    adamscape("run", "tiny", "--db", db_url, "--address", ray_address, "--workers", "2")

    frame = pd.read_csv(io.StringIO(adamscape("results", "tiny", "--db", db_url, "--format", "csv").stdout))
    assert len(frame) == 10 and frame["cell"].tolist() == list(range(10))
    assert (frame.groupby(["optimizer"]).size().to_dict()) == {"adam": 6, "sgdm": 4}
    adam, sgdm = frame[frame.optimizer == "adam"], frame[frame.optimizer == "sgdm"]
    # values actually used, defaults included; NULL where the optimizer has no such hyperparameter
    assert set(adam.beta1) == {0.9} and set(adam.beta2) == {0.999} and set(adam.eps) == {1e-8}
    assert adam.momentum.isna().all() and adam.final_lr.isna().all() and sgdm.beta1.isna().all()
    assert set(sgdm.momentum) == {0.9} and sorted(set(adam.lr)) == pytest.approx([1e-3, 1e-2, 1e-1])
    # an lr of 1000 for SGD diverges, everything else completes
    exploded = frame[(frame.optimizer == "sgdm") & (frame.lr == 1000.0)]
    assert set(exploded.status) == {"diverged"} and exploded.diverged.all()
    healthy = frame.drop(exploded.index)
    assert set(healthy.status) == {"complete"} and not healthy.diverged.any()
    assert (healthy.best_test_accuracy >= healthy.final_test_accuracy).all()
    assert (healthy.wall_seconds > 0).all()
    assert set(frame.device) == {"cpu"} and frame.peak_memory_mib.isna().all()  # what each cell trained on
    # the numbers in the database are the numbers the cell produces when trained directly
    for _, row in healthy.iloc[[0, 5]].iterrows():
        direct = _direct_run(row)
        assert row.final_test_accuracy == pytest.approx(direct.final["test_accuracy"], abs=1e-6)
        assert row.final_train_loss == pytest.approx(direct.final["train_loss"], rel=1e-4)

    # the same rows through pandas and through plain SQL on the view
    assert store.results("tiny", db_url)["final_test_accuracy"].tolist() == pytest.approx(
        frame["final_test_accuracy"].tolist(), nan_ok=True)
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        counts = dict(conn.execute(sa.text(
            "SELECT status, COUNT(*) FROM sweep_results WHERE study = 'tiny' GROUP BY status")).all())
        epochs = conn.execute(sa.text("SELECT COUNT(*) FROM sweep_curves")).scalar()
    assert counts == {"complete": 8, "diverged": 2}
    assert epochs == 8 * 2 + sum(1 for _ in range(2))  # 2 epochs per healthy cell, 1 per diverged cell

    # one Optuna trial per cell, in its optimizer's Optuna study
    trials = [t for key in ("adam", "sgdm")
              for t in optuna.load_study(study_name=f"adamscape/tiny/{key}", storage=db_url).trials]
    assert sorted(t.user_attrs["cell"] for t in trials) == list(range(10))
    assert sum(t.state == optuna.trial.TrialState.PRUNED for t in trials) == 2

    as_json = json.loads(adamscape("results", "tiny", "--db", db_url, "--format", "json").stdout)
    assert len(as_json) == 10 and as_json[0]["study"] == "tiny"
    assert "tiny" in adamscape("status", "--db", db_url).stdout


def _run_rc(*args, **kw) -> subprocess.CompletedProcess:
    return adamscape(*args, check=False, **kw)


@pytest.mark.parametrize("args,needle", [
    (["status", "--db", "sqlite:///{tmp}/none.db"], "no results database"),
    (["run", "ghost", "--db", "{db}"], "no study named 'ghost'"),
    (["run", "ghost", "--db", "{db}", "--population", "0"], "--population must be auto or a whole number"),
    (["results", "ghost", "--db", "{db}"], "no study named 'ghost'"),
    (["submit", "{tmp}/missing.toml", "--db", "{db}"], "not found"),
    (["submit", "{bad}", "--db", "{db}"], "unknown optimizer 'adm'"),
    (["status", "--db", "postgresql+psycopg://nobody@127.0.0.1:1/none"], "cannot reach the results database"),
    (["status", "--db", "not a url"], "is not a URL"),
    (["submit", "{nodata}", "--db", "{db}"], "set download = true in the study file"),
])
def test_user_errors_are_one_line_exit_2_and_write_nothing(args, needle, tmp_path, sqlite_url):
    engine = store.connect(sqlite_url)  # an existing, empty database
    bad = study_file(tmp_path, name="bad", body="[optimizers.adm]\nlr = 0.1\n")
    nodata = study_file(tmp_path, name="nodata", task="cifar10-3c3d", data_dir=str(tmp_path / "no-such-dir"))
    result = _run_rc(*[a.format(tmp=tmp_path, db=sqlite_url, bad=bad, nodata=nodata) for a in args])
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("error: ") == 1
    assert store.list_studies(engine) == []
    assert not (tmp_path / "none.db").exists()


def test_changed_file_is_refused_and_unreachable_ray_is_reported(tmp_path, sqlite_url):
    adamscape("submit", study_file(tmp_path), "--db", sqlite_url)
    changed = _run_rc("submit", study_file(tmp_path, epochs=3), "--db", sqlite_url)
    assert changed.returncode == 2 and "--replace" in changed.stderr
    assert store.get_study(store.connect(sqlite_url), "tiny")["spec"]["epochs"] == 2
    no_ray = _run_rc("run", "tiny", "--db", sqlite_url, "--address", "127.0.0.1:1", timeout=120)
    assert no_ray.returncode == 2 and "cannot reach the Ray cluster" in no_ray.stderr
    assert no_ray.stderr.count("\n") == 1, no_ray.stderr  # the error alone (no Ray log line before it)


# --- the everyday commands: whole names, machine-readable output, no slow imports -------------------

LONG = "a-study-name-long-enough-to-be-cut-by-an-eighty-column-table"


def _at_80(*args: str, **kw) -> subprocess.CompletedProcess:
    """``adamscape ARGS`` piped, as in an 80-column terminal."""
    return adamscape(*args, env={"COLUMNS": "80"}, **kw)


def _words(text: str) -> set[str]:
    return {word.strip("│┃,:;()[]*↑↓") for word in text.split()}


def test_every_table_shows_each_full_name_when_piped_at_80_columns(tmp_path, sqlite_url):
    import optimizers
    from study.catalog import TASKS

    listed = [info for info in TASKS.values() if info.listed]
    tasks = _words(_at_80("tasks").stdout)
    assert {info.name for info in listed} <= tasks
    assert {metric for info in listed for metric in info.metrics} <= tasks
    shown = _words(_at_80("optimizers").stdout)
    assert set(optimizers.names()) <= shown
    assert {n for name in optimizers.names() for n in optimizers.REGISTRY[name].hparams} <= shown

    adamscape("submit", study_file(tmp_path, name=LONG), "--db", sqlite_url)
    status = _at_80("status", "--db", sqlite_url).stdout
    assert LONG in _words(status) and "pending" in status
    results = _at_80("results", LONG, "--db", sqlite_url).stdout
    header = results.splitlines()[1]
    for column in ("cell", "optimizer", "seed", "status", "lr", "momentum"):
        assert column in header.split(), header  # whole column names, on one line
    assert {"adam", "sgdm"} <= _words(results)


def test_every_table_command_offers_json_and_csv(tmp_path, sqlite_url):
    import csv
    import io

    from study.catalog import TASKS

    adamscape("submit", study_file(tmp_path), "--db", sqlite_url)
    tasks = json.loads(adamscape("tasks", "--format", "json").stdout)
    assert {t["task"]: t["primary_metric"] for t in tasks} == {
        i.name: i.primary for i in TASKS.values() if i.listed}
    optimizers_json = json.loads(adamscape("optimizers", "--format", "json").stdout)
    assert {o["optimizer"] for o in optimizers_json} >= {"adam", "adabound", "sgdm"}
    status = json.loads(adamscape("status", "--db", sqlite_url, "--format", "json").stdout)
    assert [(s["study"], s["pending"], s["total_cells"]) for s in status["studies"]] == [("tiny", 10, 10)]
    assert status["services"] == []
    rows = json.loads(adamscape("results", "tiny", "--db", sqlite_url, "--format", "json").stdout)
    assert [r["cell"] for r in rows] == list(range(10))
    for command in (("tasks",), ("optimizers",), ("status", "--db", sqlite_url)):
        parsed = list(csv.DictReader(io.StringIO(adamscape(*command, "--format", "csv").stdout)))
        assert parsed and all(None not in row for row in parsed)  # one value per column on every row


@pytest.mark.parametrize("args", [["--help"], ["status"], ["results", "tiny"], ["tasks"], ["optimizers"],
                                  ["run", "--help"]])
def test_everyday_commands_import_neither_torch_nor_ray(args, tmp_path, sqlite_url):
    """Their wall time is measured by benchmarks/cli_latency.py; here: what they load (in a process of
    their own; the study they read is registered from this one, as `submit` would)."""
    from study import spec

    store.register(store.connect(sqlite_url), spec.load(study_file(tmp_path)))
    if args[0] in ("status", "results"):
        args = [*args, "--db", sqlite_url]
    probe = ("import sys\nsys.argv = ['adamscape', *sys.argv[1:]]\nfrom study.cli import main\n"
             "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
             "heavy = [m for m in ('torch', 'ray', 'pandas', 'numpy', 'optuna') if m in sys.modules]\n"
             "print('loaded:', heavy, file=sys.stderr)\n")
    result = subprocess.run([str(BIN / "python"), "-c", probe, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "loaded: []" in result.stderr, result.stderr


@pytest.mark.parametrize("args,needle", [
    (["run", "x", "--workers", "0"], "Invalid value for '--workers'"),
    (["status", "--bogus"], "No such option: --bogus"),
    (["dashboard", "--port", "70000"], "Invalid value for '--port'"),
    (["results"], "Missing argument"),
    (["submit", "{tmp}/we[red]ird[/].toml"], "we[red]ird[/].toml not found"),
    (["submit", "{markup}"], "unknown task 'dig[/]its'"),
    (["submit", "{tiny}", "--workers", "2"], "--workers: options of a run; add --run"),
    (["status", "--db", "sqlite:///{notdb}"], "is not an SQLite database"),
    (["status", "--db", "postgresql+psycopg://u@localhost:abc/test"], "abc"),
])
def test_command_line_errors_are_one_literal_line_exit_2(args, needle, tmp_path):
    (tmp_path / "notes.txt").write_text("not a database\n")
    markup = study_file(tmp_path, name="markup", task="dig[/]its")
    tiny = study_file(tmp_path)
    result = _run_rc(*[a.format(tmp=tmp_path, markup=markup, tiny=tiny, notdb=tmp_path / "notes.txt") for a in args],
                     cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert needle in result.stderr and "╭" not in result.stderr
    assert not (tmp_path / "adamscape.db").exists()  # nothing written


def test_version_is_the_installed_package_version():
    import importlib.metadata

    assert adamscape("--version").stdout.strip() == f"adamscape {importlib.metadata.version('adamscape')}"


def test_the_dashboard_command_is_its_server_and_listens_on_loopback(tmp_path, sqlite_url):
    """SIGTERM to `adamscape dashboard` stops the server (no orphan keeps the port); it serves this machine only."""
    import signal
    import time
    import urllib.request

    import psutil

    from tests.conftest import _free_port

    adamscape("submit", study_file(tmp_path), "--db", sqlite_url)
    port = _free_port()
    server = subprocess.Popen([str(BIN / "adamscape"), "dashboard", "--db", sqlite_url, "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as answer:
                    assert answer.read() == b"ok"
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()
                time.sleep(0.3)
        listening = [c for c in psutil.Process(server.pid).net_connections()
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
        assert [c.laddr.ip for c in listening] == ["127.0.0.1"]  # the command's own process, loopback only
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        assert not [c for c in psutil.net_connections() if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    finally:
        server.kill()
        server.wait()


def test_submit_run_takes_the_options_of_run(tmp_path, sqlite_url, ray_address):
    adamscape("submit", study_file(tmp_path), "--db", sqlite_url, "--run", "--address", ray_address,
              "--workers", "1", "--population", "2", "--lease-seconds", "30")
    frame = store.results("tiny", sqlite_url)
    assert set(frame.status) == {"complete", "diverged"} and len(frame) == 10


def test_the_driver_options_of_run_serve_and_submit_share_one_declaration():
    """`run` takes every driver option, `serve` all but --keep-warm, `submit` all (for --run and --cluster):
    each defaulting to DRIVER, whose driver options default to the driver's own (RunOptions)."""
    import inspect
    from dataclasses import asdict

    from study.cli import running
    from study.cli.options import DRIVER, RUN_OPTIONS
    from study.driver.options import RunOptions

    defaults = asdict(DRIVER)
    assert tuple(defaults) == RUN_OPTIONS
    for command, taken in ((running.run, RUN_OPTIONS), (running.submit, RUN_OPTIONS),
                           (running.serve, tuple(o for o in RUN_OPTIONS if o != "keep_warm"))):
        parameters = inspect.signature(command).parameters
        assert {name: parameters[name].default for name in taken} == {name: defaults[name] for name in taken}
    driver = RunOptions()
    assert (DRIVER.lease_seconds, DRIVER.db_retry_seconds) == (driver.lease_seconds, driver.db_retry_seconds)


# An optimizer that crashes at a large learning rate: its cells fail (a crashed trial is a result).
FRAGILE = '''
import torch


class Fragile(torch.optim.SGD):
    def __init__(self, params, lr=1e-2):
        super().__init__(params, lr=lr)

    def step(self, closure=None):
        if self.param_groups[0]["lr"] > 0.05:
            raise FloatingPointError("refuses a large lr")
        return super().step(closure)
'''


def test_run_retry_failed_reruns_only_the_failed_cells_and_says_how_many(ray_address, tmp_path):
    write_files(tmp_path, {"fragile.py": FRAGILE})
    study = study_with(tmp_path, "fragile", "digits-logreg", """
        [optimizers."./fragile.py:Fragile"]
        lr = [0.01, 0.02, 0.1, 0.2]
        """, epochs=1)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    first = adamscape("submit", study, "--db", db, "--run", "--address", ray_address, check=False)
    assert first.returncode == 0 and "4 complete, 0 diverged, 4 failed" in first.stdout, first.stdout + first.stderr
    again = adamscape("run", "fragile", "--db", db, "--address", ray_address, "--retry-failed")
    assert "retrying 4 failed cells of study fragile" in again.stdout, again.stdout
    engine = store.connect(db)
    rows = cells(engine, "fragile")
    engine.dispose()
    attempts = {(r["lr"], r["seed"]): (r["status"], r["attempts"]) for r in rows}
    assert attempts == {(lr, seed): ("complete", 1) if lr < 0.05 else ("failed", 2)
                        for lr in (0.01, 0.02, 0.1, 0.2) for seed in (0, 1)}
