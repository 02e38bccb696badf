"""The Streamlit dashboard over a study that really ran: headless AppTest and a real Chromium."""

from __future__ import annotations

import json
import math
import time

import pytest
from streamlit.testing.v1 import AppTest

from tests.support.browser import served_dashboard
from tests.support.cli import adamscape, study_file
from tests.support.paths import ROOT

APP = str(ROOT / "dashboard" / "app.py")


@pytest.fixture(scope="module")
def finished_db(finished_tiny):
    """The tiny study, submitted and run to the end on the session's Ray head (tests/conftest.py)."""
    return finished_tiny


def test_apptest_renders_a_finished_study(finished_db, monkeypatch):
    monkeypatch.setenv("ADAMSCAPE_DB", finished_db)
    app = AppTest.from_file(APP, default_timeout=60).run()
    assert not app.exception
    assert app.sidebar.selectbox[0].value == "tiny"
    labels = [m.label for m in app.metric]
    assert labels.count("good region") == 2 and labels.count("lr window") == 2  # adam and sgdm
    assert labels.count("LR sensitivity") == 2  # Wortsman et al., with its seed-bootstrap interval
    lr_sensitivity = [m for m in app.metric if m.label == "LR sensitivity"]
    assert all("[" in m.value and "Wortsman et al. 2023" in m.proto.help for m in lr_sensitivity)
    diverged = [m.value for m in app.metric if m.label == "diverged runs"]
    assert diverged == ["0%", "50%"]  # sgdm's lr=1000 diverges on both seeds
    assert app.get("progress")[0].proto.text == "10 of 10 cells finished · 2 diverged"  # sgdm lr 1000


def _plotly_array(value):
    """A figure's array as plotly's JSON holds it: a list, or a typed array {dtype, bdata, shape}."""
    import base64

    import numpy as np

    if isinstance(value, dict):
        shape = [int(n) for n in str(value.get("shape", "")).split(",") if n.strip()] or [-1]
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).reshape(shape).tolist()
    return value


def test_apptest_maps_share_one_colour_range_and_show_the_sql_seed_means(finished_db, monkeypatch):
    import sqlalchemy as sa

    from study import analysis

    monkeypatch.setenv("ADAMSCAPE_DB", finished_db)
    app = AppTest.from_file(APP, default_timeout=60).run()
    assert not app.exception
    charts = {json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec)["data"][0]
              for c in app.get("plotly_chart")}
    difference = charts.pop("adam − sgdm")  # over their common lr, 0.1
    traces = charts
    assert set(traces) == {"adam", "sgdm"}
    assert list(difference["x"]) == ["1e-1"]  # powers of ten as such
    assert _plotly_array(difference["z"])[0][0] == pytest.approx(
        _plotly_array(traces["adam"]["z"])[0][2] - _plotly_array(traces["sgdm"]["z"])[0][0])
    assert len({(t["zmin"], t["zmax"]) for t in traces.values()}) == 1  # one scale for every optimizer
    with sa.create_engine(finished_db).connect() as conn:
        means = conn.execute(sa.text(
            "SELECT optimizer, lr, AVG(final_test_accuracy), SUM(CASE WHEN diverged THEN 1 ELSE 0 END) "
            "FROM sweep_results WHERE study = 'tiny' GROUP BY optimizer, lr ORDER BY optimizer, lr")).all()
        worst = conn.execute(sa.text("SELECT MIN(final_test_accuracy) FROM sweep_results WHERE NOT diverged")).scalar()
    for optimizer, lr, mean, diverged in means:
        trace = traces[optimizer]
        z = _plotly_array(trace["z"])[0][list(trace["x"]).index(analysis.axis_label(lr))]
        assert z == pytest.approx(worst if diverged == 2 else mean)  # all seeds diverged: the study's worst
    finite = [z for t in traces.values() for z in _plotly_array(t["z"])[0]]
    assert (traces["adam"]["zmin"], traces["adam"]["zmax"]) == pytest.approx((min(finite), max(finite)))
    assert any("✕" in text for text in _plotly_array(traces["sgdm"]["text"])[0])  # the diverged lr is marked
    outlined = {json.loads(c.proto.spec)["layout"]["title"]["text"]: len(json.loads(c.proto.spec)["layout"].get(
        "shapes", [])) for c in app.get("plotly_chart")}
    shown = {m.value for m in app.metric if m.label == "good region"}
    assert (outlined["adam"], outlined["sgdm"]) == (2, 1) and shown == {"67%", "50%"}  # the good region, outlined
    # a tighter δ, then good regions against each optimizer's own best instead of the study's: sgdm's
    # best (lr 0.1) is within 5 % of adam's, not within 1 %, and is its own best
    assert [m.value for m in app.metric if m.label == "good region"][1] == "50%"
    app.number_input(key="delta").set_value(0.01).run()
    study_wide = [m.value for m in app.metric if m.label == "good region"]
    app.radio(key="reference").set_value("each optimizer's own best").run()
    own = [m.value for m in app.metric if m.label == "good region"]
    assert study_wide[0] == own[0] and (study_wide[1], own[1]) == ("0%", "50%"), (study_wide, own)


