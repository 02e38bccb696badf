"""The dashboard's database access: one read-only engine per URL, and the cached loaders every page reads.

The dashboard never migrates or writes: a role that may only SELECT is enough.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from study import store


@st.cache_resource
def engine(url: str):
    # read-only: the dashboard never migrates or writes (a role that may only SELECT is enough)
    return store.connect(url, read_only=True)


@st.cache_data(ttl=5)
def load_results(url: str, name: str) -> pd.DataFrame:
    return store.results(name, engine(url))


@st.cache_data(ttl=5)
def load_curves(url: str, name: str, cells: tuple[int, ...]) -> dict[int, list[dict]]:
    return store.cell_curves(engine(url), name, cells)
