"""The dashboard's plotly figures, built from ``study.analysis`` results; no Streamlit calls here.

Each builder returns the figure, and where a page offers the data behind it as CSV, that data as a frame.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from study import analysis


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


def sensitivity_figure(scores: pd.DataFrame, shown: list[str], metric: str,
                       direction: str) -> tuple[go.Figure, pd.DataFrame]:
    """The score against the learning rate per optimizer that sweeps it (the other axes at their best),
    with a band of seed mean ± std; and those points as a frame."""
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
    return figure, pd.DataFrame(rows)


def best_of_k_figure(scores: pd.DataFrame, shown: list[str], metric: str,
                     direction: str) -> tuple[go.Figure, pd.DataFrame]:
    """The expected best of k configurations drawn at random per optimizer, with its bootstrap band; and
    those points as a frame."""
    figure, rows = go.Figure(), []
    for index, optimizer in enumerate(shown):
        colour = qualitative.Plotly[index % len(qualitative.Plotly)]
        band = analysis.expected_best_bands(scores, optimizer, direction)
        ks = band["k"].tolist()
        figure.add_trace(go.Scatter(x=ks + ks[::-1], y=band["high"].tolist() + band["low"].tolist()[::-1],
                                    fill="toself", mode="lines", fillcolor=colour, opacity=0.2,
                                    line={"width": 0, "color": colour}, showlegend=False, hoverinfo="skip",
                                    legendgroup=optimizer))
        figure.add_trace(go.Scatter(x=ks, y=band["expected"].tolist(), name=optimizer, line={"color": colour},
                                    legendgroup=optimizer))
        rows += [{"optimizer": optimizer, "k": int(k), "expected_best": e, "low": lo, "high": hi}
                 for k, e, lo, hi in band[["k", "expected", "low", "high"]].itertuples(index=False)]
    figure.update_layout(title="expected best of k configurations drawn at random (band: 95 % bootstrap)",
                         xaxis_title="k", yaxis_title=metric)
    return figure, pd.DataFrame(rows)


def curves_figure(curves: dict[int, list[dict]], chosen: pd.DataFrame, metric: str,
                  title: str) -> tuple[go.Figure, pd.DataFrame]:
    """One configuration's learning curves of ``metric``, a line per seed (``chosen``: its cells); and
    those points as a frame."""
    figure, data = go.Figure(), []
    for cell, seed in zip(chosen["cell"], chosen["seed"]):
        epochs = [e for e in curves.get(int(cell), []) if e.get(metric) is not None]
        figure.add_trace(go.Scatter(x=[e["epoch"] for e in epochs], y=[e[metric] for e in epochs],
                                    mode="lines+markers", name=f"seed {seed}"))
        data += [{"cell": int(cell), "seed": seed, "epoch": e["epoch"], metric: e[metric]} for e in epochs]
    figure.update_layout(title=title, xaxis_title="epoch", yaxis_title=metric, xaxis={"tickformat": "d"})
    return figure, pd.DataFrame(data)