def _by_hand(results, seeds: tuple[int, ...]) -> dict[str, dict]:
    """The Overview's measures recomputed here from the stored runs, by the module's definitions (not by
    ``study.analysis``), on the runs of ``seeds`` (one seed twice is that seed once: a seed-bootstrap
    resample), with δ = 5 % of the study-wide best: per optimizer its scores per lr (the other axes are not
    swept here), best, good-region share, lr window and LR sensitivity."""
    runs = [r for r in results.to_dict("records") if r["status"] in ("complete", "diverged") and r["seed"] in seeds]
    worst = min(r["final_test_accuracy"] for r in results.to_dict("records")
                if r["status"] == "complete" and not r["diverged"])  # the study's worst finished value
    configs: dict[tuple[str, float], list[dict]] = {}
    for r in runs:
        configs.setdefault((r["optimizer"], r["lr"]), []).append(r)
    score, mean, clean, capped = {}, {}, {}, {}
    for key, group in configs.items():
        score[key] = sum(worst if r["diverged"] else r["final_test_accuracy"] for r in group) / len(group)
        alive = [r["final_test_accuracy"] for r in group if not r["diverged"]]
        mean[key] = sum(alive) / len(alive) if alive else math.nan
        clean[key] = len(alive) == len(group)
        start = [worst if r["final_initial_test_accuracy"] is None or math.isnan(r["final_initial_test_accuracy"])
                 else r["final_initial_test_accuracy"] for r in group]  # ℓ₀, the run's accuracy at initialisation
        capped[key] = sum(s0 if r["diverged"] else max(r["final_test_accuracy"], s0)
                          for r, s0 in zip(group, start)) / len(group)
    study_best = max(score.values())
    out = {}
    for optimizer in sorted({o for o, _ in configs}):
        lrs = sorted(lr for o, lr in configs if o == optimizer)
        good = [clean[(optimizer, lr)] and abs(study_best - mean[(optimizer, lr)]) <= 0.05 * abs(study_best) + 1e-12
                for lr in lrs]
        window = 0.0
        if any(good):
            at = max((j for j in range(len(lrs)) if good[j]), key=lambda j: score[(optimizer, lrs[j])])
            lo = hi = at
            while lo > 0 and good[lo - 1]:
                lo -= 1
            while hi < len(lrs) - 1 and good[hi + 1]:
                hi += 1
            window = round(math.log10(lrs[hi] / lrs[lo]), 6)
        profile = [capped[(optimizer, lr)] for lr in lrs]
        out[optimizer] = dict(scores=[score[(optimizer, lr)] for lr in lrs],
                              best=max(score[(optimizer, lr)] for lr in lrs), good_fraction=sum(good) / len(lrs),
                              lr_window_decades=window, lr_sensitivity=max(profile) - sum(profile) / len(profile))
    return out


def _expected_best_of_k(values: list[float], k: int) -> float:
    """E[max of k draws with replacement], every one of the len(values)**k draws enumerated."""
    import itertools

    draws = list(itertools.product(values, repeat=k))
    return sum(max(d) for d in draws) / len(draws)


