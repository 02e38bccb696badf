"""The Studies page: every study of the database with its task, state, progress and each optimizer's best."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.data import load_results
from dashboard.widgets import download
from study import analysis, store
from study.statuses import FINISHED


def studies_page(url: str, db) -> None:
    """Every study of the database: task, state, progress and each optimizer's best."""
    rows = []
    for row in store.overview(db):
        study = store.get_study(db, row["name"])
        scores = analysis.cell_scores(load_results(url, row["name"]), study["metric"], study["direction"])
        best = {r.optimizer: r.best for r in analysis.robustness(scores, study["direction"])} if not scores.empty else {}
        done = sum(row["counts"].get(s, 0) for s in FINISHED)
        rows.append({"study": row["name"], "task": row["task"], "metric": study["metric"], "state": row["display"],
                     "finished": f"{done}/{row['total_cells']}",
                     "best per optimizer": " · ".join(f"{o} {v:.4g}" for o, v in best.items())})
    frame = pd.DataFrame(rows)
    st.dataframe(frame, hide_index=True, key="studies")
    download(frame, "studies", "studies")
