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


def heatmap_figure(hm: analysis.Heatmap, metric: str, direction: str, zrange: tuple[float, float],
                   good: np.ndarray | None = None) -> go.Figure:
    """Colour: the configuration's score (diverged seeds at the study's worst), on the study's one colour
    range; ✕ where a seed diverged; the good region outlined; hover with mean ± std (n) and diverged k/n.
    A map with the study's cells (a study still running, or stopped) also shows the points where no cell
    has finished: white, with "·", hover "not run yet" (a trace of their own, "not run yet"); grey: cells
    finished, but none with a score (failed)."""
    x_labels = [analysis.axis_label(v) for v in hm.x_values]
    y_labels = [analysis.axis_label(v) for v in hm.y_values] if hm.y else [""]
    planned = hm.planned if hm.planned is not None else np.zeros(hm.score.shape, dtype=int)
    finished = hm.finished if hm.finished is not None else planned
    hover = np.vectorize(lambda sc, m, s, n, d, r, f, p: (
        f"score {sc:.4f}<br>mean {m:.4f} ± {s:.4f} (n {int(n)})" if not math.isnan(m) else "no seed finished")
        + (f"<br>diverged {int(d)}/{int(r)}" if d else "") + (f"<br>{f} of {p} cells finished" if f < p else ""),
        otypes=[str])(
        hm.score, hm.mean, np.nan_to_num(hm.std), np.nan_to_num(hm.n), np.nan_to_num(hm.diverged),
        np.nan_to_num(hm.runs), finished, planned)
    marks = np.where(np.nan_to_num(hm.diverged) > 0, "✕", "")
    figure = go.Figure(go.Heatmap(
        z=hm.score, x=x_labels, y=y_labels, text=marks, texttemplate="%{text}", customdata=hover,
        zmin=zrange[0], zmax=zrange[1],
        hovertemplate=f"{hm.x} %{{x}}" + (f"<br>{hm.y} %{{y}}" if hm.y else "") + "<br>%{customdata}<extra></extra>",
        colorscale="Viridis", reversescale=direction == "minimize", colorbar={"title": metric}))
    if hm.missing is not None and hm.missing.any():
        figure.add_trace(go.Heatmap(
            z=np.where(hm.missing, 1.0, np.nan), x=x_labels, y=y_labels, name="not run yet", showscale=False,
            colorscale=[[0, "#ffffff"], [1, "#ffffff"]], text=np.where(hm.missing, "·", ""), texttemplate="%{text}",
            customdata=np.vectorize(lambda p: f"not run yet (0 of {p} cells finished)", otypes=[str])(planned),
            hovertemplate=f"{hm.x} %{{x}}" + (f"<br>{hm.y} %{{y}}" if hm.y else "")
            + "<br>%{customdata}<extra></extra>", xgap=1, ygap=1))
    figure.update_layout(title=hm.optimizer, height=320, margin=dict(l=10, r=10, t=40, b=10),
                         xaxis_title=f"{hm.x} (log-spaced)" if hm.x == "lr" else analysis.AXIS_TITLES.get(hm.x, hm.x),
                         yaxis_title=analysis.AXIS_TITLES.get(hm.y, hm.y or ""),
                         xaxis_type="category", yaxis_type="category",
                         plot_bgcolor="#d9d9d9")  # grey shows through where nothing finished
    for i, j in zip(*np.nonzero(good)) if good is not None else ():
        figure.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5,
                         line={"color": "white", "width": 2}, name="good")
    return figure


def progress(counts: dict[str, int], total: int) -> None:
    done = sum(counts.get(s, 0) for s in ("complete", "diverged", "failed"))
    cancelled = counts.get("cancelled", 0)
    st.progress((done + cancelled) / total if total else 1.0, text=analysis.finished_line(counts, total))


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


PAGES = ("Maps", "Overview", "Sensitivity", "Cells", "Compare studies", "Studies")


@st.cache_data(ttl=5)
def load_curves(url: str, name: str, cells: tuple[int, ...]) -> dict[int, list[dict]]:
    return store.cell_curves(engine(url), name, cells)