def test_apptest_every_page_shows_what_the_database_holds(finished_db, monkeypatch):
    import sqlalchemy as sa

    from study import store

    monkeypatch.setenv("ADAMSCAPE_DB", finished_db)
    app = AppTest.from_file(APP, default_timeout=60).run()
    engine = store.connect(finished_db, read_only=True)
    results = store.results("tiny", engine)
    assert sorted(set(results["seed"])) == [0, 1]
    hand = _by_hand(results, (0, 1))
    # a resample of two seeds holds seed 0 twice, seed 1 twice (each p = 1/4) or both (p = 1/2): of its 200
    # resamples the 2.5 % and 97.5 % percentiles are the least and the greatest of the three
    resampled = [hand, _by_hand(results, (0,)), _by_hand(results, (1,))]

    app.radio(key="page").set_value("Overview").run()
    assert not app.exception
    board = app.dataframe[1].value.set_index("optimizer")  # [0]: the queue
    assert list(board.index) == ["adam", "sgdm"]
    assert board["best"].to_dict() == pytest.approx({o: hand[o]["best"] for o in ("adam", "sgdm")})
    # the literature's measures beside ours: LR sensitivity with seed-bootstrap intervals
    for optimizer in ("adam", "sgdm"):
        assert board.loc[optimizer, "lr_sensitivity"] == pytest.approx(hand[optimizer]["lr_sensitivity"])
        for measure in ("lr_sensitivity", "good_fraction", "lr_window_decades"):
            values = [r[optimizer][measure] for r in resampled]
            assert (board.loc[optimizer, f"{measure}_low"], board.loc[optimizer, f"{measure}_high"]) == \
                pytest.approx((min(values), max(values))), (optimizer, measure)
    # sgdm: lr 0.1 and lr 1000 (diverged: each seed counts as its recorded accuracy at initialisation, ℓ₀),
    # so its LR sensitivity is (best − mean ℓ₀ of the diverged seeds) / 2
    diverged = results[(results["optimizer"] == "sgdm") & results["diverged"].astype(bool)]
    assert len(diverged) and diverged["final_initial_test_accuracy"].notna().all()
    initial = diverged["final_initial_test_accuracy"].mean()
    assert board.loc["sgdm", "lr_sensitivity"] == pytest.approx((hand["sgdm"]["best"] - initial) / 2)
    pairs = app.dataframe[2].value.set_index(["optimizer", "than"])  # P(less sensitive), both orders
    assert set(pairs.index) == {("adam", "sgdm"), ("sgdm", "adam")}
    assert pairs.loc[("adam", "sgdm"), "P(lr_sensitivity)"] + pairs.loc[("sgdm", "adam"), "P(lr_sensitivity)"] == \
        pytest.approx(1.0)
    wins = {(r["adam"]["lr_sensitivity"] < r["sgdm"]["lr_sensitivity"]) for r in resampled}
    if len(wins) == 1:  # every resample agrees: P is 0 or 1 whatever seeds were drawn
        assert pairs.loc[("adam", "sgdm"), "P(lr_sensitivity)"] == (1.0 if wins.pop() else 0.0)
    else:
        assert 0 < pairs.loc[("adam", "sgdm"), "P(lr_sensitivity)"] < 1
    tunable = app.dataframe[3].value.set_index("optimizer")  # Sivaprasad et al.
    assert list(tunable.index) == ["adam", "sgdm"] and tunable.loc["adam", "budget"] == 3
    for optimizer in ("adam", "sgdm"):
        row = tunable.loc[optimizer]
        # one shot: the expected score of one configuration drawn at random; peak: the best of the grid
        assert row["one_shot"] <= row["uniform"] <= row["peak"] <= hand[optimizer]["best"] + 1e-12
        assert min(hand[optimizer]["scores"]) - 1e-12 <= row["one_shot"]
        assert 0 < row["alpha_0.9"] <= row["alpha_0.95"] <= row["alpha_1.0"] <= 1
    slices = app.dataframe[4].value  # LR sensitivity per value of the other axes (none here: the profile)
    assert set(slices["optimizer"]) == {"adam", "sgdm"} and set(slices["other axes"]) == {"at their best per lr"}
    captions = " ".join(c.value for c in app.caption)
    for citation in ("Wortsman et al. 2023", "Sivaprasad et al. 2020", "seed bootstrap"):
        assert citation in captions, citation
    weights = app.dataframe[5].value.set_index("optimizer")  # each optimizer sweeps lr only: all of it
    assert weights["lr"].to_dict() == pytest.approx({"adam": 1.0, "sgdm": 1.0})

    app.radio(key="page").set_value("Sensitivity").run()
    assert not app.exception
    (sensitivity, best_of_k) = [json.loads(c.proto.spec) for c in app.get("plotly_chart")]
    lines = {t["name"]: t for t in sensitivity["data"] if t.get("name")}
    assert _plotly_array(lines["adam"]["y"]) == pytest.approx(hand["adam"]["scores"])  # per lr, ascending
    assert _plotly_array(lines["sgdm"]["y"]) == pytest.approx(hand["sgdm"]["scores"])
    curves = {t["name"]: t for t in best_of_k["data"] if t.get("name")}
    bands = [t for t in best_of_k["data"] if t.get("fill") == "toself"]
    assert set(curves) == {"adam", "sgdm"} and len(bands) == 2  # each curve with its bootstrap band
    assert _plotly_array(curves["adam"]["y"]) == pytest.approx(
        [_expected_best_of_k(hand["adam"]["scores"], k) for k in (1, 2, 3)])
    captions = " ".join(c.value for c in app.caption)
    assert "Dodge et al. 2019" in captions and "LR sensitivity" in captions

    app.radio(key="page").set_value("Cells").run()
    assert not app.exception
    (curves,) = [json.loads(c.proto.spec) for c in app.get("plotly_chart")]
    with sa.create_engine(finished_db).connect() as conn:  # adam's first configuration: lr 1e-3, seeds 0 and 1
        stored = conn.execute(sa.text(
            "SELECT c.seed, v.epoch, v.test_accuracy FROM sweep_curves v JOIN sweep_cells c ON c.id = v.cell_id "
            "JOIN sweep_results r ON r.study = 'tiny' AND r.cell = c.cell_index "
            "WHERE r.optimizer = 'adam' AND r.lr = (SELECT MIN(lr) FROM sweep_results WHERE optimizer = 'adam') "
            "AND v.attempt = c.attempts ORDER BY c.seed, v.epoch")).all()
    shown = [(int(t["name"].split()[-1]), e, a) for t in curves["data"]
             for e, a in zip(_plotly_array(t["x"]), _plotly_array(t["y"]))]
    assert len(shown) == 4 and [v for row in shown for v in row] == pytest.approx([v for row in stored for v in row])
    runs = app.dataframe[-1].value  # what each seed of the configuration trained on
    assert sorted(runs["seed"]) == [0, 1] and set(runs["device"]) == {"cpu"} and runs["peak_memory_mib"].isna().all()

    app.radio(key="page").set_value("Compare studies").run()
    assert not app.exception and len(app.dataframe) == 4  # the queue, then best, good region, lr window

    app.radio(key="page").set_value("Studies").run()
    assert not app.exception
    (row,) = app.dataframe[1].value.to_dict("records")
    assert (row["study"], row["finished"]) == ("tiny", "10/10")
    assert row["best per optimizer"] == " · ".join(f"{o} {hand[o]['best']:.4g}" for o in ("adam", "sgdm"))


