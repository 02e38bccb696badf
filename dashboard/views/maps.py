"""The Maps page: per optimizer its map over the chosen axes, its numbers, and a difference map."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.figures import heatmap_figure
from dashboard.widgets import download
from study import analysis

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
                     help=analysis.GLOSSARY["best"])
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
