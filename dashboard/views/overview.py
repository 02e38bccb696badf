"""The Overview page: the leaderboard with its seed-bootstrap intervals, which optimizer is less sensitive,
tunability, LR sensitivity per slice, and which hyperparameter matters (fANOVA)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.widgets import download
from study import analysis


def overview_page(summary: dict, results: pd.DataFrame, metric: str, direction: str, board: pd.DataFrame,
                  boot: analysis.SeedBootstrap, scores: pd.DataFrame) -> None:
    help = {column: text for column, text in analysis.GLOSSARY.items() if column in board}
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
    for column in analysis.TUNABILITY:
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