def test_apptest_maps_an_own_optimizer_beside_adam_without_importing_it(ray_address, tmp_path, monkeypatch):
    import shutil
    import sys

    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copy(ROOT / "examples" / "plugins" / "lion.py", mine / "lion.py")
    study = study_file(mine, name="own", epochs=1, seeds=[0], body='[optimizers.adam]\nlr = [1e-3, 1e-2]\n\n'
                       '[optimizers."./lion.py:Lion"]\nlr = [1e-4, 1e-3]\n')
    url = f"sqlite:///{tmp_path / 'results.db'}"
    # on the session's Ray head (a local Ray of its own, the laptop default, costs a Ray start: tests/study
    # and tests/faults run studies on one)
    ran = adamscape("submit", study, "--db", url, "--run", "--address", ray_address)
    assert "4 complete" in ran.stdout, ran.stdout + ran.stderr
    (mine / "lion.py").unlink()  # the dashboard reads the database only: the plugin need not be here
    monkeypatch.setenv("ADAMSCAPE_DB", url)
    app = AppTest.from_file(APP, default_timeout=60).run()
    assert not app.exception
    assert [m.label for m in app.metric].count("good region") == 2
    titles = [json.loads(chart.proto.spec)["layout"]["title"]["text"] for chart in app.get("plotly_chart")]
    assert titles == ["adam", "./lion.py:Lion", "adam − ./lion.py:Lion"]  # as the file names them, in its order
    assert not [m for m in list(sys.modules.values()) if str(mine) in str(getattr(m, "__file__", None))]