def download(frame: pd.DataFrame, what: str, key: str) -> None:
    """The data behind a chart as CSV (each chart's own camera button saves it as PNG)."""
    st.download_button(f"{what} as CSV", frame.to_csv(index=False).encode(), file_name=f"{key}.csv",
                       mime="text/csv", key=f"csv-{key}")


COUPLED_HELP = ("coupled coordinates, where the literature says they are the real ones: "
                + analysis.LITERATURE["tau"] + "; " + analysis.LITERATURE["beta2_half_life"]
                + ". A map over one shows whether a 'sensitive' axis is only a badly chosen one")


def coupled(scores: pd.DataFrame, results: pd.DataFrame, shown: list[str], spec: dict):
    """The frames with the coupled coordinates (τ, β2's half-life) and those that some shown optimizer sweeps;
    the steps per epoch that put τ in epochs: recorded or in the study file, else asked for here (0: steps)."""
    known = analysis.steps_per_epoch(results, spec)
    if known is None and any({"lr", "weight_decay"} <= set(analysis.swept_axes(results, o)) for o in shown):
        known = st.number_input("steps per epoch (τ in epochs; 0: τ in steps)", min_value=0, value=0, step=1,
                                key="steps-per-epoch", help="the study does not record its steps per epoch "
                                "(training examples / batch size): give it to read τ = 1/(η·λ) in epochs") or None
    scores, results = analysis.coupled_axes(scores, known), analysis.coupled_axes(results, known)
    derived = [a for a in analysis.AXIS_TITLES if a in results
               and any(a in analysis.swept_axes(results, o) for o in shown)]
    return scores, results, derived


