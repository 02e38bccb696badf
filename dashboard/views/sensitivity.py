"""The Sensitivity page: the score against the learning rate, and the expected best of k configurations."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from dashboard.figures import best_of_k_figure, sensitivity_figure
from dashboard.widgets import download
from study import analysis


def sensitivity_page(scores: pd.DataFrame, shown: list[str], metric: str, direction: str,
                     board: pd.DataFrame | None = None) -> None:
    figure, rows = sensitivity_figure(scores, shown, metric, direction)
    st.plotly_chart(figure, key="sensitivity")
    if board is not None:
        values = board.set_index("optimizer")
        st.caption("**LR sensitivity**: " + " · ".join(
            f"{o} {values.loc[o, 'lr_sensitivity']:.4f} [{values.loc[o, 'lr_sensitivity_low']:.4f}, "
            f"{values.loc[o, 'lr_sensitivity_high']:.4f}]" for o in shown
            if o in values.index and not math.isnan(values.loc[o, "lr_sensitivity"]))
            + f" — {analysis.LITERATURE['lr_sensitivity']}; in brackets: {analysis.LITERATURE['interval']}")
    download(rows, "sensitivity", "sensitivity")
    best_of_k, rows = best_of_k_figure(scores, shown, metric, direction)
    st.plotly_chart(best_of_k, key="best-of-k")
    st.caption(f"**expected best of k**: {analysis.LITERATURE['expected_best']} ({analysis.RESAMPLES} resamples; "
               "Lourie et al. 2025 give distribution-free bands instead)")
    download(rows, "expected best of k", "expected-best-of-k")