def test_apptest_without_studies_says_how_to_start(tmp_path, monkeypatch):
    from study import store

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    store.connect(url)
    monkeypatch.setenv("ADAMSCAPE_DB", url)
    app = AppTest.from_file(APP, default_timeout=60).run()
    assert not app.exception and "adamscape submit" in app.info[0].value


ARTIFACTS = ROOT / "test-artifacts" / "dashboard"  # one screenshot per page, kept after the run (gitignored)
PAGE_CHARTS = {"Maps": 3, "Overview": 0, "Sensitivity": 2, "Cells": 1, "Compare studies": 0, "Studies": 0}
PAGE_TEXTS = {"Maps": ("LR sensitivity",),
              "Overview": ("which optimizer is less sensitive (seed bootstrap)", "tunability (Sivaprasad et al. 2020)",
                           "LR sensitivity per value of the other axes (Wortsman et al. 2023)"),
              "Sensitivity": ("Dodge et al. 2019",)}


def test_real_browser_opens_every_page_without_an_error(finished_db):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with served_dashboard(finished_db) as page:
        page.get_by_text("robustness maps").wait_for(timeout=60_000)
        assert page.get_by_text("Deploy").count() == 0  # no Streamlit developer toolbar
        for name, charts in PAGE_CHARTS.items():
            page.locator("[data-testid='stSidebar']").get_by_text(name, exact=True).click()
            # the previous page's elements stay (stale) until the rerun replaces them
            settled = time.monotonic() + 60
            while page.locator(".js-plotly-plot").count() != charts or page.locator("[data-stale='true']").count():
                assert time.monotonic() < settled, f"{name}: {page.locator('.js-plotly-plot').count()} charts"
                page.wait_for_timeout(200)
            if not charts:
                page.locator("[data-testid='stDataFrame']").nth(1).wait_for(timeout=60_000)
            page.wait_for_timeout(500)  # the charts draw
            assert page.locator("[data-testid='stException']").count() == 0, name
            assert page.get_by_text("10 of 10 cells finished").count() == 1, name
            for text in PAGE_TEXTS.get(name, ()):  # the literature's measures, where they are shown
                assert page.get_by_text(text).count() >= 1, (name, text)
            shot = ARTIFACTS / f"{name.lower().replace(' ', '-')}.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000, name


def test_apptest_shows_the_queue_with_states_positions_and_services(tmp_path, monkeypatch):
    from study import spec, store

    url = f"sqlite:///{tmp_path / 'queue.db'}"
    engine = store.connect(url)
    for name, priority in (("dropped", 0), ("held", 0), ("later", 0), ("urgent", 3)):
        store.register(engine, spec.load(study_file(tmp_path, name=name)), priority=priority)
    store.set_state(engine, "dropped", "cancel")
    store.set_state(engine, "held", "pause")
    store.service_beat(engine, "gpu-box:4242:abcd", host="gpu-box", pid=4242, workers=8, ray="10.0.0.1:6379",
                       code="0" * 16)
    monkeypatch.setenv("ADAMSCAPE_DB", url)
    app = AppTest.from_file(APP, default_timeout=60).run()
    assert not app.exception
    frame = app.dataframe[0].value.set_index("study")
    assert frame["state"].to_dict() == {"dropped": "cancelled", "held": "paused", "later": "queued", "urgent": "queued"}
    assert frame.loc["urgent", "position"] == 1 and frame.loc["later", "position"] == 2  # priority first
    assert frame.loc["dropped", "cancelled"] == 10
    assert any("service gpu-box:4242 · 8 workers on Ray 10.0.0.1:6379" in c.value for c in app.caption)


def test_apptest_on_an_empty_postgresql_database_says_so_and_creates_nothing(monkeypatch):
    import sqlalchemy as sa

    from tests.support.db import pg_database

    with pg_database() as url:
        monkeypatch.setenv("ADAMSCAPE_DB", url)
        app = AppTest.from_file(APP, default_timeout=60).run()
        assert not app.exception
        message = app.error[0].value
        assert message.startswith("no adamscape results in ") and "submit a study first" in message
        engine = sa.create_engine(url)
        assert sa.inspect(engine).get_table_names() == []  # read-only: no migration
        engine.dispose()