def maps_page(scores: pd.DataFrame, shown: list[str], summary: dict, metric: str, direction: str,
              reference: str, delta: float, relative: bool, results: pd.DataFrame, board: pd.DataFrame | None = None,
              spec: dict | None = None) -> None:
    """Per optimizer its map over its whole grid (``results``: every cell) and numbers; a white outline
    marks the good region; points where no cell has finished yet are marked "not run yet". The x and y
    axes may also be coupled coordinates (τ = 1/(η·λ), β2's half-life), listed after the swept axes."""
    study_best = analysis.best_score(scores, direction)
    goal = {o: study_best if reference.startswith("the study") else summary[o].best for o in shown}
    axes = sorted({a for o in shown for a in analysis.swept_axes(results, o)}, key=lambda a: (a != "lr", a))
    scores, results, derived = coupled(scores, results, shown, spec or {})
    title = lambda a: analysis.AXIS_TITLES.get(a, a)  # noqa: E731
    x = st.selectbox("x axis", (axes or ["lr"]) + derived, format_func=title, key="x-axis", help=COUPLED_HELP)
    others = [a for a in axes + derived if a != x]
    y = st.selectbox("y axis", ["(none: a strip over x)", *others], index=1 if others else 0, format_func=title,
                     key="y-axis")
    y = y if y in others else None
    how = st.radio("the other axes", ["at their best", "averaged", "fixed"], horizontal=True, key="reduce",
                   help="each cell of a map is one (x, y) point: the best configuration over the other axes, "
                        "their average, or the configuration at the values chosen here")
    fixed = {}
    if how == "fixed":
        implied = {base for a in (x, y) for base in analysis.DERIVED_FROM.get(a, ())}  # set by the coupled axis
        for axis in (a for a in axes if a not in (x, y) and a not in implied):
            values = sorted(results[axis].dropna().unique())
            fixed[axis] = st.select_slider(axis, values, format_func=analysis.axis_label, key=f"fix-{axis}")
    lr_sensitivity = board.set_index("optimizer") if board is not None else None
    maps = {}
    for optimizer in shown:
        own = analysis.swept_axes(results, optimizer)
        chosen_x = x if x in own else (own or [x])[0]
        chosen_y = y if y in own and y != chosen_x else None
        maps[optimizer] = analysis.heatmap(scores, optimizer, direction, x=chosen_x, y=chosen_y,
                                           reduce="mean" if how == "averaged" else "best",
                                           fixed={a: v for a, v in fixed.items() if a in own}, cells=results)
    zrange = analysis.colour_range(list(maps.values()))
    for optimizer, hm in maps.items():
        left, right = st.columns([3, 1])
        good = analysis.good_mask(hm, direction, goal[optimizer], delta, relative)
        left.plotly_chart(heatmap_figure(hm, metric, direction, zrange, good), key=f"map-{optimizer}")
        r = summary[optimizer]
        spread = ""
        if lr_sensitivity is not None and optimizer in lr_sensitivity.index:
            row = lr_sensitivity.loc[optimizer]
            spread = (f"; seed bootstrap: good region [{row['good_fraction_low']:.0%}, "
                      f"{row['good_fraction_high']:.0%}], "
                      f"lr window [{row['lr_window_decades_low']:.2f}, {row['lr_window_decades_high']:.2f}] decades")
        right.metric("best " + metric, f"{r.best:.4f}",
                     help="the best configuration's score: seed mean, diverged seeds at the study's worst")
        right.metric("good region", f"{r.good_fraction:.0%}",
                     help=f"configurations within δ of {reference}, no seed diverged{spread}")
        right.metric("lr window", f"{r.lr_window_decades:.2f} decades")
        right.metric("diverged runs", f"{r.divergence_rate:.0%}")
        right.metric("expected best of 10", f"{r.expected_best_10:.4f}", help="Show-Your-Work estimator")
        if lr_sensitivity is not None and optimizer in lr_sensitivity.index:
            row = lr_sensitivity.loc[optimizer]
            value = row["lr_sensitivity"]
            right.metric("LR sensitivity", "–" if math.isnan(value) else
                         f"{value:.4f} [{row['lr_sensitivity_low']:.4f}, {row['lr_sensitivity_high']:.4f}]",
                         help=analysis.LITERATURE["lr_sensitivity"] + ". In brackets: "
                         + analysis.LITERATURE["interval"])
    if len(maps) >= 2:
        st.subheader("difference map")
        a, b = st.columns(2)
        first = a.selectbox("optimizer", list(maps), key="diff-a")
        second = b.selectbox("minus", [o for o in maps if o != first], key="diff-b")
        try:
            diff = analysis.difference(maps[first], maps[second])
        except ValueError as exc:
            st.info(f"no common axes: {exc}")
        else:
            if diff.x_values:
                bound = float(np.nanmax(np.abs(diff.score))) if np.isfinite(diff.score).any() else 1.0
                st.plotly_chart(heatmap_figure(diff, f"Δ {metric}", "maximize", (-bound, bound)), key="diff")
            else:
                st.info(f"{first} and {second} share no point on their {diff.x} axis")
    download(scores, "configurations", "configurations")


def leaderboard_help(metric: str) -> dict[str, str]:
    """What each leaderboard column is (ours, then the literature's, with formula and citation)."""
    interval = analysis.LITERATURE["interval"]
    return {"best": f"the best configuration's score ({metric}; diverged seeds at the study's worst)",
            "relative_best": "best as a fraction of the study's best (1: the winner; DeepOBS-style)",
            "good_fraction": "configurations within δ of the reference best, no seed diverged",
            "lr_window_decades": "consecutive good learning rates around the best one, in decades",
            "divergence_rate": "diverged runs / finished runs", "mean_seed_std": "mean std over a configuration's seeds",
            "expected_best_1": "expected best of 1 random configuration",
            "expected_best_10": "expected best of 10 random configurations (Show-Your-Work)",
            "configs": "configurations in the grid",
            "lr_sensitivity": analysis.LITERATURE["lr_sensitivity"],
            "good_fraction_low": f"good_fraction, lower end of its {interval}",
            "good_fraction_high": "good_fraction, upper end of the interval",
            "lr_window_decades_low": "lr_window_decades, lower end of the seed-bootstrap interval",
            "lr_window_decades_high": "lr_window_decades, upper end of the seed-bootstrap interval",
            "lr_sensitivity_low": "lr_sensitivity, lower end of the seed-bootstrap interval",
            "lr_sensitivity_high": "lr_sensitivity, upper end of the seed-bootstrap interval"}


