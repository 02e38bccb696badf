"""benchmarks/gpu_smoke.py (`make gpu-smoke`) for real on CPU: its studies through the real CLI, its table."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_smoke.py"


def _smoke(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "80"})


def _table(stdout: str) -> list[dict[str, str]]:
    """The summary's rows, by header: columns are two or more spaces apart, no cell is empty."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("task ") and line.rstrip().endswith("result"))
    headers = re.split(r"\s{2,}", lines[start].strip())
    rows = []
    for line in lines[start + 2:]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        assert len(cells) == len(headers), line
        rows.append(dict(zip(headers, cells)))
    return rows


def test_the_smoke_run_on_cpu_trains_every_cell_and_checks_it(ray_address, tmp_path):
    result = _smoke("--device", "cpu", "--tasks", "digits-mlp", "--gpus-per-trial", "0", "--epochs", "2",
                    "--amp", "both", "--out", tmp_path, "--address", ray_address,
                    "--population-sizes", "1,4", "--population-task", "digits-mlp")
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.stdout.startswith(f"gpu-smoke: torch {torch.__version__}")
    rows = _table(result.stdout)
    cells = sorted((r["task"], r["amp"], r["optimizer"], float(r["lr"])) for r in rows)
    assert cells == sorted(("digits-mlp", amp, optimizer, lr) for amp in ("off", "on")
                           for optimizer, lrs in (("adam", (1e-3, 3e-4)), ("sgdm", (0.03, 0.01))) for lr in lrs)
    for row in rows:
        assert row["status"] == "complete" and row["result"] == "PASS", row
        assert row["device"] == "cpu", row
        assert row["peak MiB"] == "-", row  # no peak memory on CPU
        first, last = map(float, row["train loss 1st -> last"].split(" -> "))
        assert last < first and row["falls"] == "yes", row
        assert float(row["chance"]) == pytest.approx(0.1, abs=1e-3), row  # digits: 10 classes
        assert float(row["test acc"]) > 0.1, row
        assert row["above"] == "yes" and float(row["images/s"].replace(",", "")) > 0, row
    assert "gpu-smoke: 8 of 8 cells passed" in result.stdout
    assert (tmp_path / "smoke.db").is_file() and len(list(tmp_path.glob("smoke-digits-mlp-amp-*.toml"))) == 2
    # then the populations' images/s: one at a time, auto and K = 4, each with the passes it trained
    figures = json.loads((tmp_path / "population_speed.json").read_text())["tasks"][0]
    assert figures["task"] == "digits-mlp" and set(figures["modes"]) == {"one", "auto", "4"}
    assert "4 configs per pass" in figures["modes"]["4"]["how"] and "1 config per pass" in figures["modes"]["one"]["how"]
    for mode, row in figures["modes"].items():
        assert row["examples_per_second"] > 0 and re.search(rf"^\s+{mode}: .* examples/s", result.stdout, re.M), mode


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a usable CUDA device")
def test_without_a_gpu_it_stops_at_once_with_one_error_line(tmp_path):
    result = _smoke("--tasks", "digits-mlp", "--out", tmp_path / "out", timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("error: no usable CUDA device here (torch ") and result.stderr.count("\n") == 1
    assert "make gpu-smoke needs a GPU machine" in result.stderr and torch.__version__ in result.stderr
    assert result.stdout == "" and not (tmp_path / "out").exists()