def _apptest_of_written_results(tmp_path, monkeypatch, name: str, body: str, score: str, **study) -> AppTest:
    """AppTest over study ``name`` (``study_file``'s, with ``body`` and ``study``, in a SQLite file of its own)
    whose every cell is complete, its test accuracy and score ``score``, an SQL expression over the cell's
    hyperparameters: results written directly, no training. Rendered, without an exception."""
    import sqlalchemy as sa

    from study import spec, store

    url = f"sqlite:///{tmp_path / f'{name}.db'}"
    engine = store.connect(url)
    store.register(engine, spec.load(study_file(tmp_path, name=name, body=body, **study)))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE sweep_cells SET status = 'complete', diverged = 0, attempts = 1, "
                             f"final_test_accuracy = {score}, score = {score}, final_metrics = '{{}}'"))
    monkeypatch.setenv("ADAMSCAPE_DB", url)
    app = AppTest.from_file(APP, default_timeout=60).run()
    assert not app.exception
    return app


def test_apptest_choosing_the_axes_redraws_every_map_over_them(tmp_path, monkeypatch):
    """A study over lr × beta1 (results written directly, no training): the maps follow the chosen axes."""
    body = "[optimizers.adam]\nlr = [1e-3, 1e-2, 1e-1]\nbeta1 = [0.5, 0.9]\n"
    # accuracy rises with lr and with beta1: every configuration differs
    app = _apptest_of_written_results(tmp_path, monkeypatch, "axes", body, "0.5 + lr + beta1 / 10")

    def layout() -> tuple:
        spec_ = json.loads(app.get("plotly_chart")[0].proto.spec)
        return spec_["layout"]["xaxis"]["title"]["text"], len(spec_["data"][0]["x"]), spec_["data"][0]["y"]

    assert layout()[:2] == ("lr (log-spaced)", 3) and list(layout()[2]) == ["0.5", "0.9"]  # lr × beta1 at first
    app.selectbox(key="y-axis").set_value("(none: a strip over x)").run()
    assert layout()[:2] == ("lr (log-spaced)", 3) and list(layout()[2]) == [""]  # a strip: beta1 at its best
    app.radio(key="reduce").set_value("averaged").run()  # beta1 averaged: (0.05 + 0.09) / 2 over lr 1e-3
    assert _plotly_array(json.loads(app.get("plotly_chart")[0].proto.spec)["data"][0]["z"])[0][0] == pytest.approx(
        0.5 + 1e-3 + 0.07)
    app.radio(key="reduce").set_value("at their best").run()
    app.selectbox(key="x-axis").set_value("beta1").run()
    assert layout()[:2] == ("beta1", 2)


def test_apptest_maps_offer_the_coupled_coordinates_as_axes(tmp_path, monkeypatch):
    """AdamW over lr × weight_decay × beta2 (results written directly): the maps may be drawn over
    τ = 1/(η·λ) — in steps, or in epochs once the steps per epoch are given — and over β2's half-life."""
    body = "[optimizers.adamw]\nlr = [1e-3, 1e-2]\nweight_decay = [1e-2, 1e-1]\nbeta2 = [0.9, 0.999]\n"
    app = _apptest_of_written_results(tmp_path, monkeypatch, "coupled", body, "0.5 + lr + weight_decay + beta2 / 10",
                                      seeds=[0])
    x_axis = app.selectbox(key="x-axis")
    assert x_axis.options[:3] == ["lr", "beta2", "weight_decay"]  # the swept axes first: the default map unchanged
    assert {"τ = 1/(η·λ) (steps)", "β2 half-life ln 0.5/ln β2 (steps)"} <= set(x_axis.options)
    x_axis.set_value("tau_steps").run()
    app.selectbox(key="y-axis").set_value("lr").run()
    assert not app.exception
    chart = json.loads(app.get("plotly_chart")[0].proto.spec)
    assert chart["layout"]["xaxis"]["title"]["text"] == "τ = 1/(η·λ) (steps)"
    # τ: 1/(1e-3·1e-1) = 1e4, 1/(1e-3·1e-2) = 1e5 (lr 1e-3); 1/(1e-2·1e-1) = 1e3, 1/(1e-2·1e-2) = 1e4 (lr 1e-2)
    assert list(chart["data"][0]["x"]) == ["1e3", "1e4", "1e5"]
    z = _plotly_array(chart["data"][0]["z"])  # beta2 at its best (0.999): + 0.0999
    assert z[0][1] == pytest.approx(0.5 + 1e-3 + 1e-1 + 0.0999) and z[1][1] == pytest.approx(0.5 + 1e-2 + 1e-2 + 0.0999)
    app.number_input(key="steps-per-epoch").set_value(10).run()  # τ in epochs: 1e3 … 1e5 steps / 10
    app.selectbox(key="x-axis").set_value("tau_epochs").run()
    chart = json.loads(app.get("plotly_chart")[0].proto.spec)
    assert chart["layout"]["xaxis"]["title"]["text"] == "τ = 1/(η·λ) (epochs)"
    assert list(chart["data"][0]["x"]) == ["1e2", "1e3", "1e4"]
    app.selectbox(key="x-axis").set_value("beta2_half_life").run()  # ln 0.5 / ln 0.9 = 6.58, / ln 0.999 = 693
    chart = json.loads(app.get("plotly_chart")[0].proto.spec)
    assert list(chart["data"][0]["x"]) == ["6.58", "693"]


