"""The Compare studies page: each optimizer on every study of the database."""

from __future__ import annotations

import streamlit as st

from dashboard.data import load_results
from dashboard.widgets import download
from study import analysis, store


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
