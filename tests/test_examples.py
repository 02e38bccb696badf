"""The paper presets in examples/, run for real through the CLI on a local Ray."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT, adamscape

EXAMPLES = ROOT / "examples"


def _run_preset(name: str, ray_address: str, db: str) -> pd.DataFrame:
    adamscape("submit", EXAMPLES / f"{name}.toml", "--db", db)
    adamscape("run", name, "--db", db, "--address", ray_address, "--workers", "2", timeout=600)
    return pd.read_csv(io.StringIO(adamscape("results", name, "--db", db, "--format", "csv").stdout))


def test_amsgrad_counterexample_reproduces_reddi_et_al(ray_address, tmp_path):
    results = _run_preset("amsgrad-counterexample", ray_address, f"sqlite:///{tmp_path / 'r.db'}")
    x = results.set_index("optimizer")["final_x"]
    assert (results["status"] == "complete").all()
    assert x["adam"] > 0.9  # Adam converges to the worst point
    assert x["amsgrad"] < -0.99 and x["amsbound"] < -0.99  # the running max fixes it
    assert results.set_index("optimizer")["score"].equals(x)  # x is the study's metric


@pytest.fixture(scope="module")
def decoupling_db(ray_address, tmp_path_factory):
    db = f"sqlite:///{tmp_path_factory.mktemp('decoupling') / 'r.db'}"
    return db, _run_preset("adamw-decoupling-cpu", ray_address, db)


def test_adamw_decoupling_cpu_runs_every_cell(decoupling_db):
    _, results = decoupling_db
    assert len(results) == 32 and (results["status"] != "failed").all()
    assert results.groupby("optimizer")["weight_decay"].nunique().to_dict() == {"adam": 4, "adamw": 4}
    assert results["final_test_accuracy"].max() > 0.5  # MNIST-1D: chance is 0.1


def test_dashboard_draws_both_lr_by_weight_decay_maps(decoupling_db, monkeypatch):
    monkeypatch.setenv("ADAMSCAPE_DB", decoupling_db[0])
    app = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60).run()
    assert not app.exception
    figures = [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]
    assert [f["layout"]["title"]["text"] for f in figures] == ["adam", "adamw", "adam − adamw"]  # and their difference
    for figure in figures[:2]:
        assert figure["data"][0]["type"] == "heatmap"
        assert figure["layout"]["xaxis"]["title"]["text"].startswith("lr")
        assert figure["layout"]["yaxis"]["title"]["text"] == "weight_decay"
        assert len(figure["data"][0]["x"]) == 4 and len(figure["data"][0]["y"]) == 4  # 4 lr × 4 weight decays