def test_apptest_a_stopped_study_maps_its_whole_grid_and_marks_what_has_not_run(tmp_path, monkeypatch):
    """No training: the first cells in run order are finished by hand, the rest left pending. The page
    says "N of M cells finished"; each map spans its optimizer's grid, its "not run yet" trace covers
    exactly the points where no cell has finished, and the colours only the others."""
    import math

    import sqlalchemy as sa

    from study import spec, store

    url = f"sqlite:///{tmp_path / 'stopped.db'}"
    engine = store.connect(url)
    body = "[optimizers.adam]\nlr = { log = [1e-4, 1e-1], num = 5 }\nbeta1 = [0.5, 0.7, 0.9]\n\n" \
           "[optimizers.sgdm]\nlr = [0.01, 0.1, 1.0, 3.0]\n"
    store.register(engine, spec.load(study_file(tmp_path, name="stopped", body=body)))  # 38 cells
    leased = store.claim(engine, store.get_study(engine, "stopped"), "driver", 11, lease_seconds=60)
    with store.transaction(engine) as conn:
        store.finish(conn, "driver", [{"cell": cell, "status": "complete", "final": {"test_accuracy": 0.5 + k / 100}}
                                      for k, cell in enumerate(leased)], metric="test_accuracy")
    monkeypatch.setenv("ADAMSCAPE_DB", url)
    app = AppTest.from_file(APP, default_timeout=60).run()
    assert not app.exception
    assert app.get("progress")[0].proto.text == "11 of 38 cells finished"
    charts = {json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec)["data"]
              for c in app.get("plotly_chart")}
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT optimizer, lr, beta1, status FROM sweep_cells")).all()
    for optimizer in ("adam", "sgdm"):
        main, *rest = charts[optimizer]
        mine = [r for r in rows if r.optimizer == optimizer]
        lrs, betas = sorted({r.lr for r in mine}), sorted({r.beta1 for r in mine}, key=lambda b: b or 0)
        done = {(r.lr, r.beta1) for r in mine if r.status == "complete"}
        assert list(main["x"]) == [analysis_label(v) for v in lrs]  # the whole grid
        z = _plotly_array(main["z"])
        expected = [[(lr, b) not in done for lr in lrs] for b in betas]
        assert [[v is None or (isinstance(v, float) and math.isnan(v)) for v in row] for row in z] == expected
        (missing,) = [t for t in rest if t.get("name") == "not run yet"]
        marked = [[v is not None and not (isinstance(v, float) and math.isnan(v)) for v in row]
                  for row in _plotly_array(missing["z"])]
        assert marked == expected and any(map(any, expected)) and not all(map(all, expected))
        hover = _plotly_array(missing["customdata"])
        assert all(hover[i][j].startswith("not run yet (0 of ") for i, row in enumerate(expected)
                   for j, flag in enumerate(row) if flag)


def analysis_label(value: float) -> str:
    from study import analysis

    return analysis.axis_label(value)
