"""Pieces every page shares: the progress bar, the service's queue, and a chart's data as CSV."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from study import analysis, store
from study.statuses import ENDED, FINISHED, CellStatus


def progress(counts: dict[str, int], total: int) -> None:
    ended = sum(counts.get(s, 0) for s in ENDED)
    st.progress(ended / total if total else 1.0, text=analysis.finished_line(counts, total))


def queue_frame(rows: list[dict], services: list[dict]) -> pd.DataFrame:
    """The studies as the service's queue shows them: state, position, progress, and who runs them."""
    names = {s["owner"]: f"{s['host']}:{s['pid']}" for s in services}
    return pd.DataFrame([{
        "study": r["name"], "task": r["task"], "state": r["display"], "position": r["position"],
        "priority": r["priority"],
        "finished": f"{sum(r['counts'].get(s, 0) for s in FINISHED)}/{r['total_cells']}",
        "running": r["counts"].get(CellStatus.RUNNING, 0), "cancelled": r["counts"].get(CellStatus.CANCELLED, 0),
        "run by": ", ".join(names.get(owner, owner.rsplit(":", 1)[0]) for owner in r["runners"])} for r in rows])


def queue(db) -> None:
    rows, services = store.overview(db), store.services_alive(db)
    busy = any(r["display"] in ("queued", "running") for r in rows)
    with st.expander(f"queue · {len(services)} service{'s' if len(services) != 1 else ''} running", expanded=busy):
        st.dataframe(queue_frame(rows, services), hide_index=True)
        for s in services:
            st.caption(f"service {s['host']}:{s['pid']} · {s['workers']} workers on Ray {s['ray']} · "
                       f"heartbeat {s['age']:.0f} s ago")


def download(frame: pd.DataFrame, what: str, key: str) -> None:
    """The data behind a chart as CSV (each chart's own camera button saves it as PNG)."""
    st.download_button(f"{what} as CSV", frame.to_csv(index=False).encode(), file_name=f"{key}.csv",
                       mime="text/csv", key=f"csv-{key}")
