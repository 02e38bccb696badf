"""`adamscape report` on a study that really ran: PNG files, the leaderboard's numbers, and an HTML page
that shows its charts with the network cut off."""

from __future__ import annotations

import csv
import math

import pytest

from study import analysis, store
from tests.conftest import adamscape, chromium_or_skip, study_file

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(finished_tiny, tmp_path_factory):
    """`adamscape report` of the tiny study, submitted and run to the end on the session's Ray head."""
    tmp = tmp_path_factory.mktemp("report")
    url = finished_tiny
    written = adamscape("report", "tiny", "--db", url, "--out", tmp / "atlas").stdout.split()
    return url, tmp / "atlas", written


def test_report_writes_the_charts_the_leaderboard_and_one_page(report):
    url, out, written = report
    names = {"maps.png", "sensitivity.png", "expected_best.png", "leaderboard.csv", "comparison.csv",
             "tunability.csv", "lr_sensitivity.csv", "report.html"}
    assert {p.rsplit("/", 1)[-1] for p in written} == names and {p.name for p in out.iterdir()} == names
    for chart in ("maps", "sensitivity", "expected_best"):
        data = (out / f"{chart}.png").read_bytes()
        assert data.startswith(PNG) and len(data) > 5_000  # a real picture, not an empty canvas
    engine = store.connect(url, read_only=True)
    study = store.get_study(engine, "tiny")
    scores = analysis.cell_scores(store.results("tiny", engine), study["metric"], study["direction"])
    expected = {r.optimizer: r for r in analysis.robustness(scores, study["direction"])}
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert [r["optimizer"] for r in rows] == ["adam", "sgdm"]  # file order
    for row in rows:
        summary = expected[row["optimizer"]]
        for column in ("best", "good_fraction", "divergence_rate", "expected_best_10"):
            assert float(row[column]) == pytest.approx(getattr(summary, column), nan_ok=True)
    assert float(rows[1]["divergence_rate"]) == pytest.approx(0.5)  # sgdm's lr = 1000 diverges on both seeds
    # the literature's measures: LR sensitivity and the seed-bootstrap intervals, as the analysis computes them
    literature, boot = analysis.leaderboard(store.results("tiny", engine), study["metric"], study["direction"])
    literature = literature.set_index("optimizer")
    for row in rows:
        for column in ("lr_sensitivity", "lr_sensitivity_low", "lr_sensitivity_high", "good_fraction_low",
                       "good_fraction_high", "lr_window_decades_low", "lr_window_decades_high"):
            assert float(row[column]) == pytest.approx(literature.loc[row["optimizer"], column]), column
    pairs = list(csv.DictReader((out / "comparison.csv").open()))
    assert [(p["optimizer"], p["than"]) for p in pairs] == [("adam", "sgdm"), ("sgdm", "adam")]
    assert float(pairs[0]["P(lr_sensitivity)"]) == pytest.approx(boot.less_sensitive().loc["adam", "sgdm"])
    tunable = list(csv.DictReader((out / "tunability.csv").open()))
    assert [t["optimizer"] for t in tunable] == ["adam", "sgdm"] and {"early", "late", "alpha_0.95"} <= set(tunable[0])
    page = (out / "report.html").read_text()
    for text in ("Sensitivity measures from the literature", "Wortsman et al. 2023", "Sivaprasad et al. 2020",
                 "Dodge et al. 2019", "less sensitive", "Wang &amp; Aitchison 2025", "lr_sensitivity_low"):
        assert text in page, text
    assert page.count('src="data:image/png;base64,') == 3
    assert "http://" not in page and "https://" not in page  # nothing to fetch: it opens offline
    assert not math.isnan(float(rows[0]["best"]))


def test_report_page_shows_its_charts_in_a_browser_without_network(report):
    chromium = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    _, out, _ = report
    fetched = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = browser.new_context(offline=True)
        page = context.new_page()
        page.on("request", lambda request: fetched.append(request.url))
        page.goto((out / "report.html").as_uri())
        widths = page.eval_on_selector_all("img", "images => images.map(i => i.complete && i.naturalWidth)")
        text = page.inner_text("body")
        page.screenshot(path=str(out / "report-screenshot.png"), full_page=True)
        browser.close()
    assert len(widths) == 3 and all(w and w > 100 for w in widths), widths
    assert "Leaderboard" in text and "sgdm" in text
    assert "Sensitivity measures from the literature" in text and "Tunability (Sivaprasad et al. 2020)" in text
    assert all(url.startswith(("file://", "data:")) for url in fetched), fetched


