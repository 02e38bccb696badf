"""The Cells page: one configuration's learning curves, a line per seed, and what each seed ran on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.data import load_curves
from dashboard.figures import curves_figure
from dashboard.widgets import download
from study import analysis


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
    figure, data = curves_figure(curves, chosen, metric, f"{optimizer}: {label(point)}")
    st.plotly_chart(figure, key="curves")
    download(data, "learning curves", "curves")
    shown_columns = [c for c in ("cell", "seed", "status", "wall_seconds", "device", "peak_memory_mib", "error")
                     if c in chosen]
    st.dataframe(chosen[shown_columns], hide_index=True, key="cells-runs")  # what each seed ran on, and how long