def overview_page(summary: dict, results: pd.DataFrame, metric: str, direction: str, board: pd.DataFrame,
                  boot: analysis.SeedBootstrap, scores: pd.DataFrame) -> None:
    help = leaderboard_help(metric)
    st.dataframe(board, hide_index=True, column_config={c: st.column_config.Column(help=h) for c, h in help.items()},
                 key="leaderboard")
    for column, text in help.items():
        st.caption(f"**{column}**: {text}")
    if boot.seeds < 2:
        st.caption("one seed: nothing to resample, the intervals are points")
    download(board, "leaderboard", "leaderboard")
    order = list(summary)
    st.subheader("which optimizer is less sensitive (seed bootstrap)")
    pairs = analysis.comparison(boot, order)
    st.dataframe(pairs, hide_index=True, key="comparison", column_config={
        c: st.column_config.NumberColumn(help=analysis.LITERATURE["comparison"], format="%.2f")
        for c in pairs.columns if c.startswith("P(")})
    st.caption(f"**P(measure)**: {analysis.LITERATURE['comparison']}; {boot.resamples} resamples of "
               f"{boot.seeds} seeds")
    download(pairs, "comparison", "comparison")
    st.subheader("tunability (Sivaprasad et al. 2020)")
    tunable = analysis.tunability_frame([t for t in analysis.tunability(scores, direction) if t.optimizer in summary])
    tunable = tunable.set_index("optimizer").loc[[o for o in order if o in set(tunable["optimizer"])]].reset_index()
    st.dataframe(tunable, hide_index=True, key="tunability", column_config={
        c: st.column_config.Column(help=analysis.LITERATURE[c]) for c in tunable.columns if c in analysis.LITERATURE})
    st.caption(f"P_t: the best {metric} after t configurations drawn at random ({analysis.SHUFFLES} seeded bootstrap "
               "orders of the optimizer's T configurations, as idiap/hypaobp); budget: T")
    for column in ("one_shot", "peak", "uniform", "early", "late", "alpha_0.9", "alpha_0.95", "alpha_1.0", "sharpness"):
        st.caption(f"**{column}**: {analysis.LITERATURE[column]}")
    download(tunable, "tunability", "tunability")
    st.subheader("LR sensitivity per value of the other axes (Wortsman et al. 2023)")
    slices = analysis.lr_sensitivity(results, metric, direction)
    slices = slices[slices["optimizer"].isin(order)]
    st.dataframe(slices, hide_index=True, key="lr-sensitivity")
    st.caption(analysis.LITERATURE["lr_sensitivity"] + "; per row: the lr sweep at those values of the other axes")
    download(slices, "LR sensitivity", "lr-sensitivity")
    st.subheader("which hyperparameter matters (fANOVA)")
    weights = pd.DataFrame([{"optimizer": o, **analysis.importance(results, metric, o, direction)} for o in summary])
    st.dataframe(weights, hide_index=True)
    st.caption("share of the metric's variance over the grid that each swept hyperparameter explains "
               "(Optuna's fANOVA evaluator; one trial per seed, diverged seeds at the study's worst)")
    download(weights, "importance", "importance")