def test_report_of_an_unknown_study_is_one_error_line(report, tmp_path):
    url, _, _ = report
    result = adamscape("report", "ghost", "--db", url, "--out", tmp_path / "x", check=False)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_the_report_of_a_stopped_study_says_how_far_it_got_and_hatches_what_has_not_run(tmp_path):
    """No Ray: the study's first cells in run order are finished by hand (one of them failed), then
    reported. The page says "N of M cells finished"; the maps span each optimizer's whole grid and
    hatch exactly its points where no cell has finished."""
    import matplotlib

    matplotlib.use("Agg")
    import sqlalchemy as sa

    from study import spec
    from study.analysis import report

    url = f"sqlite:///{tmp_path / 'results.db'}"
    engine = store.connect(url)
    body = "[optimizers.adam]\nlr = { log = [1e-4, 1e-1], num = 5 }\nbeta1 = [0.5, 0.7, 0.9]\n\n" \
           "[optimizers.sgdm]\nlr = [0.01, 0.1, 1.0, 3.0]\n"
    store.register(engine, spec.load(study_file(tmp_path, body=body)))  # 2 seeds: 30 + 8 cells
    leased = store.claim(engine, store.get_study(engine, "tiny"), "driver", 11, lease_seconds=60)
    with store.transaction(engine) as conn:
        store.finish(conn, "driver", [{"cell": cell, "status": "failed" if k == 3 else "complete",
                                       "final": {"test_accuracy": 0.5 + 0.01 * k}, "error": "boom" if k == 3 else None}
                                      for k, cell in enumerate(leased[:10])])
    report.write(engine, "tiny", tmp_path / "atlas")
    page = (tmp_path / "atlas" / "report.html").read_text()
    assert "10 of 38 cells finished · 1 running · 1 failed" in page and "hatched: not run yet" in page

    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT optimizer, lr, beta1, status FROM sweep_cells")).all()
    results = store.results("tiny", engine)
    scores = analysis.cell_scores(results, "test_accuracy")
    figure = report.maps_figure(scores, ["adam", "sgdm"], "test_accuracy", "maximize", results)
    axes = {ax.get_title().split(":")[0]: ax for ax in figure.axes if ax.get_title()}
    for optimizer in ("adam", "sgdm"):
        mine = [r for r in rows if r.optimizer == optimizer]
        lrs, betas = sorted({r.lr for r in mine}), sorted({r.beta1 for r in mine})
        done = {(r.lr, r.beta1) for r in mine if r.status in ("complete", "diverged", "failed")}
        expected = {(betas.index(b) if len(betas) > 1 else 0, lrs.index(lr)) for lr in lrs for b in betas
                    if (lr, b) not in done}
        hatched = {(round(p.get_y() + 0.5), round(p.get_x() + 0.5)) for p in axes[optimizer].patches
                   if p.get_hatch() == "///"}
        assert hatched == expected and expected  # some not run yet, and exactly those
        finished = sum(r.status in ("complete", "failed") for r in mine)
        assert axes[optimizer].get_title() == f"{optimizer}: {finished} of {len(mine)} cells finished"
        assert len(axes[optimizer].get_xticklabels()) == len(lrs)  # the whole grid, not what finished


def test_the_report_maps_the_coupled_coordinates_where_a_grid_sweeps_them(tmp_path):
    """AdamW over lr × weight_decay × beta2 (results written by hand, no Ray): the report adds maps over
    τ = 1/(η·λ) and β2's half-life against the learning rate, and the literature's tables."""
    import matplotlib

    matplotlib.use("Agg")
    import sqlalchemy as sa

    from study import spec
    from study.analysis import report

    url = f"sqlite:///{tmp_path / 'results.db'}"
    engine = store.connect(url)
    body = "[optimizers.adamw]\nlr = [1e-3, 1e-2]\nweight_decay = [1e-2, 1e-1]\nbeta2 = [0.9, 0.999]\n"
    store.register(engine, spec.load(study_file(tmp_path, body=body)))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE sweep_cells SET status = 'complete', diverged = 0, attempts = 1, "
                             "final_test_accuracy = 0.5 + lr + weight_decay + beta2 / 10 + seed / 100.0, "
                             "score = 0.5 + lr + weight_decay + beta2 / 10 + seed / 100.0, final_metrics = '{}'"))
    written = report.write(engine, "tiny", tmp_path / "atlas")
    assert "coupled.png" in {p.name for p in written}
    assert (tmp_path / "atlas" / "coupled.png").read_bytes().startswith(PNG)
    page = (tmp_path / "atlas" / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 4 and "<h2>Coupled coordinates</h2>" in page
    slices = list(csv.DictReader((tmp_path / "atlas" / "lr_sensitivity.csv").open()))
    # the profile, then each of the 2 × 2 (beta2, weight_decay) combinations; accuracy rises with lr by 0.009
    # in each: LRS = best − mean over the two lrs = 0.009 / 2
    assert len(slices) == 5 and all(float(s["lr_sensitivity"]) == pytest.approx(0.0045) for s in slices)
