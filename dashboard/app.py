"""adamscape dashboard: robustness maps over a results database (read-only).

Run with ``adamscape dashboard`` (the database comes from ADAMSCAPE_DB). It connects read-only: an
empty database, or one at another schema version, is an error message, never a migration.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from study import analysis, store
from study.errors import UserError

st.set_page_config(page_title="adamscape", layout="wide")


@st.cache_resource
def engine(url: str):
    # read-only: the dashboard never migrates or writes (a role that may only SELECT is enough)
    return store.connect(url, read_only=True)


@st.cache_data(ttl=5)
def load_results(url: str, name: str) -> pd.DataFrame:
    return store.results(name, engine(url))


def heatmap_figure(hm: analysis.Heatmap, metric: str, direction: str, zrange: tuple[float, float]) -> go.Figure:
    """Colour: the configuration's score (diverged seeds at the study's worst), on the study's one colour
    range; ✕ where a seed diverged; hover with mean ± std (n) and diverged k/n."""
    x_labels = [f"{v:.3g}" for v in hm.x_values]
    y_labels = [f"{v:.3g}" for v in hm.y_values] if hm.y else [""]
    hover = np.vectorize(lambda sc, m, s, n, d, r: (
        f"score {sc:.4f}<br>mean {m:.4f} ± {s:.4f} (n {int(n)})" if not math.isnan(m) else "no seed finished")
        + (f"<br>diverged {int(d)}/{int(r)}" if d else ""), otypes=[str])(
        hm.score, hm.mean, np.nan_to_num(hm.std), np.nan_to_num(hm.n), np.nan_to_num(hm.diverged),
        np.nan_to_num(hm.runs))
    marks = np.where(np.nan_to_num(hm.diverged) > 0, "✕", "")
    figure = go.Figure(go.Heatmap(
        z=hm.score, x=x_labels, y=y_labels, text=marks, texttemplate="%{text}", customdata=hover,
        zmin=zrange[0], zmax=zrange[1],
        hovertemplate=f"{hm.x} %{{x}}" + (f"<br>{hm.y} %{{y}}" if hm.y else "") + "<br>%{customdata}<extra></extra>",
        colorscale="Viridis", reversescale=direction == "minimize", colorbar={"title": metric}))
    figure.update_layout(title=hm.optimizer, height=320, margin=dict(l=10, r=10, t=40, b=10),
                         xaxis_title=f"{hm.x} (log-spaced)" if hm.x == "lr" else hm.x, yaxis_title=hm.y or "",
                         xaxis_type="category", yaxis_type="category",
                         plot_bgcolor="#d9d9d9")  # grey shows through where nothing finished
    return figure


def progress(counts: dict[str, int], total: int) -> None:
    done = sum(counts.get(s, 0) for s in ("complete", "diverged", "failed"))
    cancelled = counts.get("cancelled", 0)
    st.progress((done + cancelled) / total if total else 1.0,
                text=f"{done}/{total} cells finished · running {counts.get('running', 0)} · "
                     f"diverged {counts.get('diverged', 0)} · failed {counts.get('failed', 0)}"
                     + (f" · cancelled {cancelled}" if cancelled else ""))


def queue_frame(rows: list[dict], services: list[dict]) -> pd.DataFrame:
    """The studies as the service's queue shows them: state, position, progress, and who runs them."""
    names = {s["owner"]: f"{s['host']}:{s['pid']}" for s in services}
    return pd.DataFrame([{
        "study": r["name"], "task": r["task"], "state": r["display"], "position": r["position"],
        "priority": r["priority"],
        "finished": f"{sum(r['counts'].get(s, 0) for s in ('complete', 'diverged', 'failed'))}/{r['total_cells']}",
        "running": r["counts"].get("running", 0), "cancelled": r["counts"].get("cancelled", 0),
        "run by": ", ".join(names.get(owner, owner.rsplit(":", 1)[0]) for owner in r["runners"])} for r in rows])


def queue(db) -> None:
    rows, services = store.overview(db), store.services_alive(db)
    busy = any(r["display"] in ("queued", "running") for r in rows)
    with st.expander(f"queue · {len(services)} service{'s' if len(services) != 1 else ''} running", expanded=busy):
        st.dataframe(queue_frame(rows, services), hide_index=True)
        for s in services:
            st.caption(f"service {s['host']}:{s['pid']} · {s['workers']} workers on Ray {s['ray']} · "
                       f"heartbeat {s['age']:.0f} s ago")


def main() -> None:
    url = os.environ.get("ADAMSCAPE_DB", store.DEFAULT_DB)
    st.title("adamscape · robustness maps")
    try:
        db = engine(url)
    except UserError as exc:
        st.error(str(exc))
        return
    names = store.list_studies(db)
    if not names:
        st.info("No studies yet: `adamscape submit examples/quickstart.toml --run`.")
        return
    queue(db)
    name = st.sidebar.selectbox("study", names, index=len(names) - 1)
    study = store.get_study(db, name)
    metric, direction = study["metric"], study["direction"]
    reference = st.sidebar.radio("good region: within δ of", ["the study's best", "each optimizer's own best"],
                                 help="the study's best compares optimizers; an optimizer's own best does not")
    relative = st.sidebar.radio("good region tolerance δ", ["relative", "absolute"]) == "relative"
    delta = st.sidebar.number_input("δ", min_value=0.0, value=0.05 if relative else 0.02, step=0.01, format="%.3f")
    st.caption(f"task **{study['task']}** · metric **{metric}** ({direction}) · database `{db.url!r}`")

    counts = store.status_counts(db, study["id"])
    running = study["state"] == "active" and bool(counts.get("pending") or counts.get("running"))

    @st.fragment(run_every=5 if running else None)  # refreshed only while the study runs
    def live() -> None:
        counts = store.status_counts(db, study["id"])
        progress(counts, study["total_cells"])
        results = load_results(url, name)
        scores = analysis.cell_scores(results, metric, direction)
        if scores.empty:
            st.info("No finished cells yet.")
            return
        summary = {r.optimizer: r for r in analysis.robustness(
            scores, direction, delta, relative, reference="study" if reference.startswith("the study") else "optimizer")}
        shown = [o for o in study["spec"]["optimizers"] if o in summary]  # file order
        maps = {}
        for optimizer in shown:
            axes = analysis.swept_axes(scores, optimizer)
            maps[optimizer] = analysis.heatmap(scores, optimizer, direction,
                                               x="lr" if "lr" in axes else (axes or ["lr"])[0])
        zrange = analysis.colour_range(list(maps.values()))
        for optimizer, hm in maps.items():
            left, right = st.columns([3, 1])
            left.plotly_chart(heatmap_figure(hm, metric, direction, zrange), key=f"map-{optimizer}")
            r = summary[optimizer]
            right.metric("best " + metric, f"{r.best:.4f}",
                         help="the best configuration's score: seed mean, diverged seeds at the study's worst")
            right.metric("good region", f"{r.good_fraction:.0%}",
                         help=f"configurations within δ of {reference}, no seed diverged")
            right.metric("lr window", f"{r.lr_window_decades:.2f} decades")
            right.metric("diverged runs", f"{r.divergence_rate:.0%}")
            right.metric("expected best of 10", f"{r.expected_best_10:.4f}", help="Show-Your-Work estimator")
        with st.expander("robustness table"):
            st.dataframe(pd.DataFrame([vars(r) for r in summary.values()]))

    live()


main()