def sensitivity_page(scores: pd.DataFrame, shown: list[str], metric: str, direction: str,
                     board: pd.DataFrame | None = None) -> None:
    from plotly.colors import qualitative

    figure, rows = go.Figure(), []
    for index, optimizer in enumerate(shown):
        if "lr" not in analysis.swept_axes(scores, optimizer):
            continue
        colour = qualitative.Plotly[index % len(qualitative.Plotly)]
        curve = analysis.sensitivity(scores, optimizer, direction)
        upper = [m + s for m, s in zip(curve.mean, curve.std)]
        lower = [m - s for m, s in zip(curve.mean, curve.std)]
        figure.add_trace(go.Scatter(x=curve.values + curve.values[::-1], y=upper + lower[::-1], fill="toself",
                                    mode="lines", fillcolor=colour, opacity=0.2, line={"width": 0, "color": colour},
                                    showlegend=False, hoverinfo="skip", legendgroup=optimizer))
        figure.add_trace(go.Scatter(x=curve.values, y=curve.score, mode="lines+markers", name=optimizer,
                                    line={"color": colour}, legendgroup=optimizer))
        rows += [{"optimizer": optimizer, "lr": v, "score": sc, "mean": m, "std": sd, "diverged": d, "runs": r}
                 for v, sc, m, sd, d, r in zip(curve.values, curve.score, curve.mean, curve.std, curve.diverged,
                                               curve.runs)]
    figure.update_layout(title=f"{metric} against the learning rate (other axes at their best; band: seed mean ± std)",
                         xaxis_type="log", xaxis_title="lr", yaxis_title=metric, xaxis_exponentformat="power")
    st.plotly_chart(figure, key="sensitivity")
    if board is not None:
        values = board.set_index("optimizer")
        st.caption("**LR sensitivity**: " + " · ".join(
            f"{o} {values.loc[o, 'lr_sensitivity']:.4f} [{values.loc[o, 'lr_sensitivity_low']:.4f}, "
            f"{values.loc[o, 'lr_sensitivity_high']:.4f}]" for o in shown
            if o in values.index and not math.isnan(values.loc[o, "lr_sensitivity"]))
            + f" — {analysis.LITERATURE['lr_sensitivity']}; in brackets: {analysis.LITERATURE['interval']}")
    download(pd.DataFrame(rows), "sensitivity", "sensitivity")
    best_of_k, rows = go.Figure(), []
    for index, optimizer in enumerate(shown):
        colour = qualitative.Plotly[index % len(qualitative.Plotly)]
        band = analysis.expected_best_bands(scores, optimizer, direction)
        ks = band["k"].tolist()
        best_of_k.add_trace(go.Scatter(x=ks + ks[::-1], y=band["high"].tolist() + band["low"].tolist()[::-1],
                                       fill="toself", mode="lines", fillcolor=colour, opacity=0.2,
                                       line={"width": 0, "color": colour}, showlegend=False, hoverinfo="skip",
                                       legendgroup=optimizer))
        best_of_k.add_trace(go.Scatter(x=ks, y=band["expected"].tolist(), name=optimizer, line={"color": colour},
                                       legendgroup=optimizer))
        rows += [{"optimizer": optimizer, "k": int(k), "expected_best": e, "low": lo, "high": hi}
                 for k, e, lo, hi in band[["k", "expected", "low", "high"]].itertuples(index=False)]
    best_of_k.update_layout(title="expected best of k configurations drawn at random (band: 95 % bootstrap)",
                            xaxis_title="k", yaxis_title=metric)
    st.plotly_chart(best_of_k, key="best-of-k")
    st.caption(f"**expected best of k**: {analysis.LITERATURE['expected_best']} ({analysis.RESAMPLES} resamples; "
               "Lourie et al. 2025 give distribution-free bands instead)")
    download(pd.DataFrame(rows), "expected best of k", "expected-best-of-k")


def cells_page(url: str, name: str, results: pd.DataFrame, shown: list[str]) -> None:
    optimizer = st.selectbox("optimizer", shown, key="cells-optimizer")
    rows = results[results["optimizer"] == optimizer]
    axes = [a for a in analysis.hparam_columns(rows) if rows[a].nunique() > 1]
    points = rows.drop_duplicates(axes)[axes].to_dict("records") if axes else [{}]
    label = lambda p: ", ".join(f"{a} = {p[a]:.3g}" for a in axes) or "the only configuration"  # noqa: E731
    point = points[st.selectbox("configuration", range(len(points)), format_func=lambda i: label(points[i]),
                                key="cells-point")]
    chosen = rows[np.logical_and.reduce([rows[a] == v for a, v in point.items()])] if point else rows
    curves = load_curves(url, name, tuple(int(c) for c in chosen["cell"]))
    metrics = sorted({m for curve in curves.values() for epoch in curve for m in epoch if m != "epoch"})
    if not metrics:
        st.info("no epoch recorded yet for this configuration")
        return
    metric = st.selectbox("metric", metrics, key="cells-metric")
    figure, data = go.Figure(), []
    for cell, seed in zip(chosen["cell"], chosen["seed"]):
        epochs = [e for e in curves.get(int(cell), []) if e.get(metric) is not None]
        figure.add_trace(go.Scatter(x=[e["epoch"] for e in epochs], y=[e[metric] for e in epochs],
                                    mode="lines+markers", name=f"seed {seed}"))
        data += [{"cell": int(cell), "seed": seed, "epoch": e["epoch"], metric: e[metric]} for e in epochs]
    figure.update_layout(title=f"{optimizer}: {label(point)}", xaxis_title="epoch", yaxis_title=metric,
                         xaxis={"tickformat": "d"})
    st.plotly_chart(figure, key="curves")
    download(pd.DataFrame(data), "learning curves", "curves")
    shown_columns = [c for c in ("cell", "seed", "status", "wall_seconds", "device", "peak_memory_mib", "error")
                     if c in chosen]
    st.dataframe(chosen[shown_columns], hide_index=True, key="cells-runs")  # what each seed ran on, and how long


