"""How long the dashboard takes to show a 10,000-cell study's maps (issue 10's goal: under 2 s on 2 cores).

A synthetic study is registered through ``store.register`` in a fresh SQLite file: 4 optimizers (adam,
adamw, adabound, sgdm), each lr 25 log-spaced × a second axis of 25 values × 4 seeds = 10,000 cells.
Its results are written by one SQL UPDATE per optimizer: a smooth accuracy surface with seed noise,
and about 8 % of cells diverged (the largest learning rates). Then, R rounds each (default 5):

  analysis   store.results + analysis.cell_scores + robustness + one heatmap per optimizer, in this
             process (what each dashboard run computes; pandas and numpy already imported)
  page       Streamlit's AppTest runs dashboard/app.py's Maps page from a fresh script run (the data
             cache cleared first, so the results are read again): the whole server-side render

A browser's own drawing of the plotly figures is not included (it happens on the client).

    .venv/bin/python benchmarks/dashboard_render.py [--rounds 5]

Prints a table and writes ``benchmarks/results/dashboard_render.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_SECONDS = 2.0

STUDY = """
name = "atlas-10k"
task = "digits-mlp"
epochs = 3
seeds = [0, 1, 2, 3]

[optimizers.adam]
lr = { log = [1e-5, 1.0], num = 25 }
beta1 = { linear = [0.0, 0.96], num = 25 }

[optimizers.adamw]
lr = { log = [1e-5, 1.0], num = 25 }
weight_decay = { log = [1e-5, 1.0], num = 25 }

[optimizers.adabound]
lr = { log = [1e-5, 1.0], num = 25 }
final_lr = { log = [1e-4, 1.0], num = 25 }

[optimizers.sgdm]
lr = { log = [1e-5, 1.0], num = 25 }
momentum = { linear = [0.0, 0.96], num = 25 }
"""


def synthetic_study(url: str) -> int:
    """Register the study and write every cell's result; return its cell count."""
    import sqlalchemy as sa

    from study import spec, store

    engine = store.connect(url)
    store.register(engine, spec.parse(STUDY, "atlas-10k.toml"))
    # accuracy peaks at lr 1e-3 (log-distance), a little seed noise from the cell index; lr ≥ 0.3 diverges
    with engine.begin() as conn:
        conn.execute(sa.text("""
            UPDATE sweep_cells SET status = CASE WHEN lr >= 0.3 THEN 'diverged' ELSE 'complete' END,
              diverged = lr >= 0.3, attempts = 1, wall_seconds = 0.1,
              final_test_accuracy = CASE WHEN lr >= 0.3 THEN NULL ELSE
                0.95 - 0.08 * (ln(lr) / ln(10) + 3) * (ln(lr) / ln(10) + 3) / 4 + 0.002 * ((cell_index * 7919) % 11) END,
              score = CASE WHEN lr >= 0.3 THEN NULL ELSE
                0.95 - 0.08 * (ln(lr) / ln(10) + 3) * (ln(lr) / ln(10) + 3) / 4 + 0.002 * ((cell_index * 7919) % 11) END,
              final_metrics = '{}', finished_at = 0""")
        )
        return conn.execute(sa.text("SELECT COUNT(*) FROM sweep_cells")).scalar()


def analysis_once(url: str) -> float:
    from study import analysis, store

    engine = store.connect(url, read_only=True)
    start = time.perf_counter()
    results = store.results("atlas-10k", engine)
    scores = analysis.cell_scores(results, "test_accuracy", "maximize")
    analysis.robustness(scores, "maximize")
    maps = [analysis.heatmap(scores, o, "maximize") for o in scores["optimizer"].unique()]
    analysis.colour_range(maps)
    elapsed = time.perf_counter() - start
    engine.dispose()
    return elapsed


def page_once(url: str) -> float:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["ADAMSCAPE_DB"] = url
    st.cache_data.clear()
    app = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
    start = time.perf_counter()
    app.run()
    elapsed = time.perf_counter() - start
    if app.exception:
        raise SystemExit(f"the dashboard failed: {app.exception[0].value}")
    if len(app.get("plotly_chart")) < 4:
        raise SystemExit("the dashboard did not draw the four maps")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/atlas.db"
        cells = synthetic_study(url)
        page_once(url)  # the first run imports plotly and the app's modules: not counted
        timings = {"analysis": [], "page": []}
        for _ in range(args.rounds):
            timings["analysis"].append(analysis_once(url))
            timings["page"].append(page_once(url))
    rows = {name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t), "runs_s": t}
            for name, t in timings.items()}
    print(f"{cells} cells, {args.rounds} rounds")
    for name, row in rows.items():
        print(f"{name:<10} median {row['median_s']:.2f} s  fastest {row['min_s']:.2f} s  slowest {row['max_s']:.2f} s")
    met = rows["page"]["median_s"] < GOAL_SECONDS
    print(f"goal: the Maps page under {GOAL_SECONDS:g} s: {'met' if met else 'missed'}")
    output = ROOT / "benchmarks" / "results" / "dashboard_render.json"
    output.write_text(json.dumps({"cells": cells, "rounds": args.rounds, "cpus": os.cpu_count(),
                                  "goal_s": GOAL_SECONDS, "met": met, "timings": rows}, indent=1) + "\n")
    print(f"wrote {output.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
