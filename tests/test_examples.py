"""The paper presets in examples/, run for real through the CLI on a local Ray."""

from __future__ import annotations

import io
import json
import re
import time

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT, adamscape
from tests.support.browser import served_dashboard

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


def test_the_2026_family_preset_runs_every_member_and_its_report_compares_them(ray_address, tmp_path, monkeypatch):
    """The preset as shipped, thinned to 3 of its 5 learning rates and one epoch (every member, both axes,
    both seeds): it runs through `submit --run`, and the report ranks every optimizer by the literature's
    measures beside ours, with the pairwise comparison."""
    text = (EXAMPLES / "adam-family-2026.toml").read_text()
    thinned = re.sub(r"num = 5", "num = 3", re.sub(r"^epochs = 5$", "epochs = 1", text, flags=re.M))
    assert thinned.count("num = 3") == 9 and "epochs = 1" in thinned
    study = tmp_path / "adam-family-2026.toml"
    study.write_text(thinned)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    ran = adamscape("submit", study, "--db", db, "--run", "--address", ray_address, "--workers", "2", timeout=600)
    assert "study adam-family-2026: " in ran.stdout and " 0 failed" in ran.stdout, ran.stdout
    results = pd.read_csv(io.StringIO(adamscape("results", "adam-family-2026", "--db", db, "--format", "csv").stdout))
    members = ["adam", "adamw", "adamw-schedulefree", "adopt", "ademamix", "cadamw", "adam-mini", "lion", "laprop"]
    assert sorted(results["optimizer"].unique()) == sorted(members)
    assert len(results) == 9 * 3 * 3 * 2 and (results["status"] != "failed").all()
    assert results["final_test_loss"].min() < 1.0  # digits: chance is ln 10 = 2.3 nats
    adamscape("report", "adam-family-2026", "--db", db, "--out", tmp_path / "atlas")
    leaderboard = pd.read_csv(tmp_path / "atlas" / "leaderboard.csv")
    assert sorted(leaderboard["optimizer"]) == sorted(members)
    comparison = pd.read_csv(tmp_path / "atlas" / "comparison.csv")
    assert len(comparison) == 9 * 8  # every ordered pair of members
    page = (tmp_path / "atlas" / "report.html").read_text()
    assert "LR sensitivity" in page and "Wortsman" in page and "Sivaprasad" in page
    # the dashboard's Overview: the same leaderboard with its intervals, and every pair compared
    monkeypatch.setenv("ADAMSCAPE_DB", db)
    app = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120).run()
    app.radio(key="page").set_value("Overview").run()
    assert not app.exception
    board = app.dataframe[1].value.set_index("optimizer")  # [0]: the queue
    assert sorted(board.index) == sorted(members)
    assert board["lr_sensitivity"].to_dict() == pytest.approx(leaderboard.set_index("optimizer")["lr_sensitivity"].to_dict())
    assert ((board["lr_sensitivity_low"] <= board["lr_sensitivity"] + 1e-12)
            & (board["lr_sensitivity"] <= board["lr_sensitivity_high"] + 1e-12)).all()
    pairs = app.dataframe[2].value
    assert len(pairs) == 9 * 8 and set(pairs["optimizer"]) == set(members)
    _seen_in_a_real_browser(db, members)


def _seen_in_a_real_browser(db: str, members: list[str]) -> None:
    """The served dashboard in Chromium: a map of every member on the Maps page, and the literature's measures
    with the pairwise comparison on the Overview."""
    with served_dashboard(db) as page:
        settled = time.monotonic() + 90
        while page.locator(".js-plotly-plot").count() < len(members):  # one map per member
            assert time.monotonic() < settled, f"{page.locator('.js-plotly-plot').count()} maps"
            page.wait_for_timeout(200)
        assert page.locator("[data-testid='stException']").count() == 0
        drawn = " ".join(page.locator(".js-plotly-plot").all_inner_texts())
        assert all(member in drawn for member in members), drawn[:500]  # each map titled by its member
        page.locator("[data-testid='stSidebar']").get_by_text("Overview", exact=True).click()
        for text in ("which optimizer is less sensitive (seed bootstrap)", "tunability (Sivaprasad et al. 2020)",
                     "LR sensitivity per value of the other axes (Wortsman et al. 2023)"):
            page.get_by_text(text).wait_for(timeout=60_000)
        assert page.locator("[data-testid='stException']").count() == 0


def test_the_wortsman_transformer_preset_maps_adam_and_adamw_lr_sensitivity(ray_address, tmp_path):
    """The preset as shipped, thinned to 3 of its 7 learning rates, one seed and one epoch of 10 steps (both
    optimizers, every beta2): it runs through `submit --run`, the transformer learns at the middle lr, the
    largest lr does worst, and the report states each optimizer's LR sensitivity."""
    text = (EXAMPLES / "wortsman-transformer.toml").read_text()
    thinned = re.sub(r"num = 7", "num = 3", re.sub(r"^epochs = 3$", "epochs = 1", text, flags=re.M))
    thinned = re.sub(r"^steps_per_epoch = 100$", "steps_per_epoch = 10", thinned, flags=re.M)
    thinned = re.sub(r"^seeds = \[0, 1\]$", "seeds = [0]", thinned, flags=re.M)
    assert thinned.count("num = 3") == 2 and "epochs = 1" in thinned and "steps_per_epoch = 10" in thinned
    assert "seeds = [0]" in thinned
    study = tmp_path / "wortsman-transformer.toml"
    study.write_text(thinned)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    ran = adamscape("submit", study, "--db", db, "--run", "--address", ray_address, "--workers", "2", timeout=600)
    assert "study wortsman-transformer: " in ran.stdout and " 0 failed" in ran.stdout, ran.stdout
    listed = adamscape("results", "wortsman-transformer", "--db", db, "--format", "csv").stdout
    results = pd.read_csv(io.StringIO(listed))
    assert len(results) == 2 * 3 * 3 and (results["status"] != "failed").all()
    assert sorted(results["optimizer"].unique()) == ["adam", "adamw"]
    assert results.groupby("optimizer")["beta2"].nunique().to_dict() == {"adam": 3, "adamw": 3}
    assert (results.loc[results["optimizer"] == "adamw", "weight_decay"] == 0.1).all()
    assert results["score"].equals(results["final_test_loss"])  # test loss (nats per token) is the metric
    by_lr = results.groupby("lr")["final_test_loss"].mean()
    assert by_lr.min() < 4.0  # from ln 256 = 5.55: the byte statistics learnt in 10 steps
    assert by_lr.idxmin() < by_lr.index.max() and by_lr.iloc[-1] > by_lr.min() + 0.5  # lr 0.3 is too large
    adamscape("report", "wortsman-transformer", "--db", db, "--out", tmp_path / "atlas")
    leaderboard = pd.read_csv(tmp_path / "atlas" / "leaderboard.csv").set_index("optimizer")
    assert sorted(leaderboard.index) == ["adam", "adamw"]
    assert (leaderboard["lr_sensitivity"] > 0).all()