def compare_page(url: str, db, names: list[str], delta: float) -> None:
    studies = {}
    for other in names:
        study = store.get_study(db, other)
        scores = analysis.cell_scores(load_results(url, other), study["metric"], study["direction"])
        if not scores.empty:
            studies[f"{other} ({study['task']})"] = (scores, study["direction"])
    table = analysis.across_studies(studies, delta)
    st.caption("each optimizer on every study of this database; good region against each study's best")
    for column in ("best", "good_fraction", "lr_window_decades"):
        st.markdown(f"**{column}**")
        st.dataframe(table.pivot_table(index="optimizer", columns="study", values=column), key=f"compare-{column}")
    download(table, "optimizer × study", "across-studies")


def studies_page(url: str, db) -> None:
    """Every study of the database: task, state, progress and each optimizer's best."""
    rows = []
    for row in store.overview(db):
        study = store.get_study(db, row["name"])
        scores = analysis.cell_scores(load_results(url, row["name"]), study["metric"], study["direction"])
        best = {r.optimizer: r.best for r in analysis.robustness(scores, study["direction"])} if not scores.empty else {}
        done = sum(row["counts"].get(s, 0) for s in ("complete", "diverged", "failed"))
        rows.append({"study": row["name"], "task": row["task"], "metric": study["metric"], "state": row["display"],
                     "finished": f"{done}/{row['total_cells']}",
                     "best per optimizer": " · ".join(f"{o} {v:.4g}" for o, v in best.items())})
    frame = pd.DataFrame(rows)
    st.dataframe(frame, hide_index=True, key="studies")
    download(frame, "studies", "studies")


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
    name = st.sidebar.selectbox("study", names, index=len(names) - 1, key="study")
    page = st.sidebar.radio("page", PAGES, key="page")
    study = store.get_study(db, name)
    metric, direction = study["metric"], study["direction"]
    reference = st.sidebar.radio("good region: within δ of", ["the study's best", "each optimizer's own best"],
                                 help="the study's best compares optimizers; an optimizer's own best does not",
                                 key="reference")
    relative = st.sidebar.radio("good region tolerance δ", ["relative", "absolute"], key="tolerance") == "relative"
    delta = st.sidebar.number_input("δ", min_value=0.0, value=0.05 if relative else 0.02, step=0.01, format="%.3f",
                                    key="delta")
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
        waiting = [o for o in study["spec"]["optimizers"] if o not in summary]
        if waiting:
            st.caption(f"no finished cell yet: {', '.join(waiting)}")
        if page in ("Maps", "Overview", "Sensitivity"):
            board, boot = analysis.leaderboard(
                results, metric, direction, delta, relative,
                reference="study" if reference.startswith("the study") else "optimizer", order=shown)
        if page == "Maps":
            maps_page(scores, shown, summary, metric, direction, reference, delta, relative, results, board,
                      study["spec"])
        elif page == "Overview":
            overview_page({o: summary[o] for o in shown}, results, metric, direction, board, boot, scores)
        elif page == "Sensitivity":
            sensitivity_page(scores, shown, metric, direction, board)
        elif page == "Cells":
            cells_page(url, name, results, shown)
        elif page == "Compare studies":
            compare_page(url, db, names, delta)
        else:
            studies_page(url, db)

    live()


main()
